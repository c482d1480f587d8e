"""Where a conformer search found, or lost, the reference's lowest conformer.

For each stage of a finished search (the ETKDG candidates, the GFN-FF screen's minima, the
GFN2-xTB prescreen's, the refined conformers), the geometry closest to the reference's lowest
(heavy-atom RMSD after alignment over the molecule's symmetries, Angstrom) and that
geometry's rank by energy within its stage (the screen keeps its lowest ``max_prescreened``
distinct, the prescreen its lowest ``max_refined``): a stage whose closest geometry is far
from the reference, or ranked past what the next stage takes, is where the basin was lost.
Also where the lowest conformer started (:func:`lowest_from`). Used by ``bench/conformers.py``
for every search it runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

STAGES = (("candidates", " · screen ", "start"), ("screen", " · screen ", "end"),
          ("prescreen", " · candidate ", "end"), ("refine", " · conformer ", "end"))


def name_of(record: dict[str, Any]) -> str:
    return record.get("name") or record["job"].get("name") or ""


def screened_one_by_one(screen: dict[str, Any]) -> list[dict[str, Any]]:
    """A screen job's candidates as one GFN-FF optimisation record each (the screen runs ten
    a job; the rest of this module reads optimisations): its start, minimum, energy and as
    many evaluations as it took."""
    name, job = name_of(screen), screen["job"]
    return [{"job_id": f"{screen['job_id']}/{n}", "name": name,
             "job": {"atoms": {**job["atoms"], "positions": start}},
             "result": {"final_positions_angstrom": r["final_positions_angstrom"],
                        "energy_hartree": r["energy_hartree"], "level_of_theory": "GFN-FF",
                        "energies_hartree": [None] * r["gradient_evaluations"]}}
            for n, (start, r) in enumerate(zip(job["candidates_angstrom"],
                                               screen["result"]["candidates"], strict=True))
            if r["final_positions_angstrom"] is not None]


def by_energy(optimisations: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    return sorted((r for r in optimisations if tag in name_of(r)),
                  key=lambda r: r["result"]["energy_hartree"])


def single_point_order(ranks: list[dict[str, Any]]) -> list[Any]:
    """The GFN-FF minima the rank jobs priced, lowest single point first: the order in
    which the prescreen takes them."""
    ranks = sorted(ranks, key=lambda r: int(name_of(r).rsplit(" ", 1)[-1]))
    priced = [(e, g) for r in ranks for g, e in zip(r["job"]["candidates_angstrom"],
                                                     r["result"]["energies_hartree"],
                                                     strict=True) if e is not None]
    return [g for _, g in sorted(priced, key=lambda pair: pair[0])]


def closest_by_stage(optimisations: list[dict[str, Any]], numbers: list[int],
                     reference_angstrom: Any, charge: int,
                     by_single_point: list[Any] | None = None) -> dict[str, Any]:
    """Per stage: ``[RMSD of the closest geometry, its energy rank (1-based), how many]``;
    with ``by_single_point`` (:func:`single_point_order`) also ``rank``: the closest GFN-FF
    minimum's place in the prescreen's order."""
    from atomiverse_core.drivers.conformers import MAX_SYMMETRY_MATCHES, heavy_atom_conformers
    from rdkit.Chem import rdMolAlign

    heavy, conformer = heavy_atom_conformers(numbers, reference_angstrom, charge)
    reference = conformer(reference_angstrom)
    out: dict[str, Any] = {}
    for stage, tag, end in STAGES:
        records = by_energy(optimisations, tag)
        if not records:
            continue
        rmsds = [rdMolAlign.GetBestRMS(
            heavy, heavy, prbId=conformer(r["job"]["atoms"]["positions"] if end == "start"
                                          else r["result"]["final_positions_angstrom"]),
            refId=reference, maxMatches=MAX_SYMMETRY_MATCHES) for r in records]
        best = int(np.argmin(rmsds))
        out[stage] = [round(float(rmsds[best]), 3), best + 1, len(records)]
    if by_single_point:
        rmsds = [rdMolAlign.GetBestRMS(heavy, heavy, prbId=conformer(g), refId=reference,
                                       maxMatches=MAX_SYMMETRY_MATCHES) for g in by_single_point]
        best = int(np.argmin(rmsds))
        out["rank"] = [round(float(rmsds[best]), 3), best + 1, len(by_single_point)]
    return out


def lowest_from(search: dict[str, Any], optimisations: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the lowest conformer started: the prescreen job its refinement started from
    (``candidate N``, numbered in submission order), its rank by prescreen energy, and with
    the screen which start it was (found by geometry: a GFN-FF minimum or an ETKDG geometry),
    the screened candidate's rank by GFN-FF energy and how far its GFN-FF optimisation moved
    it (heavy-atom RMSD, unaligned, Angstrom)."""
    by_id = {r["job_id"]: r for r in optimisations}
    refined = by_id[search["result"]["conformers"][0]["job_id"]]
    prescreen = by_energy(optimisations, " · candidate ")
    start = refined["job"]["atoms"]["positions"]
    found = [(rank, r) for rank, r in enumerate(prescreen, 1)
             if r["result"]["final_positions_angstrom"] == start]
    if not found:
        return {}
    rank, r = found[0]
    out = {"candidate": int(name_of(r).rsplit(" ", 1)[-1]), "of": len(prescreen),
           "prescreen_energy_rank": rank}
    origin = r["job"]["atoms"]["positions"]
    screened = by_energy(optimisations, " · screen ")
    if screened:
        moves = [_moved(s) for s in screened]
        out["screen_moved_quartiles_angstrom"] = [
            round(float(q), 3) for q in np.percentile(moves, [25, 50, 75])]
    for screen_rank, s in enumerate(screened, 1):
        etkdg, minimum = s["job"]["atoms"]["positions"], s["result"]["final_positions_angstrom"]
        if origin in (etkdg, minimum):
            out.update(start="GFN-FF minimum" if origin == minimum else "ETKDG",
                       screen_energy_rank=screen_rank, screen_moved_angstrom=_moved(s))
    return out


def _moved(screened: dict[str, Any]) -> float:
    """Heavy-atom RMSD between a screened candidate's start and its GFN-FF minimum, unaligned
    (an optimisation barely turns the molecule), Angstrom."""
    heavy = [z > 1 for z in screened["job"]["atoms"]["numbers"]]
    moved = (np.asarray(screened["job"]["atoms"]["positions"])
             - np.asarray(screened["result"]["final_positions_angstrom"]))[heavy]
    return round(float(np.sqrt((moved ** 2).sum(1).mean())), 3)


def funnel(optimisations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every prescreen job of a search: the screened candidate's position in the screen's
    order (1 = lowest at GFN-FF), which start, its prescreen energy and, if it was refined,
    the refined energy (Hartree). Enough to replay a narrower or a staged prescreen offline:
    a prescreen of the first P positions would have refined at least as low as the lowest
    refined energy among them. Positions follow the order the GFN-FF minima were prescreened
    in (the screen's, stage after stage when staged)."""
    prescreen = sorted((r for r in optimisations if " · candidate " in name_of(r)),
                       key=lambda r: int(name_of(r).rsplit(" ", 1)[-1]))
    screened = [r for r in optimisations if " · screen " in name_of(r)]
    etkdg_of = {_key(s["result"]["final_positions_angstrom"]): _key(s["job"]["atoms"]["positions"])
                for s in screened}
    refined = {_key(r["job"]["atoms"]["positions"]): r["result"]["energy_hartree"]
               for r in optimisations if " · conformer " in name_of(r)}
    position: dict[str, int] = {}  # a candidate's ETKDG geometry -> its position
    for r in prescreen:
        start = _key(r["job"]["atoms"]["positions"])
        if start in etkdg_of:
            position.setdefault(etkdg_of[start], len(position) + 1)
    rows = []
    for r in prescreen:
        start = _key(r["job"]["atoms"]["positions"])
        from_minimum = start in etkdg_of
        rows.append({"position": position.get(etkdg_of[start] if from_minimum else start),
                     "start": "GFN-FF" if from_minimum else "ETKDG",
                     "prescreen_hartree": r["result"]["energy_hartree"],
                     "refined_hartree": refined.get(
                         _key(r["result"]["final_positions_angstrom"]))})
    return sorted(rows, key=lambda row: (row["position"] or 0, row["start"]))


def _key(positions: Any) -> str:
    return repr(positions)
