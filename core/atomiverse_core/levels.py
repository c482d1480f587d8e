"""Levels of theory. A level is a frozen value object that travels in the job payload.

======== ============ ============================= ===========================================
constant method       engines                       implicit solvation
======== ============ ============================= ===========================================
GFN2_XTB gfn2-xtb     xtb, tblite                   ALPB (tblite), GBSA (xtb, tblite)
GFN1_XTB gfn1-xtb     xtb, tblite                   ALPB (tblite), GBSA (xtb, tblite)
GFN0_XTB gfn0-xtb     xtb (needs xtb's parameter    none: GFN0 has no solvation parameters
                      file ``param_gfn0-xtb.txt``)
GFNFF    gfn-ff       xtb (needs ``.param_gfnff``)  GBSA (xtb)
======== ============ ============================= ===========================================

A solvated level: ``GFN2_XTB.with_solvent("water")`` (ALPB, the xtb program's recommended model)
or ``GFN2_XTB.with_solvent("water", model="gbsa")``. Solvent names are the xtb program's; a few
common aliases (``h2o``, ``chloroform``, ``dichloromethane``, ...) are accepted and stored under
the canonical name, so two spellings of one solvent are one level (and one cache key).

A vacuum level dumps as ``{"method": ...}`` exactly as before solvation existed, so payloads of
vacuum jobs (and their cache keys) are unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

Method = Literal["gfn2-xtb", "gfn1-xtb", "gfn0-xtb", "gfn-ff"]
SolvationModelName = Literal["alpb", "gbsa"]

# Highest atomic number each method is parametrised for; anything above must be rejected
# before an engine sees it (xtb-python segfaults on Z = 87).
MAX_ATOMIC_NUMBER: dict[str, int] = {"gfn2-xtb": 86, "gfn1-xtb": 86, "gfn0-xtb": 86,
                                     "gfn-ff": 86}

# Which engines implement a method (see the table above).
METHOD_ENGINES: dict[str, tuple[str, ...]] = {
    "gfn2-xtb": ("xtb", "tblite"), "gfn1-xtb": ("xtb", "tblite"),
    "gfn0-xtb": ("xtb",), "gfn-ff": ("xtb",),
}
KNOWN_ENGINES = ("xtb", "tblite")
# Which engines implement a solvation model: xtb-python's API sets GBSA only.
SOLVATION_ENGINES: dict[str, tuple[str, ...]] = {"alpb": ("tblite",), "gbsa": ("xtb", "tblite")}

# Parametrised solvents, by the xtb program's names (ALPB: Ehlert et al., JCTC 2021; GBSA: the
# older set). Checked against tblite 0.8.0 and xtb-python 22.1: every listed pair runs.
ALPB_SOLVENTS = ("acetone", "acetonitrile", "aniline", "benzaldehyde", "benzene", "ch2cl2",
                 "chcl3", "cs2", "dioxane", "dmf", "dmso", "ethanol", "ether", "ethylacetate",
                 "furane", "hexadecane", "hexane", "methanol", "nitromethane", "octanol",
                 "phenol", "thf", "toluene", "water", "woctanol")
GBSA_SOLVENTS = ("acetone", "acetonitrile", "benzene", "ch2cl2", "chcl3", "cs2", "dmf", "dmso",
                 "ether", "hexane", "methanol", "thf", "toluene", "water")
SOLVENTS: dict[str, tuple[str, ...]] = {"alpb": ALPB_SOLVENTS, "gbsa": GBSA_SOLVENTS}
# GFN1-xTB's GBSA parameter set has no DMF and no n-hexane.
_MISSING: dict[tuple[str, str], frozenset[str]] = {
    ("gfn1-xtb", "gbsa"): frozenset({"dmf", "hexane"}),
}
SOLVENT_ALIASES: dict[str, str] = {
    "h2o": "water", "chloroform": "chcl3", "dichloromethane": "ch2cl2",
    "methylenechloride": "ch2cl2", "n-hexane": "hexane", "nhexane": "hexane",
    "tetrahydrofuran": "thf", "diethylether": "ether", "carbondisulfide": "cs2",
    "dimethylsulfoxide": "dmso", "dimethylformamide": "dmf", "ethylacetate": "ethylacetate",
    "1,4-dioxane": "dioxane", "octanol(wet)": "woctanol", "wetoctanol": "woctanol",
    "n-octanol": "octanol", "furan": "furane", "mecn": "acetonitrile", "meoh": "methanol",
    "etoh": "ethanol",
}

_DISPLAY = {"gfn2-xtb": "GFN2-xTB", "gfn1-xtb": "GFN1-xTB", "gfn0-xtb": "GFN0-xTB",
            "gfn-ff": "GFN-FF"}


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


def canonical_solvent(name: str) -> str:
    key = "".join(str(name).lower().split())
    return SOLVENT_ALIASES.get(key, key)


class Solvation(BaseModel):
    """Implicit solvation: ``model`` (``alpb`` or ``gbsa``) in a ``solvent`` named as the xtb
    program names it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: SolvationModelName
    solvent: str

    @field_validator("solvent", mode="before")
    @classmethod
    def _canonical(cls, value: Any) -> Any:
        return canonical_solvent(value) if isinstance(value, str) else value

    @field_validator("solvent")
    @classmethod
    def _known_solvent(cls, solvent: str, info: ValidationInfo) -> str:
        model = info.data.get("model")
        if model is not None and solvent not in SOLVENTS[model]:
            raise ValueError(f"unknown solvent {solvent!r} for {model.upper()} "
                             f"(valid: {', '.join(SOLVENTS[model])})")
        return solvent

    def __str__(self) -> str:
        return f"{self.model.upper()}({self.solvent})"


class LevelOfTheory(BaseModel):
    """A semi-empirical method, named as the xtb program names it, optionally in an implicit
    solvent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Method
    solvation: Solvation | None = None

    @model_validator(mode="after")
    def _solvation_exists_for_method(self) -> LevelOfTheory:
        s = self.solvation
        if s is None:
            return self
        name = _DISPLAY[self.method]
        if self.method == "gfn0-xtb":
            raise ValueError(f"{name} has no implicit solvation parameters")
        if not set(METHOD_ENGINES[self.method]) & set(SOLVATION_ENGINES[s.model]):
            raise ValueError(f"{s.model.upper()} solvation is not available with {name} "
                             f"(no engine has both); use model='gbsa'")
        missing = _MISSING.get((self.method, s.model), frozenset())
        if s.solvent in missing:
            valid = [x for x in SOLVENTS[s.model] if x not in missing]
            raise ValueError(f"{name} has no {s.model.upper()} parameters "
                             f"for {s.solvent!r} (valid: {', '.join(valid)})")
        return self

    @model_serializer(mode="wrap")
    def _omit_vacuum(self, handler: SerializerFunctionWrapHandler,
                     info: SerializationInfo) -> dict[str, Any]:
        data = handler(self)
        if self.solvation is None:
            data.pop("solvation", None)  # a vacuum level's payload is what it always was
        return data

    def with_solvent(self, solvent: str, model: SolvationModelName = "alpb") -> LevelOfTheory:
        """This method in ``solvent``: ALPB by default (it needs the tblite engine; jobs are
        routed to it), or ``model="gbsa"``. Raises ValueError listing the valid solvents."""
        from pydantic import ValidationError

        try:
            return LevelOfTheory(method=self.method,
                                 solvation=Solvation(model=model, solvent=solvent))
        except ValidationError as e:
            raise ValueError(e.errors(include_url=False)[0]["msg"].removeprefix(
                "Value error, ")) from None

    def in_vacuum(self) -> LevelOfTheory:
        return LevelOfTheory(method=self.method)

    @property
    def max_atomic_number(self) -> int:
        return MAX_ATOMIC_NUMBER[self.method]

    @property
    def is_force_field(self) -> bool:
        return self.method == "gfn-ff"

    @property
    def engines(self) -> tuple[str, ...]:
        """Engines that can run this level, in the order of the method's table entry."""
        allowed = METHOD_ENGINES[self.method]
        if self.solvation is not None:
            allowed = tuple(e for e in allowed if e in SOLVATION_ENGINES[self.solvation.model])
        return allowed

    def runs_on(self, engine: str) -> bool:
        """Whether ``engine`` can run this level. Engines this table does not know (the fake
        ``instant`` of platform tests) are not judged here: they say so when they run."""
        return engine in self.engines or engine not in KNOWN_ENGINES

    def engine_requirement(self) -> str:
        """Why only ``engines`` will do, as one phrase for error messages."""
        if self.solvation is not None and self.solvation.model == "alpb":
            return "ALPB solvation needs the tblite engine"
        return f"{_DISPLAY[self.method]} needs the {' or '.join(self.engines)} engine"

    def __str__(self) -> str:
        name = _DISPLAY[self.method]
        return f"{name}/{self.solvation}" if self.solvation else name


GFN2_XTB = LevelOfTheory(method="gfn2-xtb")
GFN1_XTB = LevelOfTheory(method="gfn1-xtb")
GFN0_XTB = LevelOfTheory(method="gfn0-xtb")
GFNFF = LevelOfTheory(method="gfn-ff")

__all__ = ["ALPB_SOLVENTS", "GBSA_SOLVENTS", "GFN0_XTB", "GFN1_XTB", "GFN2_XTB", "GFNFF",
           "LevelOfTheory", "Method", "Solvation", "canonical_solvent", "valence_capacity",
           "valence_electrons"]
