"""The conformer benchmark's 20 molecules (bench/conformers.py) are the drugs they are named
after: their molecular formulas (PubChem's), 5 to 12 rotatable bonds, and, where the
configuration makes another molecule, the drug's stereochemistry, kept by the embedding the
search and its reference start from."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(REPO))

from rdkit import Chem  # noqa: E402
from rdkit.Chem import rdCIPLabeler, rdMolDescriptors  # noqa: E402

from bench.conformers import MOLECULES  # noqa: E402

FORMULAS = {  # PubChem's molecular formulas (the neutral parent compounds)
    "propranolol": "C16H21NO2", "metoprolol": "C15H25NO3", "atenolol": "C14H22N2O3",
    "venlafaxine": "C17H27NO2", "lidocaine": "C14H22N2O", "procaine": "C13H20N2O2",
    "diphenhydramine": "C17H21NO", "fluoxetine": "C17H18F3NO", "enalapril": "C20H28N2O5",
    "tamoxifen": "C26H29NO", "ranitidine": "C13H22N4O3S", "pregabalin": "C8H17NO2",
    "sotalol": "C12H20N2O3S", "pentoxifylline": "C13H18N4O3", "oseltamivir": "C16H28N2O4",
    "ropinirole": "C16H24N2O", "sumatriptan": "C14H21N3O2S", "esmolol": "C16H25NO4",
    "bisoprolol": "C18H31NO4", "acebutolol": "C18H28N2O4",
}
# CIP labels of the drugs' stereocentres and double bonds, keyed by what the atom carries.
CONFIGURATIONS = {
    "oseltamivir": {"C bearing the ether O": "R", "C bearing the acetamido N": "R",
                    "C bearing the amino N": "S"},
    "enalapril": {"every stereocentre": "S"},
    "tamoxifen": {"the C=C": "Z"},
}


def _cip(mol: Chem.Mol) -> tuple[dict[int, str], list[str]]:
    rdCIPLabeler.AssignCIPLabels(mol)
    atoms = {a.GetIdx(): a.GetProp("_CIPCode") for a in mol.GetAtoms() if a.HasProp("_CIPCode")}
    bonds = [b.GetProp("_CIPCode") for b in mol.GetBonds() if b.HasProp("_CIPCode")]
    return atoms, bonds


def _oseltamivir_centres(mol: Chem.Mol, labels: dict[int, str]) -> dict[str, str]:
    out = {}
    for i, label in labels.items():
        for n in mol.GetAtomWithIdx(i).GetNeighbors():
            if n.GetSymbol() == "O" and not n.IsInRing():
                out["C bearing the ether O"] = label
            elif n.GetSymbol() == "N" and n.GetTotalNumHs() == 1:
                out["C bearing the acetamido N"] = label
            elif n.GetSymbol() == "N" and n.GetTotalNumHs() == 2:
                out["C bearing the amino N"] = label
    return out


def _configuration(name: str, mol: Chem.Mol) -> dict[str, str]:
    atoms, bonds = _cip(mol)
    if name == "oseltamivir":
        return _oseltamivir_centres(mol, atoms)
    if name == "enalapril":
        return {"every stereocentre": "".join(sorted(set(atoms.values())))} \
            if len(atoms) == 3 else {"every stereocentre": f"{len(atoms)} assigned"}
    return {"the C=C": "".join(bonds)}


def test_the_set_holds_twenty_molecules_of_five_to_twelve_rotatable_bonds():
    assert set(MOLECULES) == set(FORMULAS)
    for name, smiles in MOLECULES.items():
        bonds = rdMolDescriptors.CalcNumRotatableBonds(Chem.MolFromSmiles(smiles))
        assert 5 <= bonds <= 12, (name, bonds)


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_each_smiles_has_the_drug_s_formula(name):
    assert rdMolDescriptors.CalcMolFormula(Chem.MolFromSmiles(MOLECULES[name])) == FORMULAS[name]


@pytest.mark.parametrize("name", sorted(CONFIGURATIONS))
def test_the_drug_s_configuration_is_written_and_kept_by_the_embedding(name):
    """The SMILES says the drug's configuration, and the 3D structure the search and the
    reference start from (``Atoms.from_smiles``, its stereo read back from the coordinates as
    the search reads it) has the same."""
    from atomiverse import Atoms
    from atomiverse_core.drivers.conformers import molecule_graph

    assert _configuration(name, Chem.MolFromSmiles(MOLECULES[name])) == CONFIGURATIONS[name]
    atoms = Atoms.from_smiles(MOLECULES[name])
    embedded = Chem.RemoveHs(molecule_graph(atoms.numbers, atoms.positions, atoms.charge))
    assert _configuration(name, embedded) == CONFIGURATIONS[name]
