"""``store.claimcheck``: the read that lets a claim long-poll park without a write transaction
must say "nothing to claim" only when a claim would indeed find nothing, for every way a job
reaches a controller (its own, its pool's, the managed pool's), on both databases."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from atomiverse_server import db
from atomiverse_server.store import controllers as controller_store
from atomiverse_server.store import jobs as job_store
from atomiverse_server.store import workspaces as workspace_store
from atomiverse_server.store.claimcheck import claim_check
from pg import pg_cluster  # noqa: F401  (fixture)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        cluster = request.getfixturevalue("pg_cluster")
        url = cluster.new_database()
        request.addfinalizer(lambda: cluster.drop_database(url))
    eng = db.make_engine(url)
    db.migrate(eng)
    yield eng
    eng.dispose()


def _controllers(engine: Any) -> dict[str, Any]:
    with db.write_tx(engine) as conn:
        ws = workspace_store.create_workspace(conn, name="ws", balance=100.0)

        def register(name: str, *, managed: bool = False, pool: str | None = None) -> Any:
            return controller_store.register_controller(
                conn, workspace_id=ws.id, name=name, slots=4, cores_per_job=1,
                capacity=10**6, engines={"instant": "0"}, hostname="h", serves_managed=managed,
                pool_id=pool)[0]

        own, managed, pool = register("own"), register("managed", managed=True), register("pool")
        member = register("member", pool=pool.id)
    return {"ws": ws, "own": own, "managed": managed, "pool": pool, "member": member}


def _add_job(engine: Any, ws: Any, job_id: str, controller: Any = None, **extra: Any) -> None:
    with db.write_tx(engine) as conn:
        job_store.insert_jobs(conn, [{
            "id": job_id, "workspace_id": ws.id, "name": job_id,
            "job_type": "single_point_energy", "state": "pending", "payload": {"i": 1},
            "compute_target": controller.name if controller else "managed",
            "controller_id": controller.id if controller else None, "attempts": 0,
            "walltime_seconds": 60.0, "created_at": time.time(), "billed_core_seconds": 0.0,
            **extra}])


def _claims(engine: Any, controller: Any) -> list[str]:
    with db.write_tx(engine) as conn:
        return [j["job_id"] for j in controller_store.claim_jobs(
            conn, controller=controller, max_jobs=10, lease_seconds=60.0)]


def test_the_check_agrees_with_the_claim_for_every_route(engine):
    c = _controllers(engine)
    check = claim_check(engine)
    who = [c["own"], c["managed"], c["member"]]
    assert [check.may_claim(x) for x in who] == [False, False, False]
    # Routed to the pool: its member may claim; nobody else.
    _add_job(engine, c["ws"], "for-the-pool", c["pool"])
    assert [check.may_claim(x) for x in who] == [False, False, True]
    assert _claims(engine, c["member"]) == ["for-the-pool"]
    # A managed job: only the controller serving the managed pool.
    _add_job(engine, c["ws"], "managed-job")
    assert [check.may_claim(x) for x in who] == [False, True, False]
    assert _claims(engine, c["managed"]) == ["managed-job"]
    # Its own job; and once claimed (running), nothing is left for anyone.
    _add_job(engine, c["ws"], "own-job", c["own"])
    assert [check.may_claim(x) for x in who] == [True, False, False]
    assert _claims(engine, c["own"]) == ["own-job"]
    assert [check.may_claim(x) for x in who] == [False, False, False]


def test_a_job_following_a_cached_leader_is_not_claimable(engine):
    c = _controllers(engine)
    _add_job(engine, c["ws"], "leader", c["own"])
    assert _claims(engine, c["own"]) == ["leader"]
    _add_job(engine, c["ws"], "follower", c["own"], cached_from="leader")
    assert not claim_check(engine).may_claim(c["own"])
    assert _claims(engine, c["own"]) == []


def test_a_database_that_cannot_answer_sends_the_poll_to_the_claim(tmp_path):
    broken = db.make_engine(f"sqlite:///{tmp_path / 'no-tables.db'}")  # never migrated
    ctl = controller_store.Controller("c", "w", "c", 1, 1, 10, {}, False, "online")
    assert claim_check(broken).may_claim(ctl)  # the claim itself then answers (or fails)
    broken.dispose()
