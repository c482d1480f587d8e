"""Faults and load with nothing lost (the figures in docs/reliability.md come from the same
functions, run longer, by bench/reliability.py)."""

from __future__ import annotations

import pytest

from bench.reliability import kill_server_during_submissions, load

pytestmark = pytest.mark.slow  # fault and load tests


def test_kill_9_server_mid_submission_loses_nothing(tmp_path):
    report = kill_server_during_submissions(tmp_path, clients=3, batch_size=40,
                                            run_seconds=2.0)
    assert report["batches_seen_accepted"] >= 1
    assert report["half_stored_batches"] == 0
    assert report["accepted_jobs_missing"] == 0
    assert report["batches_stored"] >= report["batches_seen_accepted"]
    assert set(report["states"]) == {"done"}, report  # every stored job ran, exactly once
    assert report["results_left_in_spool"] == 0


@pytest.mark.slow  # a load test: 40 s of the fast selection's 10 min under shared load
def test_load_without_undocumented_errors(tmp_path):
    figures = load(tmp_path, clients=20, controllers=4, seconds=6.0)
    assert figures["unexpected_errors"] == 0, figures["errors"]
    assert set(figures["statuses"]) <= {200, 429}
    assert figures["requests"] > 20
    # Percentiles of latencies measured in this run: a median that is a real duration, below
    # the tail, for all requests and for each kind (a figure left at 0 or swapped fails here).
    for prefix in ("", "submit_", "poll_"):
        assert 0 < figures[f"{prefix}p50_ms"] <= figures[f"{prefix}p99_ms"], (prefix, figures)
    assert 0 < figures["jobs_done_by_end"] <= figures["jobs_stored"]
    print(figures)
