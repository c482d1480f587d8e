"""The storage layer on both databases it supports: SQLite (the default) and a real
PostgreSQL server (tests/pg.py). Migrations, exclusive claims under concurrency, the
lease-expiry sweep, keyset listing, the indexes behind the hot queries, and several server
processes on one database behaving as one server."""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import sqlalchemy as sa
from atomiverse import Atoms, GeometryOptimization, SinglePointEnergy
from atomiverse.levels import GFN2_XTB
from atomiverse_core import retry
from atomiverse_server import db
from atomiverse_server.settings import Settings
from atomiverse_server.sqlitewal import use_wal
from atomiverse_server.store import controllers as controller_store
from atomiverse_server.store import jobs as job_store
from atomiverse_server.store import resultcache
from atomiverse_server.store import workspaces as workspace_store
from atomiverse_server.submission import prepare_entries, submit_entries
from conftest import PY, start_server, stop_process
from pg import db_url, pg_cluster  # noqa: F401  (fixtures)
from sqlcapture import sent_statements


@pytest.fixture
def engine(db_url: str):  # type: ignore[no-untyped-def]
    eng = db.make_engine(db_url)
    db.migrate(eng)
    yield eng
    eng.dispose()


def _setup(engine, *, n_controllers: int = 1, managed: bool = False):  # type: ignore[no-untyped-def]
    with db.write_tx(engine) as conn:
        ws = workspace_store.create_workspace(conn, name="ws", balance=100.0)
        ctls = [controller_store.register_controller(
            conn, workspace_id=ws.id, name=f"c{i}", slots=4, cores_per_job=1, capacity=10**6,
            engines={"instant": "0"}, hostname="h", serves_managed=managed)[0]
            for i in range(n_controllers)]
    return ws, ctls


def _rows(ws_id: str, n: int, *, controller: Any = None, start: int = 0,
          name: str = "job") -> list[dict[str, Any]]:
    t = time.time()
    return [{"id": f"j{start + i:07d}", "workspace_id": ws_id, "name": f"{name}-{start + i}",
             "job_type": "single_point_energy", "state": "pending", "payload": {"i": start + i},
             "compute_target": controller.name if controller else "managed",
             "controller_id": controller.id if controller else None, "attempts": 0,
             "walltime_seconds": 60.0, "created_at": t, "billed_core_seconds": 0.0}
            for i in range(n)]


def _insert(engine, rows) -> None:  # type: ignore[no-untyped-def]
    with db.write_tx(engine) as conn:
        job_store.insert_jobs(conn, rows)


def _claim(engine, ctl, n: int, lease: float = 60.0) -> list[dict]:  # type: ignore[no-untyped-def]
    with db.write_tx(engine) as conn:
        return controller_store.claim_jobs(conn, controller=ctl, max_jobs=n, lease_seconds=lease)


def _result(core_seconds: float) -> dict[str, Any]:
    """The smallest result the server accepts for a single point (it checks each against the
    job type's model); these jobs have no atoms, so no gradient rows."""
    return {"energy_hartree": -1.0, "gradient_hartree_per_bohr": [], "engine": "none",
            "engine_version": "0", "wall_time_seconds": core_seconds,
            "core_seconds": core_seconds}


def _complete(engine, ctl, claimed: list[dict], ok: bool = True, **extra):  # type: ignore[no-untyped-def]
    reports = [{"job_id": c["job_id"], "lease_id": c["lease_id"], "ok": ok,
                "result": _result(1.0) if ok else None, **extra} for c in claimed]
    with db.write_tx(engine) as conn:
        return controller_store.complete_jobs(conn, controller=ctl, reports=reports,
                                              max_attempts=3, managed_rate_per_core_hour=0.0)


def _job(engine, job_id: str) -> Any:  # type: ignore[no-untyped-def]
    with db.read_tx(engine) as conn:
        return conn.execute(sa.select(db.jobs).where(db.jobs.c.id == job_id)).one()


# ----- migrations ------------------------------------------------------------------------------
def _head() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(db.alembic_config()).get_current_head()


def test_migrations_reach_head_and_match_the_tables(engine) -> None:  # type: ignore[no-untyped-def]
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    head = _head()
    assert db.current_revision(engine) == head
    db.migrate(engine)  # idempotent
    assert db.current_revision(engine) == head
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                db.metadata)
    assert diff == [], f"the migrations and db.py disagree: {diff}"
    names = {ix["name"] for ix in sa.inspect(engine).get_indexes("jobs")}
    assert {"ix_jobs_workspace_seq", "ix_jobs_claim", "ix_jobs_lease", "ix_jobs_cache_done",
            "ix_jobs_cache_active", "ix_jobs_pending", "ix_jobs_cached_from",
            "ix_jobs_workspace_state_seq"} <= names


def test_jobs_pages_keep_room_for_a_jobs_updates_on_postgresql(pg_cluster) -> None:  # type: ignore[no-untyped-def]
    """A claim's and a report's new row versions stay on the job's page (migration 0010);
    going down to 0009 gives PostgreSQL's default back. (SQLite has no fill factor.)"""
    from alembic import command

    url = pg_cluster.new_database()
    engine = db.make_engine(url)
    try:
        db.migrate(engine)
        _check_fillfactor_both_ways(engine, command)
    finally:
        engine.dispose()
        pg_cluster.drop_database(url)


def _check_fillfactor_both_ways(engine, command) -> None:  # type: ignore[no-untyped-def]
    def options() -> list[str] | None:
        with engine.connect() as conn:
            return conn.exec_driver_sql(
                "SELECT reloptions FROM pg_class WHERE relname = 'jobs'").scalar()

    assert options() == ["fillfactor=90"]
    cfg = db.alembic_config(engine)
    with db.write_tx(engine) as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0009")
    assert options() is None
    db.migrate(engine)
    assert options() == ["fillfactor=90"]


def test_migrations_go_down_and_up_again(engine) -> None:  # type: ignore[no-untyped-def]
    from alembic import command

    cfg = db.alembic_config(engine)
    with db.write_tx(engine) as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    assert db.current_revision(engine) == "0001"
    assert "ix_jobs_pending" not in {ix["name"] for ix in sa.inspect(engine).get_indexes("jobs")}
    db.migrate(engine)
    assert db.current_revision(engine) == _head()


@pytest.mark.slow  # a concurrency fault: several processes race to migrate
def test_migrate_from_several_processes_at_once(db_url: str) -> None:
    """Every server runs the migrations at startup: four at once must all succeed."""
    cmd = [PY, "-m", "atomiverse_server.admin", "--database-url", db_url, "migrate"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [o[1][-2000:] for o in outs]
    eng = db.make_engine(db_url)
    try:
        assert db.current_revision(eng) == _head()
    finally:
        eng.dispose()


def test_database_from_before_migrations_is_adopted(db_url: str) -> None:
    eng = db.make_engine(db_url)
    try:
        db.metadata.create_all(eng)  # then less what later revisions added: revision 0001
        with db.write_tx(eng) as conn:
            for ix in ("ix_jobs_pending", "ix_jobs_cached_from", "ix_jobs_workspace_state_seq",
                       "ix_jobs_claim"):
                conn.exec_driver_sql(f"DROP INDEX {ix}")
            conn.exec_driver_sql("ALTER TABLE jobs DROP COLUMN claim_rank")  # revision 0004
            conn.exec_driver_sql("DROP INDEX ix_jobs_parent")  # revision 0006
            conn.exec_driver_sql("ALTER TABLE jobs DROP COLUMN parent_id")
            conn.exec_driver_sql("ALTER TABLE jobs DROP COLUMN step")
            conn.exec_driver_sql("ALTER TABLE controllers DROP COLUMN pool_id")  # revision 0007
            conn.exec_driver_sql("CREATE INDEX ix_jobs_claim ON jobs (state, controller_id, seq)")
            for ix in ("ix_jobs_cache_done", "ix_jobs_cache_active"):  # revision 0009
                conn.exec_driver_sql(f"DROP INDEX {ix}")
            conn.exec_driver_sql("CREATE INDEX ix_jobs_cache ON jobs (workspace_id, cache_key, "
                                 "state)")
            for table in ("idempotency_keys", "rate_limits",  # revision 0003
                          "sessions", "server_secrets"):  # revision 0005
                conn.exec_driver_sql(f"DROP TABLE {table}")
            workspace_store.create_workspace(conn, name="old")
        db.migrate(eng)
        assert db.current_revision(eng) == _head()
        assert "ix_jobs_pending" in {ix["name"] for ix in sa.inspect(eng).get_indexes("jobs")}
        with db.read_tx(eng) as conn:
            assert workspace_store.get_workspace_by_name(conn, name="old") is not None
    finally:
        eng.dispose()


# ----- claims ----------------------------------------------------------------------------------
def test_sqlite_commits_leave_the_log_checkpoint_to_its_own_thread(engine, db_url) -> None:  # type: ignore[no-untyped-def]
    """A commit never copies the log into the database (that costs a request 10-30 ms);
    ``checkpoint_wal``, run by the checkpointer thread a moment after writes, does. A no-op on
    PostgreSQL."""
    from atomiverse_server.walcheckpoint import WalCheckpointer

    ws, (ctl,) = _setup(engine)
    marker = "checkpoint-marker-7f3a"
    _insert(engine, _rows(ws.id, 50, controller=ctl, name=marker))
    if db_url.startswith("sqlite"):
        path = Path(db_url.removeprefix("sqlite:///"))
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == \
                db.SQLITE_BACKSTOP_CHECKPOINT_PAGES
        assert marker.encode() not in path.read_bytes()  # only in the log so far
    db.checkpoint_wal(engine)
    if db_url.startswith("sqlite"):
        assert marker.encode() in path.read_bytes()
    with db.read_tx(engine) as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(db.jobs)).scalar() == 50
    checkpointer = WalCheckpointer(engine, delay_seconds=0.0).start()
    try:
        assert checkpointer.running == db_url.startswith("sqlite")
        if db_url.startswith("sqlite"):  # a write wakes it and its checkpoint follows
            second = "checkpoint-marker-second-91c2"
            _insert(engine, _rows(ws.id, 5, controller=ctl, start=50, name=second))
            assert retry.poll(lambda: second.encode() in path.read_bytes() or None,
                              timeout_seconds=30, interval_seconds=0.05)
    finally:
        checkpointer.stop()


def test_claims_are_exclusive_under_concurrency(engine) -> None:  # type: ignore[no-untyped-def]
    """Four controllers, three claimers each, all after the same 1500 managed jobs."""
    ws, ctls = _setup(engine, n_controllers=4, managed=True)
    n = 1500
    _insert(engine, _rows(ws.id, n))
    start = threading.Barrier(12)

    def claimer(ctl) -> list[str]:  # type: ignore[no-untyped-def]
        got: list[str] = []
        start.wait()
        while True:
            claimed = _claim(engine, ctl, 7)
            if not claimed:
                return got
            got += [c["job_id"] for c in claimed]
            assert _complete(engine, ctl, claimed)["rejected"] == []

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(claimer, [c for c in ctls for _ in range(3)]))
    counts = Counter(j for r in results for j in r)
    assert len(counts) == n and max(counts.values()) == 1
    with db.read_tx(engine) as conn:
        rows = conn.execute(sa.select(db.jobs.c.state, db.jobs.c.attempts, sa.func.count())
                            .group_by(db.jobs.c.state, db.jobs.c.attempts)).all()
    assert [tuple(r) for r in rows] == [("done", 1, n)]


def test_claim_takes_only_jobs_routed_to_the_controller(engine) -> None:  # type: ignore[no-untyped-def]
    ws, (a, b) = _setup(engine, n_controllers=2)
    _insert(engine, _rows(ws.id, 5, controller=a) + _rows(ws.id, 3, controller=b, start=5)
            + _rows(ws.id, 2, start=8))
    assert [c["job_id"] for c in _claim(engine, a, 100)] == [f"j{i:07d}" for i in range(5)]
    assert [c["job_id"] for c in _claim(engine, b, 2)] == ["j0000005", "j0000006"]
    assert _claim(engine, a, 100) == []


def _submit(engine, ws_id: str, target: str, jobs: list[Any]) -> list[str]:  # type: ignore[no-untyped-def]
    settings = Settings(home=Path("unused"), database_url="unused")
    prepared = prepare_entries([{"job": j.model_dump(mode="json"), "compute_target": target}
                                for j in jobs], settings)
    with db.write_tx(engine) as conn:
        body, _, _ = submit_entries(conn, workspace_id=ws_id, prepared=prepared,
                                 settings=settings, local_controller=None)
    assert body["failed"] == 0, body
    return [j["job_id"] for j in body["jobs"]]


def test_claims_take_batches_in_order_each_costliest_first(engine) -> None:  # type: ignore[no-untyped-def]
    """Longest processing time first within a batch: a big optimisation submitted last
    still starts first, but never ahead of an earlier batch."""
    with db.write_tx(engine) as conn:
        ws = workspace_store.create_workspace(conn, name="ws", balance=100.0)
        ctl = controller_store.register_controller(
            conn, workspace_id=ws.id, name="lab", slots=2, cores_per_job=1, capacity=100,
            engines={"xtb": "22.1"}, hostname="h", serves_managed=False)[0]
    water, benzene, octane = (Atoms.from_smiles(s) for s in ("O", "c1ccccc1", "CCCCCCCC"))
    sp, opt = (partial(kind, level_of_theory=GFN2_XTB, use_cache=False)
               for kind in (SinglePointEnergy, GeometryOptimization))
    first = _submit(engine, ws.id, "lab", [sp(atoms=water)])
    second = _submit(engine, ws.id, "lab", [sp(atoms=water), sp(atoms=octane), opt(atoms=water),
                                            sp(atoms=benzene), opt(atoms=octane), sp(atoms=water)])
    third = _submit(engine, ws.id, "lab", [opt(atoms=octane)])
    claimed = [c["job_id"] for c in _claim(engine, ctl, 3) + _claim(engine, ctl, 100)]
    # Estimated costs: octane's optimisation, then its single point, benzene's, water's
    # optimisation (13 water gradients cost less than one of octane), then the two waters.
    by_cost = [second[i] for i in (4, 1, 3, 2, 0, 5)]
    assert claimed == [*first, *by_cost, *third]


def test_a_duplicate_or_late_report_changes_nothing(engine) -> None:  # type: ignore[no-untyped-def]
    ws, (ctl,) = _setup(engine)
    _insert(engine, _rows(ws.id, 1, controller=ctl))
    claimed = _claim(engine, ctl, 1)
    assert _complete(engine, ctl, claimed)["accepted"] == ["j0000000"]
    assert _complete(engine, ctl, claimed)["rejected"] == ["j0000000"]
    assert _job(engine, "j0000000").state == "done"


def test_duplicate_reports_at_once_are_heard_once_and_billed_once(engine) -> None:  # type: ignore[no-untyped-def]
    """A controller that retries a report it thinks was lost may race its first attempt,
    through another server process: one is accepted, one rejected, the job billed once."""
    ws, (ctl,) = _setup(engine, managed=True)
    n = 150
    _insert(engine, _rows(ws.id, n))
    claimed = _claim(engine, ctl, n)
    assert len(claimed) == n
    barrier = threading.Barrier(2)

    def report(c: dict) -> list[str]:
        rep = [{"job_id": c["job_id"], "lease_id": c["lease_id"], "ok": True,
                "result": _result(36.0)}]
        barrier.wait()
        with db.write_tx(engine) as conn:
            return controller_store.complete_jobs(conn, controller=ctl, reports=rep,
                                                  max_attempts=3,
                                                  managed_rate_per_core_hour=1.0)["accepted"]

    with ThreadPoolExecutor(2) as pool:
        accepted = [a for c in claimed for a in pool.map(report, [c, c])]
    counts = Counter(j for a in accepted for j in a)
    assert len(counts) == n and set(counts.values()) == {1}
    with db.read_tx(engine) as conn:
        balance = workspace_store.get_workspace(conn, workspace_id=ws.id).balance
    assert balance == pytest.approx(100.0 - n * 0.01)


def test_reports_store_every_value_as_sent(engine) -> None:  # type: ignore[no-untyped-def]
    """A report's values reach their columns unchanged, in one statement for many rows:
    text with quotes, backslashes, braces, newlines and non-ASCII characters, results with
    nested JSON, floats to the last bit, and a failure's attempt history (retried)."""
    ws, (ctl,) = _setup(engine)
    _insert(engine, _rows(ws.id, 3, controller=ctl))
    a, b, c = _claim(engine, ctl, 3)
    awkward = 'a "quoted" \\back\\slash {brace,} [x] \'single\' \n tab\t é ✓ NULL'
    result = {**_result(0.1 + 0.2), "energy_hartree": -76.123456789012345,
              "warnings": [awkward, "{\"json\": [1]}"], "gradient_hartree_per_bohr": []}
    reports = [{"job_id": a["job_id"], "lease_id": a["lease_id"], "ok": True, "result": result},
               {"job_id": b["job_id"], "lease_id": b["lease_id"], "ok": False, "result": None,
                "error": awkward, "error_type": "input"},
               {"job_id": c["job_id"], "lease_id": c["lease_id"], "ok": False, "result": None,
                "error": awkward, "error_type": "resource"}]
    with db.write_tx(engine) as conn:
        out = controller_store.complete_jobs(conn, controller=ctl, reports=reports,
                                             max_attempts=3, managed_rate_per_core_hour=0.0)
    assert out["accepted"] == [a["job_id"], b["job_id"], c["job_id"]]
    done, failed, retried = (_job(engine, j["job_id"]) for j in (a, b, c))
    assert (done.state, done.lease_id, done.error) == ("done", None, None)
    assert done.result["energy_hartree"] == -76.123456789012345
    assert done.result["wall_time_seconds"] == 0.1 + 0.2
    assert done.result["warnings"] == [awkward, '{"json": [1]}']
    assert (failed.state, failed.error, failed.error_type) == ("failed", awkward, "input")
    assert failed.result is None and failed.finished_at == pytest.approx(time.time(), abs=60)
    assert (retried.state, retried.claimed_by, retried.lease_id) == ("pending", None, None)
    assert [(e["error"], e["error_type"]) for e in retried.attempt_errors] == \
        [(awkward, "resource")]


# ----- lease expiry ----------------------------------------------------------------------------
def test_expired_leases_are_swept_back_then_failed(engine) -> None:  # type: ignore[no-untyped-def]
    ws, (ctl,) = _setup(engine)
    _insert(engine, _rows(ws.id, 3, controller=ctl))
    held = _claim(engine, ctl, 1, lease=60.0)
    lapsed = _claim(engine, ctl, 2, lease=-1.0)  # already expired
    with db.write_tx(engine) as conn:
        assert controller_store.sweep_expired_leases(conn, max_attempts=2) == 2
    assert _job(engine, held[0]["job_id"]).state == "running"
    for c in lapsed:
        row = _job(engine, c["job_id"])
        assert (row.state, row.attempts, row.lease_id, row.claimed_by) == ("pending", 1, None,
                                                                           None)
        assert row.attempt_errors[0]["error_type"] == "lost"
    # The old lease is gone: its late result is not heard.
    assert _complete(engine, ctl, lapsed)["rejected"] == [c["job_id"] for c in lapsed]
    again = _claim(engine, ctl, 5, lease=-1.0)
    assert sorted(c["attempt"] for c in again) == [2, 2]
    with db.write_tx(engine) as conn:
        assert controller_store.sweep_expired_leases(conn, max_attempts=2) == 2
    for c in again:
        row = _job(engine, c["job_id"])
        assert (row.state, row.error_type) == ("failed", "lost")
        assert "max attempts 2" in row.error


def test_concurrent_sweepers_take_each_lease_back_once(engine) -> None:  # type: ignore[no-untyped-def]
    ws, (ctl,) = _setup(engine)
    n = 600
    _insert(engine, _rows(ws.id, n, controller=ctl))
    while _claim(engine, ctl, 100, lease=-1.0):
        pass
    start = threading.Barrier(4)

    def sweeper(_: int) -> int:
        start.wait()
        with db.write_tx(engine) as conn:
            return controller_store.sweep_expired_leases(conn, max_attempts=3)

    with ThreadPoolExecutor(4) as pool:
        assert sum(pool.map(sweeper, range(4))) == n
    with db.read_tx(engine) as conn:
        rows = conn.execute(sa.select(db.jobs.c.attempt_errors)).all()
    assert all(len(r.attempt_errors) == 1 for r in rows)


# ----- listing ---------------------------------------------------------------------------------
def test_keyset_listing_is_stable_while_jobs_arrive(engine) -> None:  # type: ignore[no-untyped-def]
    ws, (ctl,) = _setup(engine)
    with db.write_tx(engine) as conn:
        other = workspace_store.create_workspace(conn, name="other")
    _insert(engine, _rows(ws.id, 230, controller=ctl))
    _insert(engine, _rows(other.id, 40, start=1000))
    seen: list[str] = []
    cursor = None
    while True:
        with db.read_tx(engine) as conn:
            page = job_store.list_jobs(conn, workspace_id=ws.id, limit=50, cursor=cursor)
        seen += [j["job_id"] for j in page["jobs"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
        _insert(engine, _rows(ws.id, 3, controller=ctl, start=2000 + len(seen)))  # arrivals
    assert seen == [f"j{i:07d}" for i in reversed(range(230))]
    with db.read_tx(engine) as conn:
        page = job_store.list_jobs(conn, workspace_id=ws.id, limit=500, name_contains="job-22")
        assert {j["name"] for j in page["jobs"]} >= {"job-22", "job-220", "job-229"}
        assert all("job-22" in j["name"] for j in page["jobs"])
        # LIKE wildcards in the search are literal.
        assert job_store.list_jobs(conn, workspace_id=ws.id, limit=5,
                                   name_contains="job_2")["jobs"] == []
        assert job_store.list_jobs(conn, workspace_id=ws.id, limit=5,
                                   state="done")["jobs"] == []
        assert job_store.count_by_state(conn, workspace_id=other.id)["pending"] == 40


# ----- indexes ---------------------------------------------------------------------------------
def _capture(engine, fn) -> list[tuple[str, Any]]:  # type: ignore[no-untyped-def]
    return sent_statements(engine, fn)


def _plan(engine, statement: str, parameters: Any) -> str:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        if db.is_postgres(engine):
            # On a small table a sequential scan is cheapest; ask what it would use otherwise.
            conn.exec_driver_sql("SET enable_seqscan = off")
            rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters).all()
        else:
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
        conn.rollback()
    return "\n".join(str(r[-1]) for r in rows)


def test_hot_queries_use_their_indexes(engine) -> None:  # type: ignore[no-untyped-def]
    """Each hot query, as the store really issues it, is planned on one of its indexes (on
    PostgreSQL with sequential scans priced out: on a test-sized table they would win)."""
    ws, (ctl, pool) = _setup(engine, n_controllers=2)
    with db.write_tx(engine) as conn:
        conn.execute(db.controllers.update().where(db.controllers.c.id == pool.id)
                     .values(serves_managed=True))
    pool = controller_store.Controller(**{**pool.__dict__, "serves_managed": True})
    _insert(engine, _rows(ws.id, 400, controller=ctl))
    with db.write_tx(engine) as conn:  # most of the table finished, as in real life
        conn.execute(db.jobs.update().where(db.jobs.c.seq <= 380).values(state="done"))
    _insert(engine, _rows(ws.id, 20, start=400))
    with db.write_tx(engine) as conn:  # the listed workspace: a few among many
        small = workspace_store.create_workspace(conn, name="small")
    _insert(engine, _rows(small.id, 12, start=1000))
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()

    def captured(fn, *must: str) -> tuple[str, Any]:  # type: ignore[no-untyped-def]
        stmts = _capture(engine, fn)
        return next(s for s in stmts if all(m in s[0] for m in must))

    def read(fn):  # type: ignore[no-untyped-def]
        def run() -> None:
            with db.write_tx(engine) as conn:
                fn(conn)
        return run

    expect = {
        "claim, own jobs": (captured(lambda: _claim(engine, ctl, 5), "SELECT", "ORDER BY"),
                            {"ix_jobs_claim", "ix_jobs_pending"}),
        # Own jobs OR managed ones: the pending-only index in seq order, or both branches of
        # the claim index; either way no finished job is read.
        "claim, managed pool": (captured(lambda: _claim(engine, pool, 5), "SELECT", "ORDER BY"),
                                {"ix_jobs_pending", "ix_jobs_claim"}),
        "lease sweep": (captured(lambda: _sweep(engine), "lease_expires_at <"),
                        {"ix_jobs_lease"}),
        "list, first page": (captured(read(lambda c: job_store.list_jobs(
            c, workspace_id=small.id, limit=5)), "ORDER BY"),
            {"ix_jobs_workspace_seq", "ix_jobs_workspace_state_seq"}),
        "list, next page": (captured(read(lambda c: job_store.list_jobs(
            c, workspace_id=small.id, limit=5, cursor=job_store.encode_cursor(
                c, workspace_id=small.id, seq=1010))),
            "ORDER BY"), {"ix_jobs_workspace_seq", "ix_jobs_workspace_state_seq"}),
        "list by state": (captured(read(lambda c: job_store.list_jobs(
            c, workspace_id=ws.id, limit=5, state="failed")), "ORDER BY"),
            {"ix_jobs_workspace_state_seq"}),
    }
    stmts = _capture(engine, read(lambda c: resultcache.find_cached(
        c, workspace_id=ws.id, cache_keys={"k", "k2"})))
    cache_lookup = next(s for s in stmts if "cache_key" in s[0])
    # Done jobs by one partial index, active ones by the other: a claim never writes into
    # an index of every job keyed by a hash (cold in a big database).
    for ix in ("ix_jobs_cache_done", "ix_jobs_cache_active"):
        expect[f"cache lookup, {ix}"] = (cache_lookup, {ix})
    if hasattr(job_store, "settle_followers"):
        stmts = _capture(engine, read(lambda c: job_store.settle_followers(
            c, leader_id="j0000001", result=None, t=0.0)))
        expect["cache followers"] = (next(s for s in stmts if "cached_from" in s[0]),
                                     {"ix_jobs_cached_from"})
    for label, ((statement, params), indexes) in expect.items():
        plan = _plan(engine, statement, params)
        assert any(ix in plan for ix in indexes), f"{label}: not on {indexes}:\n{plan}"
        assert "Seq Scan" not in plan and "jobs_pkey" not in plan, f"{label}:\n{plan}"


def _sweep(engine) -> None:  # type: ignore[no-untyped-def]
    with db.write_tx(engine) as conn:
        controller_store.sweep_expired_leases(conn, max_attempts=3)


# ----- several server processes on one database ------------------------------------------------
def _payload(i: int) -> dict[str, Any]:
    return {"job_type": "single_point_energy", "name": f"m{i}", "use_cache": False,
            "atoms": {"numbers": [8, 1, 1], "positions": [[0, 0, 0], [0.96, 0, 0],
                                                          [-0.24, 0.93, 0.001 * i]]},
            "level_of_theory": {"method": "gfn2-xtb"}}


@pytest.mark.slow  # several servers: two processes and a batch of real jobs
def test_two_server_processes_on_one_database_act_as_one(db_url: str, tmp_path: Path) -> None:
    """Controllers talking to either server process, all claiming the same queue."""
    eng = db.make_engine(db_url)
    db.migrate(eng)
    env = {"ATOMIVERSE_MANAGED_ENABLED": "true", "ATOMIVERSE_BATCH_RATE_PER_MINUTE": "1000",
           "ATOMIVERSE_JOB_RATE_PER_MINUTE": "100000"}
    servers = [start_server(tmp_path / f"s{i}", database_url=db_url, env_extra=env)
               for i in range(2)]
    try:
        out = subprocess.run([PY, "-m", "atomiverse_server.admin", "--database-url", db_url,
                              "create-workspace", "lab", "--balance", "1000"],
                             check=True, capture_output=True, text=True)
        import json

        key = json.loads(out.stdout)["api_key"]
        auth = {"Authorization": f"Bearer {key}"}
        tokens = []
        for i in range(6):
            r = httpx.post(f"{servers[i % 2].url}/api/v1/controllers/register", headers=auth,
                           json={"name": f"ctl{i}", "slots": 4, "engines": {"instant": "0"},
                                 "hostname": "h"}, timeout=30)
            assert r.status_code == 200, r.text
            tokens.append(r.json()["token"])
        with db.write_tx(eng) as conn:  # an admin puts them in the managed pool
            conn.execute(db.controllers.update().values(serves_managed=True))
        n = 600
        r = httpx.post(f"{servers[0].url}/api/v1/jobs/submit-batch", headers=auth, timeout=60,
                       json={"jobs": [{"job": _payload(i), "compute_target": "managed"}
                                      for i in range(n)]})
        assert r.status_code == 200 and r.json()["submitted"] == n, r.text

        def controller(i: int) -> list[str]:
            base = servers[i % 2].url
            h = {"Authorization": f"Bearer {tokens[i]}"}
            done: list[str] = []
            with httpx.Client(base_url=base, headers=h, timeout=60) as c:
                while True:
                    r = c.post("/api/v1/controllers/claim", json={"max_jobs": 9,
                                                                  "wait_seconds": 0})
                    assert r.status_code == 200, r.text
                    jobs = r.json()["jobs"]
                    if not jobs:
                        return done
                    reps = [{"job_id": j["job_id"], "lease_id": j["lease_id"], "ok": True,
                             "result": _result(0.0)} for j in jobs]
                    r = c.post("/api/v1/controllers/complete", json={"reports": reps})
                    assert r.status_code == 200 and not r.json()["rejected"], r.text
                    done += [j["job_id"] for j in jobs]

        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(controller, range(6)))
        counts = Counter(j for r in results for j in r)
        assert len(counts) == n and max(counts.values()) == 1
        with db.read_tx(eng) as conn:
            rows = conn.execute(sa.select(db.jobs.c.state, db.jobs.c.attempts, sa.func.count())
                                .group_by(db.jobs.c.state, db.jobs.c.attempts)).all()
        assert [tuple(r) for r in rows] == [("done", 1, n)]
        # Both servers list the same jobs.
        pages = [httpx.get(f"{srv.url}/api/v1/jobs", params={"limit": 200}, headers=auth,
                           timeout=30).json() for srv in servers]
        assert pages[0]["jobs"] == pages[1]["jobs"] and len(pages[0]["jobs"]) == 200
    finally:
        for srv in servers:
            stop_process(srv.proc)
        eng.dispose()


def test_reads_by_id_answer_only_the_workspaces_own_jobs(engine) -> None:  # type: ignore[no-untyped-def]
    """get_jobs, brief_jobs, job_versions and job_states, on each backend: the asked ids
    that are jobs of this workspace, none of another's (tests/test_query_plans.py checks
    they find them by id)."""
    ws, (ctl,) = _setup(engine)
    with db.write_tx(engine) as conn:
        other = workspace_store.create_workspace(conn, name="other", balance=1.0)
    _insert(engine, _rows(ws.id, 5, controller=ctl) + _rows(other.id, 3, start=5))
    asked = [f"j{i:07d}" for i in (0, 3, 5, 7)] + ["no-such-job"]
    with db.read_tx(engine) as conn:
        found = {
            "get_jobs": {r["job_id"] for r in job_store.get_jobs(
                conn, workspace_id=ws.id, job_ids=asked)},
            "brief_jobs": {r["job_id"] for r in job_store.brief_jobs(
                conn, workspace_id=ws.id, job_ids=asked)},
            "job_versions": set(job_store.job_versions(conn, workspace_id=ws.id, job_ids=asked)),
            "job_states": {r["job_id"] for r in job_store.job_states(
                conn, workspace_id=ws.id, job_ids=asked, include_result=True)},
        }
    assert found == {name: {"j0000000", "j0000003"} for name in found}


def test_a_connection_refused_the_switch_to_wal_tries_again(tmp_path: Path) -> None:
    """Two connections switching a new SQLite file to WAL at once: SQLite answers one of them
    "database is locked" at once, without waiting (it happened to one of four processes
    migrating one new database on a loaded machine). That one tries again and finds the file
    switched; a file already in WAL mode is not switched again. The refusal is made here (the
    race cannot be timed from a test): the first switch this connection asks for fails."""
    import sqlite3

    class RefusedOnce:
        def __init__(self, path: Path) -> None:
            self.real = sqlite3.connect(path, isolation_level=None)
            self.statements: list[str] = []

        def cursor(self) -> Any:
            outer = self

            class Cursor:
                def __init__(self) -> None:
                    self.real = outer.real.cursor()

                def execute(self, sql: str) -> Any:
                    outer.statements.append(sql)
                    if sql == "PRAGMA journal_mode=WAL" and outer.statements.count(sql) == 1:
                        raise sqlite3.OperationalError("database is locked")
                    return self.real.execute(sql)

                def close(self) -> None:
                    self.real.close()

            return Cursor()

    path = tmp_path / "new.db"
    conn = RefusedOnce(path)
    use_wal(conn)
    assert conn.statements.count("PRAGMA journal_mode=WAL") == 2
    assert conn.real.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again = RefusedOnce(path)
    use_wal(again)
    assert again.statements == ["PRAGMA journal_mode"]  # already WAL: nothing to switch
