"""Bad jobs get per-entry errors naming the field; bad requests get a 4xx with a message,
never a 5xx; workspaces and controllers cannot reach each other's jobs."""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from contextlib import closing

import httpx2 as httpx
import pytest
from bench.bad_inputs import BAD_JOBS, BAD_REQUESTS, WATER


def test_every_bad_job_fails_alone_with_its_field_named(server, workspace_key, client,
                                                        alpha_controller):
    names = list(BAD_JOBS)
    entries = [WATER.model_dump()] + [BAD_JOBS[n][0] for n in names] + [WATER.model_dump()]
    # Raw HTTP: NaN and Infinity literals are what a careless client really sends.
    body = json.dumps({"jobs": [{"job": e, "compute_target": alpha_controller}
                                for e in entries]}, allow_nan=True)
    assert "NaN" in body and "Infinity" in body
    r = httpx.post(f"{server.url}/api/v1/jobs/submit-batch", content=body, headers={
        **_auth(workspace_key), "Content-Type": "application/json"})
    assert r.status_code == 200, r.text[:500]
    jobs = r.json()["jobs"]
    assert jobs[0]["status"] == jobs[-1]["status"] == "submitted"
    for name, entry in zip(names, jobs[1:-1]):
        assert entry["status"] == "failed", name
        assert entry["error"].startswith("Invalid job payload: "), (name, entry["error"])
        assert BAD_JOBS[name][1] in entry["error"], (name, entry["error"])
    done = client.wait_jobs([jobs[0]["job_id"], jobs[-1]["job_id"]], timeout=120)
    assert [d["state"] for d in done] == ["done", "done"]


def _auth(key):
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_requests_get_4xx_with_a_message(server, workspace_key, name):
    request_kwargs, status = dict(BAD_REQUESTS[name][0]), BAD_REQUESTS[name][1]
    headers = {**_auth(workspace_key), **request_kwargs.pop("headers", {})}
    r = httpx.post(f"{server.url}/api/v1/jobs/submit-batch", headers=headers,
                   timeout=60, **request_kwargs)
    assert r.status_code == status, (name, r.text[:300])
    assert r.json()["detail"]


def test_huge_compute_target_fails_its_entry_without_echoing_it(client):
    res = client.submit_batch([{"job": WATER.model_dump(), "compute_target": "x" * 10**6}])
    (entry,) = res["jobs"]
    assert entry["status"] == "failed" and entry["error"].startswith("compute_target: at most")
    assert len(entry["error"]) < 200


def test_body_over_limit_refused_before_it_is_read(server, workspace_key):
    # A raw socket: declare 64 MiB + 1 and send nothing; the answer must not wait for it.
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST /api/v1/jobs/submit-batch HTTP/1.1\r\nHost: {host}\r\n"
                     f"Authorization: Bearer {workspace_key}\r\n"
                     f"Content-Type: application/json\r\n"
                     f"Content-Length: {64 * 1024 * 1024 + 1}\r\n\r\n".encode())
        reply = b""
        while b"limit" not in reply:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413") and b"limit" in reply

    def chunks():
        for _ in range(70):
            yield b" " * (1024 * 1024)

    r = httpx.post(f"{server.url}/api/v1/jobs/submit-batch", headers={
        **_auth(workspace_key), "Content-Type": "application/json"}, content=chunks(),
        timeout=60)
    assert r.status_code == 413


@pytest.mark.parametrize("path", ["/api/v1/jobs/..%2F..%2Fetc", "/api/v1/jobs/' OR 1=1 --",
                                  "/api/v1/jobs/" + "x" * 5000, "/api/v1/jobs/%00",
                                  "/api/v1/jobs?cursor=czEwMA&limit=5",
                                  "/api/v1/jobs?cursor=' OR 1=1",
                                  "/api/v1/jobs?cursor=" + "A" * 150,
                                  "/api/v1/jobs?limit=abc"])
def test_odd_ids_and_cursors_are_4xx(server, workspace_key, path):
    r = httpx.get(f"{server.url}{path}", headers=_auth(workspace_key))
    assert 200 <= r.status_code < 500 and r.status_code != 500, r.text[:200]
    if r.status_code >= 400:
        assert r.json()["detail"]


@pytest.mark.parametrize("name", ["Robert'); DROP TABLE jobs;--", "<script>alert(1)</script>",
                                  "名前 ünïcödé", "%s%s%n"])
def test_hostile_names_are_stored_as_text(client, alpha_controller, name):
    res = client.submit_batch([{**WATER.model_dump(), "name": name}],
                              compute_target=alpha_controller)
    job = client.get_job(res["jobs"][0]["job_id"])
    assert job["name"] == name
    assert client.list_jobs(limit=1).jobs[0]["name"] == name


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer av_", "Bearer av_nope",
                                    "Basic dXNlcjpwYXNz", "Bearer " + "a" * 10_000])
def test_missing_or_wrong_credentials_are_401(server, header):
    headers = {"Authorization": header} if header else {}
    for method, path in [("GET", "/api/v1/jobs"), ("GET", "/api/v1/account"),
                         ("POST", "/api/v1/controllers/claim")]:
        r = httpx.request(method, f"{server.url}{path}", headers=headers, json={"max_jobs": 1})
        assert r.status_code in (401, 403), (header, path, r.status_code)
        assert r.json()["detail"]


def test_revoked_key_is_401(server):
    key = server.new_workspace("revocable")
    assert httpx.get(f"{server.url}/api/v1/account", headers=_auth(key)).status_code == 200
    server.admin("revoke-key", "revocable", key[:8])
    # Servers remember a successful lookup for one second (documented in authcache.py).
    deadline = time.monotonic() + 5
    while (r := httpx.get(f"{server.url}/api/v1/account", headers=_auth(key))).status_code \
            == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_keys_are_stored_only_as_hashes(server, workspace_key, alpha_controller):
    """The workspace's key and a controller's token (alpha_controller's, made by the admin
    command) appear nowhere in the database."""
    db = server.database_url.removeprefix("sqlite:///")
    with closing(sqlite3.connect(db)) as conn:  # sqlite3's own `with` does not close
        dump = "\n".join(conn.iterdump())
    assert workspace_key not in dump and workspace_key[8:] not in dump
    token = (server.home / f"{alpha_controller}.token").read_text().strip()
    assert len(token) >= 20 and token not in dump and token[8:] not in dump


def test_controller_cannot_report_another_controllers_job(server, workspace_key, client):
    def register(name):
        return httpx.post(f"{server.url}/api/v1/controllers/register", headers=_auth(
            workspace_key), json={"name": name, "slots": 1, "engines": {"xtb": "22.1"}}
        ).json()["token"]

    mine, theirs = register("honest-box"), register("thief-box")
    (entry,) = client.submit_batch([WATER.model_dump()], compute_target="honest-box")["jobs"]
    (claimed,) = httpx.post(f"{server.url}/api/v1/controllers/claim", headers=_auth(mine),
                            json={"max_jobs": 1, "wait_seconds": 0}).json()["jobs"]
    forged = {"job_id": claimed["job_id"], "lease_id": claimed["lease_id"], "ok": True,
              "result": {"energy_hartree": 0.0}}
    out = httpx.post(f"{server.url}/api/v1/controllers/complete", headers=_auth(theirs),
                     json={"reports": [forged]}).json()
    assert out["rejected"] == [entry["job_id"]]
    assert httpx.post(f"{server.url}/api/v1/controllers/claim", headers=_auth(theirs),
                      json={"max_jobs": 5, "wait_seconds": 0}).json()["jobs"] == []
    assert client.get_job(entry["job_id"])["state"] == "running"
    httpx.post(f"{server.url}/api/v1/controllers/release", headers=_auth(mine),
               json=[{"job_id": claimed["job_id"], "lease_id": claimed["lease_id"]}])
    client.cancel_job(entry["job_id"])


def test_a_key_just_used_as_a_user_is_still_refused_as_a_controller(server, workspace_key):
    # Regression: recent credential lookups are remembered; a user key must not be
    # remembered as a controller (schemathesis found a 500 here).
    assert httpx.get(f"{server.url}/api/v1/account",
                     headers=_auth(workspace_key)).status_code == 200
    for path in ("/api/v1/controllers/claim", "/api/v1/controllers/heartbeat"):
        r = httpx.post(f"{server.url}{path}", headers=_auth(workspace_key),
                       json={"max_jobs": 1, "wait_seconds": 0} if "claim" in path else {})
        assert r.status_code == 401, (path, r.text)
