"""The pool's poller: one ``select.poll`` kept for the pool's life, its descriptors brought up
to date before each wait (a worker replaced, the wakeup pipe)."""

from __future__ import annotations

import os

from atomiverse_controller.pool.poller import Poller


def test_only_the_watched_readable_descriptors_are_returned() -> None:
    poller: Poller[str] = Poller()
    (r1, w1), (r2, w2) = os.pipe(), os.pipe()
    try:
        assert poller.wait({r1: "one", r2: "two"}, 0) == []
        os.write(w1, b"x")
        assert poller.wait({r1: "one", r2: "two"}, 5) == ["one"]
        # No longer watched (its worker was replaced): readable, but not reported.
        assert poller.wait({r2: "two"}, 0) == []
        os.write(w2, b"x")
        assert poller.wait({r2: "two"}, 5) == ["two"]
        # Watched again under another value (a descriptor number reused by a new worker).
        assert sorted(poller.wait({r1: "new", r2: "two"}, 5)) == ["new", "two"]
    finally:
        for fd in (r1, w1, r2, w2):
            os.close(fd)


def test_a_closed_other_end_counts_as_readable() -> None:
    """A worker that died: its socket reads EOF, which the pool must hear to replace it."""
    poller: Poller[str] = Poller()
    r, w = os.pipe()
    try:
        assert poller.wait({r: "worker"}, 0) == []
        os.close(w)
        assert poller.wait({r: "worker"}, 5) == ["worker"]
    finally:
        os.close(r)
