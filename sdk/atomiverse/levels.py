"""Levels of theory. A level is a frozen value object that travels in the job payload."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Method = Literal["gfn2-xtb", "gfn1-xtb"]

# Highest atomic number each method is parametrised for; anything above must be rejected
# before an engine sees it (xtb-python segfaults on Z = 87).
MAX_ATOMIC_NUMBER: dict[str, int] = {"gfn2-xtb": 86, "gfn1-xtb": 86}


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

__all__ = ["GFN1_XTB", "GFN2_XTB", "LevelOfTheory", "Method"]
