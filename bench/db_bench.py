"""Platform overhead on both databases: SQLite (the default) and PostgreSQL (a throwaway
cluster started by ``tests/pg.py``, or ``ATOMIVERSE_TEST_POSTGRES_URL``).

    python bench/db_bench.py [--backends sqlite,postgresql] [--quick] [--json PATH]

For each database, against a real server process (``python -m atomiverse_server``) over HTTP:

1. **batch**: latency of ``POST /jobs/submit-batch`` with 1000 entries (distinct water
   geometries, ``use_cache=False``), routed to a registered controller: median and max of 5,
   client round trip on localhost (an upper bound of the server-side time). Target < 1 s.
2. **claim + complete**: 20,000 pending jobs in the managed queue, 50 controllers at once,
   each speaking the controller protocol (claim up to 20 jobs, compute each with the FAKE
   ``instant`` engine in-process, report them all in one ``complete``) until the queue is
   empty; every one of the 50 is in the managed pool, so all contend for the same rows.
   Jobs per second from the first claim to the last report; every job must be done once.
   Target >= 1000 jobs/s.
3. **list**: ``GET /jobs?limit=50`` with 1,000,000 jobs in the database (900,000 in the
   listed workspace, 100,000 in another, interleaved in time; rows generated inside the
   database): first page,
   a page deep in via its cursor, and a page filtered by a rare state; median of 20 round
   trips each, plus the same ``store.jobs.list_jobs`` call timed in-process (server-side).
   Target < 50 ms.

PostgreSQL runs with its defaults for durability (fsync on, synchronous_commit on); SQLite
with the server's own settings (WAL, synchronous=NORMAL). ``--quick``: 5,000 jobs for the
claim benchmark and 100,000 rows for the list benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "tests", ROOT / "controller", ROOT / "server", ROOT / "sdk"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import httpx2 as httpx
import sqlalchemy as sa
from atomiverse_server import db

TARGET_BATCH_S = 1.0
TARGET_JOBS_PER_S = 1000.0
TARGET_LIST_MS = 50.0

SERVER_ENV = {
    "ATOMIVERSE_MANAGED_ENABLED": "true",
    "ATOMIVERSE_MANAGED_RATE_PER_CORE_HOUR": "0",
    "ATOMIVERSE_BATCH_RATE_PER_MINUTE": "100000",
    "ATOMIVERSE_JOB_RATE_PER_MINUTE": "10000000",
    "ATOMIVERSE_LEASE_SECONDS": "600",
}


def payload(i: int) -> dict[str, Any]:
    return {"job_type": "single_point_energy", "name": f"w{i}", "use_cache": False,
            "atoms": {"numbers": [8, 1, 1],
                      "positions": [[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0],
                                    [-0.2400, 0.9266, 1e-6 * i]]},
            "level_of_theory": {"method": "gfn2-xtb"}}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


class ServerProcess:
    def __init__(self, url: str, home: Path) -> None:
        self.database_url = url
        port = free_port()
        env = {**os.environ, "ATOMIVERSE_HOME": str(home), **SERVER_ENV}
        env.pop("ATOMIVERSE_BASE_URL", None)
        env["PYTHONPATH"] = os.pathsep.join(str(ROOT / d) for d in ("sdk", "server",
                                                                    "controller"))
        self.log = open(home / f"server-{port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "atomiverse_server", "--port",
                                      str(port), "--home", str(home), "--database-url", url,
                                      "--log-level", "warning"], stdout=self.log,
                                     stderr=self.log, env=env)
        self.base = f"http://127.0.0.1:{port}"
        wait_http(f"{self.base}/healthz", proc=self.proc)

    def admin(self, *args: str) -> dict[str, Any]:
        out = subprocess.run([sys.executable, "-m", "atomiverse_server.admin", "--database-url",
                              self.database_url, *args], check=True, capture_output=True,
                             text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                 str(ROOT / d) for d in ("sdk", "server", "controller"))})
        return json.loads(out.stdout)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def register(base: str, key: str, name: str, slots: int = 4) -> str:
    r = httpx.post(f"{base}/api/v1/controllers/register",
                   headers={"Authorization": f"Bearer {key}"},
                   json={"name": name, "slots": slots, "engines": {"instant": "0.0-fake"},
                         "capacity": 10_000_000, "hostname": "bench"}, timeout=60)
    r.raise_for_status()
    return r.json()["token"]


# ----- 1. batch ---------------------------------------------------------------------------------
def bench_batch(url: str, home: Path, repeats: int = 5) -> dict[str, Any]:
    srv = ServerProcess(url, home)
    try:
        key = srv.admin("create-workspace", "batch", "--balance", "1000000")["api_key"]
        register(srv.base, key, "node")
        times = []
        with httpx.Client(base_url=srv.base, headers={"Authorization": f"Bearer {key}"},
                          timeout=120) as c:
            for r in range(repeats + 1):  # the first one warms the server up, uncounted
                body = {"jobs": [{"job": payload(r * 1000 + i), "compute_target": "node"}
                                 for i in range(1000)]}
                t = time.perf_counter()
                resp = c.post("/api/v1/jobs/submit-batch", json=body)
                dt = time.perf_counter() - t
                resp.raise_for_status()
                assert resp.json()["submitted"] == 1000, resp.text[:300]
                if r:
                    times.append(dt)
        return {"batch_1000_median_s": statistics.median(times), "batch_1000_max_s": max(times)}
    finally:
        srv.stop()


# ----- 2. claim + complete ------------------------------------------------------------------------
def bench_claim(url: str, home: Path, n_jobs: int, n_controllers: int = 50,
                per_claim: int = 20) -> dict[str, Any]:
    from atomiverse_controller.engines.instant import InstantEngine

    srv = ServerProcess(url, home)
    try:
        key = srv.admin("create-workspace", "claim", "--balance", "1000000")["api_key"]
        tokens = [register(srv.base, key, f"c{i:02d}") for i in range(n_controllers)]
        engine = db.make_engine(url)
        try:
            with db.write_tx(engine) as conn:  # the site admin's managed pool: all 50
                conn.execute(db.controllers.update().values(serves_managed=True))
        finally:
            engine.dispose()
        with httpx.Client(base_url=srv.base, headers={"Authorization": f"Bearer {key}"},
                          timeout=120) as c:
            for b in range(0, n_jobs, 1000):
                body = {"jobs": [{"job": payload(i), "compute_target": "managed"}
                                 for i in range(b, min(b + 1000, n_jobs))]}
                resp = c.post("/api/v1/jobs/submit-batch", json=body)
                resp.raise_for_status()
                assert resp.json()["failed"] == 0, resp.text[:300]
        instant = InstantEngine()
        done: list[str] = []
        requests = {"claim": 0, "complete": 0}

        async def controller(token: str) -> None:
            async with httpx.AsyncClient(base_url=srv.base, timeout=120,
                                         headers={"Authorization": f"Bearer {token}"}) as c:
                while len(done) < n_jobs:
                    r = await c.post("/api/v1/controllers/claim",
                                     json={"max_jobs": per_claim, "wait_seconds": 0})
                    r.raise_for_status()
                    requests["claim"] += 1
                    jobs = r.json()["jobs"]
                    if not jobs:
                        await asyncio.sleep(0.05)
                        continue
                    reports = [{"job_id": j["job_id"], "lease_id": j["lease_id"], "ok": True,
                                "result": instant.compute(j["job"])} for j in jobs]
                    r = await c.post("/api/v1/controllers/complete", json={"reports": reports})
                    r.raise_for_status()
                    requests["complete"] += 1
                    out = r.json()
                    assert not out["rejected"], out["rejected"][:3]
                    done.extend(out["accepted"])

        async def run_all() -> float:
            t = time.perf_counter()
            await asyncio.gather(*(controller(tok) for tok in tokens))
            return time.perf_counter() - t

        elapsed = asyncio.run(run_all())
        assert len(done) == n_jobs and len(set(done)) == n_jobs, "a job was done twice or lost"
        return {"claim_complete_jobs": n_jobs, "claim_complete_s": elapsed,
                "claim_complete_jobs_per_s": n_jobs / elapsed,
                "claim_requests": requests["claim"], "complete_requests": requests["complete"]}
    finally:
        srv.stop()


# ----- 3. list ------------------------------------------------------------------------------------
def fill_jobs(url: str, main_ws: str, other_ws: str, n: int) -> float:
    """Insert ``n`` finished jobs, generated inside the database: nine in ten in ``main_ws``,
    the tenth in ``other_ws``, interleaved in time as several workspaces' jobs arrive; about
    one in a thousand failed. Returns seconds."""
    engine = db.make_engine(url)
    params = {"ws": main_ws, "other": other_ws, "n": n, "payload": json.dumps(payload(0)),
              "result": json.dumps({"energy_hartree": -5.07, "core_seconds": 0.01}),
              "preview": json.dumps({"formula": "H2O", "n_atoms": 3})}
    columns = ("INSERT INTO jobs (id, workspace_id, name, job_type, state, payload, "
               "compute_target, attempts, walltime_seconds, created_at, finished_at, result, "
               "billed_core_seconds, preview) ")
    t = time.perf_counter()
    try:
        with db.write_tx(engine) as conn:
            if db.is_postgres(engine):
                conn.execute(sa.text(
                    columns + "SELECT md5(g::text), CASE WHEN g % 10 = 0 THEN :other ELSE :ws "
                    "END, 'job-' || g, 'single_point_energy', "
                    "CASE WHEN g % 997 = 0 THEN 'failed' ELSE 'done' END, "
                    "CAST(:payload AS json), 'node', 1, 86400, 1.7e9 + g, 1.7e9 + g, "
                    "CAST(:result AS json), 0.01, CAST(:preview AS json) "
                    "FROM generate_series(1, :n) AS g"), params)
            else:
                conn.execute(sa.text(
                    "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g "
                    "WHERE x < :n) " + columns +
                    "SELECT lower(hex(randomblob(16))), CASE WHEN x % 10 = 0 THEN :other "
                    "ELSE :ws END, 'job-' || x, 'single_point_energy', "
                    "CASE WHEN x % 997 = 0 THEN 'failed' ELSE 'done' END, :payload, "
                    "'node', 1, 86400, 1.7e9 + x, 1.7e9 + x, :result, 0.01, :preview "
                    "FROM g"), params)
        with engine.connect() as conn:  # what autovacuum / the planner would have
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
    finally:
        engine.dispose()
    return time.perf_counter() - t


def bench_list(url: str, home: Path, n_rows: int, repeats: int = 20) -> dict[str, Any]:
    from atomiverse_server.store import jobs as job_store

    srv = ServerProcess(url, home)  # creates the schema
    try:
        key = srv.admin("create-workspace", "big", "--balance", "0")["api_key"]
        other_key = srv.admin("create-workspace", "other", "--balance", "0")["api_key"]
        engine = db.make_engine(url)
        with db.read_tx(engine) as conn:
            ids = dict(conn.execute(sa.select(db.workspaces.c.name, db.workspaces.c.id)).all())
        fill_s = fill_jobs(url, ids["big"], ids["other"], n_rows)
        with db.read_tx(engine) as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(db.jobs)).scalar_one()
            seqs = conn.execute(sa.select(sa.func.min(db.jobs.c.seq), sa.func.max(db.jobs.c.seq))
                                .where(db.jobs.c.workspace_id == ids["big"])).one()
            deep_cursor = job_store.encode_cursor(conn, workspace_id=ids["big"],
                                                  seq=(seqs[0] + seqs[1]) // 2)
        cases = {"first page": ("big", {}), "deep page (cursor)": ("big", {"cursor": deep_cursor}),
                 "state=failed": ("big", {"state": "failed"}),
                 "other workspace (10%)": ("other", {})}
        keys = {"big": key, "other": other_key}
        out: dict[str, Any] = {"list_rows_in_db": total, "list_fill_s": fill_s}
        with httpx.Client(base_url=srv.base, timeout=60) as c:
            for label, (ws, params) in cases.items():
                http, store = [], []
                for r in range(repeats + 1):
                    t = time.perf_counter()
                    resp = c.get("/api/v1/jobs", params={"limit": 50, **params},
                                 headers={"Authorization": f"Bearer {keys[ws]}"})
                    dt = time.perf_counter() - t
                    resp.raise_for_status()
                    assert len(resp.json()["jobs"]) == 50
                    t = time.perf_counter()
                    with db.read_tx(engine) as conn:
                        page = job_store.list_jobs(conn, workspace_id=ids[ws], limit=50,
                                                   **params)
                    ds = time.perf_counter() - t
                    assert len(page["jobs"]) == 50
                    if r:  # the first of each is a warm-up
                        http.append(dt)
                        store.append(ds)
                out[f"list {label} http_ms"] = statistics.median(http) * 1000
                out[f"list {label} store_ms"] = statistics.median(store) * 1000
        engine.dispose()
        return out
    finally:
        srv.stop()


# ----- driver -------------------------------------------------------------------------------------
def run_backend(name: str, quick: bool, cluster: Any) -> dict[str, Any]:
    n_claim = 5_000 if quick else 20_000
    n_list = 100_000 if quick else 1_000_000
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix=f"atomiverse-bench-{name}-") as tmp:
        home = Path(tmp)

        def new_url(label: str) -> str:
            if name == "sqlite":
                return f"sqlite:///{home / label}.db"
            return cluster.new_database(f"bench_{label}")

        print(f"[{name}] batch of 1000 ...", flush=True)
        res |= bench_batch(new_url("batch"), home)
        print(f"[{name}] claim + complete, {n_claim} jobs, 50 controllers ...", flush=True)
        res |= bench_claim(new_url("claim"), home, n_claim)
        print(f"[{name}] list with {n_list:,} jobs (filling) ...", flush=True)
        res |= bench_list(new_url("list"), home, n_list)
    return res


def report(results: dict[str, dict[str, Any]]) -> None:
    names = list(results)

    def row(label: str, key: str, fmt: str, target: str, ok) -> None:  # type: ignore[no-untyped-def]
        cells = []
        for n in names:
            v = results[n].get(key)
            cells.append("-" if v is None else (fmt.format(v) + (" ok" if ok(v) else " MISS")))
        print(f"{label:<38}" + "".join(f"{c:>18}" for c in cells) + f"   {target}")

    print()
    print(f"{'':<38}" + "".join(f"{n:>18}" for n in names) + "   target")
    row("1000-entry batch, median", "batch_1000_median_s", "{:.3f} s", "< 1 s",
        lambda v: v < TARGET_BATCH_S)
    row("1000-entry batch, max", "batch_1000_max_s", "{:.3f} s", "< 1 s",
        lambda v: v < TARGET_BATCH_S)
    row("claim+complete, 50 controllers", "claim_complete_jobs_per_s", "{:.0f} jobs/s",
        ">= 1000 jobs/s", lambda v: v >= TARGET_JOBS_PER_S)
    for label in ("first page", "deep page (cursor)", "state=failed", "other workspace (10%)"):
        for kind in ("http", "store"):
            row(f"list {label}, {kind}", f"list {label} {kind}_ms", "{:.1f} ms", "< 50 ms",
                lambda v: v < TARGET_LIST_MS)
    rows = {n: results[n].get("list_rows_in_db") for n in names}
    print(f"(list: {rows} jobs in the database; machine: {os.cpu_count()} CPUs, "
          f"{platform.python_version()})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "db_bench.json")
    args = ap.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    results: dict[str, dict[str, Any]] = {}
    cluster = None
    try:
        if "postgresql" in backends:
            import pg

            cluster = pg.start_cluster(durable=True)
        for b in backends:
            results[b] = run_backend(b, args.quick, cluster)
    finally:
        if cluster is not None:
            cluster.stop()
    report(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"quick": args.quick, "results": results}, indent=2))
    print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
