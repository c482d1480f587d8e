"""Controller configuration: defaults, then the TOML file, then ``ATOMIVERSE_CONTROLLER_*``
environment variables, then command-line flags (flags win)."""

from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path
from typing import Any

import psutil
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_CONFIG_PATH = Path("/etc/atomiverse/controller.toml")
ENV_PREFIX = "ATOMIVERSE_CONTROLLER_"


def physical_cores() -> int:
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


class ControllerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    server: str = "http://127.0.0.1:8000"
    name: str = Field(default_factory=lambda: f"local-{socket.gethostname()}")
    api_key: str | None = Field(default=None, repr=False)
    api_key_file: Path | None = None
    token_file: Path = Field(default_factory=lambda: Path.home() / ".atomiverse" /
                             "controller.token")
    slots: int = Field(default_factory=physical_cores, ge=1)
    cores_per_job: int = Field(default=1, ge=1)
    capacity: int | None = Field(default=None, ge=1)
    engine: str | None = None
    memory_limit_mb: int | None = Field(default=None, ge=64)
    prefetch_per_slot: int = Field(
        default=32, ge=0, description="At most this many claimed jobs queued per slot; fewer "
        "when jobs are long (about a second of work per slot is held)")
    claim_wait_seconds: float = Field(default=20.0, ge=0, le=60)
    grace_seconds: float = Field(default=60.0, ge=0)
    exit_when_idle_seconds: float | None = Field(default=None, gt=0)
    worker_idle_seconds: float = Field(
        default=60.0, ge=0, description="After this long with no job, stop all workers but "
        "warm_workers (0: never); a stopped worker starts again, in about a second, when a job "
        "comes for its slot")
    warm_workers: int = Field(default=1, ge=0, description="Workers kept warm while idle")
    spool_dir: Path = Field(default_factory=lambda: Path.home() / ".atomiverse" / "spool")
    metrics_port: int | None = None
    exit_with_pid: int | None = Field(
        default=None, ge=1, description="Exit when this process ends (the embedded server "
        "passes its own pid: its local controller must not outlive it)")

    def resolved_api_key(self) -> str | None:
        if self.api_key:
            return self.api_key
        if self.api_key_file and self.api_key_file.exists():
            text = self.api_key_file.read_text().strip()
            if text.startswith("{"):
                import json

                return json.loads(text).get("api_key")
            return text
        return os.environ.get("ATOMIVERSE_API_KEY")


def load_config(path: Path | None, flags: dict[str, Any]) -> ControllerConfig:
    values: dict[str, Any] = {}
    file = path or (DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None)
    if file is not None:
        with open(file, "rb") as f:
            values.update(tomllib.load(f))
    for field in ControllerConfig.model_fields:
        env = os.environ.get(ENV_PREFIX + field.upper())
        if env is not None:
            values[field] = env
    values.update({k: v for k, v in flags.items() if v is not None})
    return ControllerConfig(**values)
