"""bench/size.py runs end to end on a small SQLite database and measures the cache lookup of
both databases the same way (settled after the load, alternately, CPU and wall time), and so
the claim, rolled back each time."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(REPO))

from bench import size


@pytest.mark.slow  # a bench's own check: two databases filled and timed
def test_size_bench_pairs_the_cache_lookup_and_the_claim(tmp_path):
    out = tmp_path / "size.json"
    assert size.main(["--backends", "sqlite", "--jobs", "3000", "--json", str(out)]) == 0
    runs = json.loads(out.read_text())["sqlite"]
    assert runs["small"]["jobs"] == 1000 and runs["big"]["jobs"] == 3000
    for what in ("cache_lookup", "claim_64"):
        paired = runs[f"paired_{what}"]
        for clock in ("cpu", "wall"):
            small, big = paired[f"{clock}_small_ms"], paired[f"{clock}_big_ms"]
            assert small > 0 and big > 0
            assert paired[f"{clock}_ratio"] > 0
    # Bytes per job come from a real load: a job row with its payload and result is over 1 KB.
    assert runs["big"]["bytes_per_job"] > 1000
    assert "USING INDEX" in runs["big"]["explain"]["cache"]
