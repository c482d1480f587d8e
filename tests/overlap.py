"""Tests that are mostly a fixed wait run alongside the rest of the session.

The fault suite cuts a controller's network for the 5 minutes issue #30 names; for most of
that time nothing happens but the clock. A test marked ``overlap(scenario, **kwargs)`` runs
``scenario(tmp_path, stop, **kwargs)`` in a thread of its own from the start of the session's
test loop, while the other tests run one after another as usual; the test item itself is
moved to the end of the session, and its ``overlap_outcome`` fixture's ``result()`` waits
for the scenario and returns its value or re-raises what it raised, assertion or error, with
its traceback: checks that must run in the test's own thread (an engine called directly)
go there. A scenario must keep its processes and files to itself and clean them up, and use
``stop.wait(seconds)`` for its fixed waits, so that an interrupted session ends it at once.

Deselected (``-m "not slow"``, ``-k``), the scenario does not start. With ``--collect-only``
nothing starts.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

_SCENARIOS = pytest.StashKey[dict[str, Future]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "overlap(scenario, **kwargs): run scenario(tmp_path, stop, **kwargs) in a "
        "thread beside the session's other tests; the test, run last, waits for its outcome "
        "(tests/overlap.py)")


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: only selected scenarios start
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    overlapped = [item for item in items if item.get_closest_marker("overlap")]
    items[:] = [item for item in items if not item.get_closest_marker("overlap")] + overlapped


def _run(scenario: Callable[..., Any], stop: threading.Event, kwargs: dict[str, Any],
         future: Future) -> None:
    home = Path(tempfile.mkdtemp(prefix="atomiverse-overlap-"))
    try:
        value = scenario(home, stop, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - handed to the test item, which re-raises it
        future.set_exception(exc)
        return  # the directory is kept: the scenario's logs say what went wrong
    future.set_result(value)
    shutil.rmtree(home, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Iterator[None]:
    stop = threading.Event()
    futures: dict[str, Future] = session.config.stash.setdefault(_SCENARIOS, {})
    threads = []
    if not session.config.option.collectonly:
        for item in session.items:
            if (marker := item.get_closest_marker("overlap")) is None:
                continue
            future = futures[item.nodeid] = Future()
            thread = threading.Thread(target=_run, name=f"overlap {item.name}",
                                      args=(marker.args[0], stop, marker.kwargs, future))
            thread.start()
            threads.append(thread)
    try:
        return (yield)
    finally:
        stop.set()
        for thread in threads:
            thread.join()


@pytest.fixture
def overlap_outcome(request: pytest.FixtureRequest) -> Future:
    """This test's scenario, started with the session: ``.result()`` waits for it and
    returns what it returned, or re-raises what it raised (failing the test, not its
    setup)."""
    return request.config.stash[_SCENARIOS][request.node.nodeid]
