"""The reads of several jobs by id find them by the id index, not by walking the workspace.

Given ``workspace_id = ? AND id IN (...)``, SQLite chose the workspace's index and read every
job of the workspace to find a dozen (5 ms a watch answer at 3000 jobs, growing with the
workspace). Checked here on each statement the functions actually send, with SQLite's own
``EXPLAIN QUERY PLAN``: no rows needed, the plan does not depend on them."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from atomiverse_server.db import make_engine, migrate, read_tx
from atomiverse_server.store import jobs as job_store
from sqlcapture import sent_statements


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    eng = make_engine(f"sqlite:///{tmp_path_factory.mktemp('plans') / 'plans.db'}")
    migrate(eng)
    yield eng
    eng.dispose()


def _plans_of(engine, read):
    """Each SELECT ``read(conn)`` sends, with SQLite's plan for it."""
    def run() -> None:
        with read_tx(engine) as conn:
            read(conn)

    sent = [s for s in sent_statements(engine, run)
            if s[0].lstrip().upper().startswith("SELECT")]
    plans = []
    with engine.connect() as conn:
        for statement, parameters in sent:
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
            plans.append(" | ".join(str(r[3]) for r in rows))
    return plans


IDS = [f"job{i:02d}" for i in range(12)]
READS = {
    "get_jobs": lambda c: job_store.get_jobs(c, workspace_id="ws", job_ids=IDS),
    "brief_jobs": lambda c: job_store.brief_jobs(c, workspace_id="ws", job_ids=IDS),
    "job_versions": lambda c: job_store.job_versions(c, workspace_id="ws", job_ids=IDS),
    "job_states": lambda c: job_store.job_states(c, workspace_id="ws", job_ids=IDS,
                                                 include_result=True),
}


@pytest.mark.parametrize("name", sorted(READS))
def test_reads_by_id_use_the_id_index(engine, name):
    plans = _plans_of(engine, READS[name])
    jobs_plans = [p for p in plans if "jobs" in p]
    assert jobs_plans, plans
    for plan in jobs_plans:
        assert "SEARCH jobs USING INDEX sqlite_autoindex_jobs_1 (id=?)" in plan, plan
        assert "workspace" not in plan, plan


@pytest.mark.parametrize("in_pool, serves_managed",
                         [(False, False), (True, False), (False, True), (True, True)])
def test_a_claim_reads_each_route_in_claim_order_without_sorting_the_queue(
        engine, in_pool, serves_managed):
    """A pool member's or managed-pool controller's claim asked with its routes joined by OR
    read every pending job of those routes and sorted them on each claim; each route is
    now read in claim order from ``ix_jobs_claim``, at most ``max_jobs`` of each."""
    from atomiverse_server.store.claimsql import claim_query

    compiled = claim_query(in_pool, serves_managed, False).compile(dialect=engine.dialect)
    values = {**compiled.params, "ctl": "c", "pool": "p", "max_jobs": 64}
    with engine.connect() as conn:
        plan = [r[3] for r in conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + str(compiled),
            tuple(values[k] for k in compiled.positiontup)).all()]
    reads = [line for line in plan if " jobs " in f" {line} "]
    assert reads and all(line == "SEARCH jobs USING INDEX ix_jobs_claim "
                                 "(state=? AND controller_id=?)" for line in reads), plan
    sorted_reads = [before for before, line in zip(plan, plan[1:], strict=False)
                    if "TEMP B-TREE" in line and before in reads]
    assert not sorted_reads, plan  # only the few rows taken from each route are sorted


STATE_INDEXES = ("ix_jobs_lease", "ix_jobs_pending", "ix_jobs_claim",
                 "ix_jobs_workspace_state_seq")


@pytest.mark.parametrize("n", [1, 4, 64])
def test_a_report_and_a_heartbeat_find_their_jobs_by_id_not_by_walking_a_state(tmp_path, n):
    """A report of ``n`` jobs each with an identical job waiting on it, then a heartbeat of
    the controller's running jobs. With four ids or more (and with one, for the waiting jobs)
    SQLite, without statistics as the server leaves it, walked every pending or running job
    through a state index: 45% of a busy server's time with 150,000 jobs queued. Every
    statement sent on ``jobs`` must find its rows by id or by the job they wait on."""
    from atomiverse_server.db import jobs, write_tx
    from atomiverse_server.store import controllers as controller_store
    from storedb import workspace_with_controller

    engine, ws, ctl = workspace_with_controller(tmp_path / "report.db")
    t = 1.0e9
    rows = [{"id": f"{kind}{i:03d}", "workspace_id": ws.id, "name": f"{kind}{i}",
             "job_type": "single_point_energy", "state": "pending", "payload": {"i": i},
             "compute_target": ctl.name, "controller_id": ctl.id, "attempts": 0,
             "walltime_seconds": 60.0, "created_at": t, "billed_core_seconds": 0.0,
             "cached_from": f"lead{i:03d}" if kind == "wait" else None}
            for i in range(n) for kind in ("lead", "wait", "more")]
    with write_tx(engine) as conn:
        job_store.insert_jobs(conn, rows)
        claimed = controller_store.claim_jobs(conn, controller=ctl, max_jobs=2 * n,
                                              lease_seconds=60.0)
    leads = [c for c in claimed if c["job_id"].startswith("lead")]
    others = [c for c in claimed if c["job_id"].startswith("more")]
    assert len(leads) == n and len(others) == n  # the waiting jobs are never claimed
    result = {"energy_hartree": -1.0, "gradient_hartree_per_bohr": [], "engine": "none",
              "engine_version": "0", "wall_time_seconds": 0.1, "core_seconds": 0.1}
    sent: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if " jobs" in statement and not statement.lstrip().upper().startswith("INSERT"):
            sent.append((statement, parameters[0] if executemany else parameters))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        with write_tx(engine) as conn:
            out = controller_store.complete_jobs(
                conn, controller=ctl, max_attempts=3, managed_rate_per_core_hour=0.0,
                reports=[{"job_id": c["job_id"], "lease_id": c["lease_id"], "ok": True,
                          "result": result} for c in leads])
            controller_store.heartbeat(conn, controller=ctl, lease_seconds=60.0,
                                       running=[(c["job_id"], c["lease_id"]) for c in others])
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert len(out["accepted"]) == n and out["followers_settled"]
    with engine.connect() as conn:
        states = dict(conn.execute(sa.select(jobs.c.id, jobs.c.state)).all())
        plans = {statement: " | ".join(str(r[3]) for r in conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + statement, parameters).all())
            for statement, parameters in sent}
    engine.dispose()
    assert {states[f"wait{i:03d}"] for i in range(n)} == {"done"}
    assert any("cached_from" in s for s in plans) and any("lease_expires_at" in s for s in plans)
    for statement, plan in plans.items():
        assert not any(ix in plan for ix in STATE_INDEXES), f"{statement}\n  -> {plan}"
        assert "SCAN jobs" not in plan, f"{statement}\n  -> {plan}"


@pytest.mark.parametrize("in_pool, serves_managed",
                         [(False, False), (True, False), (False, True), (True, True)])
def test_the_claim_check_looks_each_route_up_without_walking_the_queue(
        engine, in_pool, serves_managed):
    """The read that tells a claim poll whether to claim at all, asked with its routes
    joined by OR, walked the pending jobs by state until one matched: an idle managed-pool
    controller's every poll read a backlog queued for other controllers."""
    from atomiverse_server.db import jobs
    from atomiverse_server.store.claimsql import first_claimable

    compiled = first_claimable(sa.select(jobs.c.id), in_pool,
                               serves_managed).compile(dialect=engine.dialect)
    values = {**compiled.params, "ctl": "c", "pool": "p"}
    with engine.connect() as conn:
        plan = [r[3] for r in conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + str(compiled),
            tuple(values[k] for k in compiled.positiontup)).all()]
    reads = [line for line in plan if " jobs " in f" {line} "]
    assert len(reads) == 1 + in_pool + serves_managed, plan
    assert all(line == "SEARCH jobs USING INDEX ix_jobs_claim (state=? AND controller_id=?)"
               for line in reads), plan
