"""Where a batch's CPU goes: the embedded server, the local controller, its workers and the client,
for ``--n`` single points submitted as one batch, ``--repeats`` times (psutil's user + system
time of each process, before and after). For comparing two commits on a quiet machine: run it in
each checkout, alternating.

    python bench/cpu_per_batch.py               # 200 single points, 3 batches
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.baselines import scoped_env
from bench.molecules import benchmark_molecules


def _cpu(p: Any) -> float:
    t = p.cpu_times()
    return t.user + t.system


def _children_cpu(p: Any) -> float:
    import psutil

    total = 0.0
    for child in p.children(recursive=True):
        try:
            total += _cpu(child)
        except psutil.Error:
            pass
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    import psutil

    with tempfile.TemporaryDirectory() as home, \
            scoped_env({"ATOMIVERSE_HOME": home, "ATOMIVERSE_BASE_URL": None,
                        "ATOMIVERSE_API_KEY": None}):
        import atomiverse
        from atomiverse.levels import GFN2_XTB

        atomiverse.start_local()
        try:
            server = psutil.Process(json.loads((Path(home) / "server.json").read_text())["pid"])
            controller = psutil.Process(
                json.loads((Path(home) / "controller.json").read_text())["pid"])
            jobs = [atomiverse.SinglePointEnergy(
                atoms=atomiverse.Atoms(numbers=z, positions=pos), level_of_theory=GFN2_XTB,
                use_cache=False).model_dump() for _, z, pos in benchmark_molecules(args.n)]
            for _ in range(args.repeats):
                before = (_cpu(server), _cpu(controller), _children_cpu(controller),
                          time.process_time())
                started = time.perf_counter()
                res = atomiverse.submit_batch(jobs, compute_target="local")
                atomiverse.wait_jobs([j["job_id"] for j in res["jobs"]])
                wall = time.perf_counter() - started
                after = (_cpu(server), _cpu(controller), _children_cpu(controller),
                         time.process_time())
                used = [b - a for a, b in zip(before, after, strict=True)]
                print(f"wall {wall:.2f} s; CPU s: server {used[0]:.2f}, controller "
                      f"{used[1]:.2f}, workers {used[2]:.2f}, client {used[3]:.2f}", flush=True)
        finally:
            atomiverse.stop_local()


if __name__ == "__main__":
    main()
