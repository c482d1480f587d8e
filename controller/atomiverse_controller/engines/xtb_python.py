"""GFN-xTB and GFN-FF through xtb-python (``xtb`` on PyPI, wheels up to Python 3.11).

Library defaults are kept (accuracy 1.0, electronic temperature 300 K, 250 SCF cycles), so a
result equals ``xtb.interface.Calculator(...).singlepoint()`` called directly. Output is muted.

Methods: GFN2-xTB and GFN1-xTB are built into the wheel. GFN0-xTB and GFN-FF read parameter
files the wheel does not ship (``param_gfn0-xtb.txt``, ``.param_gfnff.xtb``); they come with the
xtb program (Debian/Ubuntu ``apt install xtb`` puts them in /usr/share/xtb, conda-forge's ``xtb``
in $CONDA_PREFIX/share/xtb) and are found through XTBPATH, XTBHOME or those places. Both run in a
forked child (:mod:`.isolate`): GFN0 leaves libxtb state behind that shifts later GFN2 energies,
and GFN-FF writes topology files into the working directory.

Solvation: GBSA only (``Calculator.set_solvent``); xtb-python's API has no ALPB.

Orientation: libxtb 6.5.1 (the one in the 22.1 wheel) computes wrong gradients when a Cartesian
coordinate of one atom equals that of another to within ~1e-7 Angstrom (grimme-lab/xtb#986,
fixed upstream by #1208/#1214): a planar molecule lying in the xy plane, as drawn by hand or
written in a standard orientation, gets out-of-plane gradient errors of 1e-3 Hartree/Bohr,
enough to turn the imaginary mode of planar ammonia real. A session whose first geometry has
such a coincidence (GFN-xTB methods only; GFN-FF is unaffected) hands xtb the molecule turned by
one fixed, generic rotation (ORIENTATION) and turns gradient and dipole back; any other geometry
goes to xtb exactly as given, so its result equals a direct call. Turned, vacuum energies still equal a direct call to ~1e-10 Hartree; GBSA
energies to a few 1e-6, the orientation dependence of GBSA's surface grid.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from atomiverse_core import jobtypes

from .base import Engine, EngineError, Molecule, electronic_properties

_PARAM_NAMES = {"gfn2-xtb": "GFN2xTB", "gfn1-xtb": "GFN1xTB", "gfn0-xtb": "GFN0xTB",
                "gfn-ff": "GFNFF"}
# Methods whose parameters live in a file next to the xtb program, not in the wheel.
PARAMETER_FILES = {"gfn0-xtb": "param_gfn0-xtb.txt", "gfn-ff": ".param_gfnff.xtb"}


def _rotation(axis: tuple[float, float, float], angle_rad: float) -> np.ndarray:
    k = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * cross + (1 - np.cos(angle_rad)) * cross @ cross


# Turned positions go to xtb as positions @ ORIENTATION.T: an axis and angle that no symmetric
# molecule in a standard orientation shares.
ORIENTATION = _rotation((0.5704, 0.3179, 0.7574), 0.9367)
COINCIDENT_ANGSTROM = 1e-5  # two atoms this close in x, y or z need turning (bug below 1e-7)


def shares_a_coordinate(positions_angstrom: np.ndarray) -> bool:
    """Whether two atoms have (almost) the same x, y or z coordinate."""
    columns = np.sort(np.asarray(positions_angstrom, dtype=float), axis=0)
    if columns.shape[0] < 2:
        return False
    return bool((columns[1:] - columns[:-1]).min() < COINCIDENT_ANGSTROM)


# Our canonical solvent names -> xtb-python's names for them (xtb.utils.get_solvent).
_GBSA_NAMES = {"water": "h2o", "hexane": "n-hexane"}


def parameter_dir(method: str) -> Path | None:
    """The directory holding ``method``'s parameter file, or None if there is none here."""
    filename = PARAMETER_FILES[method]
    candidates = [*os.environ.get("XTBPATH", "").split(os.pathsep)]
    if home := os.environ.get("XTBHOME"):
        candidates += [home, os.path.join(home, "share", "xtb")]
    candidates += [os.path.join(sys.prefix, "share", "xtb"),
                   os.path.join(os.environ.get("CONDA_PREFIX", sys.prefix), "share", "xtb"),
                   "/usr/local/share/xtb", "/usr/share/xtb"]
    for c in candidates:
        if c and (Path(c) / filename).is_file():
            return Path(c)
    return None


def require_parameters(molecule: Molecule) -> Path:
    """The parameter directory for ``molecule``'s method, or EngineError("input") saying how
    to get one."""
    found = parameter_dir(molecule.method)
    if found is None:
        raise EngineError(
            f"level_of_theory.method: {molecule.level} needs xtb's parameter file "
            f"{PARAMETER_FILES[molecule.method]}, which the xtb-python wheel does not ship: "
            f"install the xtb program (apt install xtb, or conda install -c conda-forge xtb) "
            f"or point XTBPATH at a directory holding it", "input")
    return found


def _xtb_error(e: Exception, when: str) -> EngineError:
    """xtb reports every failure as XTBException; its message says what happened."""
    text = " ".join(str(e).split())
    if "converge" in text:
        return EngineError(f"xtb: SCF did not converge ({text})", "convergence")
    # Setup fails on the input itself (atoms too close, unknown element); later failures don't.
    error_type = "input" if when == "setup" else "internal"
    return EngineError(f"xtb {when} failed: {text}", error_type)


@dataclass
class _Warm:
    """An xtb Calculator and the SCF accuracy set on it now."""

    calc: Any
    accuracy: float = 1.0


class SpareCalculator:
    """The last xtb Calculator a session of this worker used, for the next session of the same
    molecule (elements, charge, spin, method, solvent). Creating one costs about 1.1 ms (its
    parametrisation set up, ``Calculator._load``): as long as a whole GFN2-xTB single point of
    ethanol, the ASE calculator's every call. Moved to the new geometry and run from fresh
    Results (no restart from another job's charges), a kept one gives the same energy,
    gradient and charges to the last bit as a new one (GFN2 and GFN1, vacuum and GBSA, over
    different conformers). GFN0-xTB and GFN-FF are never kept: each runs in a forked child,
    and GFN-FF sets its topology up from its first geometry. (tblite's Calculator costs
    about 0.1 ms to create: not worth keeping.)"""

    KEPT_METHODS = frozenset({"gfn2-xtb", "gfn1-xtb"})

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._warm: _Warm | None = None

    @classmethod
    def key(cls, m: Molecule) -> tuple[Any, ...] | None:
        if m.method not in cls.KEPT_METHODS:
            return None
        return (m.method, tuple(int(z) for z in m.numbers), m.charge, m.uhf, m.solvation)

    def get(self, key: tuple[Any, ...] | None) -> _Warm | None:
        return self._warm if key is not None and key == self._key else None

    def keep(self, key: tuple[Any, ...] | None, warm: _Warm) -> None:
        if key is not None:
            self._key, self._warm = key, warm

    def clear(self) -> None:
        self._key = self._warm = None

    def drop(self, warm: _Warm) -> None:
        """After an xtb error (a geometry update, a calculation): a calculator that failed
        is not handed to another job."""
        if self._warm is warm:
            self.clear()


class XTBSession:
    """One xtb Calculator for one molecule; later evaluations only move the atoms. Several
    sessions of one molecule may share one calculator (:class:`SpareCalculator`): every
    evaluation sets the geometry and accuracy it needs."""

    def __init__(self, molecule: Molecule, spare: SpareCalculator | None = None) -> None:
        self._molecule = molecule
        self._warm: _Warm | None = None
        self._res: Any = None
        self._accuracy = 1.0  # xtb's accuracy: SCF thresholds scale with it
        self._spare = spare or SpareCalculator()
        self._key = SpareCalculator.key(molecule)
        # Decided once, on the first geometry: symmetry keeps a coincidence through a run.
        # GFN-FF has no tight-binding Hamiltonian, hence not the bug: never turned.
        self._turn: np.ndarray | None = (
            ORIENTATION if molecule.method != "gfn-ff"
            and shares_a_coordinate(molecule.positions_angstrom) else None)

    def _create(self, positions_bohr: np.ndarray) -> Any:
        from xtb.interface import Calculator, Param, XTBException
        from xtb.libxtb import VERBOSITY_MUTED
        from xtb.utils import get_solvent

        m = self._molecule
        if m.method in PARAMETER_FILES:  # in the isolated child: the parent's env stays as is
            found = require_parameters(m)
            os.environ["XTBPATH"] = os.pathsep.join(
                p for p in (str(found), os.environ.get("XTBPATH", "")) if p)
        try:
            calc = Calculator(getattr(Param, _PARAM_NAMES[m.method]), m.numbers, positions_bohr,
                              float(m.charge), int(m.uhf))
        except (XTBException, ValueError) as e:
            raise _xtb_error(e, "setup") from e
        calc.set_verbosity(VERBOSITY_MUTED)
        if m.solvation is not None:
            solvent = m.solvation[1]
            try:
                calc.set_solvent(get_solvent(_GBSA_NAMES.get(solvent, solvent)))
            except XTBException as e:
                raise EngineError(f"level_of_theory.solvation: xtb has no GBSA parameters for "
                                  f"{solvent!r} with {m.level}: {e}", "input") from e
        return calc

    def _calculator_at(self, positions_bohr: np.ndarray) -> Any:
        from xtb.interface import XTBException

        warm = self._warm = self._warm or self._spare.get(self._key)
        if warm is None:
            # Another molecule's spare goes first: a job near the worker's memory cap must
            # not find that cap lowered by a calculator it will never use.
            self._spare.clear()
            self._warm = _Warm(self._create(positions_bohr))
            return self._warm.calc
        try:
            warm.calc.update(positions_bohr)
        except (XTBException, ValueError) as e:
            self._spare.drop(warm)
            raise _xtb_error(e, "geometry update") from e
        return warm.calc

    def evaluate(self, positions_bohr: np.ndarray) -> tuple[float, np.ndarray]:
        from xtb.interface import XTBException

        turned = positions_bohr if self._turn is None else \
            np.asarray(positions_bohr, dtype=float) @ self._turn.T
        calc = self._calculator_at(turned)
        assert self._warm is not None
        if self._accuracy != self._warm.accuracy:
            calc.set_accuracy(self._accuracy)
            self._warm.accuracy = self._accuracy
        try:
            # Passing the previous Results restarts the SCF from its charges (none on the first).
            self._res = calc.singlepoint(self._res)
            gradient = self._res.get_gradient()
            energy = self._res.get_energy()
        except XTBException as e:
            self._spare.drop(self._warm)
            raise _xtb_error(e, "calculation") from e
        self._spare.keep(self._key, self._warm)
        return energy, (gradient if self._turn is None else gradient @ self._turn)

    def set_scf_accuracy(self, scale: float) -> None:
        # GFN0 and GFN-FF have no SCF to loosen; their setup would keep a loose accuracy's
        # cutoffs (GFN-FF's topology), so their final energy would no longer be the default's.
        if self._molecule.method in ("gfn2-xtb", "gfn1-xtb"):
            self._accuracy = float(scale)

    def _dipole(self) -> list[float]:
        dipole = self._res.get_dipole()
        return (dipole if self._turn is None else dipole @ self._turn).tolist()

    def properties(self) -> dict[str, Any]:
        res = self._res
        if self._molecule.method == "gfn-ff":  # a force field: no orbitals, charges, bonds
            return {**electronic_properties(None, None, None),
                    "dipole_au": self._dipole(), "partial_charges_e": None}
        return {
            **electronic_properties(res.get_orbital_eigenvalues(),
                                    res.get_orbital_occupations(), res.get_bond_orders()),
            "dipole_au": self._dipole(),
            "partial_charges_e": res.get_charges().tolist(),
        }


class XTBPythonEngine(Engine):
    name = "xtb"
    methods = frozenset({"gfn2-xtb", "gfn1-xtb", "gfn0-xtb", "gfn-ff"})
    solvation_models = frozenset({"gbsa"})
    isolated_methods = frozenset({"gfn0-xtb", "gfn-ff"})

    def __init__(self) -> None:
        super().__init__()
        self._found: bool | None = None
        self._spare = SpareCalculator()  # one worker process, one engine: see SpareCalculator

    def found(self) -> bool:
        if self._found is None:
            try:
                importlib.import_module("xtb.interface")
                self._found = True
            except (ImportError, OSError):  # OSError: a wheel whose shared library won't load
                self._found = False
        return self._found

    def _read_version(self) -> str:
        # xtb.__version__ is stale in the 22.1 wheel ("20.2"); the distribution knows better.
        try:
            return importlib.metadata.version("xtb")
        except importlib.metadata.PackageNotFoundError:
            from xtb.libxtb import get_api_version

            return f"api-{get_api_version()}"

    def open_session(self, molecule: Molecule) -> XTBSession:
        if not self.found():
            raise EngineError("engine 'xtb' (xtb-python) is not installed here", "input")
        return XTBSession(molecule, self._spare)

    def run(self, job_type: jobtypes.JobType, molecule: Molecule,
            payload: dict[str, Any]) -> dict[str, Any]:
        if molecule.method not in self.isolated_methods:
            return super().run(job_type, molecule, payload)
        from .isolate import run_isolated

        if not self.found():
            raise EngineError("engine 'xtb' (xtb-python) is not installed here", "input")
        if molecule.method in PARAMETER_FILES:
            require_parameters(molecule)  # fail here, cheaply, rather than in the child
        self.version()  # read here, where the cache outlives the child
        return run_isolated(lambda: super(XTBPythonEngine, self).run(job_type, molecule, payload),
                            label=f"xtb {molecule.level}")
