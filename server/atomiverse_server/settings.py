"""Server configuration: one BaseSettings class. Precedence: constructor argument, then
``ATOMIVERSE_*`` environment variable, then the default here."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_home() -> Path:
    return Path.home() / ".atomiverse"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATOMIVERSE_", extra="ignore")

    home: Path = Field(default_factory=default_home)
    database_url: str | None = Field(default=None, description="Default: SQLite under home")
    public_url: str | None = Field(default=None, description="Base URL for dashboard links")

    # Embedded mode: one machine, the server supervises its own local controller, which also
    # serves as the managed pool at a billing rate of 0.
    embedded: bool = False
    local_controller_name: str | None = None
    local_controller_slots: int | None = None

    managed_enabled: bool = False
    managed_rate_per_core_hour: float = Field(default=0.0, ge=0)

    metrics_token: str | None = Field(
        default=None, description="Operator's token for /metrics' per-controller series "
                                  "(environment only: never on a command line)")

    max_batch_size: int = Field(default=1000, ge=1)
    max_atoms: int = Field(default=1000, ge=1)
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024,
                                description="Largest request body accepted, bytes")
    min_free_disk_mb: float = Field(default=100.0, ge=0, description=(
        "New jobs are refused (507) while the disk holding the SQLite database has less "
        "than this many MB free, so that what was accepted can still finish; 0: no check. "
        "Not checked for PostgreSQL"))
    batch_rate_per_minute: int = Field(default=2, ge=1)
    job_rate_per_minute: int = Field(default=600, ge=1)

    lease_seconds: float = Field(default=60.0, gt=0)
    heartbeat_seconds: float = Field(default=3.0, gt=0)
    sweep_seconds: float = Field(default=5.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    max_watches: int = Field(default=4000, ge=1, description=(
        "Job watches and waits parked at once in one server process; past it, 429"))
    recheck_seconds: float | None = Field(default=None, gt=0, description=(
        "How often a parked long-poll (claim, wait, watch) reads the database although no "
        "signal woke it, to see changes made by another server process on the same "
        "database. Default: 1 s; 10 s when embedded, where no other server process can "
        "write (the launch lock)"))
    default_walltime_seconds: float = Field(default=24 * 3600.0, gt=0)
    auth_cache_seconds: float = Field(default=1.0, gt=0, le=60, description=(
        "How long a credential looked up is remembered (authcache): a revoked key or a "
        "drained controller is heard of within this time on every server process"))

    def resolved_recheck_seconds(self) -> float:
        if self.recheck_seconds is not None:
            return self.recheck_seconds
        return 10.0 if self.embedded else 1.0

    def resolved_database_url(self) -> str:
        return database_url_or_default(self.database_url, self.home)


def database_url_or_default(database_url: str | None, home: Path) -> str:
    """The database's URL: as configured, else SQLite in ``home``."""
    return database_url or f"sqlite:///{home / 'atomiverse.db'}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
