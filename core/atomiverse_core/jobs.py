"""Job models. ``model_dump()`` is the JSON payload; a submitted job also carries a handle
(``job_id``, ``state``, ``result``) and verbs that talk to the server through its client.

Handles overwrite themselves from the server's response, never optimistically.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
import warnings
import webbrowser
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from .atoms import Atoms
from .levels import LevelOfTheory
from .state import State

if TYPE_CHECKING:
    from collections.abc import Callable

# The SDK registers how to reach its default client (`use_default_client`), so a job's verbs work
# without the core knowing the SDK that sits above it.
_default_client: Callable[[], Any] | None = None


def use_default_client(factory: Callable[[], Any]) -> None:
    """Set the function a job without a client of its own calls to get one."""
    global _default_client
    _default_client = factory

Engine = Literal["xtb", "tblite"]
MAX_WALLTIME_SECONDS = 7 * 24 * 3600


class Job(BaseModel):
    """Fields shared by every job type, and the verbs of a submitted job."""

    model_config = ConfigDict(extra="forbid")
    job_type: ClassVar[str]
    # Whether a chain may run this job type after another step, on that step's geometry, and
    # whether its result gives the next step one (final_positions_angstrom, or the input's).
    takes_geometry: ClassVar[bool] = True
    yields_geometry: ClassVar[bool] = True

    atoms: Atoms
    level_of_theory: LevelOfTheory
    name: str | None = Field(default=None, max_length=120)
    engine: Engine | None = Field(default=None, description="None: the controller's default")
    use_cache: bool = Field(default=True, description="Allow an identical done job to answer")
    walltime_seconds: float | None = Field(default=None, gt=0, le=MAX_WALLTIME_SECONDS)

    _job_id: str | None = PrivateAttr(default=None)
    _record: dict[str, Any] = PrivateAttr(default_factory=dict)
    _client: Any = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _name_is_printable(cls, name: str | None) -> str | None:
        """NUL, control characters and bidirectional overrides (U+202E) would let a name hide
        or reorder what a page, a table or a terminal shows."""
        if name is None:
            return None
        bad = next((c for c in name if not c.isprintable() or unicodedata.category(c) == "Cf"),
                   None)
        if bad is not None:
            raise ValueError(f"contains the non-printable character U+{ord(bad):04X}")
        return name

    @model_validator(mode="after")
    def _level_covers_elements(self) -> Job:
        zmax = self.level_of_theory.max_atomic_number
        bad = sorted(z for z in set(self.atoms.numbers) if z > zmax)
        if bad:
            raise ValueError(
                f"atoms: element Z={bad[0]} is not parametrised by {self.level_of_theory} "
                f"(Z 1-{zmax})"
            )
        if not self.level_of_theory.is_force_field:  # a force field has no electrons to fit
            self._basis_holds_the_electrons()
        self._engine_runs_the_level()
        return self

    def _engine_runs_the_level(self) -> None:
        level = self.level_of_theory
        if self.engine is not None and self.engine not in level.engines:
            raise ValueError(f"engine: {level.engine_requirement()}, not {self.engine!r} "
                             f"({level})")

    def _basis_holds_the_electrons(self) -> None:
        from .levels import valence_capacity, valence_electrons

        counts = Counter(self.atoms.numbers).items()  # a few elements, many atoms
        electrons = sum(valence_electrons(z) * n for z, n in counts) - self.atoms.charge
        capacity = sum(valence_capacity(z) * n for z, n in counts)
        if electrons > capacity:
            raise ValueError(
                f"atoms.charge: charge {self.atoms.charge} gives {electrons} valence electrons,"
                f" more than the {capacity} the {self.level_of_theory} basis can hold")
        if electrons <= 0:
            raise ValueError(f"atoms.charge: charge {self.atoms.charge} leaves no valence "
                             f"electrons")

    # ----- handle ------------------------------------------------------------------------
    @property
    def job_id(self) -> str | None:
        return self._job_id

    @property
    def state(self) -> State | None:
        s = self._record.get("state")
        return State(s) if s else None

    @property
    def result(self) -> dict[str, Any] | None:
        return self._record.get("result")

    @property
    def error(self) -> str | None:
        return self._record.get("error")

    @property
    def record(self) -> dict[str, Any]:
        """The server's last word on this job (state, times, result) as a dict."""
        return dict(self._record)

    def _api(self) -> Any:
        if self._client is None:
            if _default_client is None:
                raise RuntimeError("no client: import atomiverse, or pass client= to "
                                   "from_record")
            self._client = _default_client()
        return self._client

    def _require_id(self, verb: str) -> str:
        if self._job_id is None:
            raise RuntimeError(f"cannot {verb} a job that has not been submitted")
        return self._job_id

    def _apply(self, record: dict[str, Any]) -> Job:
        self._job_id = record["job_id"]
        self._record = record
        if "name" in record:
            # name is a payload field too; keep it in step with the server.
            object.__setattr__(self, "name", record["name"])
        return self

    # ----- verbs -------------------------------------------------------------------------
    def submit(self, wait: bool = False, compute_target: str | None = None,
               timeout: float | None = None) -> Job:
        """Submit this job. With ``wait=True`` return when it is terminal, result loaded."""
        api = self._api()
        self._apply(api.submit_job(self.model_dump(), compute_target=compute_target))
        if wait:
            self.wait(timeout=timeout)
        return self

    def wait(self, timeout: float | None = None) -> Job:
        """Block until the job is finished, its record loaded (one fetch per change)."""
        return self._apply(self._api().wait_job(self._require_id("wait for"), timeout))

    def refresh(self) -> Job:
        """Read the job's record from the server now."""
        return self._apply(self._api().get_job(self._require_id("refresh")))

    def rename(self, name: str) -> Job:
        return self._apply(self._api().rename_job(self._require_id("rename"), name))

    def cancel(self) -> Job:
        return self._apply(self._api().cancel_job(self._require_id("cancel")))

    def delete(self, *, missing_ok: bool = False) -> None:
        """Delete a terminal job (409 for pending or running: cancel first). With
        ``missing_ok=True`` an already deleted job counts as done."""
        try:
            self._api().delete_job(self._require_id("delete"))
        except Exception as e:
            # the SDK's NotFoundError; the core only knows it by its status
            if not (missing_ok and getattr(e, "status_code", None) == 404):
                raise

    def _repr_html_(self) -> str:
        """A compact table in notebooks (name, type, state, formula, energy, gap, job id) and
        a 3D view of the structure (the final geometry once there is one) with the bundled
        3Dmol.js, where the notebook runs scripts (:mod:`atomiverse_core.notebook`)."""
        from .notebook import html_table, structure_view

        result = self.result or {}
        energy, gap = result.get("energy_hartree"), result.get("homo_lumo_gap_ev")
        cells = [("name", self.name or ""), ("job type", self.job_type),
                 ("state", self.state.value if self.state else "not submitted"),
                 ("formula", self.atoms.formula),
                 ("energy / Hartree", "" if energy is None else f"{energy:.8f}"),
                 ("HOMO-LUMO gap / eV", "" if gap is None else f"{gap:.3f}"),
                 ("job id", self.job_id or ""), ("error", self.error or "")]
        table = html_table([k for k, _ in cells], [[str(v) for _, v in cells]],
                           css_class="atomiverse-job")
        final = result.get("final_positions_angstrom")
        view = structure_view(self.atoms.symbols, final or self.atoms.positions,
                              "final geometry" if final else "input geometry")
        return table + view

    def job_dashboard_url(self) -> str:
        return self._api().dashboard_url(self._require_id("visualize"))

    def visualize(self, mode: Literal["browser", "link"] | None = None, *,
                  open_browser: bool | None = None) -> str:
        """Open the job's dashboard in a new browser tab and return its URL.

        ``mode="link"`` only returns (and prints) the URL. On a machine with no browser the
        link is printed and still returned. ``open_browser=`` is a deprecated alias."""
        url = self.job_dashboard_url()
        if open_browser is not None:
            warnings.warn("visualize(open_browser=...) is deprecated; use mode='browser' or "
                          "mode='link'", DeprecationWarning, stacklevel=2)
            if mode is None:
                mode = "browser" if open_browser else "link"
        mode = mode or "browser"
        if mode not in ("browser", "link"):
            raise ValueError(f"mode must be 'browser' or 'link', not {mode!r}")
        if mode == "link" or not _open_in_browser(url):
            print(url)
        return url

    # ----- chains ------------------------------------------------------------------------
    def then(self, next_step: type[Job], **options: Any) -> Job:
        """A chain: this job, then ``next_step`` (a job model class, e.g. ``Frequencies``)
        with ``options`` on this job's resulting geometry, run by the server one after the
        other without the client. ``level_of_theory=`` among the options changes the level
        for that step; otherwise each step keeps this job's. Chains continue: ``.then(...)``
        again adds a step."""
        chain = concrete_job_models().get("chain")
        if chain is None:
            raise RuntimeError("chains are not available (atomiverse_core.jobtypes not loaded)")
        return chain.starting_with(self).then(next_step, **options)  # type: ignore[attr-defined]

    # ----- persistence -------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the payload and handle to a JSON file, to pick the job up in another process."""
        data = {"payload": self.model_dump(mode="json"), "job_id": self._job_id,
                "record": self._record}
        Path(path).write_text(json.dumps(data))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Job:
        data = json.loads(Path(path).read_text())
        job = model_for(data["payload"]).model_validate(data["payload"])
        job._job_id = data.get("job_id")
        job._record = data.get("record") or {}
        return job

    @classmethod
    def from_record(cls, record: dict[str, Any], client: Any = None) -> Job:
        job = model_for(record["job"]).model_validate(record["job"])
        job._client = client
        return job._apply(record)


def _open_in_browser(url: str) -> bool:
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY") \
            and os.name == "posix" and not _is_macos():
        return False
    try:
        return webbrowser.open_new_tab(url)
    except webbrowser.Error:
        return False


def _is_macos() -> bool:
    import sys

    return sys.platform == "darwin"


def concrete_job_models() -> dict[str, type[Job]]:
    """Every defined job model by its ``job_type``: Python's own record of Job's subclasses,
    so this module needs no list of them (the registry, :mod:`atomiverse_core.jobtypes`,
    defines them above it)."""
    found: dict[str, type[Job]] = {}
    todo = list(Job.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        field = cls.model_fields.get("job_type")
        if field is not None and isinstance(field.default, str):
            found.setdefault(field.default, cls)
    return found


def model_for(payload: Any) -> type[Job]:
    """The job model a payload names by its ``job_type``; ValueError if none does."""
    name = payload.get("job_type") if isinstance(payload, dict) else None
    model = concrete_job_models().get(name) if isinstance(name, str) else None
    if model is None:
        raise ValueError(f"job_type: unknown job type {name!r}")
    return model


def describe_model_error(exc: Exception, job_types: tuple[str, ...] = ()) -> str:
    """``<field>: <reason>`` for the first problem in a pydantic ValidationError; the job type
    names (``job_types``) are the tags of a union of job models, not fields."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    err = exc.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"] if p not in job_types]
    msg = err["msg"].removeprefix("Value error, ")
    if not loc and re.match(r"^[\w.]+: ", msg):
        return msg  # a whole-job check that names its field itself
    field = ".".join(loc) or "job"
    if err["type"] == "union_tag_invalid":
        msg = "must be one of " + ", ".join(f"'{t}'" for t in job_types)
        field = "job_type"
    elif err["type"] == "union_tag_not_found":
        field, msg = "job_type", "field required"
    return f"{field}: {msg}"
