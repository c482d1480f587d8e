"""A short-lived, in-process memory of recent credential lookups.

Authenticating costs a database round trip on every request, which for a controller
reporting results or a client waiting on a batch is most of the request's cost. A lookup is
remembered for ``ttl_seconds`` (one second): revoking a key, or draining a controller,
takes effect within that second on every server process. Only hashes are kept."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from .security import hash_secret

T = TypeVar("T")


class AuthCache:
    def __init__(self, ttl_seconds: float = 1.0, max_entries: int = 10_000) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, object]] = {}
        self._lock = threading.Lock()

    def get_or_load(self, kind: str, secret: str, load: Callable[[], T | None]) -> T | None:
        """``kind`` keeps lookups apart: an API key presented on a controller route must
        not find the workspace it names."""
        key = f"{kind}:{hash_secret(secret)}"
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]  # type: ignore[return-value]
        value = load()
        if value is not None:  # failures are never remembered: a new key works at once
            with self._lock:
                if len(self._entries) >= self.max_entries:
                    self._entries.clear()
                self._entries[key] = (now, value)
        return value
