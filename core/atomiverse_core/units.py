"""The unit conversions the platform reports in, defined once so every page, table and
search converts Hartree the same way (CODATA 2018, as the xtb authors' programs use)."""

from __future__ import annotations

KCAL_PER_MOL_PER_HARTREE = 627.509474063
EV_PER_HARTREE = 27.211386245988
BOLTZMANN_KCAL_PER_MOL_K = 0.0019872042586
DEBYE_PER_ATOMIC_UNIT = 2.541746473  # a dipole of one elementary charge times one Bohr, in Debye
