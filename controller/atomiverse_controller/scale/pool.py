"""The pool's own controller: the name jobs are submitted to, registered by the scaler with
the workspace key, whose token then reads the pool's state. It claims nothing itself."""

from __future__ import annotations

from ..api import ControllerAPI, ServerRefused, save_token
from .site import SiteConfig


def register_pool(site: SiteConfig, api_key: str) -> tuple[ControllerAPI, float]:
    """Register (or come back as) the pool's controller; returns the API holding its token
    and the server's heartbeat interval (seconds)."""
    api = ControllerAPI(site.server)
    token_file = site.directory / "pool.token"
    fields = {"name": site.target, "slots": site.max_nodes * site.slots_per_node,
              "cores_per_job": site.cores_per_job, "capacity": None, "engines": {},
              "holding": None}
    out = None
    if token_file.exists():
        try:
            out = api.register(api_key=token_file.read_text().strip(), **fields)
        except ServerRefused:
            out = None  # the server forgot it: register with the key again
    if out is None:
        out = api.register(api_key=api_key, **fields)
        token_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        save_token(token_file, out["token"])
    return api, float(out["heartbeat_seconds"])
