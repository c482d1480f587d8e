"""Finding: lists in /release and /heartbeat had no length cap; a long one answered 500 ("too
many SQL variables"). Now a 422 naming the field, before any SQL runs, and the server goes on."""

from __future__ import annotations

import httpx2 as httpx
import pytest
from atomiverse.schema import MAX_LEASES_PER_REQUEST


def _controller_token(url: str, key: str) -> str:
    r = httpx.post(f"{url}/api/v1/controllers/register",
                   headers={"Authorization": f"Bearer {key}"},
                   json={"name": "lister", "slots": 1, "cores_per_job": 1, "capacity": None,
                         "engines": {"xtb": "6.5.1"}, "hostname": "test"})
    r.raise_for_status()
    return r.json()["token"]


@pytest.mark.parametrize("route", ["heartbeat", "release"])
def test_lease_lists_are_bounded(server, workspace_key, route):
    token = _controller_token(server.url, workspace_key)
    refs = [{"job_id": f"j{i}", "lease_id": f"l{i}"} for i in range(MAX_LEASES_PER_REQUEST + 1)]
    body = {"running": refs} if route == "heartbeat" else refs
    headers = {"Authorization": f"Bearer {token}"}
    r = httpx.post(f"{server.url}/api/v1/controllers/{route}", json=body, headers=headers,
                   timeout=60)
    assert r.status_code == 422, r.text[:300]
    assert str(MAX_LEASES_PER_REQUEST) in r.text
    # At the bound the same request is served (the leases are simply not this controller's).
    ok = httpx.post(f"{server.url}/api/v1/controllers/{route}", headers=headers, timeout=60,
                    json={"running": refs[:-1]} if route == "heartbeat" else refs[:-1])
    assert ok.status_code == 200, ok.text[:300]
