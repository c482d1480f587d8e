"""The throughput benchmark is not a timed test; the suite only checks that its quick
mode runs end to end (direct pool, platform, xtb program) and writes its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow  # a whole benchmark run, direct pool and platform
@pytest.mark.xtb_python  # the benchmark's "direct" baseline is xtb-python itself
def test_quick_throughput_run_writes_its_json(tmp_path):
    out = tmp_path / "throughput.json"
    env = {k: v for k, v in os.environ.items()
           if k not in ("ATOMIVERSE_BASE_URL", "ATOMIVERSE_API_KEY")}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "throughput.py"), "--quick",
                           "--sp-repeats", "2", "--json", str(out)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    results = figures["results"]
    assert set(figures["ratios"]) and figures["exit_code"] == 0
    for workload in results.values():
        for contender in ("direct", "platform", "xtb_program"):
            assert workload[contender]["wall_seconds"] > 0, (workload, contender)
    # Single points ran twice on direct and on the platform; the faster run counts.
    for contender in ("direct", "platform"):
        sp = results["sp"][contender]
        assert len(sp["wall_samples_seconds"]) == 2, sp
        assert sp["wall_seconds"] == min(sp["wall_samples_seconds"])
        assert sp["n_failed"] == 0
    assert figures["platform"]["latency"]["median_seconds"] > 0
    warm, retired = (figures["platform"][k] for k in ("controller_idle", "controller_idle_retired"))
    assert "error" not in warm and "error" not in retired, (warm, retired)
    # A worker per core right after the runs; once idle, the controller keeps one warm.
    assert (warm["n_workers"], retired["n_workers"]) == (figures["config"]["workers"], 1)
    if warm["n_workers"] > 1:
        assert retired["total_rss_bytes"] < warm["total_rss_bytes"]


def test_median_run_is_the_middle_wall_time_and_keeps_every_sample():
    from bench.baselines import BaselineResult, median_run

    def run(wall: float) -> BaselineResult:
        return BaselineResult(name="direct", kind="sp", workers=2, wall_seconds=wall,
                              ids=["m"], energies=[-5.0], cpu_seconds=2 * wall)

    middle = median_run([run(3.0), run(1.0), run(2.0)])
    assert (middle.wall_seconds, middle.cpu_seconds) == (2.0, 4.0)
    assert middle.wall_samples_seconds == [3.0, 1.0, 2.0]
    assert median_run([run(2.0), run(1.0)]).wall_seconds == 1.0
