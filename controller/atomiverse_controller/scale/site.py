"""The site file of ``atomiverse scale``: one TOML (or YAML) file per site and target, read
into a pydantic model that refuses unknown keys, with errors naming the setting."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
WALLTIME = re.compile(r"^(\d+):([0-5]\d):([0-5]\d)$")


class SiteError(ValueError):
    """The site file cannot be used; the message names the setting and why."""


def walltime_seconds(text: str) -> int:
    h, m, s = (int(x) for x in WALLTIME.fullmatch(text).groups())  # type: ignore[union-attr]
    return h * 3600 + m * 60 + s


class SiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str = Field(min_length=1, max_length=90, pattern=NAME_PATTERN, description=
                        "The pool: the compute_target jobs are submitted to")
    server: str = Field(pattern=r"^https?://", description="The job API server's URL")
    api_key_file: Path = Field(description="The workspace API key (file, mode 0600): it "
                               "registers the pool and its controllers")
    scheduler: Literal["slurm", "local"] = "slurm"
    partition: str | None = Field(default=None, min_length=1, max_length=200)
    account: str | None = Field(default=None, min_length=1, max_length=200)
    qos: str | None = Field(default=None, min_length=1, max_length=200)
    walltime: str = Field(default="01:00:00", pattern=WALLTIME.pattern,
                          description="Per allocation, HH:MM:SS")
    cores_per_node: int = Field(ge=1, le=4096)
    memory_per_node_gb: int | None = Field(default=None, ge=1)
    exclusive: bool = Field(default=True, description="Whole nodes (sbatch --exclusive)")
    worker_init: str = Field(default="", max_length=10_000,
                             description="Shell lines run before the controller, e.g. "
                                         "`module load`")
    max_nodes: int = Field(ge=1, le=10_000)
    idle_timeout_seconds: float = Field(default=300.0, gt=0)
    stop_before_end_seconds: float = Field(default=300.0, gt=0, description=
                                           "A controller stops claiming this long before its "
                                           "allocation ends")
    grace_seconds: float = Field(default=20.0, ge=0, description="Time running jobs get to "
                                 "finish on a drain (keep below the scheduler's KillWait)")
    longest_job_seconds: float = Field(default=600.0, gt=0, description="The longest job "
                                       "expected: an allocation must have room for it")
    cores_per_job: int = Field(default=1, ge=1)
    engine: Literal["xtb", "tblite", "instant"] | None = None
    poll_seconds: float = Field(default=10.0, gt=0, le=3600)
    controller_command: str = Field(
        default_factory=lambda: f"{sys.executable} -m atomiverse_controller", min_length=1,
        description="How a node starts a controller (the same installation, on a shared "
                    "file system)")
    work_dir: Path | None = Field(default=None, description="Batch scripts, logs, tokens "
                                  "(default ~/.atomiverse/scale/TARGET)")

    @model_validator(mode="after")
    def _fits(self) -> SiteConfig:
        room = walltime_seconds(self.walltime) - self.stop_before_end_seconds
        if room < self.longest_job_seconds:
            raise ValueError(
                f"walltime: {self.walltime} leaves {room:.0f} s for jobs after "
                f"stop_before_end_seconds ({self.stop_before_end_seconds:.0f} s), less than "
                f"longest_job_seconds ({self.longest_job_seconds:.0f} s): a job that long "
                f"would never fit in an allocation")
        if self.grace_seconds >= self.stop_before_end_seconds:
            raise ValueError(
                f"grace_seconds: {self.grace_seconds:.0f} s must be less than "
                f"stop_before_end_seconds ({self.stop_before_end_seconds:.0f} s), or running "
                f"jobs are still running when the allocation ends")
        if self.cores_per_job > self.cores_per_node:
            raise ValueError(f"cores_per_job: {self.cores_per_job} is more than "
                             f"cores_per_node ({self.cores_per_node})")
        if self.scheduler == "local" and (self.partition or self.account or self.qos):
            raise ValueError("partition: partition, account and qos are SLURM settings; "
                             "scheduler is 'local'")
        return self

    @property
    def slots_per_node(self) -> int:
        return self.cores_per_node // self.cores_per_job

    @property
    def directory(self) -> Path:
        return self.work_dir or Path.home() / ".atomiverse" / "scale" / self.target


def load_site(path: Path) -> SiteConfig:
    """Read and check a site file; ``SiteError`` names every bad setting."""
    raw = _read(path)
    try:
        return SiteConfig(**raw)
    except ValidationError as e:
        raise SiteError(f"{path}: " + "; ".join(_describe(err) for err in e.errors())) from None


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise SiteError(f"{path}: cannot read the site file: {e.strerror}") from None
    if path.suffix in (".yaml", ".yml"):
        data = _yaml(path, text)
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:  # the parser's message says where
            raise SiteError(f"{path}: not valid TOML: {e}") from None
    if not isinstance(data, dict):
        raise SiteError(f"{path}: the site file must be a table of settings")
    return data


def _yaml(path: Path, text: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise SiteError(f"{path}: YAML needs PyYAML (pip install pyyaml), or use TOML") \
            from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SiteError(f"{path}: not valid YAML: {e}") from None


def _describe(err: dict[str, Any]) -> str:
    where = ".".join(map(str, err["loc"]))
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown setting (known: {', '.join(SiteConfig.model_fields)})"
    if err["type"] == "missing":
        return f"{where}: required, not set"
    msg = err["msg"].removeprefix("Value error, ")
    # A check across settings names its own setting first.
    return msg if not where else f"{where}: {msg}"
