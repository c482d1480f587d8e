"""JSON on the wire and in the database, through orjson.

Results carry gradients, orbital energies and bond orders; the standard library spent more CPU
encoding and decoding them, hop after hop (client, server, database, controller), than the
rest of the platform spent on a single point. orjson does the same in a tenth of the time.
It also refuses NaN and Infinity, which are not JSON, on the way in."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic_core import to_jsonable_python

JSONDecodeError = orjson.JSONDecodeError  # a subclass of json.JSONDecodeError and ValueError


def dumps(obj: Any, *, sort_keys: bool = False) -> bytes:
    """UTF-8 JSON; pydantic models, tuples, enums and numpy scalars become plain JSON."""
    return orjson.dumps(obj, default=to_jsonable_python,
                        option=orjson.OPT_SORT_KEYS if sort_keys else 0)


def dumps_str(obj: Any) -> str:
    return dumps(obj).decode()


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    return orjson.loads(data)


def raw(text: str | bytes) -> orjson.Fragment:
    """Already-encoded JSON (say, a result as stored) to embed as-is by :func:`dumps`."""
    return orjson.Fragment(text)
