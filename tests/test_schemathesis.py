"""Schemathesis drives every operation of the server's own OpenAPI schema with generated
requests, valid and invalid, against a real server process: no 5xx, every status code
documented, every response body as documented.

One check is left out, on purpose: ``positive_data_acceptance``. Some rules cannot live in
a JSON schema (a controller name must be registered, a name must be non-empty after
trimming, a cursor must be one this server issued); requests breaking them get documented
4xx answers with a message.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx2 as httpx
import pytest
from conftest import start_server, stop_process

pytestmark = pytest.mark.slow  # a fuzzer: hundreds of generated requests


def _one_parked_job(url: str, key: str) -> None:
    """A workspace that has a job: a watch naming no job (``newest_seen: ""``) then answers at
    once, as it would on any real workspace, instead of parking for its whole timeout."""
    headers = {"Authorization": f"Bearer {key}"}
    r = httpx.post(f"{url}/api/v1/controllers/register", headers=headers,
                   json={"name": "fuzz-parked", "slots": 1, "engines": {"xtb": "22.1"}})
    assert r.status_code == 200, r.text
    water = {"job_type": "single_point_energy", "level_of_theory": {"method": "gfn2-xtb"}, "atoms": {
        "numbers": [8, 1, 1], "positions": [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]}}
    r = httpx.post(f"{url}/api/v1/jobs", headers=headers,
                   json={"job": water, "compute_target": "fuzz-parked"})
    assert r.status_code == 201, r.text


def test_api_conforms_to_its_schema(tmp_path):
    srv = start_server(tmp_path / "fuzz", env_extra={
        "ATOMIVERSE_BATCH_RATE_PER_MINUTE": "100000",
        "ATOMIVERSE_JOB_RATE_PER_MINUTE": "100000", "ATOMIVERSE_MAX_BATCH_SIZE": "50"})
    try:
        key = srv.new_workspace("fuzz")
        _one_parked_job(srv.url, key)
        cli = Path(sys.executable).with_name("schemathesis")
        out = subprocess.run(
            [str(cli), "run", f"{srv.url}/openapi.json", "-H", f"Authorization: Bearer {key}",
             "--max-examples", "15", "--seed", "1", "--checks", "all",
             "--exclude-checks", "positive_data_acceptance",
             "--generation-with-security-parameters", "false", "--request-timeout", "90",
             # Long-polls (watch, wait, claim) may answer only when their timeout_seconds
             # (at most 60) runs out: that is what they are for, not slowness.
             "--max-response-time", "65",
             "--suppress-health-check", "all", "--no-color"],
            capture_output=True, text=True, timeout=600, check=False)
        report = out.stdout + out.stderr
        assert out.returncode == 0, report[-6000:]
        assert "5xx" not in report.split("SUMMARY")[-1] or "0 failures" in report
        print(report[-1500:])
    finally:
        stop_process(srv.proc)
