"""Dashboard pages: sign in and out, the jobs list, one job. HTML from Jinja2 templates
(autoescaped); the buttons call the JSON API with the session cookie and its CSRF token."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

import jinja2
import markupsafe
from atomiverse_core import jobtypes
from atomiverse_core.qcschema_results import MAPPED_JOB_TYPES
from atomiverse_core.units import (
    DEBYE_PER_ATOMIC_UNIT,
    EV_PER_HARTREE,
    KCAL_PER_MOL_PER_HARTREE,
)
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from .. import embedded
from ..db import read_tx, write_tx
from ..deps import SESSION_COOKIE, EngineDep, PageSession, check_csrf, same_origin
from ..plots import energy_plot, ir_spectrum
from ..result_check import result_problem
from ..store import composites
from ..store import jobs as job_store
from ..store.sessions import SESSION_SECONDS, Session, end_session, open_session

router = APIRouter(include_in_schema=False)

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent.parent / "templates"),
    autoescape=True, trim_blocks=True, lstrip_blocks=True)
_env.filters["when"] = lambda iso: iso.replace("T", " ").rsplit(".", 1)[0] + " UTC" if iso else ""
_env.filters["formula"] = lambda formula: markupsafe.Markup("").join(
    markupsafe.Markup("<sub>%s</sub>") % part if part.isdigit() else part
    for part in re.findall(r"\d+|\D+", formula or ""))

STATES = ("pending", "running", "done", "failed", "cancelled")
JOB_TYPES = {t.name: t.title for t in jobtypes.all_types()}
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' "
                               "'unsafe-inline'; img-src 'self' data: blob:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_env.globals.update(HARTREE_EV=EV_PER_HARTREE, HARTREE_KCAL=KCAL_PER_MOL_PER_HARTREE,
                    QCSCHEMA_TYPES=MAPPED_JOB_TYPES)
_LOCAL_PATH = re.compile(r"^/[A-Za-z0-9/_\-.~?=&%+]*$")
_FORM_MAX_BYTES = 8192
_PREVIEW_ATOMS = 300  # the list's thumbnails drop hydrogens above this, and stop there
PAGE_MODES_MAX_ATOMS = 150  # a frequencies page animates its modes up to this: ~2 MB of JSON


def _render(request: Request, template: str, session: Session | None, status: int = 200,
            **context: Any) -> HTMLResponse:
    html = _env.get_template(template).render(
        request=request, session=session, job_types=JOB_TYPES, key_file=_key_file(request),
        **context)
    return HTMLResponse(html, status_code=status, headers=_SECURITY_HEADERS)


def _to_signin(request: Request) -> RedirectResponse:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/signin?" + urlencode({"next": here}), status_code=303)


def _safe_next(target: str | None) -> str:
    """Only a path on this server: never ``//host`` or a scheme (no open redirect)."""
    if target and _LOCAL_PATH.match(target) and not target.startswith("//"):
        return target
    return "/jobs"


# ----- sign in / out ------------------------------------------------------------------------
@router.get("/signin", response_class=HTMLResponse)
def signin_page(request: Request, session: PageSession, next: str | None = None) -> Response:
    return _render(request, "signin.html", session, next=_safe_next(next), error=None)


def _key_file(request: Request) -> str | None:
    """Where the embedded server keeps this machine's key: worth saying on its sign-in page."""
    settings = request.app.state.settings
    return str(embedded.credentials_path(settings.home)) if settings.embedded else None


@router.post("/signin", response_class=HTMLResponse)
async def signin(request: Request, engine: EngineDep) -> Response:
    if not same_origin(request):
        return _render(request, "error.html", None, 403, title="Cross-site sign-in refused",
                       message="Open the sign-in page on this server and try again.")
    form = _form(await _small_body(request))
    target = _safe_next(form.get("next"))
    api_key = form.get("api_key", "").strip()
    session = await run_in_threadpool(_open_session, engine, api_key) if api_key else None
    if session is None:
        return _render(request, "signin.html", None, 401, next=target,
                       error="That API key is not valid (or has been revoked).")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, session.cookie, max_age=SESSION_SECONDS, path="/",
                        httponly=True, samesite="lax", secure=_https(request))
    return response


@router.post("/signout")
async def signout(request: Request, session: PageSession, engine: EngineDep) -> Response:
    if session is not None:
        check_csrf(request, session, _form(await _small_body(request)).get("csrf_token"))
        await run_in_threadpool(_end_session, engine, session.cookie)
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax",
                           secure=_https(request))
    return response


def _open_session(engine: Engine, api_key: str) -> Session | None:
    with write_tx(engine) as conn:
        return open_session(conn, api_key=api_key)


def _end_session(engine: Engine, cookie: str) -> None:
    with write_tx(engine) as conn:
        end_session(conn, cookie=cookie)


async def _small_body(request: Request) -> bytes:
    """A sign-in or sign-out form, read only as far as such a form goes: these pages take
    requests without credentials, so an anonymous 60 MiB body must not be read whole."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > _FORM_MAX_BYTES:
        raise HTTPException(413, f"A form here is at most {_FORM_MAX_BYTES} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _FORM_MAX_BYTES:
            raise HTTPException(413, f"A form here is at most {_FORM_MAX_BYTES} bytes")
    return body


def _form(body: bytes) -> dict[str, str]:
    """A small urlencoded form (ours have at most three fields); anything else is empty."""
    try:
        fields = parse_qs(body[:8192].decode("utf-8", "replace"), max_num_fields=10)
    except ValueError:
        return {}
    return {k: v[0] for k, v in fields.items()}


def _https(request: Request) -> bool:
    public_url = request.app.state.settings.public_url or ""
    return request.url.scheme == "https" or public_url.startswith("https://")


# ----- jobs list ----------------------------------------------------------------------------
@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, session: PageSession, engine: EngineDep,
              state: str | None = None,
              name: Annotated[str | None, Query(max_length=120)] = None,
              cursor: Annotated[str | None, Query(max_length=200)] = None,
              limit: Annotated[int, Query(ge=1, le=200)] = 50) -> Response:
    if session is None:
        return _to_signin(request)
    state = state if state in STATES else None
    name = (name or "").strip() or None
    try:
        with read_tx(engine) as conn:
            page = job_store.list_jobs(conn, workspace_id=session.workspace.id, limit=limit,
                                       cursor=cursor, state=state, name_contains=name)
            counts = job_store.count_by_state(conn, workspace_id=session.workspace.id)
    except job_store.InvalidCursor as e:
        return _render(request, "error.html", session, 422, title="Bad page link",
                       message=str(e))

    def link(**change: Any) -> str:
        query = {"state": state, "name": name, "limit": limit if limit != 50 else None} | change
        return "/jobs?" + urlencode({k: v for k, v in query.items() if v is not None})

    return _render(request, "jobs.html", session, page=page, counts=counts, state=state,
                   name=name or "", cursor=cursor, link=link, states=STATES,
                   total=sum(counts.values()),
                   previews={j["job_id"]: _thumbnail(j["molecule_preview"])
                             for j in page["jobs"]})


def _thumbnail(preview: dict[str, Any] | None) -> dict[str, Any] | None:
    if not preview:
        return None
    symbols, positions = preview["symbols"], preview["positions"]
    if len(symbols) > _PREVIEW_ATOMS:
        keep = [i for i, s in enumerate(symbols) if s != "H"][:_PREVIEW_ATOMS]
        symbols, positions = [symbols[i] for i in keep], [positions[i] for i in keep]
    return {"symbols": symbols, "positions": positions}


# ----- one job ------------------------------------------------------------------------------
@router.get("/job", response_class=HTMLResponse)
def job_page(request: Request, session: PageSession, engine: EngineDep,
             job_id: Annotated[str, Query(max_length=64)] = "") -> Response:
    if session is None:
        return _to_signin(request)
    with read_tx(engine) as conn:
        record = job_store.get_job(conn, workspace_id=session.workspace.id, job_id=job_id)
        steps = [] if record is None else _steps(composites.child_summaries(
            conn, workspace_id=session.workspace.id, parent_id=job_id))
    if record is None:
        return _render(request, "error.html", session, 404, title="Job not found",
                       message=f"There is no job {job_id[:64]} in this workspace.")
    result = record.get("result") or {}
    if result and result_problem(record["job_type"], result) is not None:
        result = {}  # stored before results were checked (issue 23): show the job without it
    energies = result.get("energies_hartree") or []
    return _render(request, "job.html", session, job=record, result=result,
                   kind=jobtypes.find(record["job_type"]), steps=steps,
                   table=_result_table(record, result),
                   level=_level(record["job"].get("level_of_theory")),
                   numbers=_result_numbers(record, result), atoms=_atom_rows(record, result),
                   plot=energy_plot(energies) if len(energies) > 0 else None,
                   viewer=_viewer_data(record, result), vib=_vibrations(result),
                   duration=_duration(record["started_at"], record["finished_at"]))


def _level(level: Any) -> str:
    if isinstance(level, dict) and level.get("method"):
        return str(level["method"]).upper().replace("-XTB", "-xTB")
    return str(level or "")


def _duration(start: str | None, end: str | None) -> str | None:
    if not (start and end):
        return None
    from datetime import datetime

    seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def _result_numbers(record: dict[str, Any], r: dict[str, Any]) -> list[dict[str, Any]]:
    """The result's scalar fields as label / value / unit rows, in a chemist's order."""
    if "energy_hartree" not in r:
        return []
    rows: list[dict[str, Any]] = []

    def add(label: str, value: Any, unit: str = "", key: str = "", note: str = "") -> None:
        rows.append({"label": label, "value": value, "unit": unit, "key": key, "note": note})

    if r.get("homo_lumo_gap_ev") is not None:
        add("HOMO-LUMO gap", f"{r['homo_lumo_gap_ev']:.4f}", "eV", "homo_lumo_gap_ev")
    if r.get("dipole_au") is not None:
        d = r["dipole_au"]
        norm = math.sqrt(sum(c * c for c in d))
        add("Dipole moment", f"{norm * DEBYE_PER_ATOMIC_UNIT:.4f}", "D", "dipole",
            f"({d[0]:.4f}, {d[1]:.4f}, {d[2]:.4f}) e·a₀")
    gradient = r.get("gradient_hartree_per_bohr") or []
    if gradient:
        gmax = max(math.sqrt(sum(c * c for c in g)) for g in gradient)
        add("Largest gradient", f"{gmax:.2e}", "Eₕ/a₀", "gradient_max")
    kind = jobtypes.find(record["job_type"])
    for row in kind.result_rows(record, r) if kind else []:
        add(*row)
    add("Engine", f"{r.get('engine', '')} {r.get('engine_version', '')}".strip(), "", "engine")
    add("Wall time", f"{r.get('wall_time_seconds', 0):.3f}", "s", "wall_time_seconds")
    add("Core time", f"{r.get('core_seconds', 0):.3f}", "core-s", "core_seconds")
    return rows


def _atom_rows(record: dict[str, Any], r: dict[str, Any]) -> list[dict[str, Any]]:
    symbols = (record.get("molecule_preview") or {}).get("symbols") or []
    charges = r.get("partial_charges_e") or []
    gradient = r.get("gradient_hartree_per_bohr") or []
    if not (charges or gradient):
        return []
    return [{"index": i + 1, "symbol": symbols[i] if i < len(symbols) else "?",
             "charge": charges[i] if i < len(charges) else None,
             "gradient": gradient[i] if i < len(gradient) else None}
            for i in range(max(len(charges), len(gradient)))]


def _steps(children: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A composite's children by step: one row per step, linked when the step is one job,
    its jobs counted by state when it is many (a conformer search's candidates)."""
    steps: dict[int, dict[str, Any]] = {}
    for c in children:
        row = steps.setdefault(c["step"], {**c, "count": 0, "states": {}})
        row["count"] += 1
        row["states"][c["state"]] = row["states"].get(c["state"], 0) + 1
    return list(steps.values())


def _result_table(record: dict[str, Any], r: dict[str, Any]) -> Any:
    kind = jobtypes.find(record["job_type"])
    return kind.result_table(r) if kind is not None and r else None


def _viewer_data(record: dict[str, Any], r: dict[str, Any]) -> dict[str, Any]:
    """What the 3D viewer needs: symbols and the geometries to show (Angstrom)."""
    atoms = record["job"].get("atoms") or {}
    symbols = (record.get("molecule_preview") or {}).get("symbols") or []
    if len(symbols) != len(atoms.get("numbers") or []):
        from ase.data import chemical_symbols

        symbols = [chemical_symbols[z] for z in atoms.get("numbers") or []]
    data = {"symbols": symbols, "input": atoms.get("positions") or [],
            "final": r.get("final_positions_angstrom"),
            "trajectory": r.get("trajectory_positions_angstrom"),
            "energies": r.get("energies_hartree"),
            "modes": _page_modes(r), "frequencies": r.get("frequencies_cm1")}
    kind = jobtypes.find(record["job_type"])
    if kind is not None and kind.frame_noun and r:  # alternatives (conformers), not a path
        frames = kind.frames(r)
        data.update(trajectory=[f.positions_angstrom for f in frames],
                    energies=[f.energy_hartree for f in frames], frame_noun=kind.frame_noun)
    return data


def _vibrations(r: dict[str, Any]) -> dict[str, Any] | None:
    """A frequencies result's modes for the table, and its IR spectrum where it has
    intensities (results stored before they were computed have none)."""
    freqs = r.get("frequencies_cm1")
    if not freqs:
        return None
    ir = r.get("ir_intensities_km_per_mol")
    ir = ir if ir and len(ir) == len(freqs) else None
    return {"rows": [{"mode": k, "freq": f, "intensity": ir[k] if ir else None}
                     for k, f in enumerate(freqs)],
            "spectrum": ir_spectrum(freqs, ir) if ir else None,
            "animated": _page_modes(r) is not None}


def _page_modes(r: dict[str, Any]) -> list[Any] | None:
    """The normal modes the page carries for its viewer: none above PAGE_MODES_MAX_ATOMS
    (9 N^2 numbers in the page; the download and the API still have them)."""
    modes = r.get("normal_modes_angstrom")
    return modes if modes and len(modes[0]) <= PAGE_MODES_MAX_ATOMS else None
