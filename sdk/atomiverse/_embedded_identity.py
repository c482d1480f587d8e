"""Before the SDK sends its API key to the embedded server it found (``server.json``), the
server proves it is this home's server: it answers a fresh random nonce with an HMAC keyed by
``server.secret``, a 0600 file in the home that no other user can read. One round trip when
a server is adopted or started, none per request. Another user's program listening on the
recorded port cannot answer, and never sees the key."""

from __future__ import annotations

import hmac
from pathlib import Path

import httpx2 as httpx
from atomiverse_core.localhome import (
    IDENTITY_PATH,
    SERVER_SECRET,
    identity_proof,
    new_nonce,
    server_secret,
)

from ._embedded_health import EmbeddedServerError

PROOF_TIMEOUT_SECONDS = 5.0
PROOF_ATTEMPTS = 3  # each PROOF_TIMEOUT_SECONDS long


class ServerIdentityError(EmbeddedServerError):
    """What answers at the recorded address could not prove it is this home's server."""


def check_server_identity(home: Path, url: str) -> None:
    """Raise ``ServerIdentityError`` unless the server at ``url`` proves it knows this home's
    server secret. Sends no credentials."""
    secret_file = home / SERVER_SECRET
    try:
        secret = server_secret(home)
    except (OSError, ValueError) as e:
        raise ServerIdentityError(f"cannot read the embedded server's secret {secret_file} "
                                  f"({e}); the API key was not sent") from e
    nonce = new_nonce()
    answer = _ask(url, nonce)
    if answer is None or not hmac.compare_digest(answer, identity_proof(secret, nonce)):
        raise ServerIdentityError(
            f"what answers at {url} (recorded in {home / 'server.json'}) could not prove it "
            f"knows the embedded server's secret {secret_file}: it may be another user's "
            f"program on this home's port; the API key was not sent. If the server was "
            f"stopping, run `atomiverse local stop` and try again")


def _ask(url: str, nonce: str) -> str | None:
    # A server that is there but slow to answer (just started, a loaded machine) is asked
    # again; anything else (no answer, a wrong or missing proof) is final.
    for attempt in range(PROOF_ATTEMPTS):
        try:
            r = httpx.get(f"{url}{IDENTITY_PATH}", params={"nonce": nonce},
                          timeout=PROOF_TIMEOUT_SECONDS)
            proof = r.json().get("proof") if r.status_code == 200 else None
        except httpx.TimeoutException:
            if attempt + 1 < PROOF_ATTEMPTS:
                continue
            return None
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return proof if isinstance(proof, str) else None
    return None
