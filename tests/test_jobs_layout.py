"""Migration 0008: the jobs table rebuilt on SQLite with its small columns first and payload
and result last, so that a list page reads no overflow page of a large value (issue 22).

The rebuild keeps every job of every kind, every index and constraint, both ways; an existing
embedded home is upgraded by its server at start and answers as before; and on SQLite every
column a list page reads is stored before the large values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import sqlalchemy as sa
from atomiverse import Atoms, SinglePointEnergy
from atomiverse.levels import GFN2_XTB
from atomiverse_core import jsonio
from atomiverse_server import db
from atomiverse_server.store import controllers as controller_store
from atomiverse_server.store import jobs as job_store
from atomiverse_server.store import workspaces as workspace_store
from atomiverse_server.store.summaries import CHANGING_COLUMNS
from atomiverse._embedded import _wait_started
from alembic.script import ScriptDirectory
from atomiverse_core import retry
from atomiverse_core.localhome import UPGRADE_NOTICE
from conftest import launch_server, start_server, stop_process
from pg import db_url, pg_cluster  # noqa: F401  (fixtures)

BEFORE = "0007"
REBUILT = "0008"  # the revision that reorders the columns; later ones change indexes
LARGE = ("payload", "result", "error", "attempt_errors")


def _trajectory_result(n_atoms: int = 40, steps: int = 120) -> dict[str, Any]:
    """An optimisation's result as large as a drug-sized one's (~300 KB of JSON)."""
    frame = [[0.123456 + i, -1.234567, 2.345678] for i in range(n_atoms)]
    return {"energy_hartree": -52.1, "energies_hartree": [-52.0 - 1e-4 * s for s in range(steps)],
            "trajectory_steps": list(range(steps)),
            "trajectory_positions_angstrom": [frame] * steps,
            "trajectory_gradients_hartree_per_bohr": [frame] * steps}


def _jobs_of_every_kind(ws_id: str, ctl_id: str) -> list[dict[str, Any]]:
    job = SinglePointEnergy(atoms=Atoms.from_smiles("CCO"), level_of_theory=GFN2_XTB)
    base = dict(workspace_id=ws_id, job_type="single_point_energy",
                payload=job.model_dump(mode="json"), compute_target="local", attempts=0,
                walltime_seconds=60.0, billed_core_seconds=0.0, preview=job.atoms.preview())
    rows = [
        dict(id="pending", name="wait", state="pending", created_at=1.0, claim_rank=2),
        dict(id="running", name="run", state="running", created_at=2.0, controller_id=ctl_id,
             claimed_by=ctl_id, lease_id="lease", lease_expires_at=99.5, attempts=1,
             started_at=2.5),
        dict(id="done-sp", name="Éthanol ✓", state="done", created_at=3.0, attempts=1,
             started_at=3.1, finished_at=3.2, result={"energy_hartree": -5.07},
             billed_core_seconds=0.1, cache_key="k" * 64),
        dict(id="done-opt", name=None, state="done", created_at=4.0, attempts=1,
             job_type="geometry_optimization", started_at=4.1, finished_at=9.0,
             result=_trajectory_result(), billed_core_seconds=4.9, preview=None),
        dict(id="failed", name="bad", state="failed", created_at=5.0, attempts=3,
             error="Traceback ...\n" * 200, error_type="scf_not_converged",
             attempt_errors=[{"attempt": 1, "error": "lost"}]),
        dict(id="cancelled", name="stop", state="cancelled", created_at=6.0,
             error_type="cancelled", error="cancelled by the user"),
        dict(id="follower", name="same", state="pending", created_at=7.0, cached_from="done-sp"),
        dict(id="chain", name="chain", state="running", created_at=8.0, job_type="chain"),
        dict(id="chain-step", name="step", state="running", created_at=8.0, parent_id="chain",
             step=1, controller_id=ctl_id),
    ]
    # Every row names every column (one INSERT for all of them).
    empty = {c.name: None for c in db.jobs.c if c.name != "seq"} | {"claim_rank": 0}
    return [{**empty, **base, **row} for row in rows]


def _filled(url: str) -> tuple[sa.Engine, str, str]:
    """A database at revision 0007 holding jobs of every kind; it, the workspace and its key."""
    engine = db.make_engine(url)
    db.migrate(engine, BEFORE)
    with db.write_tx(engine) as conn:
        ws = workspace_store.create_workspace(conn, name="ws", balance=10.0)
        key = workspace_store.issue_api_key(conn, workspace_id=ws.id)
        ctl, _ = controller_store.register_controller(
            conn, workspace_id=ws.id, name="c", slots=2, cores_per_job=1, capacity=10,
            engines={"instant": "0"}, hostname="h", serves_managed=False)
        # By name, through the table as this code declares it: the columns are the same.
        conn.execute(db.jobs.insert(), _jobs_of_every_kind(ws.id, ctl.id))
    return engine, ws.id, key


def _contents(engine: sa.Engine) -> dict[str, Any]:
    """Every row as stored (JSON as its text) and the table's indexes and constraints."""
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM jobs ORDER BY seq"))]
        inspector = sa.inspect(conn)
        schema = {
            "indexes": sorted((ix["name"], tuple(ix["column_names"]), bool(ix["unique"]),
                               str(sorted((k, str(v)) for k, v in ix.get("dialect_options", {}).items())))
                              for ix in inspector.get_indexes("jobs")),
            "unique": sorted(tuple(u["column_names"])
                             for u in inspector.get_unique_constraints("jobs")),
            "foreign_keys": [(fk["constrained_columns"], fk["referred_table"])
                             for fk in inspector.get_foreign_keys("jobs")],
            "primary_key": inspector.get_pk_constraint("jobs")["constrained_columns"],
            "columns": sorted((c["name"], str(c["type"]), c["nullable"], str(c["default"]))
                              for c in inspector.get_columns("jobs")),
        }
    rows = [{k: (str(v) if k in LARGE + ("preview",) and v is not None else v)
             for k, v in row.items()} for row in rows]
    return {"rows": rows, **schema}


def _stored_order(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return [r[1] for r in conn.exec_driver_sql("PRAGMA table_info(jobs)")]


def test_the_rebuild_keeps_every_job_index_and_constraint_both_ways(db_url: str) -> None:
    from alembic import command

    engine, _, _ = _filled(db_url)
    try:
        before = _contents(engine)
        assert len(before["rows"]) == 9
        db.migrate(engine, REBUILT)
        assert _contents(engine) == before
        cfg = db.alembic_config(engine)
        with db.write_tx(engine) as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, BEFORE)
        assert db.current_revision(engine) == BEFORE
        assert _contents(engine) == before
        if engine.dialect.name == "sqlite":
            assert _stored_order(engine).index("payload") < _stored_order(engine).index("preview")
        db.migrate(engine, REBUILT)
        assert _contents(engine) == before
    finally:
        engine.dispose()


def test_sqlite_stores_what_a_list_page_reads_before_the_large_values(tmp_path: Path) -> None:
    """SQLite reads a row's values in stored order, and a large one continues on overflow
    pages that reaching any later column walks: the summary a list page reads must come
    before payload, result and the error texts."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 'server.db'}")
    try:
        db.migrate(engine)
        order = _stored_order(engine)
        read_by_a_page = [c.name for c in job_store.SUMMARY_COLUMNS]
        assert not set(read_by_a_page) & set(LARGE)
        last_summary = max(order.index(name) for name in read_by_a_page)
        assert all(order.index(name) > last_summary for name in LARGE), order
        # db.py declares the stored order, so a table it creates is laid out the same.
        assert [c.name for c in db.jobs.c] == order
    finally:
        engine.dispose()


def test_a_page_selects_only_the_summary_columns() -> None:
    """Both of a page's reads: the changing columns, and whole summaries on a miss."""
    for columns in (job_store.SUMMARY_COLUMNS, CHANGING_COLUMNS):
        for flags in [(a, b, c) for a in (False, True) for b in (False, True)
                      for c in (False, True)]:
            sql = str(job_store.page_query(sa.select(*columns), *flags))
            selected = sql.split(" FROM ")[0]
            assert not any(f"jobs.{name}" in selected for name in LARGE), sql


def test_an_existing_home_is_upgraded_by_its_server_and_answers_as_before(
        tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    url = f"sqlite:///{home / 'server.db'}"
    engine, ws_id, key = _filled(url)
    with db.read_tx(engine) as conn:
        ids = [r[0] for r in conn.execute(sa.select(db.jobs.c.id).order_by(db.jobs.c.seq))]
        expected = {j: jsonio.loads(jsonio.dumps(job_store.get_job(
            conn, workspace_id=ws_id, job_id=j))) for j in ids}
        page = jsonio.loads(jsonio.dumps(job_store.list_jobs(conn, workspace_id=ws_id,
                                                             limit=100)))
    engine.dispose()
    srv = start_server(home, database_url=url)
    try:
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"},
                          timeout=30) as http:
            for _ in range(2):  # through the app, then (the key known) the fast reads
                assert {j: http.get(f"/api/v1/jobs/{j}").json() for j in ids} == expected
                assert http.get("/api/v1/jobs?limit=100").json() == page
    finally:
        stop_process(srv.proc)
    engine = db.make_engine(url)
    try:
        assert db.current_revision(engine) == ScriptDirectory.from_config(
            db.alembic_config()).get_current_head()
        assert _stored_order(engine)[-2:] == ["payload", "result"]
    finally:
        engine.dispose()


def _copies(engine: sa.Engine, count: int) -> int:
    """Fill the jobs table with copies of its first job, up to ``count`` more; the total."""
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO jobs (id, workspace_id, name, job_type, state, compute_target, "
            "attempts, walltime_seconds, created_at, billed_core_seconds, claim_rank, payload, "
            "result) SELECT 'copy-' || i, workspace_id, name, job_type, 'done', "
            "compute_target, 1, walltime_seconds, created_at, 0.0, 0, payload, ? FROM n, "
            "(SELECT * FROM jobs LIMIT 1)", (count, jsonio.dumps(_trajectory_result(10, 4)).decode()))
        return conn.exec_driver_sql("SELECT count(*) FROM jobs").scalar()


def test_a_long_rewrite_says_so_before_it_starts(tmp_path: Path, caplog) -> None:
    """A server upgrading a big home is silent for minutes otherwise: it says what it does."""
    engine, _, _ = _filled(f"sqlite:///{tmp_path / 'server.db'}")
    try:
        count = _copies(engine, 9_999)
        with caplog.at_level("WARNING", logger="atomiverse_server"):
            db.migrate(engine)
        said = [r.getMessage() for r in caplog.records if UPGRADE_NOTICE in r.getMessage()]
        assert said == [f"{UPGRADE_NOTICE} rewriting the jobs table ({count} jobs) once, about "
                        "a minute per 100,000 optimisations; the server answers when it is "
                        "done."]
    finally:
        engine.dispose()


@pytest.mark.slow  # a fault test: waits out a real upgrade window
def test_the_sdk_waits_for_a_server_that_says_it_is_upgrading(tmp_path: Path, capsys) -> None:
    """Given up on after the SDK's start timeout, the upgrade would roll back and start over
    at every start. Here a real server rewrites a home of optimisations; the wait is given
    a fraction of a second, less than the rewrite takes once announced."""
    home = tmp_path / "home"
    url = f"sqlite:///{home / 'server.db'}"
    home.mkdir()
    engine, _, _ = _filled(url)
    count = _copies(engine, 10_000)
    engine.dispose()
    srv = launch_server(home, database_url=url)
    log = home / "server.log"
    try:
        def announced() -> bool | None:
            assert srv.proc.poll() is None, log.read_text()
            return True if UPGRADE_NOTICE in log.read_text() else None

        assert retry.poll(announced, timeout_seconds=120, interval_seconds=0.02)

        def started() -> bool | None:
            assert srv.proc.poll() is None, log.read_text()
            try:
                return True if httpx.get(f"{srv.url}/healthz").status_code == 200 else None
            except httpx.TransportError:
                return None

        assert started() is None  # still rewriting: the premise
        assert _wait_started(started, 0.2, log, 0)
        assert f"the embedded server is rewriting the jobs table ({count} jobs) once" in \
            capsys.readouterr().err
    finally:
        stop_process(srv.proc)
