"""The benchmark molecule set (bench/molecules.py) is deterministic and respects its filters."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(REPO))

from rdkit import Chem  # noqa: E402

from bench import molecules as bm  # noqa: E402

ALLOWED_Z = {1, 6, 7, 8, 9, 15, 16, 17, 35, 53}


def test_build_is_deterministic_and_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(bm, "RESULTS_DIR", tmp_path)
    first = bm.build_benchmark_molecules(5)
    second = bm.build_benchmark_molecules(5)
    assert first == second  # bit-identical coordinates, not merely close
    assert len(first) == 5
    cached = bm.benchmark_molecules(n=5)  # builds and writes the cache
    assert (tmp_path / "molecules_n5.json").exists()
    assert cached == first
    assert bm.benchmark_molecules(n=5) == first  # read back from the cache
    # The set is a prefix of itself: the first 3 of 5 are the 3-molecule set.
    assert bm.build_benchmark_molecules(3) == first[:3]


def test_molecules_respect_filters(tmp_path, monkeypatch):
    monkeypatch.setattr(bm, "RESULTS_DIR", tmp_path)
    mols = bm.benchmark_molecules(n=5)
    for smiles, numbers, positions in mols:
        mol = Chem.MolFromSmiles(smiles)
        assert mol is not None
        assert set(numbers) <= ALLOWED_Z
        assert Chem.GetFormalCharge(mol) == 0
        assert mol.GetNumHeavyAtoms() <= bm.MAX_HEAVY_ATOMS
        assert sum(z > 1 for z in numbers) == mol.GetNumHeavyAtoms()
        assert sum(numbers) % 2 == 0  # closed shell
        assert 1 in numbers  # hydrogens were added
        assert len(positions) == len(numbers)
        assert all(len(p) == 3 for p in positions)


@pytest.mark.parametrize("smiles", [
    "not a smiles",
    "[NH4+]",                      # net charge
    "CC(=O)[O-]",                  # net charge
    "C[Si](C)(C)C",                # element outside H C N O F P S Cl Br I
    "[Na+].[Cl-]",                 # elements
    "C" * 41,                      # 41 heavy atoms
    "[CH3]",                       # radical
])
def test_filtered_out(smiles):
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")
    try:
        assert bm._embed(smiles) is None
    finally:
        RDLogger.EnableLog("rdApp.*")


@pytest.mark.parametrize("smiles", ["CCO", "C[N+](=O)[O-]", "C" * 40, "ClC(Br)I"])
def test_kept(smiles):
    built = bm._embed(smiles)
    assert built is not None
    numbers, positions = built
    assert len(numbers) == len(positions)
