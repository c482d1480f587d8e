"""Several server URLs for one deployment: the SDK client and the controller are given a list
(``"http://a:8000,http://b:8000"``, or a list), talk to one, and move to the next when that one
stops answering. The retry policy (:mod:`.retry`) decides whether and when to try again; this
only says where.

Several server processes behind one database serve the same workspaces, so any of them can
take any request: a controller's token, an idempotency key, a lease are all in the database."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import httpx2 as httpx

# The answers that say "this server cannot serve now", where another one may: a proxy with no
# server behind it, a server without its database, a timeout at a proxy.
FAILOVER_STATUSES = frozenset({502, 503, 504})


def parse_urls(value: str | Sequence[str]) -> list[str]:
    """``"http://a, http://b/"`` or ``["http://a", "http://b/"]``: the URLs without trailing
    slashes, duplicates dropped, order kept. ValueError if none is given or one has no
    http(s) scheme (named in the message)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    urls = list(dict.fromkeys(u.strip().rstrip("/") for u in items if u and u.strip()))
    if not urls:
        raise ValueError("no server URL given")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"server URL {url!r}: must start with http:// or https://")
    return urls


def should_fail_over(error: BaseException) -> bool:
    """Whether a failed request is a reason to use another server next: no connection, no
    answer, or a 502/503/504 (``error.response``, if it carries one)."""
    if isinstance(error, httpx.TransportError):
        return True
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None) in FAILOVER_STATUSES


class ServerList:
    """The URLs and the one in use. Thread-safe: after a failure, :meth:`failed` moves on
    only if the failed URL is still the current one, so several threads that saw the same
    server fail move once, not once each."""

    def __init__(self, urls: str | Sequence[str]) -> None:
        self.urls = parse_urls(urls)
        self._index = 0
        self._lock = threading.Lock()

    @property
    def current(self) -> str:
        return self.urls[self._index]

    def failed(self, url: str) -> str:
        """``url`` did not answer: the URL to use next."""
        with self._lock:
            if self.urls[self._index] == url:
                self._index = (self._index + 1) % len(self.urls)
            return self.urls[self._index]

    def __len__(self) -> int:
        return len(self.urls)
