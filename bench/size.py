"""The platform with a big database (issue 30, item 2): 1,000,000 jobs in 10 workspaces.

    python bench/size.py [--backends sqlite,postgresql] [--jobs 1000000] [--json PATH]

For each database (SQLite as the server configures it; PostgreSQL a throwaway cluster from
``tests/pg.py`` with its durable defaults) two databases are measured the same way: a small one
(1,000 finished jobs) and a big one (``--jobs`` finished jobs). Rows are bulk-loaded inside the
database (``INSERT ... SELECT`` over a generated series, one statement), not through the API,
with a real job's payload, an ``instant`` engine result (water: energy, gradient, charges,
dipole), a preview and a distinct cache key each; 10 workspaces, jobs interleaved in time;
about 97% done, 2% failed, 1% cancelled. Then, on each, in this process through the server's own
store functions (server-side time, no HTTP):

* **list**: the first page of 50 of one workspace, and a page filtered by state (failed),
  median of 20;
* **batch**: 1,000 jobs stored (``store.jobs.insert_jobs`` in one write transaction, what
  ``submit-batch`` commits), median of 3;
* **cache lookup**: ``find_cached`` of 100 keys of done jobs, median of 20; then again on
  both databases alternately (6 pairs, both orders), this process's CPU time and wall time, the ratio the
  median of the pairs';
* **claim**: ``claim_jobs`` of 64 jobs from 10,000 pending managed jobs, median of 20; then
  on both databases alternately as the cache lookup, each claim committed and taking jobs no
  claim touched before, timed up to its commit (the fsync, the same at any size, left out);
* **bytes per job**: the database's size (SQLite: pages in use; PostgreSQL:
  ``pg_database_size``) after the load minus before, divided by the jobs loaded.

After the load and before any timing the database is settled (PostgreSQL: ``VACUUM
(ANALYZE)`` and ``CHECKPOINT``, else autovacuum visits the freshly loaded table during the big
database's timings; SQLite: a WAL checkpoint). The big/small ratio of each timing is printed (target: within 1.2 for the cache lookup and the
claim), and ``EXPLAIN`` of the list, cache and claim queries on the big database, so an index
that stopped being used shows.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import sqlalchemy as sa
from atomiverse_server import db, security
from atomiverse_server.store import controllers as controller_store
from atomiverse_server.store import jobs as job_store
from atomiverse_server.store import resultcache
from atomiverse_server.store import workspaces as workspace_store
from atomiverse_server.store.claimsql import claim_query
from sqlcapture import sent_statements

from bench.db_bench import payload

N_WORKSPACES = 10
SMALL = 1_000
# Enough pending jobs that every timed claim takes 64 jobs no claim has touched: the single
# timing's 21 claims and the paired timing's 6 x 21 on each database (9,408 jobs).
PENDING = 10_000


def _result() -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "controller"))
    from atomiverse_controller.engines.instant import InstantEngine

    return InstantEngine().compute(payload(0))


def _load(engine: sa.Engine, ws_ids: list[str], n: int, first: int) -> None:
    """``n`` finished jobs, numbered from ``first``, spread over the workspaces in turn."""
    params = {"n": n, "first": first, "payload": json.dumps(payload(0)),
              "result": json.dumps(_result()),
              "preview": json.dumps({"formula": "H2O", "n_atoms": 3})}
    ws_case = "CASE " + " ".join(f"WHEN g % {len(ws_ids)} = {i} THEN '{w}'"
                                 for i, w in enumerate(ws_ids)) + " END"
    cols = ("INSERT INTO jobs (id, workspace_id, name, job_type, state, payload, "
            "compute_target, attempts, walltime_seconds, created_at, started_at, finished_at, "
            "result, billed_core_seconds, preview, cache_key, claim_rank) ")
    state = ("CASE WHEN g % 97 < 2 THEN 'failed' WHEN g % 97 = 2 THEN 'cancelled' "
             "ELSE 'done' END")
    if db.is_postgres(engine):
        sql = (cols + f"SELECT substr(md5(g::text), 1, 22), {ws_case}, 'job-' || g, "
               f"'single_point_energy', {state}, CAST(:payload AS json), 'managed', 1, 86400, "
               "1.7e9 + g, 1.7e9 + g, 1.7e9 + g + 1, "
               f"CASE WHEN {state} = 'done' THEN CAST(:result AS json) END, 0.0, "
               "CAST(:preview AS json), md5(g::text) || md5('k' || g), 0 "
               "FROM generate_series(:first, :first + :n - 1) AS g")
    else:
        sql = ("WITH RECURSIVE s(g) AS (SELECT :first UNION ALL SELECT g + 1 FROM s "
               "WHERE g < :first + :n - 1) " + cols +
               f"SELECT substr(lower(hex(randomblob(11))), 1, 22), {ws_case}, 'job-' || g, "
               f"'single_point_energy', {state}, :payload, 'managed', 1, 86400, "
               "1.7e9 + g, 1.7e9 + g, 1.7e9 + g + 1, "
               f"CASE WHEN {state} = 'done' THEN :result END, 0.0, :preview, "
               "lower(hex(randomblob(32))), 0 FROM s")
    with db.write_tx(engine) as conn:
        conn.execute(sa.text(sql), params)


def _size(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        if db.is_postgres(engine):
            return conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar()
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
        free = conn.exec_driver_sql("PRAGMA freelist_count").scalar()
        return (pages - free) * conn.exec_driver_sql("PRAGMA page_size").scalar()


def _median_ms(fn: Callable[[], Any], repeats: int,
               clock: Callable[[], float] = time.perf_counter) -> float:
    fn()  # warm: statement caches, pages
    times = []
    for _ in range(repeats):
        t = clock()
        fn()
        times.append(clock() - t)
    return 1000 * statistics.median(times)


def _analyze(engine: sa.Engine) -> None:
    """Table statistics as a running server's database has them: PostgreSQL's autovacuum
    analyzes a loaded table by itself; nothing runs ANALYZE on the server's SQLite file, so
    its plans are the planner's own (with statistics, SQLite hid a plan that walked a
    workspace's every job to read a few by id)."""
    if db.is_postgres(engine):
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()


def _settle(engine: sa.Engine) -> None:
    """Leave nothing of the bulk load running behind the timings: on PostgreSQL the load
    leaves autovacuum a whole table to visit (setting hint bits and the visibility map) and
    a checkpoint of its WAL, which ran during the big database's timings and not the small
    one's; SQLite's WAL is folded back into the database file."""
    if db.is_postgres(engine):
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM (ANALYZE) jobs")
            conn.exec_driver_sql("CHECKPOINT")
    else:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def measure(url: str, n: int
            ) -> tuple[dict[str, Any], dict[str, Callable[[], None]], sa.Engine]:
    """The figures of one database, and its cache lookup and claim for the paired timing
    after."""
    engine = db.make_engine(url)
    try:
        db.create_schema(engine)
        with db.write_tx(engine) as conn:
            ws_ids = [workspace_store.create_workspace(conn, name=f"ws{i}", balance=1e9).id
                      for i in range(N_WORKSPACES)]
            ctl, _ = controller_store.register_controller(
                conn, workspace_id=ws_ids[0], name="node", slots=64, cores_per_job=1,
                capacity=10**9, engines={"instant": "0.0-fake"}, hostname="bench",
                serves_managed=True)
        _analyze(engine)
        size0 = _size(engine)
        t = time.perf_counter()
        _load(engine, ws_ids, n, first=1)
        load_s = time.perf_counter() - t
        _analyze(engine)
        size1 = _size(engine)
        _settle(engine)
        out: dict[str, Any] = {"jobs": n, "load_s": load_s,
                               "bytes_per_job": (size1 - size0) / n, "db_bytes": size1}
        ws = ws_ids[3]
        out["list_ms"] = _median_ms(lambda: _list(engine, ws, None), 20)
        out["list_failed_ms"] = _median_ms(lambda: _list(engine, ws, "failed"), 20)
        with engine.connect() as conn:
            keys = set(conn.execute(sa.select(db.jobs.c.cache_key).where(
                db.jobs.c.workspace_id == ws, db.jobs.c.state == "done").limit(100)).scalars())
        out["cache_lookup_ms"] = _median_ms(lambda: _cached(engine, ws, keys), 20)
        with engine.connect() as conn:
            ids = list(conn.execute(sa.select(db.jobs.c.id).where(
                db.jobs.c.workspace_id == ws).limit(50)).scalars())
        out["watch_50_ms"] = _median_ms(lambda: _watched(engine, ws, ids), 20)
        out["batch_1000_ms"] = _median_ms(lambda: _batch(engine, ws, ctl.id), 3)
        with db.write_tx(engine) as conn:
            job_store.insert_jobs(conn, [_row(ws, i, "managed") for i in range(PENDING)])
        _analyze(engine)
        out["claim_64_ms"] = _median_ms(lambda: _claim(engine, ctl), 20)
        out["explain"] = _explain(engine, ws, keys, ctl)
        timed = {"cache_lookup": lambda: _cached(engine, ws, keys),
                 "claim_64": lambda: _claim_fresh(engine, ctl)}
        return out, timed, engine
    except BaseException:
        engine.dispose()
        raise


def paired(small: Callable[[], Any], big: Callable[[], Any], pairs: int = 6,
           self_timed: bool = False) -> dict[str, float]:
    """One operation on both databases measured the same way, alternately (small first,
    then big first, ...), each a median of 20 after a warm call; the figure is the median
    over the pairs, and the ratio the median of the pairs' ratios. ``self_timed``: the
    operation returns its own (CPU, wall) seconds, both taken from the same calls (a claim
    uses up its jobs); else CPU and wall are timed here in separate passes."""
    # This process's CPU time (on SQLite it holds the database engine too, so it is the
    # whole cost and barely moved by other load on the machine), and wall time (on
    # PostgreSQL the server's work shows only there).
    series: dict[str, tuple[list[float], list[float], list[float]]] = {
        "cpu": ([], [], []), "wall": ([], [], [])}
    for name in (("both",) if self_timed else ("cpu", "wall")):
        for i in range(pairs):
            order = (small, big) if i % 2 == 0 else (big, small)
            got = {fn: _medians(fn, 20, name) for fn in order}
            for clock in got[small]:
                s_ms, b_ms, ratios = series[clock]
                s_ms.append(got[small][clock])
                b_ms.append(got[big][clock])
                ratios.append(got[big][clock] / got[small][clock])
    out: dict[str, float] = {}
    for clock, (s_ms, b_ms, ratios) in series.items():
        out |= {f"{clock}_small_ms": statistics.median(s_ms),
                f"{clock}_big_ms": statistics.median(b_ms),
                f"{clock}_ratio": statistics.median(ratios)}
    return out


def _medians(fn: Callable[[], Any], repeats: int, name: str) -> dict[str, float]:
    """Median ms of ``repeats`` calls of ``fn`` after a warm one: for ``name`` "cpu" or
    "wall" timed here; for "both", the (CPU, wall) seconds ``fn`` returns."""
    if name != "both":
        clock = time.process_time if name == "cpu" else time.perf_counter
        return {name: _median_ms(fn, repeats, clock)}
    fn()
    samples = [fn() for _ in range(repeats)]
    return {"cpu": 1000 * statistics.median(c for c, _ in samples),
            "wall": 1000 * statistics.median(w for _, w in samples)}


def _list(engine: sa.Engine, ws: str, state: str | None) -> None:
    with db.read_tx(engine) as conn:
        page = job_store.list_jobs(conn, workspace_id=ws, limit=50, state=state)
    assert page["jobs"]


def _cached(engine: sa.Engine, ws: str, keys: set[str]) -> None:
    with db.read_tx(engine) as conn:
        found = resultcache.find_cached(conn, workspace_id=ws, cache_keys=keys)
    assert len(found) == len(keys)


def _watched(engine: sa.Engine, ws: str, ids: list[str]) -> None:
    """What a watch over 50 jobs reads: their versions, then the records of those changed
    (all of them here), and what ``/jobs/wait`` reads (states with results)."""
    with db.read_tx(engine) as conn:
        versions = job_store.job_versions(conn, workspace_id=ws, job_ids=ids)
        records = job_store.get_jobs(conn, workspace_id=ws, job_ids=list(versions))
        states = job_store.job_states(conn, workspace_id=ws, job_ids=ids, include_result=True)
    assert len(records) == len(states) == len(ids)


_seq = iter(range(10**9))


def _row(ws: str, i: int, target: str, controller_id: str | None = None) -> dict[str, Any]:
    t = time.time()
    return {"id": security.new_id(), "workspace_id": ws, "name": f"b{i}",
            "job_type": "single_point_energy", "state": "pending",
            "payload": payload(next(_seq)), "compute_target": target, "attempts": 0,
            "controller_id": controller_id,
            "walltime_seconds": 86400.0, "created_at": t, "billed_core_seconds": 0.0,
            "cache_key": security.new_id() * 2, "claim_rank": i,
            "preview": {"formula": "H2O", "n_atoms": 3}}


def _batch(engine: sa.Engine, ws: str, controller_id: str) -> None:
    rows = [_row(ws, i, "node", controller_id) for i in range(1000)]
    with db.write_tx(engine) as conn:
        job_store.insert_jobs(conn, rows)


def _claim_fresh(engine: sa.Engine, ctl: Any) -> tuple[float, float]:
    """A claim of 64 jobs, committed, as a server makes it: the (CPU, wall) seconds of its
    transaction up to the commit (an fsync, the same at any size, left out). Each claim takes
    jobs no claim touched before. (Until 1f3ab18 each timing claimed the same 64 jobs and
    rolled back: by the last timing every one of them had about 250 dead row versions, a
    pile no queue makes; a VACUUM of the big PostgreSQL database alone took its ratio from
    1.19 to 0.97.)"""
    with engine.connect().execution_options(write=True) as conn:
        c0, w0 = time.process_time(), time.perf_counter()
        tx = conn.begin()
        got = controller_store.claim_jobs(conn, controller=ctl, max_jobs=64, lease_seconds=600)
        c1, w1 = time.process_time(), time.perf_counter()
        tx.commit()
    assert len(got) == 64
    return c1 - c0, w1 - w0


def _claim(engine: sa.Engine, ctl: Any) -> None:
    with db.write_tx(engine) as conn:
        got = controller_store.claim_jobs(conn, controller=ctl, max_jobs=64, lease_seconds=600)
    assert len(got) == 64


def _explain(engine: sa.Engine, ws: str, keys: set[str], ctl: Any) -> dict[str, str]:
    """The plans of the hot queries, as the database chose them on this data (the cache
    lookup as ``find_cached`` sends it)."""
    statements = {
        "list": job_store.page_query(sa.select(*job_store.SUMMARY_COLUMNS), False, False,
                                      False),
        "claim": claim_query(False, ctl.serves_managed, db.is_postgres(engine)).params(
            ctl=ctl.id, max_jobs=64),
    }
    prefix = "EXPLAIN " if db.is_postgres(engine) else "EXPLAIN QUERY PLAN "
    out = {}
    with engine.connect() as conn:
        for name, stmt in statements.items():
            sql = str(stmt.params(ws=ws, lim=51).compile(
                engine, compile_kwargs={"literal_binds": True}))
            rows = conn.exec_driver_sql(prefix + sql).all()
            out[name] = " | ".join(str(r[-1]) for r in rows)
        statement, params = _sent(engine, lambda: _cached(engine, ws, set(sorted(keys)[:3])))
        rows = conn.exec_driver_sql(prefix + statement, params).all()
        out["cache"] = " | ".join(str(r[-1]) for r in rows)
    return out


def _sent(engine: sa.Engine, fn: Callable[[], None]) -> tuple[str, Any]:
    """The first query ``fn`` sends, with its parameters."""
    return next(s for s in sent_statements(engine, fn)
                if s[0].lstrip().upper().startswith("SELECT"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="sqlite,postgresql")
    p.add_argument("--jobs", type=int, default=1_000_000)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the cluster on `timeout`
    results: dict[str, Any] = {}
    for backend in args.backends.split(","):
        cluster = None
        with tempfile.TemporaryDirectory(prefix="atomiverse-size-") as tmp:
            if backend == "postgresql":
                from pg import start_cluster

                cluster = start_cluster(durable=True)
            runs, lookups, engines = {}, {}, []
            try:
                for label, n in (("small", SMALL), ("big", args.jobs)):
                    url = cluster.new_database(f"size_{label}") if cluster \
                        else f"sqlite:///{Path(tmp) / label}.db"
                    print(f"[{backend}] {label}: loading {n:,} jobs ...", flush=True)
                    runs[label], lookups[label], engine = measure(url, n)
                    engines.append(engine)
                for name in ("cache_lookup", "claim_64"):
                    runs[f"paired_{name}"] = paired(lookups["small"][name],
                                                    lookups["big"][name],
                                                    self_timed=name == "claim_64")
            finally:
                for engine in engines:
                    engine.dispose()
                if cluster:
                    cluster.stop()
        results[backend] = runs
        _report(backend, runs)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def _report(backend: str, runs: dict[str, dict[str, Any]]) -> None:
    small, big = runs["small"], runs["big"]
    print(f"\n{backend}: {big['jobs']:,} jobs loaded in {big['load_s']:.0f} s, "
          f"{big['bytes_per_job']:.0f} bytes per job, database {big['db_bytes'] / 2**20:.0f} MiB")
    print(f"{'':18s} {'small':>9s} {'big':>9s} {'big/small':>9s}")
    for key in ("list_ms", "list_failed_ms", "batch_1000_ms", "cache_lookup_ms", "watch_50_ms",
                "claim_64_ms"):
        print(f"{key:18s} {small[key]:9.2f} {big[key]:9.2f} {big[key] / small[key]:9.2f}")
    for what in ("cache_lookup", "claim_64"):
        pc = runs[f"paired_{what}"]
        for name in ("cpu", "wall"):
            print(f"{what.split('_')[0] + ', paired ' + name:18s} "
                  f"{pc[name + '_small_ms']:9.2f} {pc[name + '_big_ms']:9.2f} "
                  f"{pc[name + '_ratio']:9.2f}  (alternating, median of the pairs)")
    for name, plan in big["explain"].items():
        print(f"  plan {name}: {plan}")


if __name__ == "__main__":
    sys.exit(main())
