"""``atomiverse admin ...``: administration of a self-hosted server, straight on its database.

The database comes from ``--database-url``, ``ATOMIVERSE_DATABASE_URL`` or the SQLite file
under ``ATOMIVERSE_HOME``."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from .db import create_schema, current_revision, make_engine, migrate, read_tx, write_tx
from .purge import DEFAULT_CHUNK, PURGEABLE, purge
from .settings import Settings
from .store import controllers as controller_store
from .store import workspaces as workspace_store

# Managed controllers belong to this internal workspace; they serve every workspace.
MANAGED_POOL_WORKSPACE = "managed-pool"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="atomiverse admin", description=__doc__)
    p.add_argument("--database-url")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create-workspace", help="create a workspace and print its first key")
    c.add_argument("name")
    c.add_argument("--balance", type=float, default=0.0)
    k = sub.add_parser("issue-key", help="issue an API key (shown once)")
    k.add_argument("workspace")
    r = sub.add_parser("revoke-key", help="revoke an API key by its first 8 characters")
    r.add_argument("workspace")
    r.add_argument("prefix")
    b = sub.add_parser("set-balance", help="set a workspace's balance")
    b.add_argument("workspace")
    b.add_argument("balance", type=float)
    m = sub.add_parser("register-managed-controller",
                       help="register a managed-pool controller (serves every workspace) and "
                            "print its token (shown once)")
    m.add_argument("name")
    m.add_argument("--token-file", help="also write the token here (mode 0600)")
    lc = sub.add_parser("list-controllers", help="controllers of a workspace, free slots")
    lc.add_argument("workspace")
    pg = sub.add_parser("purge", help="delete (and archive) old finished jobs in chunks")
    pg.add_argument("--state", action="append", required=True, choices=PURGEABLE,
                    help="done, failed or cancelled (repeat for several)")
    pg.add_argument("--before", required=True, type=_utc_timestamp,
                    help="jobs finished before this UTC date or time (2026-01-31, "
                         "2026-01-31T12:00:00)")
    pg.add_argument("--workspace", help="only this workspace (default: all)")
    pg.add_argument("--archive", type=Path, help="append the jobs to this JSON-lines file "
                    "(0600) before deleting them")
    pg.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="jobs per transaction")
    pg.add_argument("--pause-seconds", type=float, default=0.0,
                    help="pause between chunks, to leave the database to the server")
    m = sub.add_parser("migrate", help="bring the database schema up to date (alembic upgrade)")
    m.add_argument("--revision", default="head", help="target revision (default: head)")
    return p


def _utc_timestamp(text: str) -> float:
    """An ISO date or date-time, read as UTC unless it names its offset."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not an ISO date or date-time: {text!r}") from e
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """The command; its JSON answer goes to ``out`` (default: standard output)."""
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    settings = Settings(**({"database_url": args.database_url} if args.database_url else {}))
    engine = make_engine(settings.resolved_database_url())
    try:
        if args.command == "migrate":
            before = current_revision(engine)
            migrate(engine, args.revision)
            print(json.dumps({"from": before, "to": current_revision(engine)}), file=out)
            return 0
        create_schema(engine)
        return _dispatch(args, engine, out)
    finally:
        engine.dispose()


def _workspace(conn, name: str):  # type: ignore[no-untyped-def]
    ws = workspace_store.get_workspace_by_name(conn, name=name)
    if ws is None:
        raise SystemExit(f"no workspace named {name!r}")
    return ws


def _dispatch(args: argparse.Namespace, engine,  # type: ignore[no-untyped-def]
              out: TextIO) -> int:
    if args.command == "create-workspace":
        with write_tx(engine) as conn:
            if workspace_store.get_workspace_by_name(conn, name=args.name):
                raise SystemExit(f"workspace {args.name!r} already exists")
            ws = workspace_store.create_workspace(conn, name=args.name, balance=args.balance)
            key = workspace_store.issue_api_key(conn, workspace_id=ws.id)
        print(json.dumps({"workspace": ws.name, "api_key": key}), file=out)
    elif args.command == "issue-key":
        with write_tx(engine) as conn:
            key = workspace_store.issue_api_key(conn, workspace_id=_workspace(conn,
                                                                              args.workspace).id)
        print(json.dumps({"workspace": args.workspace, "api_key": key}), file=out)
    elif args.command == "revoke-key":
        with write_tx(engine) as conn:
            n = workspace_store.revoke_api_key(conn, workspace_id=_workspace(
                conn, args.workspace).id, prefix=args.prefix)
        print(json.dumps({"revoked": n}), file=out)
        return 0 if n else 1
    elif args.command == "set-balance":
        with write_tx(engine) as conn:
            workspace_store.set_balance(conn, workspace_id=_workspace(conn, args.workspace).id,
                                        balance=args.balance)
        print(json.dumps({"workspace": args.workspace, "balance": args.balance}), file=out)
    elif args.command == "register-managed-controller":
        with write_tx(engine) as conn:
            pool = (workspace_store.get_workspace_by_name(conn, name=MANAGED_POOL_WORKSPACE)
                    or workspace_store.create_workspace(conn, name=MANAGED_POOL_WORKSPACE))
            ctl, token = controller_store.register_controller(
                conn, workspace_id=pool.id, name=args.name, slots=1, cores_per_job=1,
                capacity=1, engines={}, hostname="", serves_managed=True)
            controller_store.set_status(conn, controller_id=ctl.id, status="offline")
        if args.token_file:
            from .embedded import write_private

            write_private(Path(args.token_file), token)
        print(json.dumps({"controller": ctl.name, "token": token}), file=out)
    elif args.command == "purge":
        workspace_id = None
        if args.workspace:
            with read_tx(engine) as conn:
                workspace_id = _workspace(conn, args.workspace).id
        try:
            purged = purge(engine, states=args.state, before=args.before,
                        workspace_id=workspace_id, archive=args.archive, chunk=args.chunk,
                        pause_seconds=args.pause_seconds)
        except ValueError as e:
            raise SystemExit(str(e)) from e
        print(json.dumps(purged), file=out)
    elif args.command == "list-controllers":
        with read_tx(engine) as conn:
            rows = controller_store.list_controllers(conn, workspace_id=_workspace(
                conn, args.workspace).id)
        print(json.dumps(rows, indent=2), file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
