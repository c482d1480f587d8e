"""Finding: the list cursor was the base64 of the last job's global sequence number, which told
any workspace how many jobs the whole server held and, between two lists, how many other
workspaces had submitted. Now it is opaque: encrypted with a key the database keeps, bound to
the workspace that listed. Real server process; paging still returns every job once."""

from __future__ import annotations

import base64
import re

import atomiverse
import httpx2 as httpx
import pytest
from atomiverse.levels import GFN2_XTB

WATER = atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles("O"),
                                     level_of_theory=GFN2_XTB, use_cache=False)


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _submit(url: str, key: str, n: int) -> list[str]:
    """n pending jobs, queued for a controller registered (over the protocol) to hold them."""
    httpx.post(f"{url}/api/v1/controllers/register", headers=_bearer(key), json={
        "name": "holder", "slots": 1, "cores_per_job": 1, "capacity": None,
        "engines": {"xtb": "6.5.1"}, "hostname": "test"}).raise_for_status()
    r = httpx.post(f"{url}/api/v1/jobs/submit-batch", headers=_bearer(key), json={
        "jobs": [{"job": {**WATER.model_dump(), "name": f"j{i}"}, "compute_target": "holder"}
                 for i in range(n)]})
    assert r.status_code == 200, r.text[:300]
    return [j["job_id"] for j in r.json()["jobs"]]


def _page(url: str, key: str, cursor: str | None = None) -> httpx.Response:
    params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
    return httpx.get(f"{url}/api/v1/jobs", headers=_bearer(key), params=params)


@pytest.fixture
def tenants(server):
    import time

    a = server.new_workspace(f"cursor-a-{time.monotonic_ns()}")
    b = server.new_workspace(f"cursor-b-{time.monotonic_ns()}")
    return a, b


def test_cursors_reveal_no_sequence_and_stay_in_their_workspace(server, tenants):
    a, b = tenants
    mine = _submit(server.url, a, 5)
    _submit(server.url, b, 3)
    seen, cursors, cursor = [], [], None
    while True:
        r = _page(server.url, a, cursor)
        assert r.status_code == 200, r.text[:300]
        seen += [j["job_id"] for j in r.json()["jobs"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
        cursors.append(cursor)
    assert sorted(seen) == sorted(mine) and len(seen) == len(mine)
    for c in cursors:
        raw = base64.urlsafe_b64decode(c + "=" * (-len(c) % 4))
        assert not re.fullmatch(rb"s\d+", raw), raw  # the old cursor: "s<global seq>"
    # Another workspace cannot use them (they named a place in the global sequence).
    refused = _page(server.url, b, cursors[0])
    assert refused.status_code == 422 and "cursor" in refused.json()["detail"]
    # Nor does an altered cursor decode.
    flipped = cursors[0][:-2] + ("A" if cursors[0][-2] != "A" else "B") + cursors[0][-1]
    assert _page(server.url, a, flipped).status_code == 422
