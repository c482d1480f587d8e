"""For the long-running processes (server, controller, worker): keep what start-up built out
of the garbage collector's way.

Imports, pydantic schemas, FastAPI routes and SQLAlchemy tables are some 130,000 objects in
the server, all alive until the process ends. Left in the collector's care, every full
collection walks all of them: about 50 ms in the server, and one came every other batch of
200 single points, most often while that batch was being validated, before its first job
could start. Frozen after start-up, a full collection walks only what requests and jobs
allocate (a few milliseconds)."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Collect start-up's garbage, then move every survivor to the permanent generation.
    Call once, when start-up is over."""
    gc.collect()
    gc.freeze()
