"""Tables (SQLAlchemy Core) and the engine. Times are stored as UNIX seconds (float)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from atomiverse_core import jsonio
from atomiverse_core.state import State
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.visitors import InternalTraversal

from .sqlitewal import SQLITE_BUSY_SECONDS, use_wal

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
    # A member of a pool (controllers a batch scheduler starts: `atomiverse scale`) also
    # claims the jobs routed to the pool's controller, this id; None: no pool.
    sa.Column("pool_id", sa.String(32)),
    sa.UniqueConstraint("workspace_id", "name", name="uq_controller_name"),
)

jobs = sa.Table(
    "jobs", metadata,
    # seq orders jobs for keyset paging; id is what users see.
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(32), nullable=False, unique=True),
    sa.Column("workspace_id", sa.String(32), sa.ForeignKey("workspaces.id"), nullable=False),
    sa.Column("name", sa.String(120)),
    sa.Column("job_type", sa.String(32), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
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
    sa.Column("error_type", sa.String(32)),
    sa.Column("billed_core_seconds", sa.Float, nullable=False, default=0.0),
    sa.Column("cache_key", sa.String(64)),
    sa.Column("cached_from", sa.String(32)),
    # Claims go batch by batch (created_at, one value per batch), the costliest job of a
    # batch first (claim_rank 0; scheduling.py). Migration 0004.
    sa.Column("claim_rank", sa.Integer, nullable=False, server_default="0"),
    # A composite job's children (a chain's steps) name it, and their step; migration 0006.
    sa.Column("parent_id", sa.String(32)),
    sa.Column("step", sa.Integer),
    # Large values last (migration 0008): SQLite reads a row's values in this order, and a
    # payload or result past a page continues on overflow pages, which every column after
    # it would walk (a list page reads the summary columns, never these).
    sa.Column("preview", sa.JSON),
    sa.Column("error", sa.Text),
    sa.Column("attempt_errors", sa.JSON),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("result", sa.JSON),
    sa.Index("ix_jobs_workspace_seq", "workspace_id", "seq"),
    sa.Index("ix_jobs_parent", "parent_id"),
    sa.Index("ix_jobs_claim", "state", "controller_id", "created_at", "claim_rank", "seq"),
    sa.Index("ix_jobs_lease", "state", "lease_expires_at"),
    # A tenth of each page kept for the row's updates (claim, report, lease), so that their
    # new versions stay on its page (migration 0010).
    postgresql_with={"fillfactor": 90},
)



def state_is(state: str) -> sa.ColumnElement[bool]:
    """``jobs.state = '<state>'`` with the state written into the statement, not bound.
    SQLite decides whether a partial index (``ix_jobs_pending``: state = 'pending') serves a
    query from the bound value of ``state = ?``, and so prepares such a statement again on
    every run, cached or not: about 210 of the claim query's 230 us a run on this machine (issue 28: a claim, the
    hand-off's lease, a report's checks, every calculation). A literal is planned once."""
    return jobs.c.state == _state_literal(state)


def state_filter(state: str) -> sa.ColumnElement[bool]:
    """``state_is(state)`` for a statement that finds its rows by another key (ids, a cache
    leader, a parent): on SQLite ``+jobs.state``, which the planner may test but not look rows
    up by. Without statistics it rates ``state = 'pending'`` as selective as ``id IN (...)`` of
    four or more ids, and walked every pending (or running) job to find a report's few: 45% of
    the server's time with 150,000 jobs queued (issue 30)."""
    return _FilterOnly(jobs.c.state) == _state_literal(state)


def _state_literal(state: str) -> sa.ColumnElement[str]:
    if state not in JOB_STATES:  # written into SQL: only the known names
        raise ValueError(f"not a job state: {state!r}")
    return sa.literal_column(f"'{state}'", sa.String)


class _FilterOnly(sa.sql.expression.ColumnElement[Any]):
    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]

    def __init__(self, column: sa.Column[Any]) -> None:
        self.column = column
        self.type = column.type


@compiles(_FilterOnly)
def _as_is(element: _FilterOnly, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.column, **kw)


@compiles(_FilterOnly, "sqlite")
def _unary_plus(element: _FilterOnly, compiler: Any, **kw: Any) -> str:
    return "+" + compiler.process(element.column, **kw)


JOB_STATES = frozenset(state.value for state in State)

# Migration 0002: indexes for the hot queries the four above do not serve well.
_PENDING = jobs.c.state == "pending"
_FOLLOWER = jobs.c.cached_from.isnot(None)
# Claims by a controller that serves the managed pool (its own jobs OR managed ones): the
# pending jobs in claim order, nothing else, however many finished jobs the table holds.
# Migration 0004 gave this and ix_jobs_claim the claim order's columns.
CLAIM_ORDER = (jobs.c.created_at, jobs.c.claim_rank, jobs.c.seq)
sa.Index("ix_jobs_pending", *CLAIM_ORDER, postgresql_where=_PENDING, sqlite_where=_PENDING)
# A finished job settles the identical jobs that waited for it (cached_from = its id).
sa.Index("ix_jobs_cached_from", jobs.c.cached_from, postgresql_where=_FOLLOWER,
         sqlite_where=_FOLLOWER)
# The result cache (migration 0009): done jobs answer a submission, active ones make it wait.
# Split by state so that a claim's new row version goes into the small index of active jobs,
# not beside its key in one that holds every job (a page not in memory in a big database).
# Jobs without a key (use_cache off) are in neither.
_KEYED = jobs.c.cache_key.isnot(None)
_CACHE_DONE = sa.and_(jobs.c.state == "done", _KEYED)
_CACHE_ACTIVE = sa.and_(sa.or_(jobs.c.state == "pending", jobs.c.state == "running"), _KEYED)
sa.Index("ix_jobs_cache_done", jobs.c.workspace_id, jobs.c.cache_key,
         postgresql_where=_CACHE_DONE, sqlite_where=_CACHE_DONE)
sa.Index("ix_jobs_cache_active", jobs.c.workspace_id, jobs.c.cache_key, jobs.c.state,
         postgresql_where=_CACHE_ACTIVE, sqlite_where=_CACHE_ACTIVE)
# Listing a workspace filtered by state, newest first; counts by state.
sa.Index("ix_jobs_workspace_state_seq", jobs.c.workspace_id, jobs.c.state, jobs.c.seq)

# Rate limits live in the database so that several server processes enforce one limit.
# GCRA: ``tat`` is the theoretical arrival time of the next allowed request.
rate_limits = sa.Table(
    "rate_limits", metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("tat", sa.Float, nullable=False),
)

# Dashboard sessions: the cookie is a random secret, stored here only as its SHA-256 hash, so
# whoever reads the database cannot make a cookie; signing out deletes the row.
sessions = sa.Table(
    "sessions", metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("api_key_id", sa.String(32), sa.ForeignKey("api_keys.id"), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Index("ix_sessions_expires", "expires_at"),
)

# Random values every server process on this database shares (made by migration 0005):
# ``cursor`` keys the encryption of list cursors.
server_secrets = sa.Table(
    "server_secrets", metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("value", sa.String(128), nullable=False),
)

# A batch sent again with the same Idempotency-Key gets the first response back.
idempotency_keys = sa.Table(
    "idempotency_keys", metadata,
    sa.Column("workspace_id", sa.String(32), sa.ForeignKey("workspaces.id"), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("response", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_idempotency_created", "created_at"),
)


def database_url(url: str) -> str:
    """Normalise a database URL: ``postgresql://`` and ``postgres://`` mean the psycopg (3)
    driver, the one this package depends on."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


# Results (gradients, orbital energies, bond orders) are JSON columns: orjson, not the stdlib.
_JSON_CODEC = {"json_serializer": jsonio.dumps_str, "json_deserializer": jsonio.loads}


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 20) -> Engine:
    """SQLite: WAL, one writer at a time (``BEGIN IMMEDIATE`` for :func:`write_tx`).
    PostgreSQL: a connection pool per process; several server processes may share one
    database, all coordination is in it (row locks, ``FOR UPDATE SKIP LOCKED``)."""
    url = database_url(url)
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False,
                                                     "timeout": SQLITE_BUSY_SECONDS},
                                  **_JSON_CODEC)
        _sqlite_pragmas_and_transactions(engine)
        return engine
    # pre_ping survives a database restart; recycle keeps idle connections from being cut by
    # a firewall or pgbouncer; the timeout turns pool exhaustion into an error, not a hang.
    return sa.create_engine(url, pool_pre_ping=True, pool_size=pool_size,
                            max_overflow=max_overflow, pool_recycle=1800, pool_timeout=30,
                            connect_args={"application_name": "atomiverse-server"},
                            **_JSON_CODEC)


# The server's scheduler checkpoints the write-ahead log every second (checkpoint_wal), so
# no request waits for one: a commit that checkpoints copies the log into the database and
# fsyncs, 10-30 ms, and such a commit was often the one holding a big batch's first claim.
# The automatic checkpoint stays as a backstop, for a process without the scheduler.
SQLITE_BACKSTOP_CHECKPOINT_PAGES = 10_000  # about 40 MB of log


_writes = 0  # write transactions that changed something, in this process; see checkpoint_wal
# Set by each of them: the WAL checkpointer sleeps on it, so an idle server wakes for nothing.
wrote = threading.Event()
_writes_at_checkpoint = -1


def checkpoint_wal(engine: Engine) -> None:
    """Copy what SQLite's write-ahead log holds into the database, waiting for no reader or
    writer (PASSIVE). Nothing to do on PostgreSQL, nor when nothing was written since the
    last one: an idle server does no I/O."""
    global _writes_at_checkpoint
    if engine.dialect.name != "sqlite" or _writes == _writes_at_checkpoint:
        return
    _writes_at_checkpoint = _writes
    raw = engine.raw_connection()  # autocommit (see below): a checkpoint runs outside BEGIN
    try:
        raw.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").close()
    finally:
        raw.close()


def _sqlite_pragmas_and_transactions(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not the driver, issue BEGIN (so writers can BEGIN IMMEDIATE).
        dbapi_conn.isolation_level = None
        use_wal(dbapi_conn)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA wal_autocheckpoint={SQLITE_BACKSTOP_CHECKPOINT_PAGES}")
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
    global _writes
    with engine.connect().execution_options(write=True) as conn:
        driver = conn.connection.dbapi_connection
        before = getattr(driver, "total_changes", None)  # SQLite's count of rows changed
        with conn.begin():
            yield conn
        if before is None or driver.total_changes != before:
            _writes += 1
            if not wrote.is_set():
                wrote.set()


@contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn, conn.begin():
        yield conn


MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant will do: it only has to be the same in every server process.
_MIGRATION_LOCK_KEY = 0x61746F6D  # "atom"
# Alembic's command API keeps its migration context in module globals (alembic.context):
# two threads of one process migrating at once, even different databases, break each other.
_ALEMBIC_IN_THIS_PROCESS = threading.Lock()


def alembic_config(engine: Engine | None = None):  # type: ignore[no-untyped-def]
    """Alembic configured from the package itself (no alembic.ini), so migrations run from an
    installed wheel as well as from a checkout."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url",
                            engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (``alembic upgrade head``), on SQLite or PostgreSQL.

    Safe to call from several processes at once (every server does at startup): the whole
    upgrade runs in one transaction that holds a database-wide lock (an advisory lock on
    PostgreSQL, the write lock of ``BEGIN IMMEDIATE`` on SQLite), so the second process
    waits, then finds the schema already current; threads of one process take turns. A
    database made before migrations existed (tables created directly from this module, no
    ``alembic_version``) is adopted as revision 0001, which creates exactly those tables."""
    from alembic import command

    cfg = alembic_config(engine)
    with _ALEMBIC_IN_THIS_PROCESS, write_tx(engine) as conn:
        if is_postgres(engine):
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"),
                         {"k": _MIGRATION_LOCK_KEY})
        tables = set(sa.inspect(conn).get_table_names())
        cfg.attributes["connection"] = conn
        if "jobs" in tables and "alembic_version" not in tables:
            command.stamp(cfg, "0001")
        command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def create_schema(engine: Engine) -> None:
    """Kept for callers of the old name: the schema now comes from the migrations."""
    migrate(engine)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
