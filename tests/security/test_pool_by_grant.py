"""Finding: on an embedded server serving several workspaces, a controller that another
workspace registered under the embedded controller's name (``local-<hostname>``) joined the
managed pool and claimed the first workspace's jobs (34 of 100). Membership now needs the
embedded local workspace's credential, whatever the controller is called. A real embedded
server process, with its real supervised local controller, and a second workspace's
controller talking the real protocol."""

from __future__ import annotations

import json
import threading

import atomiverse
import httpx2 as httpx
import pytest
from atomiverse.levels import GFN2_XTB
from conftest import start_server, stop_process

LOCAL_NAME = "local-security-test"


@pytest.fixture
def embedded_server(tmp_path):
    srv = start_server(tmp_path / "home", "--embedded", "--local-slots", "1",
                       env_extra={"ATOMIVERSE_LOCAL_CONTROLLER_NAME": LOCAL_NAME})
    yield srv
    stop_process(srv.proc)


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_a_controller_named_like_the_local_one_does_not_join_the_managed_pool(embedded_server):
    srv = embedded_server
    local_key = json.loads((srv.home / "credentials.json").read_text())["api_key"]
    intruder_key = srv.new_workspace("intruder")
    r = httpx.post(f"{srv.url}/api/v1/controllers/register", headers=_bearer(intruder_key),
                   json={"name": LOCAL_NAME, "slots": 8, "cores_per_job": 1, "capacity": None,
                         "engines": {"xtb": "6.5.1"}, "hostname": "elsewhere"})
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    listed = httpx.get(f"{srv.url}/api/v1/controllers", headers=_bearer(intruder_key)).json()
    (mine,) = [c for c in listed["controllers"] if c["name"] == LOCAL_NAME]
    assert mine["serves_managed"] is False

    # The intruder's claim poll is parked when the local workspace submits managed jobs.
    claimed: list[dict] = []
    poll = threading.Thread(target=lambda: claimed.extend(httpx.post(
        f"{srv.url}/api/v1/controllers/claim", headers=_bearer(token),
        json={"max_jobs": 1000, "wait_seconds": 3}, timeout=30).json()["jobs"]))
    poll.start()
    job = atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles("O"),
                                       level_of_theory=GFN2_XTB, use_cache=False).model_dump()
    r = httpx.post(f"{srv.url}/api/v1/jobs/submit-batch", headers=_bearer(local_key),
                   json={"jobs": [{"job": job, "compute_target": "managed"}] * 20})
    assert r.status_code == 200 and r.json()["submitted"] == 20, r.text
    poll.join(30)
    assert not poll.is_alive()
    again = httpx.post(f"{srv.url}/api/v1/controllers/claim", headers=_bearer(token),
                       json={"max_jobs": 1000, "wait_seconds": 0}, timeout=30).json()["jobs"]
    assert claimed + again == []


def test_an_upgrade_takes_pool_members_by_name_out_of_the_pool(tmp_path):
    """A database where an intruder already joined by name: migration 0005 ends that."""
    import sqlalchemy as sa
    from atomiverse_server import db
    from atomiverse_server.store import workspaces as workspace_store

    engine = db.make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    db.migrate(engine, "0004")
    with db.write_tx(engine) as conn:
        for i, owner in enumerate(("local", "intruder")):
            ws = workspace_store.create_workspace(conn, name=owner)
            # The columns of revision 0004 only: today's register_controller writes later ones.
            conn.execute(db.controllers.insert().values(
                id=f"c{i}", workspace_id=ws.id, name=LOCAL_NAME, token_hash=f"h{i}", slots=1,
                cores_per_job=1, capacity=1, engines={}, hostname="", serves_managed=True,
                status="online", registered_at=0.0, last_seen_at=0.0))
    db.migrate(engine)
    with db.read_tx(engine) as conn:
        members = dict(conn.execute(
            sa.select(db.workspaces.c.name, db.controllers.c.serves_managed)
            .join(db.workspaces, db.workspaces.c.id == db.controllers.c.workspace_id)).all())
    engine.dispose()
    assert members == {"local": True, "intruder": False}
