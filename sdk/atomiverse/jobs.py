"""Job models: the base :class:`Job` with its verbs, and every job type's input model
(SinglePointEnergy, GeometryOptimization, Frequencies, ...), from the shared core's registry."""

from atomiverse_core.jobs import *
from atomiverse_core.jobtypes import describe_validation_error, input_models, parse_job

globals().update(input_models())

__all__ = ["Job", "describe_validation_error", "parse_job"]
__all__ += list(input_models())
