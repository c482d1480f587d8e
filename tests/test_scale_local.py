"""`atomiverse scale` with `scheduler = "local"` (Parsl's LocalProvider: controllers as local
processes, for a machine without a batch scheduler), and how a controller reads its
allocation's end."""

from __future__ import annotations

import subprocess
from datetime import datetime
from pathlib import Path

import httpx2 as httpx
import pytest
from atomiverse_controller import allocation
from conftest import PY, start_server, stop_process
from test_slurm_scale import wait_until


def test_the_allocation_end_comes_from_slurm_job_end_time_or_squeue() -> None:
    assert allocation.allocation_end({"SLURM_JOB_END_TIME": "1796380000",
                                      "SLURM_JOB_ID": "7"}) == 1796380000.0
    assert allocation.allocation_end({}) is None  # not in an allocation
    local = datetime(2026, 12, 4, 10, 0, 0)
    assert allocation.parse_squeue_time("2026-12-04T10:00:00") == local.timestamp()
    assert allocation.parse_squeue_time("NONE") is None  # no time limit
    assert allocation.drain_time(1000.0, 300.0) == 700.0
    assert allocation.drain_time(None, 300.0) is None


@pytest.mark.slow  # two controller processes come and go
@pytest.mark.timeout(200)
def test_local_scheduler_starts_controllers_for_pending_work_and_they_leave(
        tmp_path: Path) -> None:
    srv = start_server(tmp_path / "server")
    scale = None
    try:
        key_file = srv.home / "workspace.key"
        key_file.write_text(srv.new_workspace("desk"))
        key_file.chmod(0o600)
        site = tmp_path / "site.toml"
        site.write_text(f'target = "desk"\nserver = "{srv.url}"\napi_key_file = "{key_file}"\n'
                        f'scheduler = "local"\ncores_per_node = 1\nmax_nodes = 2\n'
                        f'idle_timeout_seconds = 5\npoll_seconds = 1\nengine = "instant"\n'
                        f'work_dir = "{tmp_path / "scale"}"\n')
        with open(tmp_path / "scale.log", "ab") as log:
            scale = subprocess.Popen([PY, "-m", "atomiverse_controller.scale", str(site)],
                                     stdout=log, stderr=log, env=srv.env)
        auth = {"Authorization": f"Bearer {key_file.read_text()}"}

        def explain() -> str:
            """The scaler's log and each controller's own (the allocation's stderr)."""
            parts = [(tmp_path / "scale.log").read_text()]
            for err in sorted((tmp_path / "scale" / "scripts").glob("*.err")):
                parts.append(f"--- {err.name}\n{err.read_text()[-4000:]}")
            return "\n".join(parts)

        wait_until("the pool", lambda: (tmp_path / "scale" / "pool.token").exists(), 30,
                   explain)
        r = httpx.post(f"{srv.url}/api/v1/jobs/submit-batch", headers=auth, timeout=30, json={
            "jobs": [{"compute_target": "desk", "job": {
                "job_type": "single_point_energy", "use_cache": False,
                "atoms": {"numbers": [1, 1], "positions": [[0, 0, 0], [0, 0, 0.7 + 0.01 * i]]},
                "level_of_theory": {"method": "gfn2-xtb"}}} for i in range(20)]})
        ids = [j["job_id"] for j in r.json()["jobs"]]

        def members() -> list[dict]:
            return [c for c in httpx.get(f"{srv.url}/api/v1/controllers", headers=auth,
                                         timeout=30).json()["controllers"]
                    if c["name"].startswith("desk.")]

        def done() -> bool:
            return all(httpx.get(f"{srv.url}/api/v1/jobs/{j}", headers=auth,
                                 timeout=30).json()["state"] == "done" for j in ids)

        wait_until("every job done", done, 90, explain)
        assert 1 <= len(members()) <= 2  # asked for, never more than max_nodes
        wait_until("the controllers to leave", lambda: all(
            m["status"] == "offline" for m in members()), 60,
            explain)
        log_text = (tmp_path / "scale.log").read_text()
        assert "event=allocation_submitted" in log_text
    finally:
        if scale is not None:
            stop_process(scale)
        stop_process(srv.proc)
