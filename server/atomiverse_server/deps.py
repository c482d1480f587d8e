"""Request dependencies as Annotated aliases, so a handler's signature reads as its contract."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine

from .db import read_tx
from .notify import Notifier
from .settings import Settings
from .store import controllers as controller_store
from .store import workspaces as workspace_store
from .store.controllers import Controller
from .store.workspaces import Workspace

_bearer = HTTPBearer(auto_error=False, description="Workspace API key (av_...) or controller "
                                                   "token (avc_...)")


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _engine(request: Request) -> Engine:
    return request.app.state.engine


def _notifier(request: Request) -> Notifier:
    return request.app.state.notifier


SettingsDep = Annotated[Settings, Depends(_settings)]
EngineDep = Annotated[Engine, Depends(_engine)]
NotifierDep = Annotated[Notifier, Depends(_notifier)]
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


def _current_workspace(request: Request, engine: EngineDep, creds: BearerDep) -> Workspace:
    token = creds.credentials if creds else request.cookies.get("atomiverse_session")
    if not token:
        raise _unauthorized("Missing API key: send 'Authorization: Bearer av_...'")
    with read_tx(engine) as conn:
        ws = workspace_store.workspace_for_api_key(conn, key=token)
    if ws is None:
        raise _unauthorized("Invalid or revoked API key")
    return ws


def _current_controller(engine: EngineDep, creds: BearerDep) -> Controller:
    if not creds:
        raise _unauthorized("Missing controller token: send 'Authorization: Bearer avc_...'")
    with read_tx(engine) as conn:
        ctl = controller_store.controller_for_token(conn, token=creds.credentials)
    if ctl is None:
        raise _unauthorized("Invalid controller token: register the controller again")
    return ctl


CurrentWorkspace = Annotated[Workspace, Depends(_current_workspace)]
CurrentController = Annotated[Controller, Depends(_current_controller)]
