"""Controller configuration: one pydantic-settings model. Each setting comes from the first
of: command-line flags, ``ATOMIVERSE_CONTROLLER_*`` environment variables, the TOML file
(``--config``, default /etc/atomiverse/controller.toml if present), the default."""

from __future__ import annotations

import contextvars
import json
import os
import socket
from pathlib import Path
from typing import Any

import psutil
from atomiverse_core.servers import parse_urls
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_CONFIG_PATH = Path("/etc/atomiverse/controller.toml")
ENV_PREFIX = "ATOMIVERSE_CONTROLLER_"
# Shown masked by --print-config: their text must never reach a terminal or a log.
SECRET_FIELDS = frozenset({"api_key"})
MASK = "********"
# The TOML file of the settings being built (pydantic-settings takes no file per call).
_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "atomiverse_controller_config_file", default=None)


def physical_cores() -> int:
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


class ControllerConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    server: str = Field(default="http://127.0.0.1:8000", description=(
        "The job API server's URL; several server processes of one deployment as a "
        "comma-separated list (a list in the TOML file): the controller uses one and moves to "
        "the next when it stops answering"))
    name: str = Field(default_factory=lambda: f"local-{socket.gethostname()}")
    api_key: SecretStr | None = None
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
    pool: str | None = Field(
        default=None, description="Join this pool (a controller of that name in the same "
        "workspace, registered by `atomiverse scale`): claim its jobs too, never more than "
        "free slots")
    stop_before_end_seconds: float | None = Field(
        default=None, gt=0, description="In a batch scheduler's allocation: stop claiming "
        "this long before it ends (SLURM_JOB_END_TIME or squeue), finish or hand back the "
        "rest, and exit")
    exit_with_pid: int | None = Field(
        default=None, ge=1, description="Exit when this process ends (the embedded server "
        "passes its own pid: its local controller must not outlive it)")

    @classmethod
    def settings_customise_sources(
            cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags arrive as init arguments: they win, then the environment, then the file.
        file = _config_file.get()
        if file is None:
            return init_settings, env_settings
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, file)

    @field_validator("server", mode="before")
    @classmethod
    def _server_urls(cls, value: Any) -> str:
        # A TOML list, or a comma-separated string (flag, environment): kept as one string,
        # so that the environment source takes it as text, not JSON.
        return ",".join(parse_urls(value))

    def server_urls(self) -> list[str]:
        return parse_urls(self.server)

    def resolved_api_key(self) -> str | None:
        if self.api_key:
            return self.api_key.get_secret_value()
        if self.api_key_file and self.api_key_file.exists():
            text = self.api_key_file.read_text().strip()
            if text.startswith("{"):
                return json.loads(text).get("api_key")
            return text
        return os.environ.get("ATOMIVERSE_API_KEY")


def config_file(path: Path | None) -> Path | None:
    """The TOML file to read: the one given, else the system's if it exists."""
    return path or (DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None)


def load_config(path: Path | None, flags: dict[str, Any]) -> ControllerConfig:
    """The settings from ``flags`` (None: not given), the environment, the file at ``path``
    and the defaults. A bad value raises ``ValidationError`` naming its field."""
    token = _config_file.set(config_file(path))
    try:
        return ControllerConfig(**_given(flags))
    finally:
        _config_file.reset(token)


def _given(flags: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flags.items() if v is not None}


def setting_sources(path: Path | None, flags: dict[str, Any]) -> dict[str, str]:
    """Where each setting's value came from, read by the same sources the model uses."""
    file = config_file(path)
    from_env = EnvSettingsSource(ControllerConfig)()
    from_file = TomlConfigSettingsSource(ControllerConfig, file)() if file else {}
    given = _given(flags)
    sources = {}
    for name in ControllerConfig.model_fields:
        if name in given:
            sources[name] = "flag"
        elif name in from_env:
            sources[name] = f"environment {ENV_PREFIX}{name.upper()}"
        elif name in from_file:
            sources[name] = f"file {file}"
        else:
            sources[name] = "default"
    return sources


def render(config: ControllerConfig, sources: dict[str, str]) -> str:
    """The effective settings as TOML, each with its source; secrets masked."""
    lines = []
    for name in ControllerConfig.model_fields:
        value = getattr(config, name)
        if value is None:
            lines.append(f"# {name} is not set  ({sources[name]})")
            if name == "api_key" and os.environ.get("ATOMIVERSE_API_KEY"):
                lines.append("#   without api_key_file, the key in ATOMIVERSE_API_KEY is used")
            continue
        if name in SECRET_FIELDS:
            shown = json.dumps(MASK)
        elif isinstance(value, (bool, int, float)):
            shown = json.dumps(value)
        else:
            shown = json.dumps(str(value))
        lines.append(f"{name} = {shown}  # {sources[name]}")
    return "\n".join(lines) + "\n"
