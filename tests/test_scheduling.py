"""The claim order's cost estimate (server/atomiverse_server/scheduling.py): it only has to
rank the jobs of one batch, so these tests check rankings, not values."""

from __future__ import annotations

from atomiverse import Atoms, Frequencies, GeometryOptimization, SinglePointEnergy
from atomiverse.levels import GFN2_XTB
from atomiverse_server.scheduling import claim_ranks, estimated_cost, valence_orbitals

WATER = Atoms(numbers=[8, 1, 1], positions=[[0, 0, 0.12], [0, 0.76, -0.48], [0, -0.76, -0.48]])
HCL = Atoms(numbers=[17, 1], positions=[[0, 0, 0], [0, 0, 1.27]])


def _sp(atoms: Atoms) -> SinglePointEnergy:
    return SinglePointEnergy(atoms=atoms, level_of_theory=GFN2_XTB)


def test_orbitals_follow_xtbs_valence_basis() -> None:
    assert valence_orbitals(_sp(WATER)) == 4 + 1 + 1
    assert valence_orbitals(_sp(HCL)) == 9 + 1  # Cl carries d functions in GFN2-xTB


def test_job_types_rank_by_the_gradients_they_take() -> None:
    sp = _sp(WATER)
    opt = GeometryOptimization(atoms=WATER, level_of_theory=GFN2_XTB)
    freq = Frequencies(atoms=WATER, level_of_theory=GFN2_XTB)
    opt_freq = Frequencies(atoms=WATER, level_of_theory=GFN2_XTB, optimize_first=True)
    costs = [estimated_cost(j) for j in (sp, opt, freq, opt_freq)]
    assert costs == sorted(costs) and len(set(costs)) == 4
    assert estimated_cost(freq) == (6 * 3 + 1) * estimated_cost(sp)


def test_ranks_put_the_costliest_first_and_keep_ties_in_order() -> None:
    batch = [_sp(WATER), _sp(HCL), _sp(WATER),
             GeometryOptimization(atoms=WATER, level_of_theory=GFN2_XTB)]
    assert claim_ranks([estimated_cost(job) for job in batch]) == [2, 1, 3, 0]
    assert claim_ranks([]) == []
