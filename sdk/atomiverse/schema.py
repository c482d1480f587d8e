"""The wire schema of the job API: the shared core's module, re-exported here where users import
it."""

from atomiverse_core.schema import *  # noqa: F403
