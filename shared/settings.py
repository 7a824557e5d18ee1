"""Settings from environment variables (prefix PPO_), validated at start-up. Unknown keys are errors.

One settings class for the whole system keeps names unique and documented in one place (README,
.env.example); each service reads only the fields it needs.

Security settings fail closed: a PPO_* environment variable that is not a setting is refused (with the nearest
name), token keys must be sha256 hex, a scope must name an agency that has a token, and anonymous intake only
listens on a loopback address. `load_settings` turns every problem into one line naming the variable, what is
wrong and how to fix it, and exits 2 (no stack trace).
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from shared.neutral_url import base_url_problem
from shared.places import PlacesError, load_places

ENV_PREFIX = "PPO_"
# PPO_* variables read by tooling and tests, not settings (ppo_alerts/localkafka.py, tests/faults, screenshots)
NOT_SETTINGS = frozenset({"PPO_ALERTS_KAFKA_LIBS", "PPO_ALERTS_CACHE", "PPO_FAULTS_FULL", "PPO_FAULTS_WRITE_DOCS",
                          "PPO_EMAIL_SCREENSHOTS"})
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_TOKEN_FIELDS = ("intake_tokens", "intake_coordinator_tokens", "operator_tokens")
_JSON_FIELDS = {  # dict settings, given as JSON in the environment: an example of each for the error message
    "intake_tokens": '{"<sha256 hex of the token>": "<agency name>"}',
    "intake_coordinator_tokens": '{"<sha256 hex of the token>": "<coordinator\'s name>"}',
    "operator_tokens": '{"<sha256 hex of the token>": "<operator\'s name>"}',
    "intake_token_scopes": '{"HMCTS": ["court.", "warrant."]}',
    "marking_by_domain": '{"met.police.uk": "OFFICIAL-SENSITIVE [PERSONAL]"}',
}
# A protective marking heads every subject and body and fills X-Classification: one line of plain ASCII, short
MARKING = re.compile(r"^[A-Z0-9](?:[A-Za-z0-9 \[\]()/_-]{0,58}[A-Za-z0-9\])])?$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$")
_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})
TokenMap = Annotated[dict[str, str], NoDecode]  # NoDecode: our validator parses the JSON and names the setting


def env_name(field: str) -> str:
    """The environment variable of a settings field: intake_tokens -> PPO_INTAKE_TOKENS."""
    return f"{ENV_PREFIX}{field.upper()}"


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def unknown_env_names(environ: Mapping[str, str]) -> list[str]:
    """One problem line per PPO_* variable that is not a setting, naming the nearest setting's variable."""
    valid = [env_name(f) for f in Settings.model_fields]
    problems = []
    for key in sorted(environ):
        name = key.upper()  # pydantic-settings reads the environment case-insensitively
        if not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS or name in valid:
            continue
        near = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
        hint = f"did you mean {near[0]}?" if near else "see .env.example for the settings there are"
        problems.append(f"{key}: not a setting, so it would be ignored: {hint} (rename or remove it)")
    return problems


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PPO_", extra="forbid", env_file=None)

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    topic_prefix: str = Field(default="ppo", pattern=r"^[A-Za-z0-9._-]+$")
    # The topics' shape, used when a service creates a missing topic and checked against existing ones at start-up.
    # Replication factor and min.insync.replicas unset: the broker's own defaults (default.replication.factor,
    # min.insync.replicas), so one setting serves a single local broker and a three-broker cluster alike.
    kafka_partitions: int = Field(default=3, ge=1, le=1000)
    kafka_replication_factor: int | None = Field(default=None, ge=1, le=7)
    kafka_min_insync_replicas: int | None = Field(default=None, ge=1, le=7)
    # At start-up, keep trying to reach Kafka this long before giving up (brokers starting beside the services)
    kafka_start_wait_s: float = Field(default=0.0, ge=0, le=3600)

    # Reference data
    directory_file: Path = Path("deploy/sample/directory.yaml")
    register_file: Path | None = None  # imported into the register topic when that topic is empty

    # HTTP (metrics, health; intake's POST /v1/events)
    http_host: str = "127.0.0.1"
    intake_port: int = Field(default=8080, ge=0, le=65535)
    rules_port: int = Field(default=8081, ge=0, le=65535)
    scheduler_port: int = Field(default=8082, ge=0, le=65535)
    notifier_port: int = Field(default=8083, ge=0, le=65535)
    intake_max_body_bytes: int = Field(default=2_000_000, ge=1024)
    # sha256 hex of each bearer token -> agency name; empty with intake_allow_anonymous for local use only
    intake_tokens: TokenMap = Field(default_factory=dict)
    intake_allow_anonymous: bool = False
    # agency name -> event-type prefixes it may submit, e.g. {"HMCTS": ["court.", "warrant."], "HMP Leeds":
    # ["prison."]}; an agency not listed may submit any non-register type. Register changes need a coordinator.
    intake_token_scopes: Annotated[dict[str, list[str]], NoDecode] = Field(default_factory=dict)
    intake_rate_per_s: float = Field(default=50.0, ge=0)  # per credential, on average; 0 turns the limit off
    intake_rate_burst: int = Field(default=200, ge=1)
    public_base_url: str = "http://127.0.0.1:8080"
    # occurred_at is refused when further than this from the time received (services/intake/plausibility.py)
    intake_max_past_days: int = Field(default=3650, ge=1, le=36500)
    intake_max_future_s: float = Field(default=3600.0, ge=0, le=7 * 86400)

    # SMTP
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_tls_mode: Literal["implicit", "starttls", "plain"] = "starttls"
    smtp_allow_plaintext: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_sender: str = "ppo-alerts@localhost.invalid"
    smtp_timeout_s: float = Field(default=30.0, gt=0)
    smtp_pool_size: int = Field(default=2, ge=1, le=32)

    # State kept on local disk
    state_dir: Path = Path("var")
    notifier_sendlog_url: str | None = None  # default: SQLite file in state_dir; PostgreSQL for several notifiers

    # Scheduler
    scheduler_jobstore_url: str | None = None  # default: SQLite file in state_dir
    scheduler_misfire_grace_s: int = Field(default=30 * 24 * 3600, ge=60)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Register administration (docs/coordinators.md)
    # sha256 hex of each coordinator bearer token -> the coordinator's name (recorded as `source` of each change);
    # only these tokens may post register changes (POST /v1/register/..., register.* on /v1/events)
    intake_coordinator_tokens: TokenMap = Field(default_factory=dict)
    # the name `ppo-alerts register` records as `source` of a change (default: the operating-system user)
    # sha256 hex of each operator bearer token -> the operator's name (recorded with each dead-letter replay);
    # only these tokens may list, read or replay dead letters over HTTP (GET/POST /v1/dead-letters...)
    operator_tokens: TokenMap = Field(default_factory=dict)
    register_operator: str | None = Field(default=None, min_length=1, max_length=100)
    # how often the rules service looks for a changed directory file, in seconds (0: never; restart to reload)
    directory_reload_s: float = Field(default=30.0, ge=0)

    # Scheduler, acknowledgement and escalation (services/scheduler, shared/ack.py; .env.example explains each)
    scheduler_lease_ttl_s: float = Field(default=30.0, ge=2, le=600)  # a standby takes over this long after
    scheduler_deadline_grace_s: float = Field(default=60.0, ge=0, le=3600)  # after notify_by, then breached
    scheduler_list_review_every_months: int = Field(default=1, ge=1, le=12)  # C6: 1 monthly, 3 quarterly
    # D2: the weekly custody digest, 09:00 London on this day (the next working day when a bank holiday)
    scheduler_digest_weekday: Literal["monday", "tuesday", "wednesday", "thursday", "friday"] = "monday"
    ack_escalate_after_working_hours: float = Field(default=4.0, ge=0, le=400)  # immediate rules; 0: never
    ack_secret: SecretStr | None = Field(default=None, min_length=32)  # HMAC key of acknowledgement links
    ack_link_ttl_days: int = Field(default=30, ge=1, le=365)
    ack_base_url: str | None = None  # default: public_base_url; court recipients see it, so never "PPO"

    # The web console (services/console): staff sign in with their own identity provider (OpenID Connect)
    console_port: int = Field(default=8084, ge=0, le=65535)
    console_public_url: str = "http://127.0.0.1:8084"  # where browsers reach it; the sign-in callback is under it
    console_oidc_issuer: str | None = None  # e.g. https://login.microsoftonline.com/<tenant>/v2.0
    console_oidc_client_id: str | None = None
    console_oidc_client_secret: SecretStr | None = None
    console_oidc_roles_claim: str = Field(default="ppo_roles", min_length=1)  # coordinator, bcu, operator
    console_oidc_bcus_claim: str = Field(default="ppo_bcus", min_length=1)  # the BCU codes a person works for
    console_session_secret: SecretStr | None = Field(default=None, min_length=32)  # same on every instance
    console_session_hours: float = Field(default=8.0, gt=0, le=24)  # then sign in again, however active
    # The operator's health page: service name -> base URL of its HTTP server (its /healthz is read), as JSON, e.g.
    # {"intake": "http://intake:8080"}; unset: intake, rules, scheduler and notifier on http_host and their ports
    console_service_urls: dict[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,39}$")],
                               Annotated[str, Field(pattern=r"^https?://[^\s/?#@]+/?$", max_length=200)]] | None = (
        Field(default=None, min_length=1, max_length=20))

    @field_validator("scheduler_digest_weekday", mode="before")
    @classmethod
    def _weekday_lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("ack_base_url")
    @classmethod
    def _neutral_ack_base_url(cls, value: str | None) -> str | None:
        if value is not None and (problem := base_url_problem(value)):
            raise ValueError(problem)
        return value

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_env_names(cls, data: Any) -> Any:
        if problems := unknown_env_names(os.environ):
            raise ValueError("\n".join(problems))
        return data

    @field_validator(*_JSON_FIELDS, mode="before")
    @classmethod
    def _json(cls, value: object, info: Any) -> object:
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc.msg} at character {exc.pos}): write it as "
                             f"{_JSON_FIELDS[info.field_name]}, or {{}} for none") from None

    @field_validator(*_TOKEN_FIELDS)
    @classmethod
    def _sha256_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for number, key in enumerate(value, 1):  # the key is never repeated: it may be the token itself
            if not _SHA256_HEX.match(key):
                raise ValueError(
                    f"key {number} of {len(value)} ({len(key)} characters) is not a sha256 hex: each key must be "
                    "the sha256 hex of the token (64 characters 0-9a-f), e.g. printf %s TOKEN | sha256sum")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        problems = []
        agencies = set(self.intake_tokens.values())
        if orphans := sorted(set(self.intake_token_scopes) - agencies):
            have = "has" if len(orphans) == 1 else "have"
            problems.append(
                f"{env_name('intake_token_scopes')}: {', '.join(map(repr, orphans))} {have} no token in "
                f"{env_name('intake_tokens')}, so the scope restricts nobody (a misspelt agency leaves the real one "
                f"unrestricted): use an agency name exactly as in {env_name('intake_tokens')}, or remove it")
        if self.intake_allow_anonymous and not is_loopback(self.http_host):
            problems.append(
                f"{env_name('intake_allow_anonymous')}: true accepts events without a token, and "
                f"{env_name('http_host')}={self.http_host} is not a loopback address: set "
                f"{env_name('intake_tokens')} and {env_name('intake_allow_anonymous')}=false, or listen on 127.0.0.1")
        if self.smtp_tls_mode == "plain" and not self.smtp_allow_plaintext:
            problems.append(
                f"{env_name('smtp_allow_plaintext')}: {env_name('smtp_tls_mode')}=plain sends names of offenders "
                f"unencrypted: set {env_name('smtp_allow_plaintext')}=true to accept that (a relay on the same host "
                f"or a test server only), or set {env_name('smtp_tls_mode')} to starttls or implicit")
        if (self.smtp_username is None) != (self.smtp_password is None):
            missing = "smtp_password" if self.smtp_password is None else "smtp_username"
            problems.append(f"{env_name(missing)}: {env_name('smtp_username')} and {env_name('smtp_password')} go "
                            "together: give both or neither")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    # Notifier (services/notifier; .env.example explains each)
    # From address for court recipients (never "PPO": 001 §6.3, §7.2); default: smtp_sender, and a court message
    # whose sender names PPOs is refused, not sent
    smtp_court_sender: str | None = None
    smtp_validate_certs: bool = True  # verify the mail server's TLS certificate (false: a test relay only)
    notifier_retry_attempts: int = Field(default=3, ge=1, le=10)  # SMTP attempts per recipient per request
    notifier_retry_backoff_s: float = Field(default=1.0, ge=0, le=60)  # first in-request backoff, then doubling
    notifier_redeliver_after_s: float = Field(default=30.0, gt=0, le=3600)  # first redelivery of a failing request
    notifier_redeliver_max_s: float = Field(default=900.0, gt=0, le=86400)  # redeliveries double up to this
    notifier_give_up_after_h: float = Field(default=24.0, gt=0, le=24 * 14)  # then permanent-failure, escalated
    notifier_max_message_bytes: int = Field(default=1_000_000, ge=10_000, le=25_000_000)

    # What a recipient sees (services/notifier/render.py; .env.example explains each)
    marking: str = "OFFICIAL-SENSITIVE"  # the protective marking: subject, first and last body line, X-Classification
    # recipient domain -> its own marking; a domain covers its subdomains, the longest listed domain wins
    marking_by_domain: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    places_file: Path | None = None  # a newer prisons-and-courts file than the package's (shared/reference/places.json)

    @field_validator("marking")
    @classmethod
    def _one_line_marking(cls, value: str) -> str:
        if problem := marking_problem(value):
            raise ValueError(problem)
        return value

    @field_validator("marking_by_domain")
    @classmethod
    def _domain_markings(cls, value: dict[str, str]) -> dict[str, str]:
        out = {}
        for domain, marking in value.items():
            name = domain.strip().lower()
            if not _DOMAIN.match(name):
                raise ValueError(f"{domain[:60]!r} is not a domain name (e.g. met.police.uk)")
            if problem := marking_problem(marking):
                raise ValueError(f"{name}: {problem}")
            out[name] = marking
        return out

    @field_validator("places_file")
    @classmethod
    def _places_file_usable(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                load_places(value)
            except PlacesError as exc:
                raise ValueError(str(exc)) from None
        return value


def marking_problem(value: object) -> str | None:
    """Why `value` cannot be a protective marking, or None: it goes into a mail header, so one short line."""
    if not isinstance(value, str) or not MARKING.match(value):
        return ("a marking is one line of 1 to 60 ASCII letters, digits, spaces and [ ] ( ) / _ -, starting with a "
                "capital or digit, e.g. OFFICIAL-SENSITIVE or OFFICIAL-SENSITIVE [PERSONAL]")
    return None


def settings_problems(exc: ValidationError) -> list[str]:
    """One line per problem, naming the environment variable (PPO_SMTP_ALLOW_PLAINTEXT, not allow_plaintext),
    what is wrong and how to fix it. Values are never repeated: they may be secrets."""
    lines: list[str] = []
    for error in exc.errors(include_url=False, include_input=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        loc = error["loc"]
        if not loc:  # a model validator: its lines already start with the variable
            lines.extend(message.splitlines())
            continue
        field = str(loc[0])
        where = ""
        if len(loc) > 1 and field not in _TOKEN_FIELDS:  # a token map's key may be the token: never shown
            where = " at " + "".join(f"[{p!r}]" for p in loc[1:])
        hint = "" if error["type"] in ("value_error", "assertion_error") else " (see .env.example for this setting)"
        if error["type"] == "extra_forbidden":
            message, hint = "not a setting", " (see .env.example for the settings there are)"
        lines.append(f"{env_name(field)}{where}: {message}{hint}")
    return lines


def load_settings() -> Settings:
    """Settings from the environment; otherwise one line per problem on stderr and exit 2 (no stack trace)."""
    try:
        return Settings()
    except ValidationError as exc:
        lines = settings_problems(exc)
    except SettingsError as exc:  # a source that could not be read: our validators cover the known cases
        lines = [f"{exc} (see .env.example)"]
    for line in lines:
        print(f"ppo-alerts: {line}", file=sys.stderr)
    raise SystemExit(2)
