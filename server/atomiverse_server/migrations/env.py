"""Alembic environment, configured from the package (see ``atomiverse_server.db``).

:func:`atomiverse_server.db.migrate` passes an open connection, already inside the transaction
(and lock) the upgrade runs in, as ``config.attributes["connection"]``. Run without one (the
``alembic`` command line with ``-x url=...`` or ``sqlalchemy.url``), it opens its own."""

from __future__ import annotations

from alembic import context

from atomiverse_server.db import make_engine, metadata

config = context.config


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=connection.dialect.name == "sqlite",
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") \
        or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database URL: pass -x url=... or set sqlalchemy.url")
    engine = make_engine(url)
    try:
        with engine.connect().execution_options(write=True) as conn, conn.begin():
            _run(conn)
    finally:
        engine.dispose()


def run_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
