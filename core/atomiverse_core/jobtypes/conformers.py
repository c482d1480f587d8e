"""Conformer search: the low-energy shapes of a flexible molecule, and its Boltzmann ensemble.

A composite job: the server runs it as children spread over every free slot of the target, in
steps, each started when the previous one has finished:

1. ``generate`` (one RDKit job): ETKDG v3 candidates from the input structure (its bonds,
   charge and stereochemistry kept, atoms in its order), near-duplicates pruned; the input
   geometry is always one of them. ``n_candidates`` of them; by default
   ``min(500, 20 + 80 x rotatable bonds)`` with a screen (below), none pruned (on
   pregabalin a 0.25 Angstrom prune left out the starts of the lowest basin for one seed),
   else ``min(250, 10 + 20 x rotatable bonds)`` pruned at 0.5 Angstrom heavy-atom RMSD.
2. screen (with ``screen``): every candidate optimised loosely at GFN-FF, about a sixth of
   the cost of a loose GFN2-xTB optimisation, ten to a job (:mod:`.conformer_screen`);
   then ``select`` keeps the distinct ones, with no energy window (one GFN-FF energy can
   be far off: GFN-FF sets its topology up from each starting geometry). ``screen`` None
   (the default) is settled at submission (or, if no controller of the target has
   registered yet, before the search starts, once one has): on where the target runs
   GFN-FF (the xtb engine) and the search is in vacuum, else off. The screen widens the search; it does
   not rank it: GFN-FF orders conformers differently from GFN2-xTB. So (``screen_rank``)
   a single point at the prescreen's level on each GFN-FF minimum, 25 to a job, orders
   them, about a tenth of a loose optimisation each (:mod:`.conformer_rank`); the
   ``max_prescreened`` (200) lowest go on (without ``screen_rank``: by GFN-FF energy).
3. prescreen: each candidate optimised loosely (``prescreen_fmax_ev_per_angstrom``, at most
   ``prescreen_max_steps``) at ``prescreen_level_of_theory`` (default: the search's level),
   one job per start. With the screen, the first stage's candidates start twice
   (``prescreen_both_starts``): from their GFN-FF minima and from ETKDG geometries. On
   sotalol the GFN-FF minima alone missed the lowest basin by 1 kcal/mol, and the ETKDG
   geometries alone missed pregabalin's by 0.36 (one seed each). The kept candidates go in
   stages of ``prescreen_stage`` (50), as far as the energies say (:mod:`.conformer_prescreen`).
4. ``select`` (one RDKit job): the distinct ones (same conformer: energies within
   0.1 kcal/mol and heavy-atom RMSD below 0.25 Angstrom after alignment over the molecule's
   symmetries) within ``prescreen_window_kcal_per_mol`` of the lowest, at most
   ``max_refined`` (40). A candidate whose bonds are no longer the input's (its optimisation
   moved a hydrogen or closed a ring: another molecule) is left out here, in the screen and
   in step 6, and counted in ``n_rearranged``.
5. refine: those optimised at the search's level with the optimiser settings below (the
   GeometryOptimization defaults: fmax 0.001 eV/Angstrom).
6. ``select`` again, with ``energy_threshold_kcal_per_mol`` and ``rmsd_threshold_angstrom``
   (CREST's defaults, 0.05 kcal/mol and 0.125 Angstrom) and ``energy_window_kcal_per_mol``.

The result lists the unique conformers sorted by energy: geometry (Angstrom), energy (Hartree),
energy above the lowest (kcal/mol) and Boltzmann weight at ``temperature_kelvin``; its
``energy_hartree`` and ``final_positions_angstrom`` are the lowest conformer's, so a chain can
continue from it. A candidate whose optimisation fails is left out (and counted); the search
fails only if every one does. A molecule with no rotatable bond gives one conformer.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..drivers.conformers import BOND_ORDERS_PERCEIVED
from ..drivers.optimizer_settings import (
    DEFAULT_FMAX_EV_PER_ANGSTROM,
    DEFAULT_MAX_STEPS,
    DEFAULT_OPTIMIZER,
    Fmax,
    MaxSteps,
    Optimizer,
)
from ..jobs import Job
from ..levels import GFNFF, LevelOfTheory
from . import conformer_prescreen as prescreen
from .conformer_ensemble import Conformer, ConformerSearchResult, boltzmann_ensemble
from .conformer_rank import RANK_CHUNK, ranked
from .conformer_screen import (
    SCREEN_CHUNK,
    Screened,
    screen_for_engines,
    screen_size,
    screened_candidates,
)
from .conformer_stage import MAX_CANDIDATES
from .conformer_views import conformer_frames, ensemble_rows, ensemble_table, search_note
from .spec import (
    Child,
    CliColumn,
    Fail,
    Finish,
    JobType,
    Payload,
    Spawn,
    not_run,
)

# The steps in the order they run; a child's step is its index here. A search without the
# screen or the ranking (and one stored before they existed) numbers them as it always did.
PLAIN_STEPS = ("candidates", "prescreen", "prescreen selection", "refine", "final selection")
SCREENED_STEPS = ("candidates", "screen", "screen selection", *PLAIN_STEPS[1:])
RANKED_STEPS = (*SCREENED_STEPS[:3], "rank", *SCREENED_STEPS[3:])
GENERATION_PRUNE_RMSD_ANGSTROM = 0.5
SCREENED_PRUNE_RMSD_ANGSTROM = 0.0
SCREEN_FMAX_EV_PER_ANGSTROM = 0.05
SCREEN_MAX_STEPS = 300
# The screen ranks by GFN-FF energy but cuts nothing by it: GFN-FF sets its topology up from
# each starting geometry, and one of pregabalin's candidates (seed 1) came out 128 kcal/mol
# below all the others with the same bonds; a window from it kept that one alone.
SCREEN_WINDOW_KCAL_PER_MOL = 1000.0
PRESCREEN_RMSD_ANGSTROM = 0.25
PRESCREEN_ENERGY_KCAL_PER_MOL = 0.1


class ConformerSearch(Job):
    """Find the distinct low-energy conformers of ``atoms`` and their Boltzmann weights; see
    the module documentation for the steps. Defaults: ``screen`` None (a GFN-FF screen where
    the target runs GFN-FF and the search is in vacuum), ``n_candidates`` None (from the
    rotatable bonds: with the screen 20 + 80 per bond, at most 500, of which the 200 lowest
    distinct by a single point on their GFN-FF minima may go on, 50 at a time while the
    newest 50 come within 0.5 kcal/mol of the lowest and the last one lowered it; without
    it 10 + 20 per bond, at most 250; at most 1000 if given),
    prescreen at the search's level to fmax 0.05 eV/Angstrom, at most 40 refined within
    5 kcal/mol, the final ensemble within 6 kcal/mol, weights at 298.15 K."""

    job_type: Literal["conformer_search"] = "conformer_search"  # type: ignore[assignment]
    n_candidates: int | None = Field(default=None, ge=1, le=MAX_CANDIDATES)
    seed: int = Field(default=42, ge=0, le=2**31 - 1, description="ETKDG random seed")
    screen: bool | None = Field(default=None, description=(
        "Screen the candidates at GFN-FF first (None: where the target runs GFN-FF and the "
        "search is in vacuum, settled at submission or, before the target's controller has "
        "registered, before the search starts; true where it does not: 422)"))
    max_prescreened: int = Field(default=200, ge=1, le=MAX_CANDIDATES, description=(
        "With the screen: the lowest distinct screened candidates that go on"))
    screen_rank: bool = Field(default=True, description=(
        "With the screen: order the distinct screened candidates by a single point at the "
        "prescreen's level on their GFN-FF minima, not by GFN-FF energy, before "
        "max_prescreened and the stages apply"))
    prescreen_both_starts: bool = Field(default=True, description=(
        "With the screen: prescreen the first stage from the GFN-FF minima and from as many "
        "ETKDG geometries, the first in GFN-FF's order (GFN-FF can carry a start out of the "
        "lowest GFN2-xTB basin; each start alone missed it on a molecule of the benchmark)"))
    prescreen_stage: int | None = Field(default=50, ge=1, le=MAX_CANDIDATES, description=(
        "With the screen: prescreen this many candidates at a time, in the rank's order (or "
        "GFN-FF's), going on while the newest stage holds an energy within "
        "prescreen_stage_window_kcal_per_mol of the lowest so far, up to max_prescreened "
        "(None: all of them at once)"))
    prescreen_stage_window_kcal_per_mol: float = Field(default=0.5, ge=0, le=1000, description=(
        "With prescreen_stage: how far above the lowest prescreen energy so far the newest "
        "stage's lowest may be for the prescreen to go on"))
    prescreen_stage_patience: int = Field(default=1, ge=0, le=MAX_CANDIDATES, description=(
        "With prescreen_stage: stop once this many stages in a row brought no energy below "
        "the lowest before them (0: go on while the window says so)"))
    prescreen_later_stages_both_starts: bool = Field(default=False, description=(
        "With prescreen_stage and prescreen_both_starts: start the stages after the first "
        "from both starts too (false: from the GFN-FF minimum only)"))
    prescreen_level_of_theory: LevelOfTheory | None = None
    prescreen_fmax_ev_per_angstrom: float = Field(default=0.05, gt=0, le=10)
    prescreen_max_steps: int = Field(default=200, ge=1, le=10_000)
    prescreen_window_kcal_per_mol: float = Field(default=5.0, gt=0, le=1000)
    max_refined: int = Field(default=40, ge=1, le=MAX_CANDIDATES)
    optimizer: Optimizer = DEFAULT_OPTIMIZER
    fmax: Fmax = DEFAULT_FMAX_EV_PER_ANGSTROM
    max_steps: MaxSteps = DEFAULT_MAX_STEPS
    energy_window_kcal_per_mol: float = Field(default=6.0, gt=0, le=1000)
    rmsd_threshold_angstrom: float = Field(default=0.125, ge=0, le=10)
    energy_threshold_kcal_per_mol: float = Field(default=0.05, ge=0, le=100)
    temperature_kelvin: float = Field(default=298.15, gt=0, le=10_000)


def _child_payload(search: Payload, kind: str, atoms: Payload, tag: str,
                   **fields: Any) -> dict[str, Any]:
    name = (search.get("name") or "conformer search")[:90]
    return {"job_type": kind, "atoms": dict(atoms), "name": f"{name} · {tag}",
            "level_of_theory": search["level_of_theory"], "engine": search.get("engine"),
            "use_cache": search.get("use_cache", True),
            "walltime_seconds": search.get("walltime_seconds"), **fields}


def _with_positions(search: Payload, positions: Any) -> dict[str, Any]:
    return {**search["atoms"], "positions": positions}


def _steps(search: Payload) -> tuple[str, ...]:
    if not search.get("screen"):
        return PLAIN_STEPS
    return RANKED_STEPS if search.get("screen_rank") else SCREENED_STEPS


def _number(search: Payload, step: str) -> int:
    return _steps(search).index(step)


def _of(search: Payload, children: list[Child], step: str) -> list[Child]:
    number = _number(search, step)
    return [c for c in children if c.step == number]


def _done(search: Payload, children: list[Child], step: str) -> list[Child]:
    return [c for c in _of(search, children, step) if c.state == "done"]


def _r(child: Child) -> Any:
    return child.result or {}


def advance(search: Payload, children: list[Child]) -> Spawn | Finish | Fail | None:
    if not children:
        screened = bool(search.get("screen"))
        return Spawn(0, [_child_payload(
            search, "conformer_stage", search["atoms"], "candidates", operation="generate",
            count=search.get("n_candidates") or 0, seed=search.get("seed", 42),
            screened=screened, rmsd_angstrom=SCREENED_PRUNE_RMSD_ANGSTROM if screened
            else GENERATION_PRUNE_RMSD_ANGSTROM)])
    number = max(c.step for c in children)
    step = _steps(search)[number]
    ok = _done(search, children, step)
    if not ok:
        last = _of(search, children, step)[-1]
        return Fail(f"step {number + 1} ({step}) failed: {last.error or last.state}",
                    last.error_type or "internal")
    return _NEXT[step](search, children, ok)


def _after_generate(search: Payload, children: list[Child], ok: list[Child]) -> Spawn:
    geometries = _r(ok[0])["geometries_angstrom"]
    if not search.get("screen"):
        return _prescreen(search, geometries)
    return Spawn(_number(search, "screen"), [_child_payload(
        search, "conformer_screen", search["atoms"], f"screen {n + 1}",
        candidates_angstrom=geometries[i:i + SCREEN_CHUNK],
        level_of_theory=GFNFF.model_dump(mode="json"), fmax=SCREEN_FMAX_EV_PER_ANGSTROM,
        max_steps=SCREEN_MAX_STEPS, optimizer=DEFAULT_OPTIMIZER, engine=None)
        for n, i in enumerate(range(0, len(geometries), SCREEN_CHUNK))])


def _screen_select(search: Payload, children: list[Child], ok: list[Child]) -> Spawn | Fail:
    screened = screened_candidates(_of(search, children, "screen"))
    if not screened:
        return Fail(f"step {_number(search, 'screen') + 1} (screen) failed: no candidate's "
                    "GFN-FF optimisation succeeded", "internal")
    return _select(search, [c.minimum for c in screened],
                   [c.energy_hartree for c in screened], "screen selection",
                   rmsd_angstrom=PRESCREEN_RMSD_ANGSTROM,
                   energy_kcal_per_mol=PRESCREEN_ENERGY_KCAL_PER_MOL,
                   window_kcal_per_mol=SCREEN_WINDOW_KCAL_PER_MOL,
                   keep=MAX_CANDIDATES if search.get("screen_rank")
                   else search.get("max_prescreened", 200))


def _after_screen_selection(search: Payload, children: list[Child], ok: list[Child]) -> Spawn:
    if not search.get("screen_rank"):
        return _after_screen(search, children, ok)
    minima = [c.minimum for c in _selected(search, children)]
    level = search.get("prescreen_level_of_theory") or search["level_of_theory"]
    return Spawn(_number(search, "rank"), [_child_payload(
        search, "conformer_rank", search["atoms"], f"rank {n + 1}",
        candidates_angstrom=minima[i:i + RANK_CHUNK], level_of_theory=level)
        for n, i in enumerate(range(0, len(minima), RANK_CHUNK))])


def _after_screen(search: Payload, children: list[Child], ok: list[Child]) -> Spawn:
    first = prescreen.first_stage(search, _kept(search, children))
    if prescreen.starts_per_candidate(search) == 1:
        return _prescreen(search, _starts(first, 1))
    # The ETKDG starts in the screen's GFN-FF order: see conformer_prescreen.
    by_gfnff = _selected(search, children)[:len(first)]
    return _prescreen(search, [c.minimum for c in first] + [c.etkdg for c in by_gfnff])


def _selected(search: Payload, children: list[Child]) -> list[Screened]:
    """The distinct screened candidates, in the screen selection's order (lowest first)."""
    screened = screened_candidates(_of(search, children, "screen"))
    (selection,) = _done(search, children, "screen selection")
    return [screened[i] for i in _r(selection)["kept"]]


def _kept(search: Payload, children: list[Child]) -> list[Screened]:
    """The screened candidates that go on, in the order the prescreen takes them: by their
    single points with ``screen_rank``, else by GFN-FF energy."""
    selected = _selected(search, children)
    if not search.get("screen_rank"):
        return selected
    return ranked(selected, _of(search, children, "rank"), search.get("max_prescreened", 200))


def _starts(candidates: list[Screened], per_candidate: int) -> list[Any]:
    """The GFN-FF minima, then (with two starts a candidate) the ETKDG geometries."""
    starts = [c.minimum for c in candidates]
    return starts + [c.etkdg for c in candidates] if per_candidate == 2 else starts


def _prescreen(search: Payload, geometries: list[Any], numbered_from: int = 1) -> Spawn:
    level = search.get("prescreen_level_of_theory") or search["level_of_theory"]
    return Spawn(_number(search, "prescreen"), [_child_payload(
        search, "opt", _with_positions(search, g), f"candidate {numbered_from + i}",
        level_of_theory=level, fmax=search.get("prescreen_fmax_ev_per_angstrom", 0.05),
        max_steps=search.get("prescreen_max_steps", 200), optimizer=DEFAULT_OPTIMIZER)
        for i, g in enumerate(geometries)])


def _select(search: Payload, geometries: list[Any], energies: list[float], step: str,
            **thresholds: Any) -> Spawn:
    return Spawn(_number(search, step), [_child_payload(
        search, "conformer_stage", search["atoms"], step, operation="select",
        candidates_angstrom=geometries, energies_hartree=energies, **thresholds)])


def _minima(ok: list[Child]) -> tuple[list[Any], list[float]]:
    return [_r(c)["final_positions_angstrom"] for c in ok], [_r(c)["energy_hartree"] for c in ok]


def _prescreen_select(search: Payload, children: list[Child], ok: list[Child]) -> Spawn:
    if search.get("screen") and search.get("prescreen_stage"):
        prescreening = _of(search, children, "prescreen")
        more = prescreen.next_stage(search, _kept(search, children), prescreening)
        if more:  # the next stage, under the same step: the selection waits for it
            per_candidate = prescreen.later_starts_per_candidate(search)
            return _prescreen(search, _starts(more, per_candidate), len(prescreening) + 1)
    return _select(search, *_minima(ok), "prescreen selection",
                   rmsd_angstrom=PRESCREEN_RMSD_ANGSTROM,
                   energy_kcal_per_mol=PRESCREEN_ENERGY_KCAL_PER_MOL,
                   window_kcal_per_mol=search.get("prescreen_window_kcal_per_mol", 5.0),
                   keep=search.get("max_refined", 40))


def _refine(search: Payload, children: list[Child], ok: list[Child]) -> Spawn:
    prescreened = _done(search, children, "prescreen")
    starts = [_r(prescreened[i])["final_positions_angstrom"] for i in _r(ok[0])["kept"]]
    return Spawn(_number(search, "refine"), [_child_payload(
        search, "opt", _with_positions(search, positions), f"conformer {n + 1}",
        optimizer=search.get("optimizer", DEFAULT_OPTIMIZER),
        fmax=search.get("fmax", DEFAULT_FMAX_EV_PER_ANGSTROM),
        max_steps=search.get("max_steps", DEFAULT_MAX_STEPS))
        for n, positions in enumerate(starts)])


def _final_select(search: Payload, children: list[Child], ok: list[Child]) -> Spawn:
    return _select(search, *_minima(ok), "final selection",
                   rmsd_angstrom=search.get("rmsd_threshold_angstrom", 0.125),
                   energy_kcal_per_mol=search.get("energy_threshold_kcal_per_mol", 0.05),
                   window_kcal_per_mol=search.get("energy_window_kcal_per_mol", 6.0),
                   keep=MAX_CANDIDATES)


def _ensemble(search: Payload, children: list[Child], ok: list[Child]) -> Finish:
    refined = _done(search, children, "refine")
    chosen = [refined[i] for i in _r(ok[0])["kept"]]
    temperature = float(search.get("temperature_kelvin", 298.15))
    conformers = boltzmann_ensemble([(c.job_id, _r(c)) for c in chosen], temperature)
    lowest = conformers[0]["energy_hartree"]
    generated = _r(_done(search, children, "candidates")[0])
    screening = _of(search, children, "screen") if search.get("screen") else []
    prescreening = _of(search, children, "prescreen")
    refining = _of(search, children, "refine")
    selections = [c for step in _steps(search) if step.endswith("selection")
                  for c in _done(search, children, step)]
    return Finish({
        "energy_hartree": lowest, "final_positions_angstrom": conformers[0]["positions_angstrom"],
        "conformers": conformers, "n_unique": len(conformers),
        "n_rotatable_bonds": generated.get("n_rotatable_bonds", 0),
        "n_candidates": screen_size(screening) or len(prescreening),
        "n_screened": screen_size(screening),
        "n_screen_failed": screen_size(screening) - len(screened_candidates(screening)),
        "n_prescreen_failed": len(prescreening) - sum(c.state == "done" for c in prescreening),
        "n_refined": len(refining), "n_refine_failed": len(refining) - len(refined),
        "n_rearranged": sum(_r(c).get("n_rearranged") or 0 for c in selections),
        "temperature_kelvin": temperature,
        "bond_orders": generated.get("bond_orders", BOND_ORDERS_PERCEIVED)})


_NEXT = {"candidates": _after_generate, "screen": _screen_select,
         "screen selection": _after_screen_selection, "rank": _after_screen,
         "prescreen": _prescreen_select,
         "prescreen selection": _refine, "refine": _final_select,
         "final selection": _ensemble}


JOB_TYPE = JobType(
    name="conformer_search",
    input_model=ConformerSearch,
    result_model=ConformerSearchResult,
    title="Conformer search",
    cli_name="conformers",
    cli_help="conformer search: the unique low-energy conformers and their weights",
    estimate_gradients=lambda job: 0,  # its children are estimated when they are submitted
    run=not_run,
    flat_surface_result=not_run,
    result_rows=ensemble_rows,
    options_note=search_note,
    energy_label="Lowest conformer",
    moves_geometry=True,
    cli_columns=(CliColumn("conformers", "n_unique"),),
    frames=conformer_frames,
    frame_noun="conformer",
    result_table=ensemble_table,
    advance=advance,
    listing_order=40,
    for_engines=screen_for_engines,
)

__all__ = ["JOB_TYPE", "Conformer", "ConformerSearch", "ConformerSearchResult"]
