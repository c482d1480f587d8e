"""CPU per job of the worker processes and of the pool's side, alone: one ``WorkerPool`` of
the FAKE ``instant`` engine (no chemistry: the platform's own cost), N jobs through it with
a job staged behind each running one, as the controller does for short jobs. No server, no
database: the part of ``bench/claim_rate.py``'s "workers" and "controllers" figures that the
pool and ``worker_main`` cost.

    python bench/worker_rate.py [--jobs 5000] [--slots 1] [--baseline-tree DIR] [--pairs 2]

Each run is a fresh interpreter with the tree's ``core`` and ``controller`` first on
``sys.path``; with ``--baseline-tree`` the runs alternate (baseline, new; new, baseline; ...)
and the ratio of the medians is printed. CPU is user + system time of the workers (psutil)
and of the process driving the pool, over the N jobs."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one_run(jobs: int, slots: int) -> dict[str, float]:
    import psutil
    from atomiverse_controller.pool import WorkerPool

    from bench.db_bench import payload

    todo = iter([(f"job-{i}", payload(i)) for i in range(jobs)])
    with WorkerPool(slots, engine="instant") as pool:
        workers = [psutil.Process(pid) for pid in pool.worker_pids().values()]
        me = psutil.Process()

        def cpu(procs: list[psutil.Process]) -> float:
            return sum(t.user + t.system for t in (p.cpu_times() for p in procs))

        w0, m0, t0 = cpu(workers), cpu([me]), time.monotonic()
        sent = done = 0
        while done < jobs:
            while sent < jobs and pool.free_slots():
                pool.submit(*next(todo))
                sent += 1
            while sent < jobs and pool.stageable():
                pool.stage(*next(todo))
                sent += 1
            done += len(pool.poll(5.0))
        w1, m1, t1 = cpu(workers), cpu([me]), time.monotonic()
    return {"worker_ms_per_job": 1000 * (w1 - w0) / jobs,
            "pool_ms_per_job": 1000 * (m1 - m0) / jobs, "jobs_per_s": jobs / (t1 - t0)}


def _in_tree(tree: Path, jobs: int, slots: int) -> dict[str, float]:
    """One run in a fresh interpreter importing the platform from ``tree`` (its workers too:
    they inherit ``PYTHONPATH``)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [*(str(tree / d) for d in ("core", "sdk", "server", "controller")), str(ROOT)])}
    code = f"import json; from bench.worker_rate import one_run; " \
           f"print(json.dumps(one_run({jobs}, {slots})))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, cwd=ROOT, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=5000)
    p.add_argument("--slots", type=int, default=1)
    p.add_argument("--baseline-tree", type=Path)
    p.add_argument("--pairs", type=int, default=2)
    args = p.parse_args(argv)
    trees = [("new", ROOT)]
    if args.baseline_tree:
        trees = [("baseline", args.baseline_tree.resolve()), ("new", ROOT)]
    runs: dict[str, list[dict[str, float]]] = {label: [] for label, _ in trees}
    for i in range(args.pairs):
        for label, tree in (trees if i % 2 == 0 else trees[::-1]):
            r = _in_tree(tree, args.jobs, args.slots)
            runs[label].append(r)
            print(f"{label:8s} worker {r['worker_ms_per_job']:.4f} ms/job  pool side "
                  f"{r['pool_ms_per_job']:.4f} ms/job  {r['jobs_per_s']:.0f} jobs/s", flush=True)
    med = {label: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
           for label, rs in runs.items()}
    for label, m in med.items():
        print(f"median {label:8s} worker {m['worker_ms_per_job']:.4f} ms/job  pool side "
              f"{m['pool_ms_per_job']:.4f} ms/job ({args.slots} slots, {args.jobs} jobs)")
    if "baseline" in med:
        b, n = med["baseline"], med["new"]
        print(f"new/baseline: worker CPU per job "
              f"x{n['worker_ms_per_job'] / b['worker_ms_per_job']:.2f}, pool side "
              f"x{n['pool_ms_per_job'] / b['pool_ms_per_job']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
