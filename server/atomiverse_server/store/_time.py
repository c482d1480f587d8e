from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import lru_cache


def now() -> float:
    return time.time()


def iso(ts: float | None) -> str | None:
    return None if ts is None else _iso(ts)


@lru_cache(maxsize=16384)  # a record's times repeat on every read of it (issue 22)
def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
