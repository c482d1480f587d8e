"""Request dependencies as Annotated aliases, so a handler's signature reads as its contract.

They are ``async def``: FastAPI runs a plain ``def`` dependency in the thread pool, a hop that
cost more than the lookup itself, five times per request. Only a database read (a credential
not seen in the last second, a session cookie) goes to a thread."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine

from . import security
from .authcache import AuthCache
from .db import read_tx
from .notify import Notifier
from .settings import Settings
from .store import controllers as controller_store
from .store import workspaces as workspace_store
from .store.controllers import Controller
from .store.sessions import Session, resolve_session
from .store.workspaces import Workspace

_bearer = HTTPBearer(auto_error=False, description="Workspace API key (av_...) or controller "
                                                   "token (avc_...)")


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _engine(request: Request) -> Engine:
    return request.app.state.engine


async def _notifier(request: Request) -> Notifier:
    return request.app.state.notifier


SettingsDep = Annotated[Settings, Depends(_settings)]
EngineDep = Annotated[Engine, Depends(_engine)]
NotifierDep = Annotated[Notifier, Depends(_notifier)]
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


SESSION_COOKIE = "atomiverse_session"
CSRF_HEADER = "X-CSRF-Token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def _current_workspace(request: Request, engine: EngineDep,
                             creds: BearerDep) -> Workspace:
    """A Bearer API key, or else the dashboard's session cookie (state changes through the
    cookie also need the page's CSRF token: see :func:`check_csrf`)."""
    if creds is None and SESSION_COOKIE in request.cookies:
        session = await run_in_threadpool(_session, request, engine)
        if session is None:
            raise _unauthorized("Session expired or signed out: sign in again at /signin")
        check_csrf(request, session, request.headers.get(CSRF_HEADER))
        return session.workspace
    if not creds:
        raise _unauthorized("Missing API key: send 'Authorization: Bearer av_...'")
    ws = await _authenticate(request, "workspace", creds.credentials, _load_workspace, engine)
    if ws is None:
        raise _unauthorized("Invalid or revoked API key")
    return ws


async def require_known_credential(request: Request) -> None:
    """Before a request body is read: some credential this server knows (an API key, a
    controller token or a session), or 401 at once. FastAPI reads and parses the body before it
    runs the route's own authentication, so a 55 MiB body without credentials was read and
    parsed first (issue 23). Which credential the route needs is still its own check."""
    engine = request.app.state.engine
    auth = request.headers.get("authorization", "")
    scheme, _, secret = auth.partition(" ")
    if auth and scheme.lower() == "bearer" and secret:
        if secret.startswith(security.API_KEY_PREFIX):
            known = await _authenticate(request, "workspace", secret, _load_workspace, engine)
        elif secret.startswith(security.CONTROLLER_TOKEN_PREFIX):
            known = await _authenticate(request, "controller", secret, _load_controller, engine)
        else:
            known = None
        if known is None:
            raise _unauthorized("Invalid or revoked API key or controller token")
        return
    if SESSION_COOKIE in request.cookies:
        if await run_in_threadpool(_session, request, engine) is None:
            raise _unauthorized("Session expired or signed out: sign in again at /signin")
        return
    raise _unauthorized("Missing credentials: send 'Authorization: Bearer av_...' (an API key) "
                        "or 'Bearer avc_...' (a controller token)")


async def workspace_for_bearer(request: Request, secret: str) -> Workspace | None:
    """The workspace of a valid, unrevoked API key; None for anything else."""
    if not secret.startswith(security.API_KEY_PREFIX):
        return None
    return await _authenticate(request, "workspace", secret, _load_workspace,
                               request.app.state.engine)


def _load_workspace(engine: Engine, key: str) -> Workspace | None:
    with read_tx(engine) as conn:
        return workspace_store.workspace_for_api_key(conn, key=key)


def _load_controller(engine: Engine, token: str) -> Controller | None:
    with read_tx(engine) as conn:
        return controller_store.controller_for_token(conn, token=token)


# Set in a request's scope state by fastwrites when the database did not know its credential.
UNKNOWN_CREDENTIAL = "atomiverse_unknown_credential"


async def _authenticate(request: Request, kind: str, secret: str,
                        load: Callable[[Engine, str], Any], engine: Engine) -> Any:
    if request.scope.get("state", {}).get(UNKNOWN_CREDENTIAL) == secret:
        return None  # looked up a moment ago on the fast path: not known
    return await known_or_loaded(request.app.state.auth_cache, kind, secret, load, engine)


async def known_or_loaded(cache: AuthCache, kind: str, secret: str,
                          load: Callable[[Engine, str], Any], engine: Engine) -> Any:
    """Who ``secret`` is (a workspace or controller), from the cache or else the database (and
    then remembered); None for a credential the server does not know."""
    found, value = cache.lookup(kind, secret)
    if not found:
        value = await run_in_threadpool(load, engine, secret)
        cache.remember(kind, secret, value)
    return value


# The loader of each kind of credential the auth cache keeps (fastwrites looks them up too).
LOADERS: dict[str, Callable[[Engine, str], Any]] = {"workspace": _load_workspace,
                                                    "controller": _load_controller}


def _session(request: Request, engine: EngineDep) -> Session | None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    with read_tx(engine) as conn:
        return resolve_session(conn, cookie=cookie)


def check_csrf(request: Request, session: Session, token: str | None) -> None:
    """A state change authenticated by the cookie must come from one of our pages: the
    session's CSRF token (which a cross-site page cannot read) and, when the browser names
    one, our own Origin."""
    if request.method in _SAFE_METHODS:
        return
    if not same_origin(request) or not token \
            or not hmac.compare_digest(token.encode(), session.csrf_token.encode()):
        raise HTTPException(403, "Cross-site request refused: reload the page and try again")


def same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:
        return True
    ours = {request.headers.get("host", "")}
    public_url = request.app.state.settings.public_url
    if public_url:
        ours.add(urlsplit(public_url).netloc)
    return urlsplit(origin).netloc in ours


async def _current_controller(request: Request, engine: EngineDep,
                              creds: BearerDep) -> Controller:
    if not creds:
        raise _unauthorized("Missing controller token: send 'Authorization: Bearer avc_...'")
    ctl = await _authenticate(request, "controller", creds.credentials, _load_controller,
                              engine)
    if ctl is None:
        raise _unauthorized("Invalid controller token: register the controller again")
    return ctl


CurrentWorkspace = Annotated[Workspace, Depends(_current_workspace)]
CurrentController = Annotated[Controller, Depends(_current_controller)]
PageSession = Annotated[Session | None, Depends(_session)]


async def _registrant(request: Request, engine: EngineDep,
                      creds: BearerDep) -> Workspace | Controller:
    """Who may register a controller: a workspace (API key) or the controller itself (its
    token, kept from an earlier registration)."""
    if creds and creds.credentials.startswith("avc_"):
        ctl = await _current_controller(request, engine, creds)
        request.state.controller_token = creds.credentials
        return ctl
    return await _current_workspace(request, engine, creds)


Registrant = Annotated[Workspace | Controller, Depends(_registrant)]
