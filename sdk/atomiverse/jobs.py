"""Job models (SinglePointEnergy, GeometryOptimization, Frequencies, ...): the shared core's
module, re-exported here where users import it."""

from atomiverse_core.jobs import *  # noqa: F403
