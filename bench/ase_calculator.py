"""The per-call cost of ``AtomiverseCalculator`` beyond the engine (issue 28: under 5 ms on
loopback).

The same sequence of geometries (a short ASE molecular dynamics run of a small molecule, so
that no geometry repeats and nothing is answered from the cache) goes through the engine
library called directly in this process, one thread, a new calculator per geometry as the
platform's workers do for each job (xtb-python where it is installed, else tblite), and through
``AtomiverseCalculator(compute_target="local")`` on the embedded platform. Pairs alternate
(direct, platform; platform, direct; ...); the printed figure is the median over pairs of
(platform - direct) wall time per call, in ms, with both medians, and the platform runs' CPU
per call in each process (client, server, controller, workers; psutil's user + system), which
a shared machine's load disturbs less than wall time.

    python bench/ase_calculator.py                 # 30 calls a run, 4 pairs
    python bench/ase_calculator.py --calls 100 --pairs 6 --smiles CCO
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.baselines import ONE_THREAD_ENV, scoped_env
from bench.cpu_per_batch import _children_cpu, _cpu


def geometries(smiles: str, calls: int, seed: int = 7) -> list[Any]:
    """``calls`` successive geometries of a 0.5 fs MD run at 300 K (a fixed seed)."""
    import atomiverse
    import numpy as np
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet
    from ase.units import fs

    a = atomiverse.Atoms.from_smiles(smiles)
    import ase

    molecule = ase.Atoms(numbers=a.numbers, positions=a.positions)
    molecule.calc = direct_calculator()
    MaxwellBoltzmannDistribution(molecule, temperature_K=300, rng=np.random.default_rng(seed))
    frames = []
    dyn = VelocityVerlet(molecule, timestep=0.5 * fs, logfile=None)
    dyn.attach(lambda: frames.append(molecule.copy()), interval=1)
    dyn.run(calls - 1)
    return frames[:calls]


def direct_calculator() -> Any:
    try:
        from xtb.ase.calculator import XTB

        return XTB(method="GFN2-xTB")
    except ImportError:
        from tblite.ase import TBLite

        return TBLite(method="GFN2-xTB", verbosity=0)


class DirectEngine:
    """The engine library itself, as ``get_forces`` would reach it: one single point per
    geometry on a new calculator."""

    def get_forces(self, atoms: Any) -> Any:
        import numpy as np
        from ase.units import Bohr

        numbers, positions = atoms.numbers, atoms.positions / Bohr
        try:
            from xtb.interface import Calculator, Param
            from xtb.libxtb import VERBOSITY_MUTED
        except ImportError:
            from tblite.interface import Calculator as TBLite

            calc = TBLite("GFN2-xTB", numbers, positions)
            calc.set("verbosity", 0)
            return -np.asarray(calc.singlepoint().get("gradient"))
        calc = Calculator(Param.GFN2xTB, numbers, positions)
        calc.set_verbosity(VERBOSITY_MUTED)
        return -calc.singlepoint().get_gradient()


def time_calls(frames: list[Any], calculator: Any) -> float:
    """Seconds per energy-and-forces call over these frames."""
    started = time.perf_counter()
    for frame in frames:
        if isinstance(calculator, DirectEngine):
            calculator.get_forces(frame)
            continue
        atoms = frame.copy()
        atoms.calc = calculator
        atoms.get_forces()
    return (time.perf_counter() - started) / len(frames)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smiles", default="CCO")
    p.add_argument("--calls", type=int, default=30)
    p.add_argument("--pairs", type=int, default=4)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as home, \
            scoped_env({"ATOMIVERSE_HOME": home, "ATOMIVERSE_BASE_URL": None,
                        "ATOMIVERSE_API_KEY": None, **ONE_THREAD_ENV}):
        import atomiverse
        import psutil
        from atomiverse.ase import AtomiverseCalculator
        from atomiverse.levels import GFN2_XTB

        atomiverse.start_local()
        cpu_per_call: list[tuple[float, ...]] = []
        try:
            server = psutil.Process(json.loads((Path(home) / "server.json").read_text())["pid"])
            controller = psutil.Process(
                json.loads((Path(home) / "controller.json").read_text())["pid"])

            def cpu_now() -> tuple[float, ...]:
                return (time.process_time(), _cpu(server), _cpu(controller),
                        _children_cpu(controller))

            # Not counted: the local controller's and the client's first jobs (connections,
            # the workers' first sessions) cost more than any later call.
            time_calls(geometries(args.smiles, 10, seed=99),
                       AtomiverseCalculator(GFN2_XTB, compute_target="local"))
            runs: list[tuple[float, float]] = []
            for pair in range(args.pairs):
                # A new trajectory per pair (its own velocities): the platform must not answer
                # from its cache. (The same run shifted by a step, as before, repeated every
                # geometry but one of the previous pair's, so from the second pair on nearly
                # every call was a cache hit.)
                frames = geometries(args.smiles, args.calls, seed=1000 + pair)
                platform = AtomiverseCalculator(GFN2_XTB, compute_target="local")
                order = [("direct", DirectEngine()), ("platform", platform)]
                timed = {}
                for name, calc in (order if pair % 2 == 0 else order[::-1]):
                    before = cpu_now()
                    timed[name] = time_calls(frames, calc)
                    if name == "platform":
                        cpu_per_call.append(tuple((b - a) / len(frames) for a, b in
                                                  zip(before, cpu_now(), strict=True)))
                runs.append((timed["direct"], timed["platform"]))
                print(f"pair {pair + 1}: direct {timed['direct'] * 1e3:.2f} ms/call, platform "
                      f"{timed['platform'] * 1e3:.2f} ms/call", flush=True)
        finally:
            atomiverse.stop_local()
    extra = statistics.median((b - a) * 1e3 for a, b in runs)
    print(f"\n{args.smiles}, {args.calls} calls a run, {args.pairs} pairs: direct "
          f"{statistics.median(a for a, _ in runs) * 1e3:.2f} ms/call, platform "
          f"{statistics.median(b for _, b in runs) * 1e3:.2f} ms/call; the platform's own "
          f"cost {extra:.2f} ms a call (median of pairs)")
    medians = [statistics.median(c[k] for c in cpu_per_call) * 1e3 for k in range(4)]
    print("platform CPU a call (median of pairs): " + ", ".join(
        f"{who} {ms:.2f} ms" for who, ms in zip(("client", "server", "controller", "workers"),
                                                 medians, strict=True))
          + f"; total {sum(medians):.2f} ms")


if __name__ == "__main__":
    main()
