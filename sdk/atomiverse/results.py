"""Results back into the tools chemists use: ASE Atoms, RDKit molecules, extended XYZ.

Every function takes a finished job: a :class:`~atomiverse.jobs.Job` whose result is loaded
(``job.submit(wait=True)``, ``job.refresh()``), or a job record dict as the API returns it
(``{"job": payload, "result": {...}, ...}``, e.g. from ``atomiverse.get_job``).

    from atomiverse import results
    atoms = results.to_ase(job)                 # final geometry, energy and forces attached
    frames = results.trajectory_to_ase(job)     # every stored optimiser step
    mol = results.to_rdkit(job)                 # bonds perceived from the final geometry
    results.write_extxyz([job1, job2], "out.xyz")

Units: ASE's own (eV, eV/Angstrom) on the attached calculator, as ASE expects; the Hartree
values are in ``atoms.info`` under the result's field names.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from atomiverse_core.atoms import Atoms
from atomiverse_core.jobs import Job
from atomiverse_core.jobtypes import parse_job

if TYPE_CHECKING:
    import ase

_INFO_FIELDS = ("energy_hartree", "homo_lumo_gap_ev", "homo_hartree", "lumo_hartree",
                "n_steps", "converged", "zero_point_energy_hartree", "enthalpy_hartree",
                "gibbs_energy_hartree", "temperature_kelvin", "n_imaginary", "engine",
                "level_of_theory")


def _unpack(job: Job | Mapping[str, Any]) -> tuple[Atoms, dict[str, Any], dict[str, Any]]:
    """(input atoms, result, info: name/job_id/job_type) of a finished job."""
    if isinstance(job, Job):
        model, result, job_id = job, job.result, job.job_id
    elif isinstance(job, Mapping) and "job" in job:
        model, result, job_id = parse_job(job["job"]), job.get("result"), job.get("job_id")
    else:
        raise TypeError("expected a Job or a job record dict with 'job' and 'result'")
    if not result:
        state = job.state if isinstance(job, Job) else job.get("state")
        raise ValueError(f"job {job_id or model.name or '(unsubmitted)'} has no result "
                         f"(state: {state})")
    info = {"name": model.name, "job_id": job_id, "job_type": model.job_type}
    return model.atoms, dict(result), info


def final_atoms(job: Job | Mapping[str, Any]) -> Atoms:
    """The molecule at the geometry the result refers to (optimised, or the input)."""
    atoms, result, _ = _unpack(job)
    return _with_positions(atoms, result.get("final_positions_angstrom"))


def _with_positions(atoms: Atoms, positions: Any) -> Atoms:
    if positions is None:
        return atoms
    return Atoms(numbers=atoms.numbers, positions=[tuple(p) for p in positions],
                 charge=atoms.charge, multiplicity=atoms.multiplicity)


def to_ase(job: Job | Mapping[str, Any]) -> ase.Atoms:
    """ASE Atoms at the final geometry, with a SinglePointCalculator holding the energy (eV)
    and forces (eV/Angstrom); ``info`` has charge, multiplicity and the result's scalars."""
    atoms, result, info = _unpack(job)
    final = _with_positions(atoms, result.get("final_positions_angstrom"))
    gradient = result.get("gradient_hartree_per_bohr")
    return _ase_frame(final, result["energy_hartree"], gradient,
                      {**info, **{k: result[k] for k in _INFO_FIELDS
                                  if result.get(k) is not None}})


def trajectory_to_ase(job: Job | Mapping[str, Any]) -> list[ase.Atoms]:
    """One ASE Atoms per stored optimiser step (``info["step"]``), energies and forces attached."""
    atoms, result, info = _unpack(job)
    positions = result.get("trajectory_positions_angstrom")
    if positions is None:
        raise ValueError("this result has no trajectory (only optimisations store one)")
    energies = result["trajectory_energies_hartree"]
    gradients = result.get("trajectory_gradients_hartree_per_bohr") or [None] * len(positions)
    steps = result.get("trajectory_steps") or list(range(len(positions)))
    return [_ase_frame(_with_positions(atoms, p), e, g,
                       {**info, "step": s, "energy_hartree": e})
            for p, e, g, s in zip(positions, energies, gradients, steps, strict=True)]


def _ase_frame(atoms: Atoms, energy_hartree: float, gradient: Any,
               info: dict[str, Any]) -> ase.Atoms:
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.units import Bohr, Hartree

    out = atoms.to_ase()
    forces = None if gradient is None else -np.asarray(gradient, dtype=float) * (Hartree / Bohr)
    out.calc = SinglePointCalculator(out, energy=energy_hartree * Hartree, forces=forces)
    out.info.update({k: v for k, v in info.items() if v is not None})
    return out


def to_rdkit(job: Job | Mapping[str, Any], template: Any = None) -> Any:
    """An RDKit molecule at the final geometry, with the result's scalars as properties.

    With ``template`` (an RDKit molecule with the same atoms in the same order, e.g. the one
    the job was built from) its bonds and charges are kept and only the coordinates change.
    Without, bonds are perceived from the geometry and the total charge (RDKit's
    ``rdDetermineBonds``); if bond orders cannot be assigned, connectivity only."""
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    atoms, result, info = _unpack(job)
    final = _with_positions(atoms, result.get("final_positions_angstrom"))
    if template is not None:
        if [a.GetAtomicNum() for a in template.GetAtoms()] != final.numbers:
            raise ValueError("template: its atoms are not the job's atoms in the job's order")
        mol = Chem.Mol(template)
        mol.RemoveAllConformers()
        conf = Chem.Conformer(len(final))
        for i, (x, y, z) in enumerate(final.positions):
            conf.SetAtomPosition(i, Point3D(x, y, z))
        conf.Set3D(True)
        mol.AddConformer(conf, assignId=True)
    else:
        mol = _perceive(final)
    for key in _INFO_FIELDS:
        value = result.get(key)
        if isinstance(value, bool):
            mol.SetBoolProp(key, value)
        elif isinstance(value, int | float):
            mol.SetDoubleProp(key, float(value))
        elif isinstance(value, str):
            mol.SetProp(key, value)
    if info.get("name"):
        mol.SetProp("_Name", info["name"])
    if info.get("job_id"):
        mol.SetProp("job_id", info["job_id"])
    return mol


def _perceive(atoms: Atoms) -> Any:
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    mol = Chem.MolFromXYZBlock(atoms.to_xyz())
    if mol is None:
        raise ValueError("RDKit could not read the final geometry")
    try:
        rdDetermineBonds.DetermineBonds(mol, charge=atoms.charge)
    except (ValueError, RuntimeError):
        mol = Chem.MolFromXYZBlock(atoms.to_xyz())
        rdDetermineBonds.DetermineConnectivity(mol)
    return mol


def write_extxyz(jobs: Job | Mapping[str, Any] | Iterable[Job | Mapping[str, Any]],
                 path: str | os.PathLike[str] | None = None, *,
                 trajectory: bool = False) -> str:
    """Extended XYZ of finished jobs (final geometries; with ``trajectory=True`` every stored
    optimiser step), energy (eV) and forces (eV/Angstrom) per frame, and ``energy_hartree``
    and the other result scalars in each frame's comment line. Returns the text; writes it to
    ``path`` if given."""
    from ase.io import write

    if isinstance(jobs, Job | Mapping):
        jobs = [jobs]
    frames: list[ase.Atoms] = []
    for job in jobs:
        frames.extend(trajectory_to_ase(job) if trajectory else [to_ase(job)])
    buffer = io.StringIO()
    write(buffer, frames, format="extxyz")
    text = buffer.getvalue()
    if path is not None:
        with open(path, "w") as fh:
            fh.write(text)
    return text


__all__ = ["final_atoms", "to_ase", "to_rdkit", "trajectory_to_ase", "write_extxyz"]
