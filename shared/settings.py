"""Settings from environment variables (prefix PPO_), validated at start-up. Unknown keys are errors.

One settings class for the whole system keeps names unique and documented in one place (README,
.env.example); each service reads only the fields it needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    intake_tokens: dict[str, str] = Field(default_factory=dict)
    intake_allow_anonymous: bool = False
    # agency name -> event-type prefixes it may submit, e.g. {"HMCTS": ["court.", "warrant."], "HMP Leeds":
    # ["prison."]}; an agency not listed may submit any non-register type. Register changes need a coordinator.
    intake_token_scopes: dict[str, list[str]] = Field(default_factory=dict)
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

    # Scheduler
    scheduler_jobstore_url: str | None = None  # default: SQLite file in state_dir
    scheduler_misfire_grace_s: int = Field(default=30 * 24 * 3600, ge=60)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Register administration (docs/coordinators.md)
    # sha256 hex of each coordinator bearer token -> the coordinator's name (recorded as `source` of each change);
    # only these tokens may post register changes (POST /v1/register/..., register.* on /v1/events)
    intake_coordinator_tokens: dict[str, str] = Field(default_factory=dict)
    # the name `ppo-alerts register` records as `source` of a change (default: the operating-system user)
    # sha256 hex of each operator bearer token -> the operator's name (recorded with each dead-letter replay);
    # only these tokens may list, read or replay dead letters over HTTP (GET/POST /v1/dead-letters...)
    operator_tokens: dict[str, str] = Field(default_factory=dict)
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

    @field_validator("scheduler_digest_weekday", mode="before")
    @classmethod
    def _weekday_lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("ack_base_url")
    @classmethod
    def _neutral_ack_base_url(cls, value: str | None) -> str | None:
        from shared.ack import base_url_problem

        if value is not None and (problem := base_url_problem(value)):
            raise ValueError(problem)
        return value

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


def load_settings() -> Settings:
    """Settings from the environment, or a message a person can act on (SystemExit, no stack trace)."""
    try:
        return Settings()
    except ValidationError as exc:
        lines = [f"  PPO_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()]
        raise SystemExit("ppo-alerts: invalid settings:\n" + "\n".join(lines)) from None
