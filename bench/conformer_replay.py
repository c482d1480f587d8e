"""Replay a narrower or staged prescreen from the ``funnel`` of wide conformer-search runs.

    python bench/conformers.py --only propranolol --set max_prescreened=200   # a wide run
    python bench/conformer_replay.py bench/results/conformers-<time>.json

For each run in the files: the lowest refined energy (kcal/mol above the stored reference)
had the prescreen taken only the first P screen positions, for several P; then staged rules:
prescreen stages of B positions in the screen's order, going on while the newest stage holds
a prescreen energy within D kcal/mol of the lowest so far, every stage from both starts or
the stages after the first from the GFN-FF minimum only (the search's default since 7892124),
with the prescreen jobs each rule takes. Each figure bounds the replayed
search from above: refined energies are known only for what the wide run refined, and a
narrower prescreen would refine more of its own candidates, not fewer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from atomiverse_core.units import KCAL_PER_MOL_PER_HARTREE

REFERENCE_DIR = Path(__file__).resolve().parent / "reference" / "conformers"
WIDTHS = (10, 20, 30, 40, 50, 60, 80, 100, 125, 150, 175, 200)
STAGES = (20, 25, 40, 50)
WITHIN_KCAL_PER_MOL = (0.0, 0.5, 1.0, 2.0)


def above_reference(funnel: list[dict[str, Any]], width: int, reference: float) -> float:
    refined = [x["refined_hartree"] for x in funnel
               if x["position"] <= width and x["refined_hartree"] is not None]
    return (min(refined) - reference) * KCAL_PER_MOL_PER_HARTREE if refined else float("nan")


def staged_width(funnel: list[dict[str, Any]], stage: int, within_kcal_per_mol: float) -> int:
    """Where a staged prescreen stops: the first stage whose lowest prescreen energy is more
    than ``within_kcal_per_mol`` above the lowest of all stages so far."""
    widest = max(x["position"] for x in funnel)
    width = stage
    while width < widest:
        lowest = min(x["prescreen_hartree"] for x in funnel if x["position"] <= width)
        newest = min(x["prescreen_hartree"] for x in funnel
                     if width - stage < x["position"] <= width)
        if newest > lowest + within_kcal_per_mol / KCAL_PER_MOL_PER_HARTREE:
            break
        width += stage
    return min(width, widest)


def later_stages_one_start(funnel: list[dict[str, Any]], stage: int) -> list[dict[str, Any]]:
    """The funnel as a staged prescreen whose later stages start from GFN-FF minima sees it."""
    return [x for x in funnel if x["position"] <= stage or x["start"] == "GFN-FF"]


def main(paths: list[str]) -> None:
    for row in (r for p in paths for r in json.loads(Path(p).read_text()) if r.get("funnel")):
        reference = json.loads((REFERENCE_DIR / f"{row['molecule']}-500.json").read_text())
        energy, funnel = reference["energy_hartree"], row["funnel"]
        widest = max(x["position"] for x in funnel)
        print(f"{row['molecule']} seed {row['seed']}: {widest} positions prescreened, "
              f"{row['above_reference_kcal_per_mol']} kcal/mol above the reference")
        print("  first P positions:", " ".join(
            f"{w}: {above_reference(funnel, w, energy):.2f}" for w in WIDTHS if w <= widest))
        for stage in STAGES:
            for starts, seen in (("both starts", funnel),
                                 ("later stages one start", later_stages_one_start(funnel, stage))):
                for within in WITHIN_KCAL_PER_MOL:
                    width = staged_width(seen, stage, within)
                    jobs = sum(1 for x in seen if x["position"] <= width)
                    print(f"  stages of {stage}, {starts}, within {within} kcal/mol: stops at "
                          f"{width} ({jobs} jobs), {above_reference(seen, width, energy):.2f} above")


if __name__ == "__main__":
    main(sys.argv[1:])
