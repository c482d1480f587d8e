"""QCSchema (MolSSI's, as qcelemental's v1 models write it) to and from job payloads, on plain
dicts: the server reads an AtomicInput in a batch with this, the SDK's ``atomiverse.qcschema``
wraps it in qcelemental's models.

What maps:

* ``driver``: ``energy`` and ``gradient`` (a single point, which computes both;
  ``return_result`` is the one asked for) and ``hessian`` (a Hessian job: finite differences of
  gradients);
* ``model.method``: ``gfn2-xtb``, ``gfn1-xtb``, ``gfn0-xtb``, ``gfn-ff`` (case-insensitive);
  ``model.basis`` must be empty (the method has its own);
* ``keywords``: ``solvent`` (a solvent name) and ``solvation_model`` (``gbsa``, the default as
  in QCEngine's xtb harness, or ``alpb``); any other keyword is refused, naming it;
* ``molecule``: ``symbols``, ``geometry`` in Bohr (converted to Angstrom here, the schema's
  unit to ours), ``molecular_charge``, ``molecular_multiplicity``; fragments and ghost atoms
  (``real`` false) are refused.
"""

from __future__ import annotations

from typing import Any

# qcelemental's CODATA 2014 value, the one QCSchema geometries are written with.
BOHR_ANGSTROM = 0.52917721067
INPUT_SCHEMA = "qcschema_input"
DRIVERS = ("energy", "gradient", "hessian")
METHODS = ("gfn2-xtb", "gfn1-xtb", "gfn0-xtb", "gfn-ff")
KEYWORDS = ("solvent", "solvation_model")


class QCSchemaError(ValueError):
    """An AtomicInput this platform cannot run; the message is ``<field>: <reason>``."""


def is_atomic_input(data: Any) -> bool:
    return isinstance(data, dict) and data.get("schema_name") == INPUT_SCHEMA


def payload_from_atomic_input(data: dict[str, Any]) -> dict[str, Any]:
    """A job payload from an AtomicInput dict (a single point; a Hessian for the ``hessian``
    driver); QCSchemaError naming the field."""
    driver = _driver(data.get("driver"))
    level = _level(data.get("model"), data.get("keywords") or {})
    atoms = _atoms(data.get("molecule"))
    name = data.get("id") if isinstance(data.get("id"), str) else None
    job_type = "hessian" if driver == "hessian" else "single_point_energy"
    return {"job_type": job_type, "atoms": atoms, "level_of_theory": level,
            "name": name[:120] if name else None}


def _driver(driver: Any) -> str:
    driver = getattr(driver, "value", driver)
    if driver not in DRIVERS:
        raise QCSchemaError(f"driver: {driver!r} is not supported (supported: "
                            f"{', '.join(DRIVERS)})")
    return str(driver)


def _level(model: Any, keywords: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(model, dict):
        raise QCSchemaError("model: must be an object with a method")
    method = str(model.get("method") or "").lower()
    if method not in METHODS:
        raise QCSchemaError(f"model.method: {model.get('method')!r} is not supported "
                            f"(supported: {', '.join(METHODS)})")
    if model.get("basis"):
        raise QCSchemaError(f"model.basis: {model['basis']!r}: GFN methods have their own "
                            "basis; leave it empty")
    unknown = sorted(set(keywords) - set(KEYWORDS))
    if unknown:
        raise QCSchemaError(f"keywords.{unknown[0]}: not supported (supported: "
                            f"{', '.join(KEYWORDS)})")
    level: dict[str, Any] = {"method": method}
    if keywords.get("solvent"):
        level["solvation"] = {"model": str(keywords.get("solvation_model") or "gbsa").lower(),
                              "solvent": str(keywords["solvent"])}
    elif keywords.get("solvation_model"):
        raise QCSchemaError("keywords.solvation_model: needs keywords.solvent")
    return level


def _atoms(molecule: Any) -> dict[str, Any]:
    from ase.data import atomic_numbers

    if not isinstance(molecule, dict):
        raise QCSchemaError("molecule: must be an object")
    symbols = molecule.get("symbols")
    symbols = [] if symbols is None else list(getattr(symbols, "tolist", lambda: symbols)())
    geometry = molecule.get("geometry")
    flat = [float(x) for x in (geometry.ravel().tolist() if hasattr(geometry, "ravel")
                               else _flatten(geometry))]
    if not symbols or len(flat) != 3 * len(symbols):
        raise QCSchemaError(f"molecule.geometry: {len(symbols)} symbols need "
                            f"{3 * len(symbols)} coordinates (Bohr), got {len(flat)}")
    real = molecule.get("real")
    if real is not None and not all(list(real)):
        raise QCSchemaError("molecule.real: ghost atoms are not supported")
    fragments = molecule.get("fragments")
    if fragments is not None and len(fragments) > 1:
        raise QCSchemaError("molecule.fragments: one fragment only")
    numbers = []
    for i, symbol in enumerate(symbols):
        z = atomic_numbers.get(str(symbol).capitalize())
        if z is None:
            raise QCSchemaError(f"molecule.symbols.{i}: unknown element {symbol!r}")
        numbers.append(z)
    positions = [[c * BOHR_ANGSTROM for c in flat[k:k + 3]] for k in range(0, len(flat), 3)]
    return {"numbers": numbers, "positions": positions,
            "charge": round(float(molecule.get("molecular_charge") or 0)),
            "multiplicity": int(molecule.get("molecular_multiplicity") or 1)}


def _flatten(geometry: Any) -> list[Any]:
    if not isinstance(geometry, list):
        raise QCSchemaError("molecule.geometry: must be a list of numbers (Bohr)")
    return [c for row in geometry for c in (row if isinstance(row, list) else [row])]


def atomic_input_from_payload(payload: dict[str, Any], driver: str = "gradient"
                              ) -> dict[str, Any]:
    """An AtomicInput dict from a single-point (or any geometry) job payload."""
    from ase.data import chemical_symbols

    atoms = payload["atoms"]
    level = payload["level_of_theory"]
    keywords: dict[str, Any] = {}
    if level.get("solvation"):
        keywords = {"solvent": level["solvation"]["solvent"],
                    "solvation_model": level["solvation"]["model"]}
    return {"schema_name": INPUT_SCHEMA, "schema_version": 1, "driver": _driver(driver),
            "model": {"method": level["method"], "basis": None}, "keywords": keywords,
            "molecule": {
                "symbols": [chemical_symbols[z] for z in atoms["numbers"]],
                "geometry": [c / BOHR_ANGSTROM for p in atoms["positions"] for c in p],
                "molecular_charge": float(atoms.get("charge", 0)),
                "molecular_multiplicity": int(atoms.get("multiplicity", 1)),
                "fix_com": True, "fix_orientation": True}}
