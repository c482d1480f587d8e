"""The wire schema of the job API, and every job type's result model (SinglePointResult,
OptimizationResult, FrequenciesResult, ...): the shared core's, re-exported here where users
import them."""

from atomiverse_core.jobtypes import result_models
from atomiverse_core.schema import *

globals().update(result_models())
