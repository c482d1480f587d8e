"""``cores_per_job`` is honoured end to end: a controller started with it registers it, runs
its engine with that many threads and reports each job's core time as wall time times it
(what the managed pool bills)."""

from __future__ import annotations

import atomiverse
import pytest
from atomiverse.atoms import Atoms
from atomiverse.jobs import SinglePointEnergy
from atomiverse.levels import GFN2_XTB
from atomiverse_controller.engines import get_engine
from conftest import DEFAULT_ENGINE, Server


def test_a_two_core_controller_runs_and_reports_two_cores(server: Server) -> None:
    key = server.new_workspace("two-cores")
    server.start_controller(key, "two-core-box", "--slots", "1", "--cores-per-job", "2")
    client = atomiverse.Client(api_key=key, base_url=server.url)
    try:
        listed = client.request("GET", "/api/v1/controllers")["controllers"]
        assert [c["cores_per_job"] for c in listed if c["name"] == "two-core-box"] == [2]
        job = SinglePointEnergy(atoms=Atoms.from_smiles("CCCCCCCC"), level_of_theory=GFN2_XTB)
        res = client.submit_batch([job.model_dump()], compute_target="two-core-box")
        record = client.wait_jobs([res["jobs"][0]["job_id"]], timeout=120)[0]
    finally:
        client.close()
    assert record["state"] == "done", record.get("error")
    result = record["result"]
    assert result["core_seconds"] == pytest.approx(2 * result["wall_time_seconds"])
    direct = get_engine(DEFAULT_ENGINE).compute(job.model_dump())
    assert abs(result["energy_hartree"] - direct["energy_hartree"]) < 1e-6
