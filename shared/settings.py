"""Settings from environment variables (prefix PPO_), validated at start-up. Unknown keys are errors.

One settings class for the whole system keeps names unique and documented in one place (README,
.env.example); each service reads only the fields it needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError
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
    public_base_url: str = "http://127.0.0.1:8080"

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


def load_settings() -> Settings:
    """Settings from the environment, or a message a person can act on (SystemExit, no stack trace)."""
    try:
        return Settings()
    except ValidationError as exc:
        lines = [f"  PPO_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()]
        raise SystemExit("ppo-alerts: invalid settings:\n" + "\n".join(lines)) from None
