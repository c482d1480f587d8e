"""GFN-xTB through xtb-python (``xtb`` on PyPI, wheels up to Python 3.11).

Library defaults are kept (accuracy 1.0, electronic temperature 300 K, 250 SCF cycles), so a
result equals ``xtb.interface.Calculator(...).singlepoint()`` called directly. Output is muted.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any

import numpy as np

from .base import Engine, EngineError, Molecule, homo_lumo_gap_ev

_PARAM_NAMES = {"gfn2-xtb": "GFN2xTB", "gfn1-xtb": "GFN1xTB"}


def _xtb_error(e: Exception, when: str) -> EngineError:
    """xtb reports every failure as XTBException; its message says what happened."""
    text = " ".join(str(e).split())
    if "converge" in text:
        return EngineError(f"xtb: SCF did not converge ({text})", "convergence")
    # Setup fails on the input itself (atoms too close, unknown element); later failures don't.
    error_type = "input" if when == "setup" else "internal"
    return EngineError(f"xtb {when} failed: {text}", error_type)


class XTBSession:
    """One xtb Calculator for one molecule; later evaluations only move the atoms."""

    def __init__(self, molecule: Molecule) -> None:
        self._molecule = molecule
        self._calc: Any = None
        self._res: Any = None

    def _create(self, positions_bohr: np.ndarray) -> Any:
        from xtb.interface import Calculator, Param, XTBException
        from xtb.libxtb import VERBOSITY_MUTED

        m = self._molecule
        try:
            calc = Calculator(getattr(Param, _PARAM_NAMES[m.method]), m.numbers, positions_bohr,
                              float(m.charge), int(m.uhf))
        except (XTBException, ValueError) as e:
            raise _xtb_error(e, "setup") from e
        calc.set_verbosity(VERBOSITY_MUTED)
        return calc

    def evaluate(self, positions_bohr: np.ndarray) -> tuple[float, np.ndarray]:
        from xtb.interface import XTBException

        if self._calc is None:
            self._calc = self._create(positions_bohr)
        else:
            try:
                self._calc.update(positions_bohr)
            except (XTBException, ValueError) as e:
                raise _xtb_error(e, "geometry update") from e
        try:
            # Passing the previous Results restarts the SCF from its charges (none on the first).
            self._res = self._calc.singlepoint(self._res)
            return self._res.get_energy(), self._res.get_gradient()
        except XTBException as e:
            raise _xtb_error(e, "calculation") from e

    def properties(self) -> dict[str, Any]:
        res = self._res
        return {
            "homo_lumo_gap_ev": homo_lumo_gap_ev(res.get_orbital_eigenvalues(),
                                                 res.get_orbital_occupations()),
            "dipole_au": res.get_dipole().tolist(),
            "partial_charges_e": res.get_charges().tolist(),
        }


class XTBPythonEngine(Engine):
    name = "xtb"

    def __init__(self) -> None:
        super().__init__()
        self._found: bool | None = None

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
        return XTBSession(molecule)
