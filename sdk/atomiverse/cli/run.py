"""``atomiverse run FILE``: molecules from a SMILES, XYZ or SD file, computed (single point,
optimisation or frequencies, in vacuum or an implicit solvent), a table and a results file out
(JSON lines or CSV; optimised geometries as XYZ)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atomiverse_core import jobtypes, retry
from atomiverse_core.atoms import Atoms, read_sdf_records, read_xyz_frames
from atomiverse_core.jobs import Job
from atomiverse_core.levels import GFN0_XTB, GFN1_XTB, GFN2_XTB, GFNFF, LevelOfTheory
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from .. import _client_jobs
from .._exceptions import RateLimitError

LEVELS = {"gfn2": GFN2_XTB, "gfn1": GFN1_XTB, "gfn0": GFN0_XTB, "gfnff": GFNFF}
CHUNK = 1000


@dataclass
class Molecule:
    name: str
    source: str
    atoms: Atoms | None
    error: str | None = None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="compute every molecule in a .smi, .xyz or .sdf file")
    p.add_argument("file", type=Path, help=".smi (SMILES [name] per line), .xyz (multi-frame) "
                                           "or .sdf (3D records; charges from the file)")
    p.add_argument("--job", choices=jobtypes.cli_names(), default=jobtypes.cli_names()[0],
                   help="; ".join(f"{t.cli_name}: {t.cli_help}" for t in jobtypes.all_types()
                                  if t.cli_name))
    p.add_argument("--level", choices=sorted(LEVELS), default="gfn2")
    p.add_argument("--solvent", help="implicit solvent by name, e.g. water (default: vacuum)")
    p.add_argument("--solvation-model", choices=["alpb", "gbsa"], default="alpb",
                   help="ALPB (default; runs on tblite) or GBSA")
    p.add_argument("--temperature", type=float, default=298.15,
                   help="kelvin, for --job freq thermochemistry")
    p.add_argument("--target", default="local",
                   help="compute target: local (default), managed or a controller name")
    p.add_argument("-o", "--output", type=Path,
                   help="results file (.jsonl or .csv; default FILE-stem.results.jsonl)")
    p.add_argument("--charge", type=int, default=0, help="charge for XYZ input")
    p.add_argument("--no-cache", action="store_true", help="compute even if a result exists")
    p.set_defaults(func=_run)


def read_molecules(path: Path, charge: int = 0) -> list[Molecule]:
    if path.suffix.lower() == ".xyz":
        return [Molecule(f"{path.stem}-{i + 1}", "xyz", a)
                for i, a in enumerate(read_xyz_frames(path, charge=charge))]
    if path.suffix.lower() in (".sdf", ".sd", ".mol"):
        return [Molecule(name, "sdf", atoms, error)
                for name, atoms, error in read_sdf_records(path)]
    mols = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        smiles = parts[0]
        name = parts[1] if len(parts) > 1 else f"mol-{lineno}"
        try:
            mols.append(Molecule(name, smiles, Atoms.from_smiles(smiles)))
        except ValueError as e:
            mols.append(Molecule(name, smiles, None, str(e)))
    return mols


def level_from_args(args: argparse.Namespace) -> LevelOfTheory:
    """The --level, in --solvent if given; ValueError (listing valid solvents) if unknown."""
    level = LEVELS[args.level]
    solvent = getattr(args, "solvent", None)
    if solvent:
        level = level.with_solvent(solvent, model=getattr(args, "solvation_model", "alpb"))
    return level


def build_job(mol: Molecule, args: argparse.Namespace) -> Job:
    kind = jobtypes.by_cli_name(args.job)
    return kind.input_model(atoms=mol.atoms, level_of_theory=level_from_args(args),
                            name=mol.name, use_cache=not args.no_cache, **kind.cli_options(args))


def _run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    if not args.file.exists():
        console.print(f"[red]no such file: {args.file}[/red]")
        return 2
    try:
        level_from_args(args)
        mols = read_molecules(args.file, args.charge)
    except ValueError as e:
        console.print(f"[red]{escape(str(e))}[/red]")
        return 2
    rows = [{"name": m.name, "input": m.source, "formula": m.atoms.formula if m.atoms else None,
             "state": "failed", "error": m.error} for m in mols]
    todo = [i for i, m in enumerate(mols) if m.atoms is not None]
    payloads = [build_job(mols[i], args).model_dump(mode="json") for i in todo]
    job_ids = _submit(payloads, args.target, rows, todo)
    _wait(job_ids, rows, console)
    out = args.output or args.file.with_name(f"{args.file.stem}.results.jsonl")
    write_results(out, rows)
    if jobtypes.by_cli_name(args.job).moves_geometry:
        write_geometries(out.with_suffix(".xyz"), rows, mols, args.job)
    stdout = Console()
    stdout.print(results_table(rows, args.job))
    print_errors(stdout, rows)
    console.print(f"results written to {out}")
    return 0 if all(r["state"] == "done" for r in rows) else 1


def _submit(payloads: list[dict[str, Any]], target: str, rows: list[dict[str, Any]],
            todo: list[int]) -> dict[str, int]:
    job_ids: dict[str, int] = {}
    for start in range(0, len(payloads), CHUNK):
        res = _submit_chunk(payloads[start:start + CHUNK], target)
        for k, entry in enumerate(res["jobs"]):
            row = rows[todo[start + k]]
            if entry["job_id"]:
                job_ids[entry["job_id"]] = todo[start + k]
                row.update(job_id=entry["job_id"], state=entry["state"], error=None)
            else:
                row["error"] = entry["error"]
    return job_ids


def _submit_chunk(chunk: list[dict[str, Any]], target: str) -> dict[str, Any]:
    """A big file is several batches; the server may ask us to slow down between them."""
    key = uuid.uuid4().hex  # the same key across waits: a lost response is not a duplicate
    waiting = retry.retrying(retry.RATE_LIMITED, before_sleep=_say_rate_limited,
                             retry_on=lambda e: isinstance(e, RateLimitError))
    return waiting(_client_jobs.submit_batch, chunk, compute_target=target,
                   idempotency_key=key)


def _say_rate_limited(state: Any) -> None:
    wait = state.next_action.sleep if state.next_action else 0.0
    Console(stderr=True).print(f"rate limited: waiting {wait:.0f} s before the next batch")


def _wait(job_ids: dict[str, int], rows: list[dict[str, Any]], console: Console) -> None:
    if not job_ids:
        return
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  transient=False) as progress:
        task = progress.add_task("computing", total=len(job_ids))
        records = _client_jobs.wait_jobs(
            list(job_ids), on_progress=lambda done, _total: progress.update(task, completed=done))
    for rec in records:
        rows[job_ids[rec["job_id"]]].update(state=rec["state"], result=rec.get("result"),
                                            error=rec.get("error"),
                                            cached_from=rec.get("cached_from"))


def flat(row: dict[str, Any]) -> dict[str, Any]:
    r = row.get("result") or {}
    return {"name": row["name"], "input": row["input"], "formula": row["formula"],
            "job_id": row.get("job_id"), "state": row["state"],
            "energy_hartree": r.get("energy_hartree"),
            "homo_lumo_gap_ev": r.get("homo_lumo_gap_ev"),
            "n_steps": r.get("n_steps"), "converged": r.get("converged"),
            "n_imaginary": r.get("n_imaginary"),
            "zero_point_energy_hartree": r.get("zero_point_energy_hartree"),
            "gibbs_energy_hartree": r.get("gibbs_energy_hartree"),
            "warnings": "; ".join(r.get("warnings") or []) or None,
            "engine": r.get("engine"), "wall_time_seconds": r.get("wall_time_seconds"),
            "error": row.get("error")}


def write_results(path: Path, rows: list[dict[str, Any]]) -> None:
    if path.suffix.lower() == ".csv":
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(flat(rows[0]) if rows else []))
            writer.writeheader()
            writer.writerows(flat(r) for r in rows)
        return
    with open(path, "w") as f:
        f.writelines(json.dumps({**flat(r), "result": r.get("result")}) + "\n" for r in rows)


def write_geometries(path: Path, rows: list[dict[str, Any]], mols: list[Molecule],
                     job: str) -> None:
    """Every geometry each result gives (the final one; an ensemble's every conformer), one
    frame each, its energy in the comment line."""
    frames_of = jobtypes.by_cli_name(job).frames
    with open(path, "w") as f:
        for row, mol in zip(rows, mols, strict=True):
            if mol.atoms is None or row.get("state") != "done":
                continue
            for frame in frames_of(row.get("result") or {}):
                atoms = Atoms(numbers=mol.atoms.numbers,
                              positions=[tuple(p) for p in frame.positions_angstrom],
                              charge=mol.atoms.charge, multiplicity=mol.atoms.multiplicity)
                comment = f"{row['name']} energy_hartree={frame.energy_hartree:.10f}"
                f.write(atoms.to_xyz(f"{comment} {frame.note}".rstrip()))


def results_table(rows: list[dict[str, Any]], job: str) -> Table:
    table = Table(title="GFN-xTB results")
    for col in ("name", "formula", "state", "energy / Hartree", "gap / eV"):
        table.add_column(col, justify="right" if "/" in col else "left")
    columns = jobtypes.by_cli_name(job).cli_columns
    for column in columns:
        table.add_column(column.header, justify="left" if column.field == "converged" else
                         "right")
    for row in rows:
        f = flat(row)
        result = row.get("result") or {}
        cells = [f["name"], f["formula"] or "", f["state"],
                 f"{f['energy_hartree']:.8f}" if f["energy_hartree"] is not None else "",
                 f"{f['homo_lumo_gap_ev']:.3f}" if f["homo_lumo_gap_ev"] is not None else ""]
        cells += ["" if result.get(c.field) is None else c.format.format(result[c.field])
                  for c in columns]
        table.add_row(*cells)
    return table


def print_errors(console: Console, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        if row.get("error"):
            console.print(f"[red]{escape(row['name'])}[/red]: {escape(row['error'])}",
                          highlight=False, soft_wrap=True)
        for warning in (row.get("result") or {}).get("warnings") or []:
            console.print(f"[yellow]{escape(row['name'])}[/yellow]: {escape(warning)}",
                          highlight=False, soft_wrap=True)


if __name__ == "__main__":
    sys.exit(_run(argparse.Namespace()))
