"""Does the worker layer cost anything? N GFN2-xTB single points, two ways, same molecules:

(a) baseline: a plain ``multiprocessing.Pool`` whose tasks call xtb-python directly
    (``imap_unordered``, chunksize 1: one molecule per dispatch, like the controller);
(b) ``WorkerPool``: the controller's worker processes and pipe protocol, full result dicts.

Both sides get one OpenMP/BLAS thread per process, are warmed up before the clock starts, and
run the same molecules (``bench/molecules.py``: the NCI list, MMFF geometries). Rounds alternate
the order; the best round of each side is compared. Target: ratio (b)/(a) <= 1.05.

Wall time is what users feel, but on a shared machine it is noisy; CPU seconds (the parent plus
its compute processes, from psutil) measure the same overhead and barely care about neighbours.

    PYTHONPATH=sdk:server:controller:. python bench/engine_overhead.py [--n 200] [--slots 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# Before numpy or xtb load anywhere, so the baseline gets the same one thread per process.
os.environ.update({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                   "OMP_STACKSIZE": "1G"})

ROOT = Path(__file__).resolve().parent.parent
for sub in ("", "sdk", "controller"):
    if str(ROOT / sub) not in sys.path:
        sys.path.insert(0, str(ROOT / sub))

Molecule = tuple[str, list[int], list[list[float]]]


# ----- (a) baseline: xtb-python in a multiprocessing pool ----------------------------------------
def _baseline_init() -> None:
    from xtb.interface import Calculator, Param  # noqa: F401 - import once per process

    _baseline_task(([1, 1], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.74]]))


def _baseline_task(molecule: tuple[list[int], list[list[float]]]) -> float:
    import numpy as np
    from ase.units import Bohr
    from xtb.interface import Calculator, Param
    from xtb.libxtb import VERBOSITY_MUTED

    numbers, positions = molecule
    calc = Calculator(Param.GFN2xTB, np.array(numbers), np.array(positions) / Bohr)
    calc.set_verbosity(VERBOSITY_MUTED)
    return calc.singlepoint().get_energy()


def run_baseline(pool: Any, molecules: list[Molecule]) -> tuple[float, list[float]]:
    tasks = [(z, p) for _, z, p in molecules]
    start = time.perf_counter()
    energies = list(pool.imap(_baseline_task, tasks, chunksize=1))
    return time.perf_counter() - start, energies


# ----- (b) the controller's WorkerPool ------------------------------------------------------------
def _payload(numbers: list[int], positions: list[list[float]]) -> dict[str, Any]:
    return {"job_type": "single_point_energy",
            "atoms": {"numbers": numbers, "positions": positions, "charge": 0, "multiplicity": 1},
            "level_of_theory": {"method": "gfn2-xtb"}, "engine": "xtb", "name": None}


def run_worker_pool(pool: Any, molecules: list[Molecule]) -> tuple[float, list[float]]:
    payloads = [_payload(z, p) for _, z, p in molecules]
    energies: list[float] = [0.0] * len(payloads)
    next_job, done = 0, 0
    start = time.perf_counter()
    while done < len(payloads):
        while next_job < len(payloads) and pool.free_slots():
            pool.submit(str(next_job), payloads[next_job])
            next_job += 1
        for outcome in pool.poll(None):
            if not outcome.ok:
                raise RuntimeError(f"job {outcome.job_id} failed: {outcome.error}")
            energies[int(outcome.job_id)] = outcome.result["energy_hartree"]
            done += 1
    return time.perf_counter() - start, energies


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of this process and of ``pids`` so far."""
    import psutil

    total = sum(os.times()[:2])
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="single points per round")
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import multiprocessing

    from atomiverse_controller.workers import WorkerPool

    from bench.molecules import benchmark_molecules

    molecules = benchmark_molecules(args.n)
    sizes = [len(z) for _, z, _ in molecules]
    print(f"{len(molecules)} molecules, {min(sizes)}-{max(sizes)} atoms, "
          f"{args.slots} processes, {args.rounds} rounds")
    times: dict[str, list[float]] = {"baseline": [], "worker_pool": []}
    cpu: dict[str, list[float]] = {"baseline": [], "worker_pool": []}
    with multiprocessing.Pool(args.slots, initializer=_baseline_init) as mp_pool, \
            WorkerPool(args.slots, engine="xtb") as worker_pool:
        mp_pool.map(_baseline_task, [([1, 1], [[0, 0, 0], [0, 0, 0.74]])] * args.slots)
        for r in range(args.rounds):
            order = ["baseline", "worker_pool"] if r % 2 == 0 else ["worker_pool", "baseline"]
            for side in order:
                pids = [p.pid for p in mp_pool._pool] if side == "baseline" \
                    else list(worker_pool.worker_pids().values())
                cpu_before = cpu_seconds(pids)
                if side == "baseline":
                    seconds, e_base = run_baseline(mp_pool, molecules)
                else:
                    seconds, e_pool = run_worker_pool(worker_pool, molecules)
                times[side].append(seconds)
                cpu[side].append(cpu_seconds(pids) - cpu_before)
            worst = max(abs(a - b) for a, b in zip(e_base, e_pool, strict=True))
            print(f"round {r + 1}: baseline {times['baseline'][-1]:.3f} s "
                  f"({cpu['baseline'][-1]:.2f} CPU s), WorkerPool {times['worker_pool'][-1]:.3f} s "
                  f"({cpu['worker_pool'][-1]:.2f} CPU s), max |dE| {worst:.1e} Hartree")
    best_base, best_pool = min(times["baseline"]), min(times["worker_pool"])
    median_ratio = statistics.median(times["worker_pool"]) / statistics.median(times["baseline"])
    print(f"baseline (multiprocessing.Pool + xtb-python): best {best_base:.3f} s")
    print(f"WorkerPool (controller workers):              best {best_pool:.3f} s")
    print(f"ratio WorkerPool/baseline: best {best_pool / best_base:.3f}, "
          f"median {median_ratio:.3f} (target <= 1.05)")
    cpu_ratio = min(cpu["worker_pool"]) / min(cpu["baseline"])
    print(f"CPU seconds: baseline best {min(cpu['baseline']):.2f}, WorkerPool best "
          f"{min(cpu['worker_pool']):.2f}, ratio {cpu_ratio:.3f}")


if __name__ == "__main__":
    main()
