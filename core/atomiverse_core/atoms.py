"""Molecular structures: atomic numbers, positions in Angstrom, charge and spin multiplicity."""

from __future__ import annotations

import functools
import io
import math
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    import ase

DEFAULT_CONFORMER_SEED = 42
MIN_INTERATOMIC_DISTANCE_ANGSTROM = 0.5

Vector3 = tuple[float, float, float]


# Far beyond any molecule, far below where squared distances overflow a float.
MAX_COORDINATE_ANGSTROM = 1e6


class Atoms(BaseModel):
    """A molecule: ``numbers`` (atomic numbers), ``positions`` (Angstrom), ``charge`` (e),
    ``multiplicity`` (2S+1; unpaired electrons = multiplicity - 1)."""

    model_config = ConfigDict(extra="forbid")

    numbers: list[int] = Field(min_length=1, description="Atomic numbers")
    positions: list[Vector3] = Field(min_length=1, description="Cartesian positions, Angstrom")
    charge: int = Field(default=0, ge=-100, le=100, description="Net charge, elementary charges")
    multiplicity: int = Field(default=1, ge=1, le=100, description="Spin multiplicity 2S+1")

    @field_validator("numbers")
    @classmethod
    def _known_elements(cls, numbers: list[int]) -> list[int]:
        bad = [z for z in numbers if z < 1 or z > 118]
        if bad:
            raise ValueError(f"atomic number {bad[0]} is not an element")
        return numbers

    @field_validator("positions")
    @classmethod
    def _finite_positions(cls, positions: list[Vector3]) -> list[Vector3]:
        # Bounded as well as finite: +-1e308 is finite, but distances between such atoms
        # overflow to inf and later checks fail with a 500 instead of naming the atom.
        coords = np.asarray(positions, dtype=float)
        if (np.abs(coords) <= MAX_COORDINATE_ANGSTROM).all():  # one C pass; False for nan
            return positions
        for i, xyz in enumerate(positions):
            if not all(math.isfinite(c) for c in xyz):
                raise ValueError(f"atom {i} has a non-finite coordinate {list(xyz)}")
            if any(abs(c) > MAX_COORDINATE_ANGSTROM for c in xyz):
                raise ValueError(f"atom {i} has a coordinate beyond +-{MAX_COORDINATE_ANGSTROM:g}"
                                 f" Angstrom: {list(xyz)}")
        return positions

    @model_validator(mode="after")
    def _consistent(self) -> Atoms:
        if len(self.numbers) != len(self.positions):
            raise ValueError(
                f"numbers has {len(self.numbers)} entries but positions has {len(self.positions)}"
            )
        self._check_electrons()
        self._check_distances()
        return self

    def _check_electrons(self) -> None:
        electrons = sum(self.numbers) - self.charge
        if electrons < 1:
            raise ValueError(f"charge {self.charge} leaves {electrons} electrons")
        unpaired = self.multiplicity - 1
        if unpaired > electrons or (electrons - unpaired) % 2:
            raise ValueError(
                f"multiplicity {self.multiplicity} is impossible with {electrons} electrons "
                f"(charge {self.charge})"
            )

    def _check_distances(self) -> None:
        pos = np.asarray(self.positions, dtype=float)
        n = len(pos)
        if n < 2:
            return
        pos = pos - pos[0]  # relative to one atom: as good as the centroid, and cheaper
        limit2 = MIN_INTERATOMIC_DISTANCE_ANGSTROM**2
        # |a-b|^2 = |a|^2 + |b|^2 - 2 a.b takes half the time of forming every difference
        # vector. It loses about 1e-16 |r|^2 to rounding: nothing, unless the atoms spread
        # over more than 1e4 Angstrom, where the differences are formed after all.
        gram = np.abs(pos).max() < 1e4
        sq = np.einsum("ij,ij->i", pos, pos)
        # Row blocks keep memory bounded for a thousand atoms.
        for start in range(0, n, 256):
            block = pos[start : start + 256]
            if gram:
                d2 = sq[start : start + 256, None] + sq[None, :] - 2.0 * (block @ pos.T)
            else:
                d2 = ((block[:, None, :] - pos[None, :, :]) ** 2).sum(-1)
            np.fill_diagonal(d2[:, start:], np.inf)
            if d2.min() >= limit2:
                continue
            i, j = np.unravel_index(np.argmin(d2), d2.shape)
            a, b = sorted((start + int(i), int(j)))
            distance = math.dist(pos[a], pos[b])
            if distance < MIN_INTERATOMIC_DISTANCE_ANGSTROM:
                raise ValueError(
                    f"atoms {a} and {b} are {distance:.3f} Angstrom apart "
                    f"(minimum {MIN_INTERATOMIC_DISTANCE_ANGSTROM})"
                )

    # ----- derived -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.numbers)

    @property
    def symbols(self) -> list[str]:
        table = _chemical_symbols()
        return [table[z] for z in self.numbers]

    @property
    def formula(self) -> str:
        """Hill formula, e.g. ``C2H6O``."""
        return _hill_formula(self.symbols)

    @property
    def n_electrons(self) -> int:
        return sum(self.numbers) - self.charge

    # ----- constructors ------------------------------------------------------------------
    @classmethod
    def from_smiles(
        cls, smiles: str, *, seed: int = DEFAULT_CONFORMER_SEED, multiplicity: int | None = None
    ) -> Atoms:
        """Embed a SMILES in 3D: RDKit ETKDG (fixed ``seed``) then MMFF (UFF where MMFF has no
        parameters, neither where UFF has none either), so one SMILES always gives one
        geometry. Raises ValueError naming the SMILES if it cannot be parsed or embedded, or
        if, without MMFF, the geometry's bonds are not the SMILES's."""
        from rdkit import Chem
        from rdkit.Chem import AllChem

        mol = Chem.MolFromSmiles(smiles) if isinstance(smiles, str) and smiles.strip() else None
        if mol is None:
            raise ValueError(f"invalid SMILES: {smiles!r}")
        mol = Chem.AddHs(mol)
        params = AllChem.ETKDGv3()
        params.randomSeed = seed
        if AllChem.EmbedMolecule(mol, params) != 0:
            params.useRandomCoords = True
            if AllChem.EmbedMolecule(mol, params) != 0:
                raise ValueError(f"could not embed SMILES in 3D: {smiles!r}")
        if AllChem.MMFFHasAllMoleculeParams(mol):
            AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
        else:
            if AllChem.UFFHasAllMoleculeParams(mol):
                AllChem.UFFOptimizeMolecule(mol, maxIters=2000)
            _refuse_if_bonds_are_not_the_smiles(mol, smiles)
        return cls.from_rdkit(mol, multiplicity=multiplicity)

    @classmethod
    def from_rdkit(cls, mol: Any, *, conf_id: int = -1, multiplicity: int | None = None) -> Atoms:
        """From an RDKit molecule with a 3D conformer; charge and radicals come from the molecule."""
        from rdkit import Chem

        conf = mol.GetConformer(conf_id)
        radicals = sum(a.GetNumRadicalElectrons() for a in mol.GetAtoms())
        return cls(
            numbers=[a.GetAtomicNum() for a in mol.GetAtoms()],
            positions=[tuple(conf.GetAtomPosition(i)) for i in range(mol.GetNumAtoms())],
            charge=Chem.GetFormalCharge(mol),
            multiplicity=multiplicity if multiplicity is not None else radicals + 1,
        )

    @classmethod
    def from_mol(cls, source: Any, *, conf_id: int = -1,
                 multiplicity: int | None = None) -> Atoms:
        """From an RDKit molecule, a MOL file path or MOL block text, with 3D coordinates.

        The charge is the sum of the formal charges (atom block or ``M  CHG``), the multiplicity
        comes from radical electrons unless given. Hydrogens the file leaves implicit are added
        at computed 3D positions. Raises ValueError for a 2D or unreadable molecule."""
        from rdkit import Chem

        if isinstance(source, Chem.Mol):
            return cls._from_3d_mol(source, conf_id=conf_id, multiplicity=multiplicity,
                                    what="RDKit molecule")
        text, what = _text_and_label(source, "MOL block")
        mol = Chem.MolFromMolBlock(text, removeHs=False)
        if mol is None:
            raise ValueError(f"could not read {what} (RDKit could not parse or sanitise it)")
        return cls._from_3d_mol(mol, conf_id=conf_id, multiplicity=multiplicity, what=what)

    @classmethod
    def from_sdf(cls, source: str | os.PathLike[str], *, index: int = 0,
                 multiplicity: int | None = None) -> Atoms:
        """Record ``index`` of an SD file (path) or SDF text; see :meth:`from_mol`."""
        records = read_sdf_records(source)
        if not -len(records) <= index < len(records):
            raise ValueError(f"SDF has {len(records)} records; no record {index}")
        name, atoms, error = records[index]
        if atoms is None:
            raise ValueError(f"SDF record {index} ({name}): {error}")
        if multiplicity is not None:
            return cls(**{**atoms.model_dump(), "multiplicity": multiplicity})  # re-checked
        return atoms

    @classmethod
    def _from_3d_mol(cls, mol: Any, *, conf_id: int, multiplicity: int | None,
                     what: str) -> Atoms:
        from rdkit import Chem

        if mol.GetNumConformers() == 0:
            raise ValueError(f"{what} has no coordinates: use Atoms.from_smiles to embed one")
        conf = mol.GetConformer(conf_id)
        z = [conf.GetAtomPosition(i).z for i in range(mol.GetNumAtoms())]
        if not conf.Is3D() and not any(abs(c) > 1e-6 for c in z):
            raise ValueError(f"{what} has 2D coordinates only: use Atoms.from_smiles (or "
                             f"embed it in 3D) first")
        if any(a.GetNumImplicitHs() for a in mol.GetAtoms()):
            mol = Chem.AddHs(mol, addCoords=True)
            conf_id = -1
        return cls.from_rdkit(mol, conf_id=conf_id, multiplicity=multiplicity)

    @classmethod
    def from_xyz(cls, source: str | os.PathLike[str], *, charge: int = 0, multiplicity: int = 1,
                 index: int = 0) -> Atoms:
        """From an XYZ file path or XYZ text (frame ``index`` of a multi-frame file)."""
        return read_xyz_frames(source, charge=charge, multiplicity=multiplicity)[index]

    @classmethod
    def from_ase(cls, atoms: ase.Atoms, *, charge: int | None = None,
                 multiplicity: int | None = None) -> Atoms:
        info = getattr(atoms, "info", {}) or {}
        return cls(
            numbers=[int(z) for z in atoms.get_atomic_numbers()],
            positions=[tuple(map(float, p)) for p in atoms.get_positions()],
            charge=int(charge if charge is not None else info.get("charge", 0)),
            multiplicity=int(multiplicity if multiplicity is not None
                             else info.get("multiplicity", 1)),
        )

    def to_ase(self) -> ase.Atoms:
        import ase

        atoms = ase.Atoms(numbers=self.numbers, positions=self.positions)
        atoms.info.update(charge=self.charge, multiplicity=self.multiplicity)
        return atoms

    def to_xyz(self, comment: str = "") -> str:
        lines = [str(len(self)), comment.replace("\n", " ")]
        for s, (x, y, z) in zip(self.symbols, self.positions, strict=True):
            lines.append(f"{s:<2} {x:15.8f} {y:15.8f} {z:15.8f}")
        return "\n".join(lines) + "\n"

    def preview(self) -> dict[str, Any]:
        """Formula and atom positions, small enough to list and render."""
        symbols = self.symbols
        return {"formula": _hill_formula(symbols), "symbols": symbols,
                "positions": np.round(np.asarray(self.positions, dtype=float), 4).tolist()}


@functools.cache
def _chemical_symbols() -> tuple[str, ...]:
    # ASE loads on first use (the SDK imports without it); an import statement per call was
    # a tenth of the server's time on a submitted batch.
    from ase.data import chemical_symbols

    return tuple(chemical_symbols)


def _hill_formula(symbols: list[str]) -> str:
    counts = Counter(symbols)
    order = ["C", "H"] if "C" in counts else []
    order += sorted(s for s in counts if s not in order)
    return "".join(f"{s}{counts[s] if counts[s] > 1 else ''}" for s in order if s in counts)


def read_xyz_frames(source: str | os.PathLike[str], *, charge: int = 0,
                    multiplicity: int = 1) -> list[Atoms]:
    """All frames of an XYZ file (path) or XYZ text."""
    from ase.io import read

    text = _xyz_text(source)
    frames = read(io.StringIO(text), index=":", format="xyz")
    if not frames:
        raise ValueError("no XYZ frames found")
    return [Atoms.from_ase(f, charge=charge, multiplicity=multiplicity) for f in frames]


def read_sdf_records(source: str | os.PathLike[str]) -> list[tuple[str, Atoms | None,
                                                                   str | None]]:
    """Every record of an SD file (path) or SDF text as ``(name, atoms, error)``: a record that
    cannot be read keeps its place, with ``atoms`` None and the reason in ``error``."""
    from rdkit import Chem

    text, _ = _text_and_label(source, "SDF text")
    supplier = Chem.SDMolSupplier()
    supplier.SetData(text, removeHs=False)
    out: list[tuple[str, Atoms | None, str | None]] = []
    for i in range(len(supplier)):
        mol = supplier[i]
        if mol is None:
            out.append((f"record-{i + 1}", None, "RDKit could not parse or sanitise it"))
            continue
        name = mol.GetProp("_Name").strip() if mol.HasProp("_Name") else ""
        name = name or f"record-{i + 1}"
        try:
            out.append((name, Atoms._from_3d_mol(mol, conf_id=-1, multiplicity=None,
                                                 what=f"SDF record {name!r}"), None))
        except ValueError as e:
            out.append((name, None, str(e)))
    if not out:
        raise ValueError("no SDF records found")
    return out


def _text_and_label(source: Any, kind: str) -> tuple[str, str]:
    """(text, how to name it in errors) for a path or literal text."""
    if isinstance(source, os.PathLike) or (isinstance(source, str) and "\n" not in source
                                           and _is_file(source)):
        return Path(source).read_text(), f"file {str(source)!r}"
    if not isinstance(source, str):
        raise TypeError(f"expected a path or {kind}, not {type(source).__name__}")
    return source, kind


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # too long for a path, or a NUL byte
        return False


def _xyz_text(source: str | os.PathLike[str]) -> str:
    if isinstance(source, os.PathLike) or ("\n" not in str(source) and Path(source).exists()):
        return Path(source).read_text()
    return str(source)


def _refuse_if_bonds_are_not_the_smiles(mol: Any, smiles: str) -> None:
    """ValueError if the embedded geometry's bonds (read from its distances) are not the
    molecule's: without force-field parameters, distance geometry and UFF put SF5's
    fluorines on top of each other and tore iodobenzene diacetate's acetates apart."""
    from .bonds import connectivity

    numbers = [a.GetAtomicNum() for a in mol.GetAtoms()]
    made = connectivity(numbers, mol.GetConformer().GetPositions())
    wanted = frozenset(tuple(sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx())))
                       for b in mol.GetBonds())
    if made != wanted:
        raise ValueError(f"could not embed SMILES in 3D: {smiles!r}: no force field here has "
                         f"parameters for it, and the geometry made without them does not "
                         f"have its bonds; give the atoms' positions instead")
