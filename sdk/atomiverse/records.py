"""The job records the SDK returns, shown as tables in Jupyter.

``get_job``, ``status``, ``run_job``, ``rename_job``, ``cancel_job`` and each record of
``wait_jobs``, ``as_completed`` and ``iter_jobs`` are :class:`JobRecord` objects: dicts,
exactly the records the API returns (``json.dumps``, ``==`` with a dict, ``isinstance(r,
dict)``, pickling and copying work as for any dict), which a notebook shows as a compact table
(name, job type, formula, state, energy in Hartree, HOMO-LUMO gap in eV, dipole in Debye,
times, job id) with a 3D view of the structure. A list of them (``wait_jobs``, a page of
``list_jobs``, ``job_children``) is a :class:`JobRecords`: a list shown as one table, a row a
job, the first :data:`MAX_ROWS` of them. ``submit_batch`` returns a :class:`BatchResult`: its
dict, with its counts above the table of its ``jobs``.

Everything shown is escaped (names and errors are user input). What a table can show depends on
the record: ``get_job``'s and ``as_completed``'s carry the payload and so the name, formula and
structure; ``wait_jobs``' are shorter (state, result, error) and show what they have.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any

from atomiverse_core.notebook import html_table, structure_view
from atomiverse_core.units import DEBYE_PER_ATOMIC_UNIT

MAX_ROWS = 50  # a list's table shows this many rows, then "... N more jobs"
MAX_TEXT = 200  # characters of a name or an error shown in a cell
COLUMNS = ("name", "job type", "formula", "state", "status", "energy / Hartree",
           "HOMO-LUMO gap / eV", "dipole / Debye", "created (UTC)", "finished (UTC)",
           "wall time / s", "job id", "error")
_SYMBOL = re.compile(r"[A-Z][a-z]{0,2}")


class JobRecord(dict[str, Any]):
    """A job record as the API returns it (a dict), with a table for notebooks."""

    __slots__ = ()

    def _repr_html_(self) -> str:
        return html_table(COLUMNS, [_cells(self)], css_class="atomiverse-record") + _view(self)


class JobRecords(list[Any]):
    """A list of job records, shown in notebooks as one table (a row a job)."""

    __slots__ = ()

    def _repr_html_(self) -> str:
        return _records_table(self)


class BatchResult(dict[str, Any]):
    """``submit_batch``'s answer (a dict: total, submitted, failed, cache_hits, jobs), shown
    as its counts and a table of its jobs."""

    __slots__ = ()

    def _repr_html_(self) -> str:
        counts = (f"{self.get('submitted', 0)} of {self.get('total', 0)} submitted, "
                  f"{self.get('failed', 0)} failed, {self.get('cache_hits', 0)} cache hits")
        jobs = self.get("jobs")
        table = _records_table(jobs) if isinstance(jobs, list) else ""
        return f"<div class='atomiverse-batch'>{escape(counts)}</div>{table}"


def as_record(value: Mapping[str, Any]) -> JobRecord:
    """``value`` as a :class:`JobRecord` (a shallow copy: the caller's dict is left alone)."""
    return value if type(value) is JobRecord else JobRecord(value)


def as_records(values: Iterable[Mapping[str, Any]]) -> JobRecords:
    return JobRecords(as_record(v) for v in values)


def batch_result(answer: Mapping[str, Any]) -> BatchResult:
    out = BatchResult(answer)
    if isinstance(out.get("jobs"), list):
        out["jobs"] = as_records(out["jobs"])
    return out


# ----- what a row shows ---------------------------------------------------------------------
def _records_table(rows: list[Any]) -> str:
    shown = rows[:MAX_ROWS]
    states: dict[str, int] = {}
    for r in rows:
        state = _text(r.get("state") if isinstance(r, Mapping) else None) or "unknown"
        states[state] = states.get(state, 0) + 1
    summary = f"{len(rows)} job{'' if len(rows) == 1 else 's'}" + (
        ": " + ", ".join(f"{n} {s}" for s, n in states.items()) if rows else "")
    if not rows:
        return f"<div class='atomiverse-records-summary'>{escape(summary)}</div>"
    more = len(rows) - len(shown)
    table = html_table(COLUMNS, [_cells(r) for r in shown], css_class="atomiverse-records",
                       more=f"... {more} more job{'' if more == 1 else 's'}" if more else "")
    return f"<div class='atomiverse-records-summary'>{escape(summary)}</div>{table}"


def _cells(entry: Any) -> list[str]:
    """The text of each of :data:`COLUMNS` for one record ("" where it has none)."""
    r = entry if isinstance(entry, Mapping) else {}
    result, payload, preview = (_mapping(r.get(k)) for k in ("result", "job",
                                                              "molecule_preview"))
    energy = result.get("energy_hartree", r.get("energy_hartree"))  # job_children: top level
    return [_text(r.get("name", payload.get("name"))),
            _text(r.get("job_type") or payload.get("job_type")), _text(preview.get("formula")),
            _text(r.get("state")), _text(r.get("status")), _number(energy, ".8f"),
            _number(result.get("homo_lumo_gap_ev"), ".3f"),
            _number(_dipole_debye(result.get("dipole_au")), ".3f"),
            _time(r.get("created_at")), _time(r.get("finished_at")),
            _number(result.get("wall_time_seconds"), ".2f"), _text(r.get("job_id")),
            _text(r.get("error"))]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 3] + "..."


def _number(value: Any, spec: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _text(value)  # not a number: shown as it is, escaped like any text
    return format(value, spec)


def _dipole_debye(dipole_au: Any) -> float | None:
    if not isinstance(dipole_au, list | tuple) or len(dipole_au) != 3 or not all(
            isinstance(c, int | float) and not isinstance(c, bool) for c in dipole_au):
        return None
    return math.sqrt(sum(c * c for c in dipole_au)) * DEBYE_PER_ATOMIC_UNIT


def _time(value: Any) -> str:
    """The API's ISO 8601 UTC time to the second, "2026-12-04 13:31:02"."""
    text = _text(value)
    return text[:19].replace("T", " ") if re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z?", text) \
        else text


# ----- the structure ------------------------------------------------------------------------
def _view(r: Mapping[str, Any]) -> str:
    """The 3D view of the structure the result refers to: the final geometry, or the input's
    where the result has none (a single point, an unfinished job, a summary); "" if the record
    carries no atoms."""
    atoms = _mapping(_mapping(r.get("job")).get("atoms"))
    preview = _mapping(r.get("molecule_preview"))  # a summary's (iter_jobs) only structure
    final = _mapping(r.get("result")).get("final_positions_angstrom")
    symbols = _symbols(preview.get("symbols"), atoms.get("numbers"))
    positions = (_positions(final) or _positions(atoms.get("positions"))
                 or _positions(preview.get("positions")))
    if symbols is None or positions is None or len(symbols) != len(positions):
        return ""
    return structure_view(symbols, positions,
                          "final geometry" if _positions(final) else "input geometry")


def _symbols(symbols: Any, numbers: Any) -> list[str] | None:
    """Element symbols, from the preview or the payload's atomic numbers; None unless every
    one is a plausible symbol (they go into the view's data)."""
    if isinstance(symbols, list) and all(isinstance(s, str) and _SYMBOL.fullmatch(s)
                                         for s in symbols):
        return symbols
    if isinstance(numbers, list) and numbers:
        from ase.data import chemical_symbols

        if all(isinstance(n, int) and 0 < n < len(chemical_symbols) for n in numbers):
            return [chemical_symbols[n] for n in numbers]
    return None


def _positions(positions: Any) -> list[list[float]] | None:
    if not isinstance(positions, list) or not positions:
        return None
    try:
        out = [[float(c) for c in p] for p in positions]
    except (TypeError, ValueError):
        return None
    return out if all(len(p) == 3 and all(map(math.isfinite, p)) for p in out) else None


__all__ = ["MAX_ROWS", "BatchResult", "JobRecord", "JobRecords", "as_record", "as_records",
           "batch_result"]
