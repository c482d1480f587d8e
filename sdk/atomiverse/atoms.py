"""Molecular structures (Atoms) and the readers for SMILES, XYZ and SDF: the shared core's module,
re-exported here where users import it."""

from atomiverse_core.atoms import *
