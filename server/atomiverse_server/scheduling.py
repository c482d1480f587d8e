"""The order in which controllers are handed pending jobs: batch by batch as submitted, and
within a batch the costliest first.

Running the longest jobs first (LPT, longest processing time first) is the classic remedy for
a batch whose slowest job happens to come last: in submission order it starts when the other
slots are nearly done and they idle until it ends. On the throughput benchmark's 50
optimisations the slowest (253 gradients, 48 atoms) is the 42nd; ordered by the estimate
below it is the 3rd.

The estimate only has to rank the jobs of one batch, so it is relative and unitless:
gradients the job will take, times the cost of one tight-binding gradient, which grows with
the square of the valence orbitals (H: one, C to F: four, the heavier p-block: nine).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from atomiverse_core.jobs import Frequencies, GeometryOptimization, Job
from atomiverse_core.levels import valence_capacity

# Gradients an optimisation takes, roughly: on the benchmark's 50 molecules (8 to 60 atoms)
# ANC-RFO took 40 per molecule on average for a mean of 28 atoms, rising with size.
OPT_BASE_GRADIENTS = 10


def valence_orbitals(job: Job) -> int:
    return sum(valence_capacity(z) // 2 * n for z, n in Counter(job.atoms.numbers).items())


def estimated_gradients(job: Job) -> int:
    n_atoms = len(job.atoms.numbers)
    optimisation = OPT_BASE_GRADIENTS + n_atoms
    if isinstance(job, GeometryOptimization):
        return optimisation
    if isinstance(job, Frequencies):  # central differences: two gradients per coordinate
        return 6 * n_atoms + 1 + (optimisation if job.optimize_first else 0)
    return 1


def estimated_cost(job: Job) -> float:
    """Relative CPU cost of ``job``; only comparisons between jobs mean anything."""
    return float(estimated_gradients(job) * valence_orbitals(job) ** 2)


def claim_ranks(costs: Sequence[float]) -> list[int]:
    """Each job's place in the claim order of its batch, from the jobs' estimated costs: 0 for
    the costliest. Equal estimates keep their submission order."""
    order = sorted(range(len(costs)), key=lambda i: -costs[i])
    ranks = [0] * len(costs)
    for rank, i in enumerate(order):
        ranks[i] = rank
    return ranks
