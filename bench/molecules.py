"""The benchmark molecule set, built reproducibly from the NCI SMILES list that RDKit ships.

Walk ``RDConfig.RDDataDir/NCI/first_5K.smi`` in file order and keep a SMILES when it

* parses (RDKit sanitisation included),
* has only the elements H C N O F P S Cl Br I,
* has no net formal charge (zwitterions and nitro groups are fine) and no radical electrons
  (an odd electron count needs a multiplicity other than 1, which this benchmark does not do),
* has at most 40 heavy atoms,
* embeds: hydrogens added, ETKDGv3 with ``randomSeed=42``, then MMFF94 optimised.

The first ``n`` survivors, with their MMFF geometries, are the benchmark set. The build is
deterministic (single-threaded embedding with a fixed seed); the result is cached as JSON under
``bench/results/`` (gitignored), keyed by ``n`` and the RDKit version.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ALLOWED_ELEMENTS = frozenset({"H", "C", "N", "O", "F", "P", "S", "Cl", "Br", "I"})
MAX_HEAVY_ATOMS = 40
SEED = 42
MMFF_MAX_ITERS = 2000
RESULTS_DIR = Path(__file__).resolve().parent / "results"
CACHE_FORMAT = 1

# (SMILES, atomic numbers, positions in Angstrom)
Molecule = tuple[str, list[int], list[list[float]]]


def nci_smiles_path() -> str:
    from rdkit import RDConfig

    return os.path.join(RDConfig.RDDataDir, "NCI", "first_5K.smi")


def _iter_nci() -> list[tuple[str, str]]:
    """(SMILES, NCI id) pairs in file order."""
    out = []
    with open(nci_smiles_path()) as fh:
        for line in fh:
            parts = line.split()
            if parts:
                out.append((parts[0], parts[1] if len(parts) > 1 else ""))
    return out


def _embed(smiles: str) -> tuple[list[int], list[list[float]]] | None:
    """Atomic numbers and MMFF-optimised positions, or None when the SMILES is filtered out."""
    from rdkit import Chem
    from rdkit.Chem import AllChem, Descriptors

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    if any(a.GetSymbol() not in ALLOWED_ELEMENTS for a in mol.GetAtoms()):
        return None
    if Chem.GetFormalCharge(mol) != 0 or Descriptors.NumRadicalElectrons(mol) != 0:
        return None
    if mol.GetNumHeavyAtoms() > MAX_HEAVY_ATOMS:
        return None
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = SEED
    params.numThreads = 1
    if AllChem.EmbedMolecule(mol, params) != 0:
        return None
    if not AllChem.MMFFHasAllMoleculeParams(mol):
        return None
    AllChem.MMFFOptimizeMolecule(mol, maxIters=MMFF_MAX_ITERS)
    pos = mol.GetConformer().GetPositions()
    numbers = [a.GetAtomicNum() for a in mol.GetAtoms()]
    return numbers, [[float(c) for c in xyz] for xyz in pos]


def build_benchmark_molecules(n: int = 200) -> list[Molecule]:
    """Build the set from scratch (no cache)."""
    from rdkit import RDLogger

    if n < 1:
        raise ValueError("n must be at least 1")
    RDLogger.DisableLog("rdApp.*")  # parse failures of the NCI list are expected; keep quiet
    try:
        mols: list[Molecule] = []
        for smiles, _nci_id in _iter_nci():
            built = _embed(smiles)
            if built is None:
                continue
            mols.append((smiles, *built))
            if len(mols) == n:
                return mols
    finally:
        RDLogger.EnableLog("rdApp.*")
    raise ValueError(f"the NCI list yields only {len(mols)} molecules that pass the filters")


def _cache_path(n: int) -> Path:
    return RESULTS_DIR / f"molecules_n{n}.json"


def benchmark_molecules(n: int = 200, use_cache: bool = True) -> list[Molecule]:
    """The first ``n`` molecules of the benchmark set: ``(smiles, numbers, positions)``.

    Cached under ``bench/results/molecules_n{n}.json``; the cache is ignored when it was written
    by another RDKit version (embedding is only reproducible within one version)."""
    import rdkit

    path = _cache_path(n)
    if use_cache and path.exists():
        try:
            data = json.loads(path.read_text())
            if data.get("format") == CACHE_FORMAT and data.get("rdkit") == rdkit.__version__ \
                    and data.get("n") == n:
                return [(m["smiles"], m["numbers"], m["positions"]) for m in data["molecules"]]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable cache: rebuild
    mols = build_benchmark_molecules(n)
    if use_cache:
        data = {
            "format": CACHE_FORMAT, "rdkit": rdkit.__version__, "n": n, "seed": SEED,
            "source": "RDKit NCI/first_5K.smi",
            "molecules": [{"smiles": s, "numbers": z, "positions": p} for s, z, p in mols],
        }
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)  # atomic: concurrent builders cannot leave a torn file
    return mols


if __name__ == "__main__":
    import sys

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    ms = benchmark_molecules(count)
    sizes = [len(z) for _, z, _ in ms]
    mean = sum(sizes) / len(sizes)
    print(f"{len(ms)} molecules, {min(sizes)}-{max(sizes)} atoms (mean {mean:.1f})")
