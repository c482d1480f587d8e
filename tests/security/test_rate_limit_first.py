"""Finding: the rate limit ran after validation, so a large batch over the limit was refused
with 429 only after every job in it had been checked, and requests refused as invalid did not
count toward the limit at all. Now the limit is taken right after authentication, before the
body is validated: over the limit, even an invalid or oversized batch gets 429, not the
validation error that shows its body was examined. Real server process."""

from __future__ import annotations

import httpx2 as httpx
import pytest
from conftest import start_server, stop_process

PER_MINUTE = 2


@pytest.fixture
def limited(tmp_path):
    srv = start_server(tmp_path / "home", env_extra={
        "ATOMIVERSE_BATCH_RATE_PER_MINUTE": str(PER_MINUTE),
        "ATOMIVERSE_JOB_RATE_PER_MINUTE": str(PER_MINUTE), "ATOMIVERSE_MAX_BATCH_SIZE": "10"})
    yield srv, srv.new_workspace("limited")
    stop_process(srv.proc)


def _post(srv, key: str, path: str, body: object) -> httpx.Response:
    return httpx.post(f"{srv.url}{path}", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {key}"})


@pytest.mark.parametrize("path", ["/api/v1/jobs/submit-batch", "/api/v1/jobs"])
def test_invalid_requests_count_and_the_limit_comes_before_validation(limited, path):
    srv, key = limited
    invalid = {"jobs": "not a list"} if path.endswith("batch") else {"job": None, "x": 1}
    for _ in range(PER_MINUTE):
        assert _post(srv, key, path, invalid).status_code == 422
    # The allowance is spent by the invalid requests: the next request, valid or not, is 429.
    for body in [invalid, {"jobs": [{"job": {}}] * 11}, {"job": {"type": "x"}}]:
        r = _post(srv, key, path, body)
        assert r.status_code == 429, (body, r.text[:200])
        assert int(r.headers["Retry-After"]) >= 1
    # Another workspace has its own allowance.
    other = srv.new_workspace("neighbour")
    assert _post(srv, other, path, invalid).status_code == 422
