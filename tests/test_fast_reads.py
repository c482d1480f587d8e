"""The reads answered below FastAPI (``atomiverse_server.fastreads``) answer exactly what the
routes answer. A key's first request goes through FastAPI (its credential is not cached
yet); the same request right after is answered by the fast path. Both must be identical."""

from __future__ import annotations

import uuid

import atomiverse
import httpx2 as httpx
import pytest
from atomiverse.levels import GFN2_XTB
from atomiverse.schema import JobPublic
from conftest import start_server, stop_process


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("fastreads"))
    yield s
    stop_process(s.proc)


def _fresh_key(srv, jobs):
    """A new workspace with ``jobs`` parked on a controller that never claims, and a second
    key of it that the server has not seen yet (so not in its credential cache)."""
    name = f"fr-{len(jobs)}-{uuid.uuid4().hex[:12]}"  # not id(jobs): ids are reused
    key = srv.new_workspace(name)
    h = {"Authorization": f"Bearer {key}"}
    assert httpx.post(f"{srv.url}/api/v1/controllers/register", headers=h, json={
        "name": "nobody", "slots": 1, "engines": {"xtb": "1"}}).status_code == 200
    with atomiverse.Client(api_key=key, base_url=srv.url) as client:
        ids = [j["job_id"] for j in client.submit_batch(jobs, compute_target="nobody")["jobs"]]
    return srv.admin("issue-key", name)["api_key"], ids


def _twice(srv, key, path, params=None):
    """The same GET through FastAPI (a credential not seen yet) and then the fast path."""
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"}) as c:
        return c.get(path, params=params), c.get(path, params=params)


def _job(name):
    return atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles("CCO"),
                                        level_of_theory=GFN2_XTB, name=name).model_dump()


def test_a_job_read_is_the_routes_own_answer(srv):
    key, (job_id,) = _fresh_key(srv, [_job("one ü 100%_x")])
    slow, fast = _twice(srv, key, f"/api/v1/jobs/{job_id}")
    assert slow.status_code == fast.status_code == 200
    assert fast.json() == slow.json()
    assert list(fast.json()) == list(JobPublic.model_fields)
    JobPublic.model_validate(fast.json())
    assert fast.headers["content-type"] == "application/json"


def test_a_finished_job_with_its_result_is_the_routes_own_answer(srv):
    """The result, payload and preview go out as stored (spliced, not re-encoded)."""
    key, (job_id,) = _fresh_key(srv, [_job("finished")])
    other = srv.admin("issue-key", _workspace_of(srv, key))["api_key"]
    h = {"Authorization": f"Bearer {key}"}
    token = httpx.post(f"{srv.url}/api/v1/controllers/register", headers=h, json={
        "name": "nobody", "slots": 1, "engines": {"xtb": "1"}}).json()["token"]
    th = {"Authorization": f"Bearer {token}"}
    (claimed,) = httpx.post(f"{srv.url}/api/v1/controllers/claim", headers=th,
                            json={"max_jobs": 1, "wait_seconds": 0}).json()["jobs"]
    result = {"energy_hartree": -11.396, "gradient_hartree_per_bohr": [[0.125, -1e-9, 3.0]] * 9,
              "engine": "by-hand", "engine_version": "0", "wall_time_seconds": 0.5,
              "core_seconds": 0.5, "partial_charges_e": [0.1] * 9}
    out = httpx.post(f"{srv.url}/api/v1/controllers/complete", headers=th, json={"reports": [
        {"job_id": job_id, "lease_id": claimed["lease_id"], "ok": True, "result": result}]})
    assert out.json()["accepted"] == [job_id], out.text
    slow, fast = _twice(srv, other, f"/api/v1/jobs/{job_id}")
    assert slow.status_code == fast.status_code == 200
    assert fast.json() == slow.json() and fast.json()["result"]["energy_hartree"] == -11.396


def _workspace_of(srv, key):
    return httpx.get(f"{srv.url}/api/v1/account",
                     headers={"Authorization": f"Bearer {key}"}).json()["workspace"]


@pytest.mark.parametrize("params", [
    None, {"limit": "2"}, {"limit": "200"}, {"state": "pending"}, {"state": "done"},
    {"name": "100%_"}, {"name": "Ü"}, {"limit": "1", "name": "page"},
])
def test_a_list_page_is_the_routes_own_answer(srv, params):
    key, _ids = _fresh_key(srv, [_job(f"page {i} ü 100%_x") for i in range(5)])
    slow, fast = _twice(srv, key, "/api/v1/jobs", params)
    assert slow.status_code == fast.status_code == 200
    assert fast.json() == slow.json()


def test_following_pages_by_cursor_match(srv):
    key, ids = _fresh_key(srv, [_job(f"cursor {i}") for i in range(5)])
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"}) as c:
        first = c.get("/api/v1/jobs", params={"limit": 2}).json()
    slow, fast = _twice(srv, key, "/api/v1/jobs", {"limit": 2, "cursor": first["next_cursor"]})
    assert fast.json() == slow.json()
    assert [j["job_id"] for j in fast.json()["jobs"]] == ids[::-1][2:4]


@pytest.mark.parametrize("path,params,status", [
    ("/api/v1/jobs/no-such-job", None, 404),
    ("/api/v1/jobs", {"limit": "0"}, 422),
    ("/api/v1/jobs", {"limit": "201"}, 422),
    ("/api/v1/jobs", {"state": "sleeping"}, 422),
    ("/api/v1/jobs", {"cursor": "not-a-cursor"}, 422),
    ("/api/v1/jobs", {"name": "x" * 121}, 422),
])
def test_errors_keep_their_format(srv, path, params, status):
    """What the fast path does not answer goes to the routes, which name the field."""
    key, _ids = _fresh_key(srv, [_job("errors")])
    slow, fast = _twice(srv, key, path, params)
    assert slow.status_code == fast.status_code == status
    assert fast.json() == slow.json() and "detail" in fast.json()


def test_another_workspaces_job_and_bad_keys_are_not_answered(srv):
    key, (job_id,) = _fresh_key(srv, [_job("mine")])
    other, _ = _fresh_key(srv, [_job("theirs")])
    slow, fast = _twice(srv, other, f"/api/v1/jobs/{job_id}")
    assert slow.status_code == fast.status_code == 404
    for headers in ({}, {"Authorization": "Bearer av_wrong"}, {"Authorization": f"Basic {key}"}):
        r = httpx.get(f"{srv.url}/api/v1/jobs/{job_id}", headers=headers)
        assert r.status_code == 401, (headers, r.text)
