"""Alembic migrations of the server's schema (run with ``atomiverse admin migrate``, and by
every server at startup through :func:`atomiverse_server.db.migrate`)."""
