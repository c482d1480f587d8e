"""list_jobs page latency at the start, middle and end of a 100,000-job history.

Keyset paging means a page deep in the history costs the same as the first one. Jobs are
inserted straight into the database (that part is set-up, not measured); pages are read
through a real server process over HTTP with the SDK.

    python bench/list_jobs.py [--jobs 100000] [--database-url URL] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for sub in ("sdk", "server", "controller"):
    sys.path.insert(0, str(ROOT / sub))


def fill(database_url: str, n: int) -> tuple[str, dict[str, str]]:
    """Create a workspace with n jobs; return its key and cursors into the middle of its jobs
    and near the oldest."""
    import atomiverse
    import sqlalchemy as sa
    from atomiverse.levels import GFN2_XTB
    from atomiverse_server import db, security
    from atomiverse_server.store import workspaces
    from atomiverse_server.store.cursors import encode_cursor

    engine = db.make_engine(database_url)
    db.create_schema(engine)
    with db.write_tx(engine) as conn:
        ws = workspaces.create_workspace(conn, name=f"bench-{time.time_ns()}")
        key = workspaces.issue_api_key(conn, workspace_id=ws.id)
    job = atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles("CCO"),
                                       level_of_theory=GFN2_XTB)
    payload, preview = job.model_dump(mode="json"), job.atoms.preview()
    t0 = time.time()
    for start in range(0, n, 10_000):
        rows = [dict(id=security.new_id(), workspace_id=ws.id, name=f"job-{i}",
                     job_type="single_point_energy", state="done", payload=payload,
                     compute_target="bench", attempts=1, walltime_seconds=3600.0,
                     created_at=t0 + i * 1e-3, billed_core_seconds=0.0, preview=preview)
                for i in range(start, min(start + 10_000, n))]
        with db.write_tx(engine) as conn:
            conn.execute(db.jobs.insert(), rows)
    with db.read_tx(engine) as conn:
        seqs = [r[0] for r in conn.execute(sa.select(db.jobs.c.seq).where(
            db.jobs.c.workspace_id == ws.id).order_by(db.jobs.c.seq))]
        # Cursors are opaque (encrypted per workspace): made here, where the database is.
        cursors = {"middle": encode_cursor(conn, workspace_id=ws.id, seq=seqs[len(seqs) // 2]),
                   "end": encode_cursor(conn, workspace_id=ws.id, seq=seqs[60])}
    engine.dispose()
    return key, cursors


def page_latency_ms(client, cursor: str | None, repeats: int = 30) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        page = client.list_jobs(limit=50, cursor=cursor)
        times.append((time.perf_counter() - t) * 1000)
        assert len(page.jobs) == 50
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=100_000)
    p.add_argument("--database-url")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "list_jobs.json")
    args = p.parse_args()
    import atomiverse

    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        t = time.perf_counter()
        key, cursors = fill(url, args.jobs)
        fill_s = time.perf_counter() - t
        port = 18000 + os.getpid() % 1000
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / s) for s in
                                                           ("sdk", "server", "controller"))}
        server = subprocess.Popen([sys.executable, "-m", "atomiverse_server", "--port", str(port),
                                   "--home", tmp, "--database-url", url, "--log-level",
                                   "warning"], env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            client = atomiverse.Client(api_key=key, base_url=base)
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.account()
                    break
                except atomiverse.APIConnectionError:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
            positions = {"start": None, **cursors}
            results = {name: page_latency_ms(client, cursor) for name, cursor in
                       positions.items()}
            client.close()
        finally:
            server.terminate()
            server.wait()
    ratio = results["end"] / results["start"]
    print(f"list_jobs, 50 per page, {args.jobs:,} jobs in one workspace "
          f"({url.split(':')[0]}; filled in {fill_s:.1f} s), median of 30 over HTTP:")
    for name, ms in results.items():
        print(f"  {name:<7} {ms:7.2f} ms")
    print(f"  end/start ratio {ratio:.2f} (keyset paging: ~1 expected)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"jobs": args.jobs, "page_ms": results,
                                     "end_over_start": ratio}, indent=2))


if __name__ == "__main__":
    main()
