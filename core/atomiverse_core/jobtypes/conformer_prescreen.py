"""How far a screened conformer search's prescreen goes: in stages, in the screen's order.

The GFN-FF screen orders the candidates, but not reliably for every molecule: pregabalin's
lowest GFN2-xTB conformer came from the screen's first 20 positions in three seeds, and
propranolol's from positions 98-195 (``bench/README.md``, "Eight references"). A fixed width
pays for 100 positions on the one and loses the other. With ``prescreen_stage`` the search
prescreens that many positions at a time and goes on while the newest stage still holds a
prescreen energy within ``prescreen_stage_window_kcal_per_mol`` of the lowest so far, up to
``max_prescreened``. The first stage starts each candidate from both its GFN-FF minimum and
its ETKDG geometry (with ``prescreen_both_starts``); later stages, which widen the search
past the screen's best, from the GFN-FF minimum only, unless
``prescreen_later_stages_both_starts``: replayed on propranolol's wide runs, that kept the
lowest conformer within 0.06 kcal/mol at 250 of the 400 jobs both starts take.
"""

from __future__ import annotations

from typing import Any

from .spec import Child

KCAL_PER_MOL_PER_HARTREE = 627.509474063


def starts_per_candidate(search: Any) -> int:
    """Prescreen jobs a candidate of the first stage (of all, unstaged)."""
    return 2 if search.get("prescreen_both_starts", False) else 1


def later_starts_per_candidate(search: Any) -> int:
    """Prescreen jobs a candidate of a later stage: from its GFN-FF minimum only, unless
    ``prescreen_later_stages_both_starts`` (a search stored before that field existed
    prescreened every stage from both starts)."""
    both = search.get("prescreen_later_stages_both_starts", True)
    return starts_per_candidate(search) if both else 1


def first_stage(search: Any, kept: list[Any]) -> list[Any]:
    """The kept candidates the prescreen starts with: all of them, or the first stage."""
    stage = search.get("prescreen_stage")
    return kept[:stage] if stage else kept


def next_stage(search: Any, kept: list[Any], prescreening: list[Child]) -> list[Any]:
    """The kept candidates of the next stage, or none: the prescreen is not staged, every
    kept candidate has been prescreened, or the newest stage brought nothing within the
    window of the lowest energy so far. ``prescreening``: the prescreen's jobs in the order
    they were submitted, stage after stage (``starts_per_candidate`` jobs a candidate in the
    first, ``later_starts_per_candidate`` in the others)."""
    stage = search.get("prescreen_stage")
    if not stage:
        return []
    width, newest_jobs = _width(search, stage, len(prescreening))
    if width >= len(kept):
        return []
    lowest = _lowest(prescreening)
    newest_lowest = _lowest(prescreening[len(prescreening) - newest_jobs:])
    if lowest is None or newest_lowest is None:
        return []
    window = search.get("prescreen_stage_window_kcal_per_mol", 0.5) / KCAL_PER_MOL_PER_HARTREE
    return kept[width:width + stage] if newest_lowest <= lowest + window else []


def _width(search: Any, stage: int, jobs: int) -> tuple[int, int]:
    """The candidates ``jobs`` prescreen jobs cover, and how many jobs the newest stage has."""
    first_jobs = min(jobs, stage * starts_per_candidate(search))
    width = first_jobs // starts_per_candidate(search)
    if jobs == first_jobs:
        return width, jobs
    later = (jobs - first_jobs) // later_starts_per_candidate(search)
    newest = (later - 1) % stage + 1
    return width + later, newest * later_starts_per_candidate(search)


def _lowest(children: list[Child]) -> float | None:
    energies = [c.result["energy_hartree"] for c in children
                if c.state == "done" and c.result is not None]
    return min(energies) if energies else None
