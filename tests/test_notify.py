"""The in-process signal that wakes long-polls: a waiter learns every job named by the
fires it slept through, and learns that it cannot know when a fire named none."""

from __future__ import annotations

import asyncio

from atomiverse_server.notify import Signal


def _with_signal(check):
    """Run ``check(signal)`` on an event loop the signal is bound to."""
    async def main():
        signal = Signal()
        signal.bind(asyncio.get_running_loop())
        await check(signal)
    asyncio.run(main())


def test_a_waiter_collects_every_job_named_since_its_snapshot():
    async def check(signal):
        event = signal.snapshot()
        signal.fire(["a"])
        signal.fire(["b", "c"])
        await asyncio.sleep(0)  # fires land on the loop
        named, current = signal.named_since(event)
        assert named == {"a", "b", "c"}
        assert current is signal.snapshot() and not current.is_set()
        assert signal.named_since(current) == (set(), current)  # nothing new yet
    _with_signal(check)


def test_a_fire_without_names_means_anything_may_have_changed():
    async def check(signal):
        event = signal.snapshot()
        signal.fire(["a"])
        signal.fire()
        signal.fire(["b"])
        await asyncio.sleep(0)
        assert signal.named_since(event)[0] is None
    _with_signal(check)


def test_fire_wakes_a_waiter_and_a_timeout_names_nothing():
    async def check(signal):
        event = signal.snapshot()
        await signal.wait(event, 0.01)  # nothing fired: times out
        assert signal.named_since(event) == (set(), event)
        asyncio.get_running_loop().call_later(0.01, signal.fire, ["x"])
        await signal.wait(event, 30)
        assert signal.named_since(event)[0] == {"x"}
    _with_signal(check)
