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

from atomiverse_core import jobtypes
from atomiverse_core.jobs import Job
from atomiverse_core.levels import valence_capacity


def valence_orbitals(job: Job) -> int:
    return sum(valence_capacity(z) // 2 * n for z, n in Counter(job.atoms.numbers).items())


def estimated_gradients(job: Job) -> int:
    """The job type's own estimate of its evaluations (the registry's)."""
    return jobtypes.of(job).estimate_gradients(job)


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
