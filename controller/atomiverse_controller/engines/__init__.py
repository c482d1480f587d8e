"""Engine harnesses and their registry.

======== ================================== =================================================
name     library                            notes
======== ================================== =================================================
xtb      xtb-python (``xtb`` on PyPI)       the default when it imports (wheels up to 3.11);
                                            GFN2, GFN1, GFN0 and GFN-FF (the last two need
                                            the xtb program's parameter files), GBSA
tblite   tblite                             the default otherwise; GFN2, GFN1, ALPB and GBSA
instant  none: a FAKE engine                tests and overhead benchmarks only; never
                                            advertised, never chosen by a job
======== ================================== =================================================

The drivers every engine shares (single point, optimisation, frequencies and thermochemistry)
are the job types' own, in :mod:`atomiverse_core.jobtypes` and :mod:`atomiverse_core.drivers`.

Importing this package imports no native library; ``found()`` and ``compute()`` do.
"""

from __future__ import annotations

from .base import Engine, EngineError, Molecule, Session, homo_lumo_gap_ev, parse_molecule
from .instant import InstantEngine
from .tblite_engine import TBLiteEngine
from .xtb_python import XTBPythonEngine

# Order is preference: the default engine is the first real one found.
_ENGINES: dict[str, Engine] = {e.name: e for e in (XTBPythonEngine(), TBLiteEngine())}
_FAKE_ENGINES: dict[str, Engine] = {"instant": InstantEngine()}


def get_engine(name: str) -> Engine:
    """The harness called ``name`` (xtb, tblite, or the fake instant); KeyError if none."""
    engine = _ENGINES.get(name) or _FAKE_ENGINES.get(name)
    if engine is None:
        known = ", ".join([*_ENGINES, *_FAKE_ENGINES])
        raise KeyError(f"unknown engine {name!r} (known: {known})")
    return engine


def available_engines(include_fake: bool = False) -> dict[str, str]:
    """Name -> version of every engine whose library imports here, as a controller advertises
    them. The fake ``instant`` engine is listed only with ``include_fake=True``."""
    engines = {**_ENGINES, **(_FAKE_ENGINES if include_fake else {})}
    return {name: e.version() for name, e in engines.items() if e.found()}


def default_engine_name() -> str:
    """``xtb`` if xtb-python imports, else ``tblite``; RuntimeError if neither does."""
    for name, engine in _ENGINES.items():
        if engine.found():
            return name
    raise RuntimeError("no xTB engine is installed: pip install xtb (Python <= 3.11) or tblite")


__all__ = [
    "Engine",
    "EngineError",
    "Molecule",
    "Session",
    "available_engines",
    "default_engine_name",
    "get_engine",
    "homo_lumo_gap_ev",
    "parse_molecule",
]
