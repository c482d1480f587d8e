"""How far a screened conformer search's prescreen goes: in stages, in the screen's order.

The GFN-FF screen orders the candidates, but not reliably for every molecule: pregabalin's
lowest GFN2-xTB conformer came from the screen's first 20 positions in three seeds, and
propranolol's from positions 98-195 (``bench/README.md``, "Eight references"). A fixed width
pays for 100 positions on the one and loses the other. With ``prescreen_stage`` the search
prescreens that many positions at a time and goes on while the newest stage still holds a
prescreen energy within ``prescreen_stage_window_kcal_per_mol`` of the lowest so far and one
of the last ``prescreen_stage_patience`` stages lowered it, up to ``max_prescreened``.

The first stage starts ``prescreen_stage`` candidates from their GFN-FF minima and (with
``prescreen_both_starts``) as many from their ETKDG geometries. Where the search ranks
(``screen_rank``), the minima come in the rank's order and the ETKDG geometries in GFN-FF's:
a single point on a GFN-FF minimum says nothing of a start GFN-FF carried out of its basin.
Sotalol's screen moved its candidates 0.46-0.69 Angstrom (quartiles; 0.19-0.34 for the
others), and its lowest conformer came from the ETKDG start of GFN-FF's 49th, which the rank
put past the first stage: with both starts in the rank's order the search missed by 1.02
kcal/mol. Later stages, which widen the search past the screen's best, start from the
GFN-FF minimum only, unless ``prescreen_later_stages_both_starts``: replayed
on propranolol's wide runs, that kept the lowest conformer within 0.06 kcal/mol at 250 of
the 400 jobs both starts take. The patience stops a small molecule whose every stage holds
a near-degenerate copy of a basin already found (pregabalin, procaine, pentoxifylline went
to 200 positions for a lowest conformer found in the first 50). It is one stage since the
rank: replayed on the 18 ranked runs of ``bench/README.md`` ("Ranked before the prescreen"),
stopping after the first stage that brings no new lowest kept every search's lowest
conformer and took 50 prescreen jobs fewer in 8 of them; the second stage of patience had
been for propranolol's seed 3, whose lowest came from GFN-FF's 4th stage and now from the
rank's first candidate.
"""

from __future__ import annotations

from typing import Any

from ..units import KCAL_PER_MOL_PER_HARTREE
from .spec import Child


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
    kept candidate has been prescreened, the newest stage brought nothing within the window
    of the lowest energy so far, or the last ``prescreen_stage_patience`` stages brought no
    new lowest. ``prescreening``: the prescreen's jobs in the order they were submitted, stage
    after stage (``starts_per_candidate`` jobs a candidate in the first,
    ``later_starts_per_candidate`` in the others)."""
    stage = search.get("prescreen_stage")
    if not stage:
        return []
    stages = _stages(search, stage, prescreening)
    width = stage * (len(stages) - 1) + len(stages[-1]) // (
        later_starts_per_candidate(search) if len(stages) > 1 else starts_per_candidate(search))
    found = [_lowest(jobs) for jobs in stages]
    if width >= len(kept) or None in found:
        return []
    lowest = [e for e in found if e is not None]
    window = search.get("prescreen_stage_window_kcal_per_mol", 0.5) / KCAL_PER_MOL_PER_HARTREE
    if lowest[-1] > min(lowest) + window:
        return []
    patience = search.get("prescreen_stage_patience") or 0  # stored before it existed: none
    if patience and len(stages) - 1 - _last_new_lowest(lowest) >= patience:
        return []
    return kept[width:width + stage]


def _stages(search: Any, stage: int, prescreening: list[Child]) -> list[list[Child]]:
    """The prescreen's jobs, stage by stage."""
    first = stage * starts_per_candidate(search)
    later = stage * later_starts_per_candidate(search)
    return [prescreening[:first]] + [prescreening[i:i + later]
                                     for i in range(first, len(prescreening), later)]


def _last_new_lowest(lowest: list[float]) -> int:
    """The index of the last stage whose lowest energy was below every stage's before it."""
    return max(i for i, e in enumerate(lowest) if all(e < earlier for earlier in lowest[:i]))


def _lowest(children: list[Child]) -> float | None:
    energies = [c.result["energy_hartree"] for c in children
                if c.state == "done" and c.result is not None]
    return min(energies) if energies else None
