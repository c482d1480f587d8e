"""The optimiser settings a job may ask for, shared by the job models and the drivers (no ASE here:
the SDK and the server import this).

fmax 0.001 eV/Angstrom: on the benchmark's 50 optimisations ASE LBFGS then ends within 2.6e-7
Hartree (median) and 2.3e-5 (worst) of `xtb --opt vtight`; at 0.01 the worst was 1.3e-3 and at
0.05 the median 3e-4. The slowest of the 50 needs 559 LBFGS steps at this fmax, hence max_steps
1000. The default, "ANC-RFO", is the scheme of the xtb program's own optimiser (rational-function
steps in approximate normal coordinates from a model Hessian): on those 50 it needs 1940
gradients against 2370 for "BFGS-Lindh" (ASE's BFGS started from Lindh's model Hessian) and
about 7800 for LBFGS. "geomeTRIC" (internal coordinates, not an ASE optimiser) needs fewer
gradients still but spends more time between them.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field

Optimizer = Literal["ANC-RFO", "BFGS-Lindh", "LBFGS", "BFGS", "FIRE", "geomeTRIC"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
Fmax = Annotated[float, Field(gt=0, le=10, description="Convergence: max force, eV/Angstrom")]
MaxSteps = Annotated[int, Field(ge=1, le=10_000, description="Optimiser steps before giving up")]
DEFAULT_OPTIMIZER: Optimizer = "ANC-RFO"
DEFAULT_FMAX_EV_PER_ANGSTROM = 0.001
DEFAULT_MAX_STEPS = 1000
