"""Job states: the shared core's module, re-exported here where users import it."""

from atomiverse_core.state import *
