"""Tables (SQLAlchemy Core) and the engine. Times are stored as UNIX seconds (float)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

metadata = sa.MetaData()

workspaces = sa.Table(
    "workspaces", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(120), nullable=False, unique=True),
    sa.Column("balance", sa.Float, nullable=False, default=0.0),
    sa.Column("created_at", sa.Float, nullable=False),
)

api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("workspace_id", sa.String(32), sa.ForeignKey("workspaces.id"), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("label", sa.String(120)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
)

controllers = sa.Table(
    "controllers", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("workspace_id", sa.String(32), sa.ForeignKey("workspaces.id"), nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("slots", sa.Integer, nullable=False),
    sa.Column("cores_per_job", sa.Integer, nullable=False, default=1),
    sa.Column("capacity", sa.Integer, nullable=False),
    sa.Column("engines", sa.JSON, nullable=False),
    sa.Column("hostname", sa.String(255), nullable=False, default=""),
    sa.Column("serves_managed", sa.Boolean, nullable=False, default=False),
    sa.Column("status", sa.String(16), nullable=False, default="online"),
    sa.Column("registered_at", sa.Float, nullable=False),
    sa.Column("last_seen_at", sa.Float, nullable=False),
    sa.UniqueConstraint("workspace_id", "name", name="uq_controller_name"),
)

jobs = sa.Table(
    "jobs", metadata,
    # seq orders jobs for keyset paging and FIFO claims; id is what users see.
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(32), nullable=False, unique=True),
    sa.Column("workspace_id", sa.String(32), sa.ForeignKey("workspaces.id"), nullable=False),
    sa.Column("name", sa.String(120)),
    sa.Column("job_type", sa.String(32), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("compute_target", sa.String(100), nullable=False),
    sa.Column("controller_id", sa.String(32)),
    sa.Column("claimed_by", sa.String(32)),
    sa.Column("lease_id", sa.String(32)),
    sa.Column("lease_expires_at", sa.Float),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("walltime_seconds", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("result", sa.JSON),
    sa.Column("error", sa.Text),
    sa.Column("error_type", sa.String(32)),
    sa.Column("attempt_errors", sa.JSON),
    sa.Column("billed_core_seconds", sa.Float, nullable=False, default=0.0),
    sa.Column("cache_key", sa.String(64)),
    sa.Column("cached_from", sa.String(32)),
    sa.Column("preview", sa.JSON),
    sa.Index("ix_jobs_workspace_seq", "workspace_id", "seq"),
    sa.Index("ix_jobs_claim", "state", "controller_id", "seq"),
    sa.Index("ix_jobs_lease", "state", "lease_expires_at"),
    sa.Index("ix_jobs_cache", "workspace_id", "cache_key", "state"),
)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _sqlite_pragmas_and_transactions(engine)
        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _sqlite_pragmas_and_transactions(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not the driver, issue BEGIN (so writers can BEGIN IMMEDIATE).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer takes the write lock up front; a deferred BEGIN that later upgrades to a
        # write can fail with SQLITE_BUSY instead of waiting.
        if conn.get_execution_options().get("write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


@contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write: serialised up front on SQLite, row locks on PostgreSQL."""
    with engine.connect().execution_options(write=True) as conn, conn.begin():
        yield conn


@contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn, conn.begin():
        yield conn


def create_schema(engine: Engine) -> None:
    metadata.create_all(engine)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
