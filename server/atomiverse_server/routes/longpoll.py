"""Helpers for long-polls (claim, watch, wait): wait for the first of several things, notice a
client that has gone, and when a wave of changes is answered."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request


async def until_disconnected(request: Request) -> None:
    """Returns when the client has gone. A long-poll parked for a dead client (a controller
    killed with -9, a closed script) must end at once: left parked, a claim poll takes work
    for nobody and a watch holds a place until its timeout."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def first(*waits: Any) -> None:
    """Until the first of these is done; the others are cancelled (a task or future given as
    such is only waited for, not cancelled: it belongs to the caller)."""
    tasks = [w if isinstance(w, asyncio.Future) else asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task, given in zip(tasks, waits, strict=True):
            if task is not given:
                task.cancel()


def coalesced_until(started: float, coalesce_seconds: float, deadline: float) -> float:
    """When a watch or a wait that has seen a change answers: ``coalesce_seconds`` after it started,
    not after the change. A batch's jobs change dozens of times a second, and each answer
    costs a request both ways, so a wave is answered once per window; but the client asks
    again the moment it is answered, so a change after a quiet spell (the last job of a
    batch) finds the window over and is answered at once, not a window late."""
    return min(deadline, started + coalesce_seconds)
