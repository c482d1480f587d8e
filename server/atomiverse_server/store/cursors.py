"""Opaque list cursors. A cursor was the base64 of the last job's global ``seq``, which told
every workspace how many jobs the whole server had stored, and between two lists how many
others had submitted (issue 23). Now it is that ``seq`` and a tag of the workspace, encrypted
as one 16-byte block with a keyed permutation (a 4-round Feistel network over HMAC-SHA256,
Luby-Rackoff): it reveals nothing, and a cursor altered or taken from another workspace does
not decrypt to a valid one. The key is a random value the database holds (migration 0005), so
every server process on it reads the same cursors, across restarts."""

from __future__ import annotations

import base64
import binascii
import hmac
from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..db import server_secrets

_ROUNDS = 4
_keys: dict[str, bytes] = {}


class InvalidCursor(ValueError):
    pass


def encode_cursor(conn: Connection, *, workspace_id: str, seq: int) -> str:
    return encode_with(cursor_key(conn), workspace_id=workspace_id, seq=seq)


def decode_cursor(conn: Connection, *, workspace_id: str, cursor: str) -> int:
    """The ``seq`` a cursor stands for; InvalidCursor unless this server issued it for this
    workspace."""
    return decode_with(cursor_key(conn), workspace_id=workspace_id, cursor=cursor)


def encode_with(key: bytes, *, workspace_id: str, seq: int) -> str:
    """:func:`encode_cursor` with the key already read (:func:`cursor_key`)."""
    block = seq.to_bytes(8, "big") + _tag(key, workspace_id)
    return base64.urlsafe_b64encode(_permute(key, block)).decode().rstrip("=")


def decode_with(key: bytes, *, workspace_id: str, cursor: str) -> int:
    """:func:`decode_cursor` with the key already read (:func:`cursor_key`)."""
    try:
        block = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (ValueError, binascii.Error):
        block = b""
    if len(block) == 16:
        plain = _unpermute(key, block)
        if hmac.compare_digest(plain[8:], _tag(key, workspace_id)):
            return int.from_bytes(plain[:8], "big")
    raise InvalidCursor("cursor: not a cursor this server issued for this workspace")


def cursor_key(conn: Connection) -> bytes:
    """The database's cursor key, read once per process and database."""
    url = conn.engine.url.render_as_string(hide_password=True)
    if url not in _keys:
        value = conn.execute(sa.select(server_secrets.c.value)
                             .where(server_secrets.c.name == "cursor")).scalar_one()
        _keys[url] = bytes.fromhex(value)
    return _keys[url]


@lru_cache(maxsize=4096)  # one per workspace paging now: an HMAC less per page
def _tag(key: bytes, workspace_id: str) -> bytes:
    return hmac.digest(key, b"workspace|" + workspace_id.encode(), "sha256")[:8]


def _round(key: bytes, i: int, half: bytes) -> bytes:
    # hmac.digest is the one-shot C path: a tenth of a list page went to hmac.new objects.
    return hmac.digest(key, bytes([i]) + half, "sha256")[:8]


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(8, "big")


def _permute(key: bytes, block: bytes) -> bytes:
    left, right = block[:8], block[8:]
    for i in range(_ROUNDS):
        left, right = right, _xor(left, _round(key, i, right))
    return left + right


def _unpermute(key: bytes, block: bytes) -> bytes:
    left, right = block[:8], block[8:]
    for i in reversed(range(_ROUNDS)):
        left, right = _xor(right, _round(key, i, left)), left
    return left + right
