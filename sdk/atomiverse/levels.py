"""Levels of theory. A level is a frozen value object that travels in the job payload."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Method = Literal["gfn2-xtb", "gfn1-xtb"]

# Highest atomic number each method is parametrised for; anything above must be rejected
# before an engine sees it (xtb-python segfaults on Z = 87).
MAX_ATOMIC_NUMBER: dict[str, int] = {"gfn2-xtb": 86, "gfn1-xtb": 86}


# (last Z of a block, noble-gas-like core below it): xTB's minimal valence basis puts
# filled d shells of p-block elements and the 4f shell of lanthanides in the core.
_CORE_BELOW = [(2, 0), (10, 2), (18, 10), (30, 18), (36, 28), (48, 36), (54, 46), (56, 54),
               (80, 68), (86, 78)]


def valence_electrons(z: int) -> int:
    """Electrons xTB treats explicitly for element ``z`` (its valence shell)."""
    if 57 <= z <= 71:
        return 3
    for last, core in _CORE_BELOW:
        if z <= last:
            return z - core
    raise ValueError(f"no valence data for Z={z}")


def valence_capacity(z: int) -> int:
    """Electrons the minimal valence basis of element ``z`` can hold: s for H and He, s and
    p for Li-Ne, s, p and d beyond."""
    if z <= 2:
        return 2
    return 8 if z <= 10 else 18


class LevelOfTheory(BaseModel):
    """A semi-empirical method, named as the xtb program names it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Method

    @property
    def max_atomic_number(self) -> int:
        return MAX_ATOMIC_NUMBER[self.method]

    def __str__(self) -> str:
        return self.method.upper().replace("-XTB", "-xTB")


GFN2_XTB = LevelOfTheory(method="gfn2-xtb")
GFN1_XTB = LevelOfTheory(method="gfn1-xtb")

__all__ = ["GFN1_XTB", "GFN2_XTB", "LevelOfTheory", "Method", "valence_capacity",
           "valence_electrons"]
