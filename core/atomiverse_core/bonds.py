"""Bonds read from a geometry alone (RDKit's perception from covalent radii): what tells a
conformer from another molecule, and an embedded structure from a broken one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def xyz_block(numbers: Sequence[int], positions_angstrom: Any) -> str:
    """The geometry as an XYZ file's text, atoms in their order."""
    from rdkit import Chem

    table = Chem.GetPeriodicTable()
    lines = [str(len(numbers)), ""]
    lines += [f"{table.GetElementSymbol(int(z))} {x:.8f} {y:.8f} {w:.8f}"
              for z, (x, y, w) in zip(numbers, np.asarray(positions_angstrom, dtype=float),
                                      strict=True)]
    return "\n".join(lines) + "\n"


def connectivity(numbers: Sequence[int], positions_angstrom: Any) -> frozenset[tuple[int, int]]:
    """The bonded atom pairs of one geometry, from covalent radii (RDKit's connectivity
    perception, no bond orders), each pair lower index first."""
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    mol = Chem.MolFromXYZBlock(xyz_block(numbers, positions_angstrom))
    if mol is None:
        return frozenset()
    rdDetermineBonds.DetermineConnectivity(mol)
    return frozenset(tuple(sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx())))
                     for b in mol.GetBonds())
