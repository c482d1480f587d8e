"""Levels of theory (GFN2_XTB, ...): the shared core's module, re-exported here where users import
it."""

from atomiverse_core.levels import *
