"""The embedded server proves it is its home's server: a nonce in, HMAC(server secret, nonce)
out (``atomiverse_core.localhome.identity_proof``). The SDK asks before it sends its API key to a
server it found through ``server.json``; a program of another user on the recorded port cannot
answer, as it cannot read the 0600 secret. Unauthenticated by design and cheap: one HMAC, no
database. Only the embedded server has a home secret; any other server answers 404."""

from __future__ import annotations

from typing import Annotated

from atomiverse_core.localhome import IDENTITY_PATH, NONCE_BYTES, identity_proof
from fastapi import APIRouter, HTTPException, Query, Request

router = APIRouter(tags=["embedded"])

_HEX_NONCE = f"^[0-9a-f]{{{NONCE_BYTES * 2}}}$"


@router.get(IDENTITY_PATH, include_in_schema=False)
async def identity(request: Request,
                   nonce: Annotated[str, Query(pattern=_HEX_NONCE)]) -> dict[str, str]:
    secret: bytes | None = getattr(request.app.state, "identity_secret", None)
    if secret is None:
        raise HTTPException(404, "not an embedded server")
    return {"proof": identity_proof(secret, nonce)}
