"""The one settings object: every knob comes from `EMPS_*` environment variables or `.env`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Platform configuration. Defaults run everything locally under `var/` with no credentials."""

    model_config = SettingsConfigDict(
        env_prefix="EMPS_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    env: str = Field(
        "local", description="local | ci | prod: picks nothing by itself, shown in logs"
    )
    home: Path = Field(PROJECT_ROOT / "var", description="Root of all runtime state")
    catalog_path: Path = Field(PROJECT_ROOT / "catalog" / "sensors.yaml")

    # Database. When database_url is unset an embedded PostgreSQL runs under home/pg.
    database_url: SecretStr | None = Field(None, description="Owner URL used for migrations")
    writer_url: SecretStr | None = Field(None, description="URL of the flows' writer role")
    reader_url: SecretStr | None = Field(None, description="URL of the dashboard's read-only role")
    pg_host: str = "127.0.0.1"
    pg_port: int = 55432
    pg_database: str = "emps"
    partitions_months_ahead: int = Field(3, ge=1, le=24)

    timezone: str = "UTC"

    # Domain rules (DESIGN.md: severity bands).
    severity_medium: float = 0.30
    severity_high: float = 0.60
    severity_critical: float = 0.85
    failure_horizon_days: int = Field(7, ge=1, le=60)

    # Fleet simulator.
    sim_equipment: int = Field(200, ge=1)
    sim_seed: int = 42
    sim_history_days: int = Field(30, ge=1)
    sim_history_interval_s: int = Field(600, ge=60)
    sim_live_interval_s: int = Field(60, ge=1)

    @property
    def pg_dir(self) -> Path:
        return self.home / "pg"

    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def log_dir(self) -> Path:
        return self.home / "log"

    @property
    def embedded(self) -> bool:
        return self.database_url is None


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read on first use (never at import)."""
    return Settings()
