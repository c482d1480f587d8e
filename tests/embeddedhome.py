"""An embedded server of this test's own, started by the SDK in a home of its own (as a user
would: no base URL, no key), and stopped afterwards with the environment put back."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

_ENV = ("ATOMIVERSE_HOME", "ATOMIVERSE_BASE_URL", "ATOMIVERSE_API_KEY")


@contextlib.contextmanager
def embedded_env(home: Path) -> Iterator[Path]:
    """The SDK pointed at ``home``'s embedded server (no base URL, no key, the default client
    reset); afterwards that server stopped and the environment put back."""
    import atomiverse

    saved = {k: os.environ.get(k) for k in _ENV}
    os.environ["ATOMIVERSE_HOME"] = str(home)
    os.environ.pop("ATOMIVERSE_BASE_URL", None)
    os.environ.pop("ATOMIVERSE_API_KEY", None)
    atomiverse.configure()
    try:
        yield home
    finally:
        atomiverse.stop_local()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        atomiverse.configure()


@contextlib.contextmanager
def running_embedded_home(home: Path) -> Iterator[Path]:
    """Start the embedded server for ``home``; yield the home as the SDK names it."""
    from atomiverse import _embedded

    with embedded_env(home):
        _embedded.ensure_running()
        yield home.resolve()
