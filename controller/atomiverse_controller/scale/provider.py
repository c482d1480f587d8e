"""The batch scheduler, reached through Parsl's providers (an existing layer: no sbatch or
squeue parsing of ours), and the controller command each allocation runs."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from .site import SiteConfig, SiteError

SCHEDULER_COMMAND_TIMEOUT_SECONDS = 30


def _parsl() -> Any:
    try:
        import parsl.providers  # noqa: F401
        from parsl import launchers, providers
    except ImportError:
        raise SiteError('atomiverse scale needs Parsl: pip install "atomiverse[hpc]"') from None
    return providers, launchers


def controller_script(site: SiteConfig) -> str:
    """The allocation's command: one controller, a member of the pool, named after the
    allocation, claiming only for free slots, exiting when idle or near the allocation's end.
    Its token and spool are its own (the work directory is on a shared file system)."""
    work = site.directory
    q = shlex.quote
    args = [
        "--server", q(site.server), "--pool", q(site.target), "--name", '"$MEMBER"',
        "--api-key-file", q(str(site.api_key_file)),
        "--token-file", f'{q(str(work / "members"))}/"$MEMBER".token',
        "--spool-dir", f'{q(str(work / "spool"))}/"$MEMBER"',
        "--slots", str(site.slots_per_node), "--cores-per-job", str(site.cores_per_job),
        "--prefetch-per-slot", "0",
        "--exit-when-idle", f"{site.idle_timeout_seconds:g}",
        "--stop-before-end", f"{site.stop_before_end_seconds:g}",
        "--grace-seconds", f"{site.grace_seconds:g}",
    ]
    if site.engine:
        args += ["--engine", site.engine]
    pairs = [f"{flag} {value}" for flag, value in zip(args[::2], args[1::2])]
    return "\n".join([
        ("# One atomiverse controller per allocation, a member of the pool "
         f"{q(site.target)} (atomiverse scale)"),
        f'MEMBER={q(site.target)}."${{SLURM_JOB_ID:-$(hostname -s)-$$}}"',
        f"exec {site.controller_command} \\\n    " + " \\\n    ".join(pairs),
        ""])


def make_provider(site: SiteConfig, *, dry_run: bool = False) -> Any:
    """A Parsl provider for the site's scheduler. ``dry_run``: nothing is run; the script a
    submission writes is kept in ``provider.scripts``."""
    providers, launchers = _parsl()
    scripts = site.directory / "scripts"
    if site.scheduler == "slurm":
        cls = _dry_run(providers.SlurmProvider) if dry_run else providers.SlurmProvider
        provider = cls(partition=site.partition, account=site.account, qos=site.qos,
                       nodes_per_block=1, cores_per_node=site.cores_per_node,
                       mem_per_node=site.memory_per_node_gb, init_blocks=0, min_blocks=0,
                       max_blocks=site.max_nodes, walltime=site.walltime,
                       worker_init=site.worker_init, exclusive=site.exclusive,
                       launcher=launchers.SimpleLauncher(),
                       cmd_timeout=SCHEDULER_COMMAND_TIMEOUT_SECONDS)
    else:
        cls = _dry_run(providers.LocalProvider) if dry_run else providers.LocalProvider
        provider = cls(nodes_per_block=1, init_blocks=0, min_blocks=0,
                       max_blocks=site.max_nodes, worker_init=site.worker_init,
                       launcher=launchers.SimpleLauncher(),
                       cmd_timeout=SCHEDULER_COMMAND_TIMEOUT_SECONDS)
    if not dry_run:
        scripts.mkdir(parents=True, exist_ok=True, mode=0o700)
        provider.script_dir = str(scripts)
    return provider


def _dry_run(base: type) -> type:
    """The provider itself, with every scheduler command answered here instead of run: what
    ``submit`` would hand to sbatch is exactly what is printed."""

    class DryRun(base):  # type: ignore[misc, valid-type]
        scripts: list[str]

        def execute_wait(self, cmd: str, timeout: float | None = None) -> tuple[int, str, str]:
            self.scripts = getattr(self, "scripts", [])
            if cmd.startswith("sbatch "):
                self.scripts.append(Path(cmd.split(" ", 1)[1]).read_text())
                return 0, "Submitted batch job dry-run", ""
            return 1, "", "dry run: no scheduler command is run"

    return DryRun


def dry_run_script(site: SiteConfig, scratch: Path) -> str:
    """The batch script ``atomiverse scale`` would submit for one allocation."""
    provider = make_provider(site, dry_run=True)
    provider.script_dir = str(scratch)
    if site.scheduler == "local":
        return f"#!/bin/bash\n{site.worker_init}\n{controller_script(site)}"
    provider.submit(controller_script(site), tasks_per_node=1,
                    job_name=f"atomiverse.{site.target}")
    # Written to scratch; a real submission writes to the work directory.
    return provider.scripts[-1].replace(str(scratch), str(site.directory / "scripts"))


def check_partition(site: SiteConfig, provider: Any) -> None:
    """The partition must exist: asked of SLURM (sinfo) before anything is submitted."""
    if site.scheduler != "slurm" or site.partition is None:
        return
    code, out, err = provider.execute_wait("sinfo --noheader --format=%R")
    if code != 0:
        raise SiteError(f"partition: cannot ask SLURM which partitions exist (sinfo exited "
                        f"{code}: {err.strip()[:300]})")
    known = sorted({line.strip() for line in out.splitlines() if line.strip()})
    if site.partition not in known:
        raise SiteError(f"partition: {site.partition!r} does not exist on this cluster "
                        f"(sinfo lists: {', '.join(known) or 'none'})")
