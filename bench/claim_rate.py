"""Claim-and-complete throughput of the platform itself (issue 30, item 1): one real server
process, its database, and real controller processes running the FAKE ``instant`` engine
(no chemistry: it measures the platform's own cost), all on this machine.

    python bench/claim_rate.py [--backend postgresql|sqlite] [--jobs N] [--controllers 8]
                               [--slots 8] [--baseline-tree DIR] [--pairs 2] [--json PATH]

A run: start the server (and, for PostgreSQL, a throwaway cluster from ``tests/pg.py`` with
PostgreSQL's durable defaults), register the controllers by name and put them in the managed
pool, submit N jobs to the managed queue through the API while no controller process runs,
then start the controller processes and sample, every 0.2 s, how many jobs are done and the
CPU time (user + system) of every process of the platform: the server, the database (the
postmaster and its backends), the controllers and their worker processes. The rate counts from
the sample where 10% of the jobs are done to the one where 90% are: the controllers' start
(spawning their worker processes) is left out, as is the queue's draining tail. CPU per job
is the platform CPU spent in that window divided by the jobs finished in it.

``--pool``: the controllers are members of a pool (as ``atomiverse scale`` starts them in
batch allocations): the jobs go to the pool, and each member claims only for its free slots
(``--prefetch-per-slot 0``), so a member's next claim waits on the report of its last job.

``--baseline-tree DIR``: a checkout of the code before the change (e.g. ``git worktree add
--detach /tmp/base main``). Its server and controllers run from DIR (by ``PYTHONPATH``), the
runs alternate (baseline, new; new, baseline; ...) and the ratio of the medians is printed.

Every run checks that each job is done exactly once: state done, attempts 1, and no report
turned away in the controllers' logs; the bench exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import httpx2 as httpx
import psutil
import sqlalchemy as sa
from atomiverse_server import db

from bench.db_bench import free_port, payload, wait_http

SERVER_ENV = {
    "ATOMIVERSE_MANAGED_ENABLED": "true",
    "ATOMIVERSE_MANAGED_RATE_PER_CORE_HOUR": "0",
    "ATOMIVERSE_BATCH_RATE_PER_MINUTE": "100000",
    "ATOMIVERSE_JOB_RATE_PER_MINUTE": "100000000",
}
SAMPLE_SECONDS = 0.2
WINDOW = (0.10, 0.90)
POOL = "cluster"


def _tree_env(tree: Path, home: Path) -> dict[str, str]:
    env = {**os.environ, "ATOMIVERSE_HOME": str(home), **SERVER_ENV}
    env.pop("ATOMIVERSE_BASE_URL", None)
    env["PYTHONPATH"] = os.pathsep.join(str(tree / d) for d in
                                        ("core", "sdk", "server", "controller"))
    return env


def _cpu_by_pid(roots: list[tuple[str, psutil.Process]]) -> dict[tuple[str, int], float]:
    """User + system CPU seconds of each of these processes and their descendants, keyed by
    (part, pid): part is the root's label, or "workers" for a controller's children."""
    out: dict[tuple[str, int], float] = {}
    for label, root in roots:
        try:
            procs = [(label, root), *(("workers" if label == "controllers" else label, c)
                                      for c in root.children(recursive=True))]
        except psutil.NoSuchProcess:
            continue
        for part, p in procs:
            try:
                t = p.cpu_times()
                out[part, p.pid] = t.user + t.system
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                pass
    return out


def _cpu_delta(before: dict[tuple[str, int], float],
               after: dict[tuple[str, int], float]) -> dict[str, float]:
    """CPU seconds spent by each part between two snapshots; a process born in between
    counts from zero."""
    out: dict[str, float] = {}
    for key, t in after.items():
        out[key[0]] = out.get(key[0], 0.0) + t - before.get(key, 0.0)
    return out


def _postmaster(cluster: Any) -> list[tuple[str, psutil.Process]]:
    if cluster is None or cluster.base_dir is None:
        return []
    pid = int((cluster.base_dir / "data" / "postmaster.pid").read_text().split()[0])
    return [("database", psutil.Process(pid))]


class Run:
    """One server, its controllers and N jobs, from a given source tree."""

    def __init__(self, tree: Path, url: str, home: Path, args: argparse.Namespace,
                 cluster: Any) -> None:
        self.tree, self.url, self.home, self.args, self.cluster = tree, url, home, args, cluster
        self.env = _tree_env(tree, home)
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def _spawn(self, argv: list[str], log: Path) -> subprocess.Popen:
        self.logs.append(log)
        with open(log, "ab") as fh:
            proc = subprocess.Popen([sys.executable, *argv], stdout=fh, stderr=fh, env=self.env,
                                    cwd=self.home)
        self.procs.append(proc)
        return proc

    def execute(self) -> dict[str, Any]:
        try:
            return self._execute()
        finally:
            for p in reversed(self.procs):
                p.terminate()
            for p in reversed(self.procs):
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    def _execute(self) -> dict[str, Any]:
        a = self.args
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = self._spawn(["-m", "atomiverse_server", "--port", str(port), "--home",
                              str(self.home), "--database-url", self.url, "--log-level",
                              "warning"], self.home / "server.log")
        wait_http(f"{base}/healthz", proc=server)
        out = subprocess.run([sys.executable, "-m", "atomiverse_server.admin",
                              "--database-url", self.url, "create-workspace", "bench",
                              "--balance", "1000000"], check=True, capture_output=True,
                             text=True, env=self.env)
        key = json.loads(out.stdout)["api_key"]
        auth = {"Authorization": f"Bearer {key}"}
        names = [f"node{i}" for i in range(a.controllers)]
        member_of = {}
        if a.pool:
            httpx.post(f"{base}/api/v1/controllers/register", headers=auth, timeout=60, json={
                "name": POOL, "slots": a.controllers * a.slots, "engines": {}}).raise_for_status()
            member_of = {"pool": POOL}
        for name in names:
            # Registered by name first, so the site admin can pool them; each process then
            # comes back with its token, which keeps it in the pool (a key would not).
            r = httpx.post(f"{base}/api/v1/controllers/register", headers=auth, timeout=60,
                           json={"name": name, "slots": a.slots, "hostname": "bench",
                                 "engines": {"instant": "0.0-fake"}, **member_of})
            r.raise_for_status()
            token = self.home / f"{name}.token"
            token.write_text(r.json()["token"])
            token.chmod(0o600)
        engine = db.make_engine(self.url)
        try:
            if not a.pool:
                with db.write_tx(engine) as conn:
                    conn.execute(db.controllers.update().values(serves_managed=True))
            self._submit(base, auth)
            roots = [("server", psutil.Process(server.pid)), *_postmaster(self.cluster)]
            controllers = [self._spawn(
                ["-m", "atomiverse_controller", "--server", base, "--name", name, "--engine", "instant", "--slots", str(a.slots), "--token-file",
                 str(self.home / f"{name}.token"), "--spool-dir",
                 str(self.home / f"spool-{name}"),
                 *(["--prefetch-per-slot", "0"] if a.pool else [])], self.home / f"{name}.log")
                for name in names]
            roots += [("controllers", psutil.Process(p.pid)) for p in controllers]
            figures = self._sample(engine, roots)
            figures |= self._check(engine)
        finally:
            engine.dispose()
        return figures

    def _submit(self, base: str, auth: dict[str, str]) -> None:
        n = self.args.jobs

        def batch(start: int) -> None:
            entries = [{"job": payload(i), "compute_target": POOL if self.args.pool
                        else "managed"}
                       for i in range(start, min(start + 1000, n))]
            r = httpx.post(f"{base}/api/v1/jobs/submit-batch", json={"jobs": entries},
                           headers=auth, timeout=300)
            r.raise_for_status()
            assert r.json()["failed"] == 0, r.text[:300]

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(batch, range(0, n, 1000)))

    def _sample(self, engine: sa.Engine,
                roots: list[tuple[str, psutil.Process]]) -> dict[str, Any]:
        n = self.args.jobs
        lo, hi = (int(n * f) for f in WINDOW)
        q = sa.select(sa.func.count()).where(db.jobs.c.state == "done")
        start: tuple[float, int, dict[int, float]] | None = None
        deadline = time.monotonic() + self.args.timeout
        while True:
            t = time.monotonic()
            cpu = _cpu_by_pid(roots)
            with engine.connect() as conn:
                done = conn.execute(q).scalar_one()
            if start is None and done >= lo:
                start = (t, done, cpu)
            if start is not None and done >= hi:
                break
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[2]} exited with {p.returncode}")
            if t > deadline:
                raise TimeoutError(f"{done} of {n} jobs done after {self.args.timeout} s")
            time.sleep(SAMPLE_SECONDS)
        jobs, seconds = done - start[1], t - start[0]
        parts = _cpu_delta(start[2], cpu)
        while done < n and time.monotonic() < deadline:
            time.sleep(SAMPLE_SECONDS)
            with engine.connect() as conn:
                done = conn.execute(q).scalar_one()
        return {"jobs_per_s": jobs / seconds,
                "cpu_ms_per_job": 1000 * sum(parts.values()) / jobs,
                **{f"cpu_ms_per_job_{k}": 1000 * v / jobs for k, v in sorted(parts.items())},
                "window_jobs": jobs, "window_s": seconds,
                "load_avg_1min": os.getloadavg()[0]}

    def _check(self, engine: sa.Engine) -> dict[str, Any]:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(db.jobs.c.state, db.jobs.c.attempts, sa.func.count())
                                .group_by(db.jobs.c.state, db.jobs.c.attempts)).all()
        text = "".join(p.read_text(errors="replace") for p in self.logs[1:])
        ok = [tuple(r) for r in rows] == [("done", 1, self.args.jobs)] and \
            "event=report_rejected" not in text
        return {"exactly_once": ok, "states": [list(r) for r in rows]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    p.add_argument("--jobs", type=int, default=40_000)
    p.add_argument("--controllers", type=int, default=8)
    p.add_argument("--slots", type=int, default=8)
    p.add_argument("--pool", action="store_true",
                   help="members of a pool claiming for free slots only")
    p.add_argument("--baseline-tree", type=Path)
    p.add_argument("--pairs", type=int, default=1)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    # SIGTERM (as from ``timeout``) unwinds like Ctrl-C: the server, the controllers and the
    # PostgreSQL cluster are stopped by the ``finally`` blocks instead of left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    cluster = None
    if args.backend == "postgresql":
        from pg import start_cluster

        cluster = start_cluster(durable=True)
    trees = [("new", ROOT)]
    if args.baseline_tree:
        trees = [("baseline", args.baseline_tree.resolve()), ("new", ROOT)]
    results: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in trees}
    failed = False
    try:
        for i in range(args.pairs):
            for label, tree in (trees if i % 2 == 0 else trees[::-1]):
                with tempfile.TemporaryDirectory(prefix="atomiverse-claimrate-") as tmp:
                    home = Path(tmp)
                    url = cluster.new_database(f"claimrate_{label}") if cluster \
                        else f"sqlite:///{home / 'bench.db'}"
                    r = Run(tree, url, home, args, cluster).execute()
                    if cluster:
                        cluster.drop_database(url)
                results[label].append(r)
                failed |= not r["exactly_once"]
                print(f"{args.backend} {label:8s} {r['jobs_per_s']:7.0f} jobs/s  "
                      f"{r['cpu_ms_per_job']:.3f} ms CPU/job  exactly once: "
                      f"{r['exactly_once']}  load {r['load_avg_1min']:.1f}  (" + ", ".join(
                          f"{k[len('cpu_ms_per_job_'):]} {v:.3f}" for k, v in r.items()
                          if k.startswith("cpu_ms_per_job_")) + ")", flush=True)
    finally:
        if cluster:
            cluster.stop()
    summary = {label: {k: statistics.median(r[k] for r in runs)
                       for k in ("jobs_per_s", "cpu_ms_per_job")}
               for label, runs in results.items()}
    for label, s in summary.items():
        print(f"median {label:8s} {s['jobs_per_s']:7.0f} jobs/s  {s['cpu_ms_per_job']:.3f} ms "
              f"CPU/job ({args.controllers} controllers x {args.slots} slots, {args.jobs} jobs)")
    if "baseline" in summary:
        b, n = summary["baseline"], summary["new"]
        print(f"new/baseline: jobs/s x{n['jobs_per_s'] / b['jobs_per_s']:.2f}, CPU per job "
              f"x{n['cpu_ms_per_job'] / b['cpu_ms_per_job']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"runs": results, "summary": summary,
                                         "args": {k: str(v) for k, v in vars(args).items()}},
                                        indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
