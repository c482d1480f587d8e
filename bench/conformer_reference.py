"""The exhaustive reference of the conformer benchmark (``bench/conformers.py``): 500 ETKDG
candidates of a molecule, each optimised at GFN2-xTB with the GeometryOptimization defaults;
stored in ``bench/reference/conformers/``, filled over several sittings, and priced again on the
machine as it is when a search is compared with it."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_SEED = 7
REFERENCE_DIR = ROOT / "bench" / "reference" / "conformers"
PARTIAL_SAVE_SECONDS = 60.0


def reference_geometries(atoms: Any, count: int) -> list[Any]:
    """``count`` ETKDG geometries of the molecule's graph, unpruned, in its atom order; the
    few with two atoms closer than a job accepts are left out (sotalol: 1 of 500), as the
    search leaves them out of its candidates."""
    from atomiverse_core.drivers.conformers import atoms_apart, molecule_graph
    from rdkit.Chem import AllChem

    mol = molecule_graph(atoms.numbers, atoms.positions, atoms.charge)
    params = AllChem.ETKDGv3()
    params.randomSeed = REFERENCE_SEED
    ids = AllChem.EmbedMultipleConfs(mol, count, params)
    embedded = [mol.GetConformer(i).GetPositions() for i in ids]
    return [g.tolist() for g in embedded if atoms_apart(g)]



def run_reference(atomiverse: Any, atoms: Any, name: str, smiles: str,
                  count: int) -> dict[str, Any]:
    """The reference of one molecule; resumes from, and keeps writing, its partial file."""
    from atomiverse.levels import GFN2_XTB

    progress = ReferenceProgress(name, smiles, count)
    geometries = reference_geometries(atoms, count)
    todo = [i for i in range(len(geometries)) if str(i) not in progress.done]
    jobs = [atomiverse.GeometryOptimization(
        atoms=atomiverse.Atoms(numbers=atoms.numbers, positions=geometries[i],
                               charge=atoms.charge),
        level_of_theory=GFN2_XTB, use_cache=False, name=f"{name} reference {i}")
        .model_dump(mode="json") for i in todo]
    entries = atomiverse.submit_batch(jobs, compute_target="local")["jobs"] if jobs else []
    index_of = {e["job_id"]: i for e, i in zip(entries, todo, strict=True) if e["job_id"]}
    for record in atomiverse.as_completed(list(index_of)):
        progress.add(index_of[record["job_id"]], record)
    progress.save()
    return progress.summary(atoms.numbers)


def reference_price(atomiverse: Any, atoms: Any, name: str, count: int,
                    sample: int) -> float | None:
    """Core-seconds per gradient evaluation of the reference's own optimisations, run now:
    ``sample`` of its candidates (evenly spread) optimised as the reference did, on the
    machine as it is during the search (a stored reference's core-seconds are from another
    hour, most at nice 19 beside other work)."""
    from atomiverse.levels import GFN2_XTB

    if sample <= 0:
        return None
    geometries = reference_geometries(atoms, count)
    picked = geometries[::max(1, len(geometries) // sample)][:sample]
    jobs = [atomiverse.GeometryOptimization(
        atoms=atomiverse.Atoms(numbers=atoms.numbers, positions=g, charge=atoms.charge),
        level_of_theory=GFN2_XTB, use_cache=False, name=f"{name} reference sample {n}")
        .model_dump(mode="json") for n, g in enumerate(picked)]
    ids = [e["job_id"] for e in atomiverse.submit_batch(jobs, compute_target="local")["jobs"]]
    done = [r["result"] for r in atomiverse.wait_jobs(ids) if r["state"] == "done"]
    evaluations = gradient_evaluations(done)
    return sum(r["core_seconds"] for r in done) / evaluations if evaluations else None


class ReferenceProgress:
    """The optimisations of one reference finished so far, in ``<name>-<count>.partial.json``
    (written at most every PARTIAL_SAVE_SECONDS and at the end), so that a reference of ~1-2
    core-hours fills over several sittings; removed once the reference is stored."""

    def __init__(self, name: str, smiles: str, count: int) -> None:
        self.path = REFERENCE_DIR / f"{name}-{count}.partial.json"
        self.key = {"smiles": smiles, "candidates": count, "seed": REFERENCE_SEED}
        stored = json.loads(self.path.read_text()) if self.path.exists() else {}
        same = {k: stored.get(k) for k in self.key} == self.key
        self.done: dict[str, Any] = stored.get("done", {}) if same else {}
        self.lowest: Any = stored.get("lowest_positions_angstrom") if same else None
        self.saved_at = time.monotonic()

    def add(self, index: int, record: dict[str, Any]) -> None:
        result = record.get("result") if record["state"] == "done" else None
        if result is None:
            self.done[str(index)] = {"state": record["state"]}
        else:
            if all(result["energy_hartree"] < d.get("energy_hartree", float("inf"))
                   for d in self.done.values()):
                self.lowest = result["final_positions_angstrom"]
            self.done[str(index)] = {"state": "done", "energy_hartree": result["energy_hartree"],
                                     "core_seconds": result["core_seconds"],
                                     "gradient_evaluations": len(result["energies_hartree"])}
        if time.monotonic() - self.saved_at > PARTIAL_SAVE_SECONDS:
            self.save()

    def save(self) -> None:
        REFERENCE_DIR.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({**self.key, "done": self.done,
                                         "lowest_positions_angstrom": self.lowest}) + "\n")
        self.saved_at = time.monotonic()

    def summary(self, numbers: Any) -> dict[str, Any]:
        """The stored reference; with every candidate's energy (None: its optimisation
        failed), which says how many of the 500 reached the lowest basin."""
        done = [d for d in self.done.values() if d["state"] == "done"]
        return {"energy_hartree": min(d["energy_hartree"] for d in done),
                "core_seconds": sum(d["core_seconds"] for d in done), "n_done": len(done),
                "gradient_evaluations": sum(d["gradient_evaluations"] for d in done),
                "numbers": list(numbers), "lowest_positions_angstrom": self.lowest,
                "candidate_energies_hartree": [
                    self.done.get(str(i), {}).get("energy_hartree") for i in range(
                        max(map(int, self.done)) + 1)]}


def gradient_evaluations(results: Any) -> int:
    """The engine calls of these optimisations: the cost measure a loaded machine does not
    distort (core-seconds are wall time times cores)."""
    return sum(len(r["energies_hartree"]) for r in results)


def _reference_file(name: str, count: int) -> Path:
    return REFERENCE_DIR / f"{name}-{count}.json"


def stored_reference(name: str, smiles: str, count: int) -> dict[str, Any] | None:
    """The stored reference of this molecule, if it was made from the same SMILES, candidate
    count and seed."""
    path = _reference_file(name, count)
    if not path.exists():
        return None
    ref = json.loads(path.read_text())
    same = (ref.get("smiles"), ref.get("candidates"), ref.get("seed")) == \
        (smiles, count, REFERENCE_SEED)
    return ref if same else None


def store_reference(name: str, smiles: str, count: int, ref: dict[str, Any]) -> None:
    REFERENCE_DIR.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                            capture_output=True, check=False).stdout.strip()
    record = {"molecule": name, "smiles": smiles, "candidates": count,
              "seed": REFERENCE_SEED, "commit": commit, **ref}
    _reference_file(name, count).write_text(json.dumps(record, indent=1) + "\n")
