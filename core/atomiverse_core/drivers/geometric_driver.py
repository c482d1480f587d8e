"""Geometry optimisation with geomeTRIC (translation-rotation internal coordinates).

ASE's Cartesian optimisers need about four times the gradients of xtb's own optimiser for the
same minima; geomeTRIC's internal coordinates and model Hessian bring that down to roughly
xtb's count (on the benchmark molecules 9-20 gradients where LBFGS took 30-170). It runs over
the same engine session as the ASE optimisers, so each SCF restarts from the previous one.

Convergence is the platform's single criterion, the largest atomic force below ``fmax``; the
other geomeTRIC criteria are switched off so that every optimiser stops at the same test.
geomeTRIC configures logging from a file and writes scratch files next to its input: it gets a
configuration that discards its chatter and a temporary directory per run.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ase.units import Bohr, Hartree

from .trace import Trace

if TYPE_CHECKING:
    from .contract import Molecule, Session

_QUIET_LOG_INI = """\
[loggers]
keys=root
[handlers]
keys=null
[formatters]
keys=
[logger_root]
level=CRITICAL
handlers=null
[handler_null]
class=logging.NullHandler
args=()
"""
_OFF = 1e10  # a convergence threshold nothing exceeds


def run_geometric(session: Session, molecule: Molecule, fmax: float, max_steps: int,
                  keep_frames: bool = True) -> Trace:
    import geometric.molecule
    import geometric.optimize
    from ase.data import chemical_symbols
    from geometric.errors import GeomOptNotConvergedError

    mol = geometric.molecule.Molecule()
    mol.elem = [chemical_symbols[int(z)] for z in molecule.numbers]
    mol.xyzs = [np.asarray(molecule.positions_angstrom, dtype=float)]
    engine = _session_engine(mol, session)
    progress = None
    saved_levels = _logger_levels()
    with tempfile.TemporaryDirectory(prefix="atomiverse-geometric-") as scratch:
        ini = Path(scratch) / "log.ini"
        ini.write_text(_QUIET_LOG_INI)
        try:
            progress = geometric.optimize.run_optimizer(
                customengine=engine, input=str(Path(scratch) / "job"), logIni=str(ini),
                maxiter=max_steps, convergence_gmax=fmax / (Hartree / Bohr),
                convergence_energy=_OFF, convergence_grms=_OFF, convergence_drms=_OFF,
                convergence_dmax=_OFF)
        except GeomOptNotConvergedError:
            pass
        finally:
            _restore_logger_levels(saved_levels)
    if not engine.energies:
        raise RuntimeError("geomeTRIC stopped before the first gradient")
    # geomeTRIC steps back from a rejected trial geometry without evaluating again, so the
    # last evaluation need not be where it stopped: where it converged, or else the lowest
    # point it saw. The result and its properties must describe that geometry.
    final = (np.asarray(progress.xyzs[-1], dtype=float) if progress is not None
             else engine.positions[int(np.argmin(engine.energies))])
    if not np.allclose(final, engine.positions[-1], rtol=0, atol=1e-9):
        engine.calc_new((final / Bohr).ravel(), "")
    n_steps = len(engine.energies) - 1
    return Trace(list(engine.energies), engine.gradients[-1], engine.positions[-1], n_steps,
                 progress is not None, "geomeTRIC",
                 fmax, max_steps, session.properties(),
                 list(engine.positions) if keep_frames else [],
                 list(engine.gradients) if keep_frames else [])


def _session_engine(mol: object, session: Session) -> object:
    from geometric.engine import Engine

    class SessionEngine(Engine):  # type: ignore[misc]
        """geomeTRIC's view (Bohr, Hartree) of an engine session; keeps every evaluation."""

        def __init__(self) -> None:
            super().__init__(mol)
            self.energies: list[float] = []
            self.positions: list[np.ndarray] = []
            self.gradients: list[np.ndarray] = []

        def calc_new(self, coords: np.ndarray, dirname: str) -> dict[str, object]:
            positions_bohr = np.asarray(coords, dtype=float).reshape(-1, 3)
            energy, gradient = session.evaluate(positions_bohr)
            gradient = np.array(gradient, dtype=float)  # a copy: the trajectory keeps it
            self.energies.append(float(energy))
            self.positions.append(positions_bohr * Bohr)
            self.gradients.append(gradient)
            return {"energy": float(energy), "gradient": gradient.ravel()}

    return SessionEngine()


def _logger_levels() -> tuple[dict[str, tuple[int, bool]], list[logging.Handler]]:
    """geomeTRIC's fileConfig disables every existing logger and replaces the root handlers:
    remember them to undo it."""
    return ({name: (lg.level, lg.disabled) for name, lg in logging.root.manager.loggerDict.items()
             if isinstance(lg, logging.Logger)} | {"": (logging.root.level, False)},
            logging.root.handlers[:])


def _restore_logger_levels(saved: tuple[dict[str, tuple[int, bool]],
                                        list[logging.Handler]]) -> None:
    levels, handlers = saved
    for name, (level, disabled) in levels.items():
        lg = logging.getLogger(name) if name else logging.root
        lg.setLevel(level)
        lg.disabled = disabled
    logging.root.handlers[:] = handlers
