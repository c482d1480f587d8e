"""The baselines a chemist would otherwise pick, timed on the same molecules as the platform.

(a) ``direct``: a ``multiprocessing`` pool of xtb-python workers, one per physical core, one
    thread each. Single points call ``xtb.interface.Calculator`` (GFN2-xTB, muted); optimisations
    run an ASE optimiser on xtb-python's ASE calculator with the platform's
    ``GeometryOptimization`` defaults, read from the SDK at run time (:func:`opt_settings`; at
    the time of writing ANC-RFO, fmax 0.001 eV/Angstrom, at most 1000 steps). Workers import xtb
    and compute a warm-up water molecule before the clock starts; tasks go out one at a time
    (``imap_unordered``, chunksize 1).

(b) ``xtb_program``: the ``xtb`` executable, once per molecule in its own temporary directory,
    ``xtb mol.xyz --gfn 2`` (plus ``--opt LEVEL``), one process per physical core at a time
    (a thread pool of ``subprocess.run``), ``OMP_NUM_THREADS=1`` and the stack limit raised as
    with ``ulimit -s unlimited``. The energy is the last ``| TOTAL ENERGY ... Eh |`` line of its
    standard output (12 decimals; ``xtbout.json`` would round to 8).

    The xtb optimiser (ANCopt) converges on the change in energy *and* the Euclidean norm of the
    whole gradient; ASE converges on the largest per-atom force. The level is the one whose
    gradient-norm threshold is nearest (on a log scale) to fmax in Eh/bohr
    (:func:`xtb_opt_level_for`): fmax 0.01 eV/Angstrom = 1.94e-4 Eh/bohr gives ``vtight``
    (2e-4 Eh/bohr, energy change 1e-7 Eh); fmax 0.001 = 1.94e-5 Eh/bohr gives ``extreme``
    (5e-5 Eh/bohr, 5e-8 Eh), the tightest level xtb has. See bench/README.md for how the final
    energies compare with ASE's.

Both return a :class:`BaselineResult` with the wall time and per-molecule energies (Hartree) in
input order; a molecule that fails has energy ``None`` and an error message.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

Kind = Literal["sp", "opt"]
Molecule = tuple[str, Sequence[int], Sequence[Sequence[float]]]

# Fallback for the platform's GeometryOptimization defaults (atomiverse_core/jobs.py) when the
# SDK cannot be imported; opt_settings() reads the real ones. Without the SDK there is no
# controller either, hence no BFGS-Lindh: the fallback is plain ASE.
FALLBACK_OPTIMIZER = "LBFGS"
FALLBACK_FMAX_EV_PER_ANGSTROM = 0.001
FALLBACK_MAX_STEPS = 1000

# xtb's --opt levels: (energy change / Eh, gradient norm / Eh bohr^-1), from xtb 6.5.1's output.
XTB_OPT_LEVELS: dict[str, tuple[float, float]] = {
    "crude": (5e-4, 1e-2), "sloppy": (1e-4, 6e-3), "loose": (5e-5, 4e-3), "lax": (2e-5, 2.5e-3),
    "normal": (5e-6, 1e-3), "tight": (1e-6, 8e-4), "vtight": (1e-7, 2e-4),
    "extreme": (5e-8, 5e-5),
}

ONE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}

_ELEMENTS = (
    "X H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge "
    "As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm "
    "Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn"
).split()


def cpu_snapshot(pids: Sequence[int]) -> dict[int, float]:
    """User + system CPU seconds of each live process in ``pids``."""
    import psutil

    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two snapshots by the processes alive at the second; one that
    started in between counts in full, one that exited in between is lost."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


@dataclass(frozen=True)
class OptSettings:
    optimizer: str = FALLBACK_OPTIMIZER  # a class in ase.optimize, "BFGS-Lindh" or "geomeTRIC"
    fmax: float = FALLBACK_FMAX_EV_PER_ANGSTROM  # eV/Angstrom
    max_steps: int = FALLBACK_MAX_STEPS
    source: str = "fallback"


def opt_settings() -> OptSettings:
    """The platform's GeometryOptimization defaults, from the SDK if it can be imported."""
    try:
        from atomiverse.jobs import GeometryOptimization
    except ImportError:
        return OptSettings()
    f = GeometryOptimization.model_fields
    return OptSettings(optimizer=f["optimizer"].default, fmax=float(f["fmax"].default),
                       max_steps=int(f["max_steps"].default),
                       source="atomiverse.jobs.GeometryOptimization")


def xtb_opt_level_for(fmax_ev_per_angstrom: float) -> str:
    """The xtb --opt level whose gradient-norm threshold is nearest to fmax (log scale)."""
    import math

    from ase.units import Bohr, Hartree

    target = fmax_ev_per_angstrom * Bohr / Hartree  # Eh/bohr
    return min(XTB_OPT_LEVELS, key=lambda k: abs(math.log(XTB_OPT_LEVELS[k][1] / target)))


def physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


@dataclass
class BaselineResult:
    """Wall time of one workload on one baseline, with per-molecule outcomes in input order."""

    name: str
    kind: Kind
    workers: int
    wall_seconds: float
    ids: list[str]
    energies: list[float | None]  # Hartree
    errors: list[str | None] = field(default_factory=list)
    steps: list[int | None] = field(default_factory=list)  # optimisation steps / cycles
    converged: list[bool | None] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    # CPU time (user + system) of every process taking part, during the timed region: less
    # sensitive than wall time to other work on the machine.
    cpu_seconds: float | None = None
    # When the workload ran several times: every run's wall time, in run order. The other
    # fields are those of the median run (see median_run).
    wall_samples_seconds: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def n_failed(self) -> int:
        return sum(e is None for e in self.energies)

    @property
    def per_second(self) -> float:
        return self.n / self.wall_seconds if self.wall_seconds > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(n=self.n, n_failed=self.n_failed, per_second=self.per_second)
        return d


def median_run(runs: Sequence[BaselineResult]) -> BaselineResult:
    """The run with the median wall time (the lower middle one of an even number), carrying
    every run's wall time in ``wall_samples_seconds``."""
    if not runs:
        raise ValueError("no runs")
    ordered = sorted(runs, key=lambda r: r.wall_seconds)
    return replace(ordered[(len(runs) - 1) // 2],
                   wall_samples_seconds=[r.wall_seconds for r in runs])


# ==== (a) direct: multiprocessing pool of xtb-python =========================================

def _init_worker(ready: Any) -> None:
    """Pool initializer: one thread, import xtb and ASE, compute a warm-up molecule, report."""
    os.environ.update(ONE_THREAD_ENV)  # before xtb (libgomp, OpenBLAS) is loaded
    import ase  # noqa: F401
    import ase.optimize  # noqa: F401
    import numpy as np
    from xtb.ase.calculator import XTB  # noqa: F401
    from xtb.interface import Calculator, Param
    from xtb.libxtb import VERBOSITY_MUTED

    with contextlib.suppress(ImportError):  # the platform's optimisers, when they are there
        import atomiverse_core.drivers.anc
        import atomiverse_core.drivers.optimize  # noqa: F401

    water = Calculator(Param.GFN2xTB, np.array([8, 1, 1]),
                       np.array([[0.0, 0.0, 0.22], [0.0, 1.43, -0.89], [0.0, -1.43, -0.89]]))
    water.set_verbosity(VERBOSITY_MUTED)
    water.singlepoint()
    ready.put(os.getpid())


def _sp_task(task: tuple[int, Sequence[int], Sequence[Sequence[float]]]) -> tuple[int, dict]:
    i, numbers, positions = task
    try:
        import numpy as np
        from ase.units import Bohr
        from xtb.interface import Calculator, Param
        from xtb.libxtb import VERBOSITY_MUTED

        calc = Calculator(Param.GFN2xTB, np.asarray(numbers, dtype=int),
                          np.asarray(positions, dtype=float) / Bohr)
        calc.set_verbosity(VERBOSITY_MUTED)
        res = calc.singlepoint()
        return i, {"energy": float(res.get_energy())}
    except Exception as exc:  # noqa: BLE001 - one bad molecule must not stop the benchmark
        return i, {"error": f"{type(exc).__name__}: {exc}"}


def _opt_task(task: tuple[int, Sequence[int], Sequence[Sequence[float]], OptSettings]
              ) -> tuple[int, dict]:
    i, numbers, positions, settings = task
    try:
        import ase
        from ase.units import Hartree
        from xtb.ase.calculator import XTB

        atoms = ase.Atoms(numbers=list(numbers), positions=positions)
        atoms.calc = XTB(method="GFN2-xTB")
        if settings.optimizer == "geomeTRIC":
            return i, _geometric_opt(atoms, settings)
        opt = _optimizer_class(settings.optimizer)(atoms, logfile=None)
        converged = bool(opt.run(fmax=settings.fmax, steps=settings.max_steps))
        return i, {"energy": float(atoms.get_potential_energy() / Hartree),
                   "steps": int(opt.get_number_of_steps()), "converged": converged}
    except Exception as exc:  # noqa: BLE001
        return i, {"error": f"{type(exc).__name__}: {exc}"}


def _optimizer_class(name: str) -> type:
    """An ASE optimiser by name; the platform's own ("ANC-RFO", "BFGS-Lindh") are taken from the
    controller's engines the way one would take any optimiser from a library (the optimiser
    only: the calculator and the pool stay the baseline's own)."""
    try:
        from atomiverse_core.drivers.optimize import ase_optimizer
    except ImportError:  # no controller here: ASE's own optimisers only
        import ase.optimize

        return getattr(ase.optimize, name)
    return ase_optimizer(name)


def _geometric_opt(atoms: Any, settings: OptSettings) -> dict:
    """geomeTRIC as a chemist would drive it: its own ASE engine around xtb-python's ASE
    calculator, stopping on the largest force alone (the platform's test), chatter discarded."""
    import geometric.molecule
    import geometric.optimize
    from ase.units import Bohr, Hartree
    from geometric.ase_engine import EngineASE
    from geometric.errors import GeomOptNotConvergedError

    mol = geometric.molecule.Molecule()
    mol.elem = atoms.get_chemical_symbols()
    mol.xyzs = [atoms.get_positions()]
    engine = EngineASE(mol, atoms.calc)
    off = 1e10
    with tempfile.TemporaryDirectory() as scratch:
        ini = os.path.join(scratch, "log.ini")
        with open(ini, "w") as f:
            f.write("[loggers]\nkeys=root\n[handlers]\nkeys=null\n[formatters]\nkeys=\n"
                    "[logger_root]\nlevel=CRITICAL\nhandlers=null\n[handler_null]\n"
                    "class=logging.NullHandler\nargs=()\n")
        try:
            progress = geometric.optimize.run_optimizer(
                customengine=engine, input=os.path.join(scratch, "job"), logIni=ini,
                maxiter=settings.max_steps, convergence_gmax=settings.fmax / (Hartree / Bohr),
                convergence_energy=off, convergence_grms=off, convergence_drms=off,
                convergence_dmax=off)
            converged = True
        except GeomOptNotConvergedError:
            return {"energy": None, "steps": settings.max_steps, "converged": False}
    return {"energy": float(progress.qm_energies[-1]), "steps": len(progress) - 1,
            "converged": converged}


def _set_env(values: dict[str, str | None]) -> None:
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@contextlib.contextmanager
def scoped_env(values: dict[str, str | None]) -> Iterator[None]:
    """Set (None: unset) these environment variables for the block, then put them back."""
    old = {k: os.environ.get(k) for k in values}
    _set_env(values)
    try:
        yield
    finally:
        _set_env(old)


class DirectPool:
    """A warm pool of single-threaded xtb-python workers, one per physical core.

    ``spawn`` workers, so they never inherit an OpenMP runtime from the parent; the parent's
    environment is one-threaded while they start so numpy's OpenBLAS in a child (imported while
    unpickling) is one-threaded as well. Construction returns once every worker has imported xtb
    and computed its warm-up molecule, so that cost stays outside the timings."""

    def __init__(self, workers: int | None = None, start_timeout: float = 120.0) -> None:
        self.workers = workers or physical_cores()
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Queue()
        with scoped_env(ONE_THREAD_ENV):
            self._pool = ctx.Pool(self.workers, initializer=_init_worker, initargs=(ready,))
        try:
            pids = {ready.get(timeout=start_timeout) for _ in range(self.workers)}
        except Exception:
            self._pool.terminate()
            raise
        self.pids = sorted(pids)

    def run(self, molecules: Sequence[Molecule], kind: Kind,
            opt: OptSettings | None = None) -> BaselineResult:
        """Time ``molecules``; optimisations with ``opt`` (default: :func:`opt_settings`)."""
        opt = opt or opt_settings()
        fn = {"sp": _sp_task, "opt": _opt_task}[kind]
        tasks: list[tuple] = [(i, list(z), [list(p) for p in pos])
                              for i, (_, z, pos) in enumerate(molecules)]
        if kind == "opt":
            tasks = [(*t, opt) for t in tasks]
        out: list[dict] = [{} for _ in tasks]
        pids = [os.getpid(), *self.pids]
        cpu0 = cpu_snapshot(pids)
        t0 = time.perf_counter()
        for i, res in self._pool.imap_unordered(fn, tasks, chunksize=1):
            out[i] = res
        wall = time.perf_counter() - t0
        cpu = cpu_delta(cpu0, cpu_snapshot(pids))
        settings: dict[str, Any] = {"engine": "xtb-python", "method": "GFN2-xTB",
                                    "threads_per_worker": 1}
        if kind == "opt":
            settings.update(optimizer=f"ase.optimize.{opt.optimizer}", fmax=opt.fmax,
                            max_steps=opt.max_steps, settings_from=opt.source)
        return BaselineResult(
            name="direct", kind=kind, workers=self.workers, wall_seconds=wall,
            ids=[m[0] for m in molecules],
            energies=[r.get("energy") for r in out], errors=[r.get("error") for r in out],
            steps=[r.get("steps") for r in out], converged=[r.get("converged") for r in out],
            settings=settings, cpu_seconds=cpu)

    def close(self) -> None:
        self._pool.close()
        self._pool.join()

    def __enter__(self) -> DirectPool:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._pool.terminate()
            self._pool.join()


def run_direct(molecules: Sequence[Molecule], kind: Kind, workers: int | None = None,
               opt: OptSettings | None = None) -> BaselineResult:
    """Time ``molecules`` on a fresh warm :class:`DirectPool` (pool start-up not timed)."""
    with DirectPool(workers) as pool:
        return pool.run(molecules, kind, opt)


# ==== (b) the xtb program ====================================================================

class XtbProgramNotFound(RuntimeError):
    pass


_TOTAL_ENERGY = re.compile(r"\|\s*TOTAL ENERGY\s+(-?\d+\.\d+)\s+Eh\s*\|")
_OPT_CYCLES = re.compile(r"GEOMETRY OPTIMIZATION CONVERGED AFTER\s+(\d+)\s+ITERATIONS")


def find_xtb_program(xtb: str | None = None) -> str:
    path = shutil.which(xtb or os.environ.get("XTB_PROGRAM", "xtb"))
    if path is None:
        raise XtbProgramNotFound(
            "the xtb program is not installed (no `xtb` on PATH). Install it with "
            "`apt-get install xtb` (Debian/Ubuntu), `conda install -c conda-forge xtb`, or a "
            "release from https://github.com/grimme-lab/xtb/releases; or set XTB_PROGRAM to its "
            "path.")
    return path


def xtb_program_version(xtb: str | None = None) -> str:
    out = subprocess.run([find_xtb_program(xtb), "--version"], capture_output=True, text=True,
                         timeout=60).stdout
    m = re.search(r"xtb version (\S+)", out)
    return m.group(1) if m else "unknown"


def write_xyz(path: str, numbers: Sequence[int], positions: Sequence[Sequence[float]],
              comment: str = "") -> None:
    lines = [str(len(numbers)), comment.replace("\n", " ")]
    lines += [f"{_ELEMENTS[z]:<2s} {x:20.12f} {y:20.12f} {zc:20.12f}"
              for z, (x, y, zc) in zip(numbers, positions, strict=True)]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def parse_total_energy(stdout: str) -> float | None:
    """The last ``| TOTAL ENERGY  ... Eh |`` of an xtb run (after an optimisation: the final)."""
    found = _TOTAL_ENERGY.findall(stdout)
    return float(found[-1]) if found else None


@contextlib.contextmanager
def _stack_unlimited() -> Iterator[None]:
    """``ulimit -s unlimited`` (or the hard limit) for children started inside the block.

    Set in the parent and inherited at fork, rather than via ``preexec_fn``, which is not safe
    with the thread pool that starts the processes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    changed = False
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_STACK, (hard, hard))
            changed = True
        except (ValueError, OSError):
            pass
    try:
        yield
    finally:
        if changed:
            resource.setrlimit(resource.RLIMIT_STACK, (soft, hard))


def _self_and_children_cpu() -> float:
    """CPU time of this process plus its reaped children (the finished xtb processes)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _run_xtb_one(xtb: str, root: str, i: int, mol: Molecule, kind: Kind, opt_level: str,
                 env: dict[str, str], timeout: float) -> dict[str, Any]:
    workdir = os.path.join(root, f"mol{i:05d}")
    os.mkdir(workdir)
    write_xyz(os.path.join(workdir, "mol.xyz"), mol[1], mol[2], comment=mol[0])
    cmd = [xtb, "mol.xyz", "--gfn", "2"]
    if kind == "opt":
        cmd += ["--opt", opt_level]
    try:
        proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    energy = parse_total_energy(proc.stdout)
    out: dict[str, Any] = {}
    if kind == "opt":
        m = _OPT_CYCLES.search(proc.stdout)
        out["steps"] = int(m.group(1)) if m else None
        out["converged"] = m is not None and not os.path.exists(
            os.path.join(workdir, "NOT_CONVERGED"))
    if proc.returncode != 0 or energy is None:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-3:]
        out["error"] = f"xtb exited {proc.returncode}: " + " | ".join(tail)
    else:
        out["energy"] = energy
    return out


def run_xtb_program(molecules: Sequence[Molecule], kind: Kind, workers: int | None = None,
                    opt_level: str | None = None, xtb: str | None = None,
                    timeout: float = 3600.0, keep_dir: str | None = None) -> BaselineResult:
    """Run the xtb executable once per molecule, ``workers`` at a time (default: one per core).

    ``opt_level`` defaults to :func:`xtb_opt_level_for` the platform's fmax. Raises
    :class:`XtbProgramNotFound` (with install instructions) if ``xtb`` is missing."""
    exe = find_xtb_program(xtb)
    if opt_level is None:
        opt_level = xtb_opt_level_for(opt_settings().fmax)
    elif opt_level not in XTB_OPT_LEVELS:
        raise ValueError(f"unknown xtb --opt level {opt_level!r}; one of {list(XTB_OPT_LEVELS)}")
    workers = workers or physical_cores()
    env = {**os.environ, **ONE_THREAD_ENV}
    env.pop("OMP_PROC_BIND", None)
    out: list[dict[str, Any]] = [{} for _ in molecules]
    root = tempfile.mkdtemp(prefix="bench-xtb-", dir=keep_dir)
    try:
        with _stack_unlimited(), concurrent.futures.ThreadPoolExecutor(workers) as pool:
            cpu0 = _self_and_children_cpu()
            t0 = time.perf_counter()
            futures = {pool.submit(_run_xtb_one, exe, root, i, m, kind, opt_level, env,
                                   timeout): i for i, m in enumerate(molecules)}
            for fut in concurrent.futures.as_completed(futures):
                i = futures[fut]
                try:
                    out[i] = fut.result()
                except Exception as exc:  # noqa: BLE001
                    out[i] = {"error": f"{type(exc).__name__}: {exc}"}
            wall = time.perf_counter() - t0
            cpu = _self_and_children_cpu() - cpu0
    finally:
        if keep_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    settings: dict[str, Any] = {"engine": f"xtb program {xtb_program_version(exe)}",
                                "command": "xtb mol.xyz --gfn 2"
                                + (f" --opt {opt_level}" if kind == "opt" else ""),
                                "threads_per_process": 1}
    if kind == "opt":
        econv, gconv = XTB_OPT_LEVELS[opt_level]
        settings.update(opt_level=opt_level, energy_convergence_hartree=econv,
                        gradient_norm_convergence_hartree_per_bohr=gconv)
    return BaselineResult(
        name="xtb_program", kind=kind, workers=workers, wall_seconds=wall,
        ids=[m[0] for m in molecules],
        energies=[r.get("energy") for r in out], errors=[r.get("error") for r in out],
        steps=[r.get("steps") for r in out], converged=[r.get("converged") for r in out],
        settings=settings, cpu_seconds=cpu)
