"""A store for tests that call the server's store and routes in-process: a migrated SQLite
database with one workspace and one controller registered in it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atomiverse_server import db
from atomiverse_server.store import controllers as controller_store
from atomiverse_server.store import workspaces as workspace_store


def workspace_with_controller(path: Path, *, name: str = "poller",
                              serves_managed: bool = False) -> tuple[Any, Any, Any]:
    """(engine, workspace, controller) of a new database at ``path``: one slot, capacity 100,
    an xtb engine. The caller disposes of the engine."""
    engine = db.make_engine(f"sqlite:///{path}")
    db.migrate(engine)
    with db.write_tx(engine) as conn:
        ws = workspace_store.create_workspace(conn, name="ws", balance=0.0)
        ctl, _ = controller_store.register_controller(
            conn, workspace_id=ws.id, name=name, slots=1, cores_per_job=1, capacity=100,
            engines={"xtb": "6.7.1"}, hostname="h", serves_managed=serves_managed)
    return engine, ws, ctl
