"""API keys and controller tokens: random secrets shown once, stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid

API_KEY_PREFIX = "av_"
CONTROLLER_TOKEN_PREFIX = "avc_"


def new_id() -> str:
    return uuid.uuid4().hex


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def new_controller_token() -> str:
    return CONTROLLER_TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def display_prefix(secret: str) -> str:
    """Enough of a key to recognise it in a listing, never enough to use it."""
    return secret[:8]
