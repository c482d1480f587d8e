"""GFN-xTB through tblite (maintained, wheels for newer Pythons).

Library defaults are kept, so a result equals ``tblite.interface.Calculator(...).singlepoint()``
called directly; verbosity is 0. tblite's SCF defaults differ slightly from xtb's: the two
engines agree to about 1e-8 Hartree on organic molecules, well inside the promised 2e-5.

Methods: GFN2-xTB and GFN1-xTB (tblite 0.8.0 has neither GFN0-xTB nor GFN-FF). Solvation:
ALPB and GBSA with named solvents, ``Calculator.add("alpb-solvation", solvent)``; the solution
state is tblite's default (``gsolv``), as in the xtb program.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any

import numpy as np

from .base import Engine, EngineError, Molecule, electronic_properties

_METHOD_NAMES = {"gfn2-xtb": "GFN2-xTB", "gfn1-xtb": "GFN1-xTB"}


# tblite checks part of the input only while computing; these messages mean the input is wrong.
_INPUT_MESSAGES = ("not compatible", "interatomic distances")


def _tblite_error(e: Exception, when: str) -> EngineError:
    text = " ".join(str(e).split())
    if "converge" in text:
        return EngineError(f"tblite: SCF did not converge ({text})", "convergence")
    is_input = (when == "setup" or isinstance(e, ValueError)
                or any(m in text for m in _INPUT_MESSAGES))
    return EngineError(f"tblite {when} failed: {text}", "input" if is_input else "internal")


class TBLiteSession:
    """One tblite Calculator for one molecule; later evaluations only move the atoms."""

    def __init__(self, molecule: Molecule) -> None:
        self._molecule = molecule
        self._calc: Any = None
        self._res: Any = None
        self._accuracy = self._applied = 1.0

    def set_scf_accuracy(self, scale: float) -> None:
        self._accuracy = float(scale)

    def _create(self, positions_bohr: np.ndarray) -> Any:
        from tblite.interface import Calculator

        m = self._molecule
        try:
            calc = Calculator(_METHOD_NAMES[m.method], m.numbers, positions_bohr,
                              float(m.charge), int(m.uhf))
            calc.set("verbosity", 0)
        except (RuntimeError, ValueError) as e:  # TBLiteRuntimeError / TBLiteValueError
            raise _tblite_error(e, "setup") from e
        if m.solvation is not None:
            model, solvent = m.solvation
            try:
                calc.add(f"{model}-solvation", solvent)
            except (RuntimeError, ValueError) as e:
                raise EngineError(f"level_of_theory.solvation: tblite has no {model.upper()} "
                                  f"parameters for {solvent!r} with {m.level}: {e}",
                                  "input") from e
        return calc

    def evaluate(self, positions_bohr: np.ndarray) -> tuple[float, np.ndarray]:
        if self._calc is None:
            self._calc = self._create(positions_bohr)
        else:
            try:
                self._calc.update(positions_bohr)
            except (RuntimeError, ValueError) as e:
                raise _tblite_error(e, "geometry update") from e
        if self._accuracy != self._applied:  # not on every single point: only when changed
            self._calc.set("accuracy", self._accuracy)
            self._applied = self._accuracy
        try:
            # Passing the previous Result restarts the SCF from its density (none on the first).
            self._res = self._calc.singlepoint(self._res)
            return float(self._res.get("energy")), np.asarray(self._res.get("gradient"))
        except (RuntimeError, ValueError) as e:
            raise _tblite_error(e, "calculation") from e

    def properties(self) -> dict[str, Any]:
        res = self._res
        return {
            **electronic_properties(res.get("orbital-energies"), res.get("orbital-occupations"),
                                    _bond_orders(res)),
            "dipole_au": np.asarray(res.get("dipole"), dtype=float).tolist(),
            "partial_charges_e": np.asarray(res.get("charges"), dtype=float).tolist(),
        }


def _bond_orders(res: Any) -> np.ndarray | None:
    """Wiberg bond orders summed over spin channels, (nat, nat).

    tblite 0.8.0 hands back the Fortran (nat, nat, nspin) array relabelled as C order, which
    scrambles it when nspin is 2 (any open shell); of the two readings, the one that gives a
    symmetric matrix is the right one."""
    try:
        raw = np.asarray(res.get("bond-orders"), dtype=float)
    except (RuntimeError, ValueError):
        return None
    if raw.ndim == 2:
        return raw
    for candidate in (raw.sum(-1), raw.ravel().reshape(raw.shape, order="F").sum(-1)):
        if np.allclose(candidate, candidate.T, atol=1e-8):
            return candidate
    return None


class TBLiteEngine(Engine):
    name = "tblite"
    solvation_models = frozenset({"alpb", "gbsa"})

    def __init__(self) -> None:
        super().__init__()
        self._found: bool | None = None

    def found(self) -> bool:
        if self._found is None:
            try:
                importlib.import_module("tblite.interface")
                self._found = True
            except (ImportError, OSError):
                self._found = False
        return self._found

    def _read_version(self) -> str:
        try:
            return importlib.metadata.version("tblite")
        except importlib.metadata.PackageNotFoundError:
            from tblite.library import get_version

            return ".".join(map(str, get_version()))

    def open_session(self, molecule: Molecule) -> TBLiteSession:
        if not self.found():
            raise EngineError("engine 'tblite' is not installed here", "input")
        return TBLiteSession(molecule)
