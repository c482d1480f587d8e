"""A probe, not the product: would RMSD-biased metadynamics at GFN-FF (CREST's iMTD idea)
reach the lowest basins that the default conformer search misses (issue 27, item 4)?

    python bench/conformer_mtd_probe.py metoprolol [--ps 5] [--prescreened 40] [--refined 8]
                                                   [--seed 0] [--start FILE]

For one molecule of ``bench/conformers.py``'s set, from the same input geometry the search
starts from (``Atoms.from_smiles``): six metadynamics runs at GFN-FF, 300 K, Langevin
(friction 0.01 / fs), time step 2 fs with hydrogens at 4 u; the bias is
``k exp(-alpha RMSD^2)`` over every atom (RMSD in Bohr after superposition) around a
structure of the run's own trajectory taken each picosecond, with ``k`` = 0.001 Hartree per
atom or half of it and ``alpha`` 1.3, 0.78 or 0.468 per Bohr^2 (CREST's first values); a
snapshot every 100 fs. Then a funnel of its own, on the snapshots alone: each optimised at
GFN-FF (fmax 0.05 eV/Angstrom), a GFN2-xTB single point on each minimum, the
``--prescreened`` lowest optimised loosely at GFN2-xTB (fmax 0.05), the ``--refined``
lowest distinct (0.1 kcal/mol) optimised at the search's defaults (fmax 0.001). Prints the
lowest against the 500-candidate reference in ``bench/reference/conformers`` and the CPU
seconds of each stage (``time.process_time`` of the worker processes, one thread each).

It uses the controller's xtb-python session directly, in two worker processes (their standard
output, GFN-FF's topology printout, discarded), and leaves GFN-FF's topology files in a
temporary directory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, *(ROOT / d for d in ("core", "sdk", "controller"))):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import numpy as np
from ase.data import atomic_masses
from ase.units import Bohr
from atomiverse_controller.engines.xtb_python import XTBSession
from atomiverse_core.drivers.contract import EngineError, Molecule
from atomiverse_core.drivers.optimize import run_optimizer

from bench.conformers import MOLECULES

HARTREE_KCAL = 627.509474
AMU_AU = 1822.888486  # electron masses per atomic mass unit
FS_AU = 41.341374575751  # atomic time units per femtosecond
KB_HARTREE = 3.166811563e-6  # per kelvin
TIME_STEP_FS = 2.0
BIAS_EVERY_FS = 1000.0
SNAPSHOT_EVERY_FS = 100.0
SETTINGS = [(1.0, 1.3), (0.5, 1.3), (1.0, 0.78), (0.5, 0.78), (1.0, 0.468), (0.5, 0.468)]

NUMBERS: np.ndarray
START: np.ndarray


def _molecule(positions: Any, method: str) -> Molecule:
    return Molecule(numbers=NUMBERS, positions_angstrom=np.asarray(positions, float), charge=0,
                    uhf=0, method=method)


def superposed_rmsd(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """RMSD of ``x`` to ``y`` after the best rotation (Kabsch), and its gradient in ``x``
    (the rotation's own derivative vanishes at the optimum)."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    u, _, vt = np.linalg.svd(yc.T @ xc)
    flip = np.diag([1.0, 1.0, np.sign(np.linalg.det(vt.T @ u.T))])
    diff = xc - yc @ (vt.T @ flip @ u.T).T
    rmsd = math.sqrt((diff ** 2).sum() / len(x))
    return rmsd, diff / (len(x) * max(rmsd, 1e-8))


def metadynamics(setting: tuple[float, float, int, float, str]) -> tuple[list[Any], float]:
    k_push, alpha, seed, ps, workdir = setting
    os.chdir(workdir)
    cpu = time.process_time()
    rng = np.random.default_rng(seed)
    session = XTBSession(_molecule(START, "gfn-ff"))
    masses = np.array([4.0 if z == 1 else atomic_masses[z] for z in NUMBERS]) * AMU_AU
    temperature, dt, gamma = 300.0, TIME_STEP_FS * FS_AU, 0.01 / FS_AU
    x = START / Bohr
    v = rng.normal(size=x.shape) * np.sqrt(KB_HARTREE * temperature / masses)[:, None]
    bias: list[np.ndarray] = []

    def forces(x: np.ndarray) -> np.ndarray:
        _, gradient = session.evaluate(x)
        for y in bias:
            r, dr = superposed_rmsd(x, y)
            gradient = gradient - 2 * alpha * r * k_push * math.exp(-alpha * r * r) * dr
        return -gradient

    f = forces(x)
    c1 = math.exp(-gamma * dt)
    c2 = np.sqrt((1 - c1 * c1) * KB_HARTREE * temperature / masses)[:, None]
    snapshots = []
    for step in range(1, int(ps * 1000 / TIME_STEP_FS) + 1):  # BAOAB Langevin
        v += 0.5 * dt * f / masses[:, None]
        x += 0.5 * dt * v
        v = c1 * v + c2 * rng.normal(size=x.shape)
        x += 0.5 * dt * v
        f = forces(x)
        v += 0.5 * dt * f / masses[:, None]
        if step % int(BIAS_EVERY_FS / TIME_STEP_FS) == 0:
            bias.append(x.copy())
        if step % int(SNAPSHOT_EVERY_FS / TIME_STEP_FS) == 0:
            snapshots.append((x * Bohr).tolist())
    return snapshots, time.process_time() - cpu


def optimised(task: tuple[Any, str, float, int, str]) -> tuple[float | None, Any, float]:
    positions, method, fmax, max_steps, workdir = task
    os.chdir(workdir)
    cpu = time.process_time()
    try:
        trace = run_optimizer(XTBSession(_molecule(positions, method)),
                              _molecule(positions, method), "LBFGS", fmax, max_steps,
                              keep_frames=False)
    except EngineError:  # a failed candidate is left out, as in the search
        return None, None, time.process_time() - cpu
    return (trace.energies_hartree[-1], trace.positions_angstrom.tolist(),
            time.process_time() - cpu)


def single_point(task: tuple[Any, str]) -> tuple[float, float]:
    positions, workdir = task
    os.chdir(workdir)
    cpu = time.process_time()
    energy = XTBSession(_molecule(positions, "gfn2-xtb")).evaluate(
        np.asarray(positions) / Bohr)[0]
    return energy, time.process_time() - cpu


def _init(numbers: list[int], start: list[list[float]]) -> None:
    global NUMBERS, START
    NUMBERS, START = np.array(numbers), np.array(start, float)
    # GFN-FF prints its topology for every new calculator: thousands of lines a run.
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)


def main() -> None:
    from atomiverse import Atoms

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("molecule", choices=sorted(MOLECULES))
    p.add_argument("--ps", type=float, default=5.0, help="length of each run, picoseconds")
    p.add_argument("--prescreened", type=int, default=40)
    p.add_argument("--refined", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="the first run's; the others follow")
    p.add_argument("--start", type=Path, help="JSON with the geometry to start from under "
                   "'positions_angstrom' (default: the search's input geometry)")
    a = p.parse_args()
    ref = json.loads((ROOT / "bench/reference/conformers" / f"{a.molecule}-500.json")
                     .read_text())
    atoms = Atoms.from_smiles(MOLECULES[a.molecule])
    assert list(atoms.numbers) == ref["numbers"], "the reference's atoms are in another order"
    work = tempfile.mkdtemp(prefix="mtd-probe-")
    start = json.loads(a.start.read_text())["positions_angstrom"] if a.start \
        else atoms.positions
    init = (list(atoms.numbers), [list(map(float, r)) for r in start])
    k_push = 0.001 * len(atoms.numbers)  # Hartree
    cpu: dict[str, float] = {}
    with Pool(2, initializer=_init, initargs=init) as pool:
        runs = pool.map(metadynamics, [(k_push * f, alpha, seed, a.ps, work)
                                       for seed, (f, alpha) in enumerate(SETTINGS, a.seed)])
        snapshots = [s for run in runs for s in run[0]]
        cpu["metadynamics"] = sum(run[1] for run in runs)
        ff = pool.map(optimised, [(s, "gfn-ff", 0.05, 300, work) for s in snapshots],
                      chunksize=10)
        cpu["GFN-FF optimisations"] = sum(o[2] for o in ff)
        minima = [(e, pos) for e, pos, _ in ff if e is not None]
        points = pool.map(single_point, [(pos, work) for _, pos in minima], chunksize=10)
        cpu["single points"] = sum(pt[1] for pt in points)
        order = sorted(range(len(minima)), key=lambda i: points[i][0])[:a.prescreened]
        pre = pool.map(optimised, [(minima[i][1], "gfn2-xtb", 0.05, 200, work)
                                   for i in order])
        cpu["prescreen"] = sum(o[2] for o in pre)
        distinct: list[tuple[float, Any]] = []
        for e, pos in sorted(((e, pos) for e, pos, _ in pre if e is not None),
                             key=lambda t: t[0]):
            if all(abs(e - d[0]) * HARTREE_KCAL > 0.1 for d in distinct):
                distinct.append((e, pos))
        fin = pool.map(optimised, [(pos, "gfn2-xtb", 0.001, 1000, work)
                                   for _, pos in distinct[:a.refined]])
        cpu["refine"] = sum(o[2] for o in fin)
    lowest = min(e for e, _, _ in fin if e is not None)
    above = (lowest - ref["energy_hartree"]) * HARTREE_KCAL
    print(f"{a.molecule}: {len(snapshots)} snapshots, {len(minima)} GFN-FF minima; lowest "
          f"{lowest:.8f} Hartree, {above:.3f} kcal/mol above the reference "
          f"({ref['energy_hartree']:.8f})")
    total = sum(cpu.values())
    print("CPU seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()) +
          f"; total {total:.1f} = {total / ref['core_seconds']:.3f} of the reference's "
          f"{ref['core_seconds']:.0f}")


if __name__ == "__main__":
    main()
