"""How far a screened conformer search's prescreen goes: in stages, in the screen's order.

The GFN-FF screen orders the candidates, but not reliably for every molecule: pregabalin's
lowest GFN2-xTB conformer came from the screen's first 20 positions in three seeds, and
propranolol's from positions 98-195 (``bench/README.md``, "Eight references"). A fixed width
pays for 100 positions on the one and loses the other. With ``prescreen_stage`` the search
prescreens that many positions at a time and goes on while the newest stage still holds a
prescreen energy within ``prescreen_stage_window_kcal_per_mol`` of the lowest so far, up to
``max_prescreened``.
"""

from __future__ import annotations

from typing import Any

from .spec import Child

KCAL_PER_MOL_PER_HARTREE = 627.509474063


def starts_per_candidate(search: Any) -> int:
    return 2 if search.get("prescreen_both_starts", False) else 1


def first_stage(search: Any, kept: list[Any]) -> list[Any]:
    """The kept candidates the prescreen starts with: all of them, or the first stage."""
    stage = search.get("prescreen_stage")
    return kept[:stage] if stage else kept


def next_stage(search: Any, kept: list[Any], prescreening: list[Child]) -> list[Any]:
    """The kept candidates of the next stage, or none: the prescreen is not staged, every
    kept candidate has been prescreened, or the newest stage brought nothing within the
    window of the lowest energy so far. ``prescreening``: the prescreen's jobs in the order
    they were submitted, ``starts_per_candidate`` jobs a candidate, stage after stage."""
    stage = search.get("prescreen_stage")
    per = starts_per_candidate(search)
    width = len(prescreening) // per
    if not stage or width >= len(kept):
        return []
    newest = prescreening[(width - ((width - 1) % stage + 1)) * per:]
    lowest = _lowest(prescreening)
    newest_lowest = _lowest(newest)
    if lowest is None or newest_lowest is None:
        return []
    window = search.get("prescreen_stage_window_kcal_per_mol", 0.5) / KCAL_PER_MOL_PER_HARTREE
    return kept[width:width + stage] if newest_lowest <= lowest + window else []


def _lowest(children: list[Child]) -> float | None:
    energies = [c.result["energy_hartree"] for c in children
                if c.state == "done" and c.result is not None]
    return min(energies) if energies else None
