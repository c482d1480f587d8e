"""RDKit's part of a conformer search: candidates by ETKDG, and the choice of distinct low-energy
conformers (heavy-atom RMSD after alignment, over the molecule's symmetries, and an energy
window). No engine here: these run on a controller slot like any job, but on RDKit alone.

The molecule's graph comes from its 3D structure (bonds and bond orders perceived with the
total charge, stereocentres and double-bond geometry read from the coordinates), so a search
keeps the input's stereochemistry and atom order: every candidate lists its atoms as the input
does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..atoms import MIN_INTERATOMIC_DISTANCE_ANGSTROM
from ..bonds import connectivity, xyz_block
from ..units import KCAL_PER_MOL_PER_HARTREE
from .contract import EngineError

# One heavy-atom alignment may try every symmetry-equivalent atom order; cap it (RDKit's own
# default is a million) so that a very symmetric molecule costs milliseconds, not minutes.
MAX_SYMMETRY_MATCHES = 10_000


# How :func:`perceived_graph` read the molecule's bonds, best first.
BOND_ORDERS_PERCEIVED = "perceived"
BOND_ORDERS_NEUTRAL = "perceived without charged fragments"
BOND_ORDERS_AS_NEUTRAL_MOLECULE = "perceived as the neutral molecule"
CONNECTIVITY_ONLY = "connectivity only"


def molecule_graph(numbers: Sequence[int], positions_angstrom: Any, charge: int) -> Any:
    """An RDKit molecule with hydrogens, bonds and stereo perceived from one geometry."""
    return perceived_graph(numbers, positions_angstrom, charge)[0]


def perceived_graph(numbers: Sequence[int], positions_angstrom: Any,
                    charge: int) -> tuple[Any, str]:
    """:func:`molecule_graph`, and how its bonds were read.

    Where RDKit finds no bond orders that fit the total charge (ranitidine's
    nitroethenediamine), it is asked again without charged fragments: the formal charges it
    then gives may be wrong, but its double bonds and aromatic rings are where the geometry
    puts them, which is what keeps a double bond's geometry and its ring flat in ETKDG. A
    radical cation has no Lewis structure at all: its graph is the neutral molecule's. Only
    if that fails too (an organozinc) is the graph connectivity alone, every bond single:
    ETKDG may then turn a double bond and lose its E/Z geometry, which the search's result
    says (``bond_orders``)."""
    from rdkit import Chem

    xyz = xyz_block(numbers, positions_angstrom)
    attempts = [(BOND_ORDERS_PERCEIVED, charge, True), (BOND_ORDERS_NEUTRAL, charge, False)]
    if charge:
        attempts.append((BOND_ORDERS_AS_NEUTRAL_MOLECULE, 0, False))
    for how, total_charge, charged_fragments in attempts:
        mol = _with_bond_orders(xyz, charge=total_charge, charged_fragments=charged_fragments)
        if mol is not None:
            break
    else:
        how, mol = CONNECTIVITY_ONLY, Chem.MolFromXYZBlock(xyz)
        if mol is None:
            raise EngineError("atoms: RDKit could not read the structure", "input")
        from rdkit.Chem import rdDetermineBonds

        rdDetermineBonds.DetermineConnectivity(mol)
    Chem.AssignStereochemistryFrom3D(mol)
    return mol, how


def _with_bond_orders(xyz: str, *, charge: int, charged_fragments: bool = True) -> Any:
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    mol = Chem.MolFromXYZBlock(xyz)
    if mol is None:
        return None
    try:
        rdDetermineBonds.DetermineBonds(mol, charge=charge,
                                        allowChargedFragments=charged_fragments)
    except (ValueError, RuntimeError):
        return None
    return mol


def rotatable_bonds(mol: Any) -> int:
    from rdkit.Chem import rdMolDescriptors

    return int(rdMolDescriptors.CalcNumRotatableBonds(mol))


def default_candidate_count(n_rotatable_bonds: int, screened: bool = False) -> int:
    """Candidates for a molecule with this many rotatable bonds: 10 + 20 per bond, at most
    250 (a 10-bond molecule: 210); for a search that screens them at GFN-FF first, 20 + 80
    per bond, at most 500 (a 6-bond molecule: 500; at 10 + 40 per bond, 250 ETKDG candidates
    of propranolol held none within 0.45 Angstrom of its lowest conformer in two seeds of
    three)."""
    if screened:
        return min(500, 20 + 80 * n_rotatable_bonds)
    return min(250, 10 + 20 * n_rotatable_bonds)


def generate(numbers: Sequence[int], positions_angstrom: Any, charge: int, count: int,
             seed: int, prune_rmsd_angstrom: float, *, screened: bool = False) -> dict[str, Any]:
    """Up to ``count`` (0: :func:`default_candidate_count`) ETKDG (v3) geometries,
    near-duplicates (heavy-atom RMSD below ``prune_rmsd_angstrom``) pruned as they are made;
    the input geometry is always the first. Angstrom, in the input's atom order; with how
    the molecule's bonds were read (:func:`perceived_graph`)."""
    from rdkit.Chem import AllChem

    mol, bond_orders = perceived_graph(numbers, positions_angstrom, charge)
    count = count or default_candidate_count(rotatable_bonds(mol), screened)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    params.pruneRmsThresh = prune_rmsd_angstrom
    params.numThreads = 1  # one slot, one core
    ids = list(AllChem.EmbedMultipleConfs(mol, max(count - 1, 0), params)) if count > 1 else []
    embedded = [mol.GetConformer(i).GetPositions().round(6) for i in ids]
    apart = [g for g in embedded if atoms_apart(g)]
    geometries = [np.asarray(positions_angstrom, dtype=float).round(6).tolist()]
    geometries += [g.tolist() for g in apart]
    return {"geometries_angstrom": geometries, "n_rotatable_bonds": rotatable_bonds(mol),
            "n_atoms_too_close": len(embedded) - len(apart), "bond_orders": bond_orders}


def atoms_apart(positions_angstrom: np.ndarray) -> bool:
    """No two atoms closer than a job's geometry may have. ETKDG now and then embeds two
    atoms a third of an Angstrom apart (sotalol: 1 in 250 for some seeds); as a candidate
    such a geometry was refused as its optimisation's input, and that failed the search."""
    d2 = ((positions_angstrom[:, None, :] - positions_angstrom[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    return bool(d2.min() >= MIN_INTERATOMIC_DISTANCE_ANGSTROM ** 2)


def same_bonds(numbers: Sequence[int], reference_angstrom: Any,
               geometries: Sequence[Any]) -> list[bool]:
    """Whether each geometry has the reference's bonds. An optimisation can end in another
    molecule (a hydrogen moved, a ring closed) whose energy, on a force field that sets up
    its topology from each geometry it starts from, is not comparable with the others': it
    is no conformer of the input."""
    bonds = connectivity(numbers, reference_angstrom)
    return [connectivity(numbers, g) == bonds for g in geometries]


def heavy_atom_conformers(numbers: Sequence[int], reference_angstrom: Any,
                          charge: int) -> tuple[Any, Callable[[Any], int]]:
    """The molecule's heavy atoms as an RDKit molecule (its graph read from the reference
    geometry), and a function adding one geometry's heavy atoms to it as a conformer, whose
    id it returns: what RMSD comparisons over the molecule's symmetries align."""
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    heavy_index = [i for i, z in enumerate(numbers) if z != 1]
    heavy = Chem.RemoveHs(molecule_graph(numbers, reference_angstrom, charge), sanitize=False)

    def add(positions_angstrom: Any) -> int:
        conf = Chem.Conformer(heavy.GetNumAtoms())
        for k, (x, y, z) in enumerate(np.asarray(positions_angstrom, dtype=float)[heavy_index]):
            conf.SetAtomPosition(k, Point3D(float(x), float(y), float(z)))
        return heavy.AddConformer(conf, assignId=True)

    return heavy, add


def distinct_low(numbers: Sequence[int], reference_angstrom: Any, charge: int,
                 geometries: Sequence[Any], energies_hartree: Sequence[float], *,
                 rmsd_angstrom: float, energy_kcal_per_mol: float,
                 window_kcal_per_mol: float, keep: int,
                 intact: Sequence[bool] | None = None) -> list[int]:
    """Indices of the distinct conformers, lowest energy first: at most ``keep``, all within
    ``window_kcal_per_mol`` of the lowest of those with the reference's bonds (the others
    are left out). Two are the same conformer when their energies differ by less than
    ``energy_kcal_per_mol`` and their heavy atoms, aligned over the molecule's symmetries, by
    less than ``rmsd_angstrom``. ``intact``: :func:`same_bonds` of the geometries, if the
    caller has it."""
    from rdkit.Chem import rdMolAlign

    if not geometries:
        return []
    if intact is None:
        intact = same_bonds(numbers, reference_angstrom, geometries)
    if not any(intact):
        raise EngineError("every candidate's bonds changed in its optimisation: no "
                          "conformer of the input is left", "input")
    kcal = np.asarray(energies_hartree, dtype=float) * KCAL_PER_MOL_PER_HARTREE
    lowest = min(k for k, ok in zip(kcal, intact, strict=True) if ok)
    order = [int(i) for i in np.argsort(kcal, kind="stable")
             if intact[i] and kcal[i] - lowest <= window_kcal_per_mol]
    heavy_index = [i for i, z in enumerate(numbers) if z != 1]
    if len(heavy_index) < 3:  # no torsions: conformers differ by energy only
        return [i for n, i in enumerate(order) if n == 0 or
                all(abs(kcal[i] - kcal[j]) >= energy_kcal_per_mol for j in order[:n])][:keep]
    heavy, add = heavy_atom_conformers(numbers, reference_angstrom, charge)
    conf_of: dict[int, int] = {}

    def conformer(i: int) -> int:
        if i not in conf_of:
            conf_of[i] = add(geometries[i])
        return conf_of[i]

    kept: list[int] = []
    for i in order:
        same = any(abs(kcal[i] - kcal[j]) < energy_kcal_per_mol
                   and rdMolAlign.GetBestRMS(heavy, heavy, prbId=conformer(i),
                                             refId=conformer(j),
                                             maxMatches=MAX_SYMMETRY_MATCHES) < rmsd_angstrom
                   for j in kept)
        if not same:
            kept.append(i)
            if len(kept) == keep:
                break
    return kept

