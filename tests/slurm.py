"""A one-node SLURM cluster for the tests: munged, slurmctld and slurmd from the distribution's
packages (scripts/install-test-deps), configured in a temporary directory on free ports, with
no cgroups (ProctrackType=proctrack/linuxproc, TaskPlugin=task/none) so it runs in a container.

Clients (sbatch, squeue, sinfo, scancel, and Parsl's provider through them) find it through the
environment ``SlurmCluster.env`` gives: SLURM_CONF. Where a part cannot start, ``SlurmCluster``
raises ``SlurmUnavailable`` with the reason and the daemon's log: the test fails, it is never
skipped."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import psutil

PARTITION = "debug"
START_SECONDS = 60.0


class SlurmUnavailable(RuntimeError):
    """SLURM could not be started here; the message says why."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _require(program: str) -> str:
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin")
    if path is None:
        raise SlurmUnavailable(f"{program} is not installed: run scripts/install-test-deps "
                               "(it installs slurmctld, slurmd, slurm-client and munge)")
    return path


class SlurmCluster:
    """``start()`` brings the daemons up and waits until the node takes jobs; ``stop()`` ends
    them and every job still running."""

    def __init__(self, root: Path, *, cpus: int = 2, memory_mb: int = 4000,
                 kill_wait_seconds: int = 30) -> None:
        self.root = root
        self.cpus, self.memory_mb, self.kill_wait_seconds = cpus, memory_mb, kill_wait_seconds
        self.node = socket.gethostname().split(".")[0]
        self.conf = root / "slurm.conf"
        self.munge_socket = root / "munge" / "munge.socket"
        self.procs: list[subprocess.Popen] = []

    @property
    def env(self) -> dict[str, str]:
        """The environment a client of this cluster needs (added to os.environ)."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    # ----- start ---------------------------------------------------------------------------
    def start(self) -> SlurmCluster:
        if os.geteuid() != 0:
            raise SlurmUnavailable("the test SLURM cluster runs its daemons as root (slurmd "
                                   "starts jobs as their user); this suite is not running as "
                                   "root")
        for d in ("munge", "state", "spool", "log", "jobs"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        (self.root / "jobs").chmod(0o777)
        self._start_munge()
        self._write_conf()
        self._spawn([_require("slurmctld"), "-D", "-f", str(self.conf)], "slurmctld")
        self._wait("slurmctld answers", lambda: self._run(["scontrol", "ping"]).returncode == 0
                   and "UP" in self._run(["scontrol", "ping"]).stdout, "slurmctld")
        self._spawn([_require("slurmd"), "-D", "-f", str(self.conf), "-N", self.node], "slurmd")
        self._wait(f"node {self.node} is idle", self._node_idle, "slurmd")
        return self

    def _start_munge(self) -> None:
        key = self.root / "munge" / "munge.key"
        r = subprocess.run([_require("mungekey"), "--create", "--keyfile", str(key)],
                           check=False, capture_output=True, text=True)
        if r.returncode != 0:
            raise SlurmUnavailable(f"mungekey --create failed: {r.stderr.strip()}")
        key.chmod(0o400)
        (self.root / "munge").chmod(0o700)
        self._spawn([_require("munged"), "--foreground", "--force", "--key-file", str(key),
                     "--socket", str(self.munge_socket),
                     "--pid-file", str(self.root / "munge" / "munged.pid"),
                     "--log-file", str(self.root / "log" / "munged.log"),
                     "--seed-file", str(self.root / "munge" / "munged.seed")], "munged")
        self._wait("munged's socket", self.munge_socket.exists, "munged")

    def _write_conf(self) -> None:
        r = self.root
        self.conf.write_text(f"""\
ClusterName=atomiverse-test
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CryptoType=crypto/munge
StateSaveLocation={r / "state"}
SlurmdSpoolDir={r / "spool"}
SlurmctldPidFile={r / "slurmctld.pid"}
SlurmdPidFile={r / "slurmd.pid"}
SlurmctldLogFile={r / "log" / "slurmctld.log"}
SlurmdLogFile={r / "log" / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
KillWait={self.kill_wait_seconds}
MinJobAge=300
SchedulerParameters=sched_interval=1
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} \
State=UNKNOWN
PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")

    def _spawn(self, argv: list[str], name: str) -> None:
        with open(self.root / "log" / f"{name}.out", "ab") as log:
            self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                               env=self.env, start_new_session=True))

    def _wait(self, what: str, ready, daemon: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if ready():
                return
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                break
            time.sleep(0.2)  # polling a daemon that has no readiness signal of its own
        raise SlurmUnavailable(f"SLURM did not start: waiting for {what} "
                               f"({daemon} exited with {dead[0].returncode})"
                               if dead else f"SLURM did not start: no {what} after "
                               f"{START_SECONDS:.0f} s" + "\n" + self.logs())

    def _node_idle(self) -> bool:
        r = self._run(["sinfo", "-h", "-N", "-o", "%T", "-n", self.node])
        return r.returncode == 0 and r.stdout.strip().rstrip("*") in ("idle", "mixed")

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(argv, check=False, capture_output=True, text=True, env=self.env,
                              timeout=30)

    # ----- use -----------------------------------------------------------------------------
    def jobs(self) -> dict[str, str]:
        """Job id -> state (PENDING, RUNNING, ...) of every job the cluster still lists."""
        r = self._run(["squeue", "-h", "-o", "%i %T"])
        if r.returncode != 0:
            raise SlurmUnavailable(f"squeue failed: {r.stderr.strip()}")
        return dict(line.split() for line in r.stdout.splitlines() if line.strip())

    def final_state(self, job_id: str) -> str | None:
        """The state slurmctld remembers for a job (COMPLETED, TIMEOUT, CANCELLED, ...; kept
        MinJobAge seconds after it ends)."""
        r = self._run(["scontrol", "show", "job", "--oneliner", job_id])
        for field in r.stdout.split():
            if field.startswith("JobState="):
                return field.split("=", 1)[1]
        return None

    def scancel(self, job_id: str) -> None:
        """End a job as an admin would: SIGTERM to its processes, SIGKILL after KillWait."""
        r = self._run(["scancel", job_id])
        if r.returncode != 0:
            raise RuntimeError(f"scancel {job_id} failed: {r.stderr.strip()}")

    def kill_job_processes(self, job_id: str) -> int:
        """SIGKILL every process of a running job at once, as a node failure ends them (SLURM
        treats ``scancel --signal=KILL`` as a plain cancel: SIGTERM first). Returns how many."""
        killed = 0
        for proc in psutil.process_iter(["environ"]):
            try:
                env = proc.info["environ"] or {}
                if env.get("SLURM_JOB_ID") == job_id and env.get("SLURM_CONF") == str(self.conf):
                    proc.kill()
                    killed += 1
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return killed

    def logs(self) -> str:
        out = []
        for f in sorted((self.root / "log").glob("*")):
            text = f.read_text(errors="replace")[-3000:]
            out.append(f"--- {f.name}\n{text}")
        return "\n".join(out)

    # ----- stop ----------------------------------------------------------------------------
    def stop(self) -> None:
        if self.conf.exists():
            self._run(["scancel", "--full", "--user", "root"]) if shutil.which("scancel") \
                else None
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self._kill_leftover_job_processes()

    def _kill_leftover_job_processes(self) -> None:
        """slurmstepd and what it started, were a job not ended by scancel."""
        for proc in psutil.process_iter(["name", "environ"]):
            try:
                env = proc.info["environ"] or {}
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if env.get("SLURM_CONF") == str(self.conf) and proc.pid != os.getpid():
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    pass
