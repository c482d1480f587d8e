"""A controller's goodbye (hand back, deregister) when the network drops it: tried again for
a few seconds, so a stopping controller is not left "online" in the listing and does not
exit as failed. Found in CI: a controller's idle exit after 5 s met uvicorn's 5 s keep-alive
closing the same connection; its one try at deregistering was lost and the `atomiverse
scale` test waited in vain for it to leave (tests/test_scale_local.py)."""

from __future__ import annotations

import signal

import pytest
from controller_faults import Fleet, wait_for
from tcpproxy import TCPProxy

pytestmark = pytest.mark.slow  # the fault suite: real processes broken mid-batch


def _status(fleet: Fleet, name: str) -> str:
    """As the operator's ``atomiverse admin list-controllers managed-pool`` shows it."""
    listing = fleet.srv.admin("list-controllers", "managed-pool")
    return next(c["status"] for c in listing if c["name"] == name)


def test_a_goodbye_refused_once_is_tried_again_and_the_controller_leaves_cleanly(tmp_path):
    with Fleet(tmp_path / "srv") as fleet, \
            TCPProxy("127.0.0.1", int(fleet.srv.url.rsplit(":", 1)[1])) as proxy:
        proc = fleet.controller("leaver", "--engine", "instant", server_url=proxy.url)
        assert _status(fleet, "leaver") == "online"
        proxy.cut("reset")  # the server unreachable the moment the controller says goodbye
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "event=deregister_retry" in fleet.srv.controller_log("leaver") or
                 proc.poll() is not None, timeout=60, what="the goodbye tried again")
        log = fleet.srv.controller_log("leaver")
        assert "event=deregister_retry" in log, log[-3000:]
        proxy.restore()
        assert proc.wait(60) == 0, fleet.srv.controller_log("leaver")[-3000:]
        assert "event=deregister_failed" not in fleet.srv.controller_log("leaver")
        assert _status(fleet, "leaver") == "offline"
