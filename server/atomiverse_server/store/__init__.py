"""Storage: every SQL statement lives here. Functions take keyword arguments and a
connection; every job query is scoped by workspace here, once, not in the routes."""
