"""A short-lived, in-process memory of recent credential lookups.

Authenticating costs a database round trip on every request, which for a controller
reporting results or a client waiting on a batch is most of the request's cost. A lookup is
remembered for ``ttl_seconds`` (one second): revoking a key, or draining a controller,
takes effect within that second on every server process. Only hashes are kept."""

from __future__ import annotations

import threading
import time

from .security import hash_secret


class AuthCache:
    def __init__(self, ttl_seconds: float = 1.0, max_entries: int = 10_000) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, object]] = {}
        self._lock = threading.Lock()

    def lookup(self, kind: str, secret: str) -> tuple[bool, object]:
        """``(True, value)`` if ``secret`` was looked up less than ``ttl`` ago. ``kind`` keeps
        lookups apart: an API key presented on a controller route must not find the
        workspace it names."""
        with self._lock:
            hit = self._entries.get(self._key(kind, secret))
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return True, hit[1]
        return False, None

    def remember(self, kind: str, secret: str, value: object) -> None:
        if value is None:  # failures are never remembered: a new key works at once
            return
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[self._key(kind, secret)] = (time.monotonic(), value)

    @staticmethod
    def _key(kind: str, secret: str) -> str:
        return f"{kind}:{hash_secret(secret)}"


def bearer_secret(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The credential of the one ``Authorization: Bearer`` header, split as FastAPI's
    ``HTTPBearer`` splits it; None with a cookie (sessions and CSRF are the app's)."""
    found = None
    for name, value in headers:
        if name == b"authorization":
            if found is not None:
                return None  # two: let the app decide
            found = value
        elif name == b"cookie":
            return None
    if found is None:
        return None
    scheme, _, secret = found.decode("latin-1").partition(" ")
    return secret if scheme.lower() == "bearer" and secret else None
