"""Finding: the SDK trusted ``server.json``: it sent its API key to whatever listened on the
recorded port. A verified pid does not prove who listens there (a server that is stopping
lives on after closing its socket, and another user may take the port). Now the server proves
it knows ``server.secret`` (0600 in the home, unreadable to other users) by answering a fresh
nonce with an HMAC of it, before the SDK sends a key.

A real embedded server started by the SDK; the impostor is a real HTTP server on a real
socket (in a thread of this process) that does not know the secret. ``server.json`` is pointed
at it while the real server's process still runs: the moment the issue describes, when the
process check passes and the port belongs to someone else."""

from __future__ import annotations

import contextlib
import json
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import atomiverse
import httpx2 as httpx
import pytest
from atomiverse._embedded_identity import ServerIdentityError
from atomiverse_core.localhome import (
    IDENTITY_PATH,
    SERVER_RECORD,
    SERVER_SECRET,
    identity_proof,
    new_nonce,
)
from embeddedhome import running_embedded_home


@pytest.fixture(scope="module")
def own_home(tmp_path_factory):
    with running_embedded_home(tmp_path_factory.mktemp("identity-home")) as home:
        yield home


class Impostor:
    """An HTTP server that answers every request 200 and records every request's headers.
    ``proof``: what it answers on the identity path (a guess; None: 404 like any other
    program that knows nothing of it)."""

    def __init__(self, proof: str | None) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        impostor = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                impostor.requests.append((self.path, dict(self.headers)))
                if self.path.startswith(IDENTITY_PATH) and proof is None:
                    self._answer(404, {"detail": "Not Found"})
                elif self.path.startswith(IDENTITY_PATH):
                    self._answer(200, {"proof": proof})
                else:
                    self._answer(200, {"status": "ok", "jobs": [], "next_cursor": None,
                                      "has_more": False})

            do_POST = do_GET

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def test_the_secret_is_private_and_the_real_server_proves_it(own_home):
    secret_file = own_home / SERVER_SECRET
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    url = json.loads((own_home / SERVER_RECORD).read_text())["url"]
    nonce = new_nonce()
    r = httpx.get(f"{url}{IDENTITY_PATH}", params={"nonce": nonce})
    assert r.status_code == 200
    assert r.json()["proof"] == identity_proof(bytes.fromhex(secret_file.read_text()), nonce)
    # A different nonce, a different proof: an old answer cannot be replayed.
    assert httpx.get(f"{url}{IDENTITY_PATH}", params={"nonce": new_nonce()}).json()["proof"] \
        != r.json()["proof"]
    # Adopting the running server proves it and then works with the key.
    with atomiverse.Client() as c:
        assert c.base_url == url
        assert c.list_jobs().jobs == []


def test_a_nonce_that_is_not_one_is_refused(own_home):
    url = json.loads((own_home / SERVER_RECORD).read_text())["url"]
    for bad in ("", "zz" * 32, "ab", "a" * 10_000):
        assert httpx.get(f"{url}{IDENTITY_PATH}", params={"nonce": bad}).status_code == 422


@pytest.mark.parametrize("proof", [None, "0" * 64], ids=["no-answer", "wrong-proof"])
def test_a_listener_without_the_secret_never_gets_the_key(own_home, proof):
    record_path = own_home / SERVER_RECORD
    real = record_path.read_text()
    impostor = Impostor(proof)
    try:
        record = json.loads(real)
        record_path.write_text(json.dumps({**record, "url": impostor.url}))
        with pytest.raises(ServerIdentityError, match=SERVER_SECRET) as refused, \
                atomiverse.Client() as c:
            c.list_jobs()
        assert str(own_home / SERVER_SECRET) in str(refused.value)
        asked = [path for path, _ in impostor.requests]
        assert any(p.startswith(IDENTITY_PATH) for p in asked), asked
        assert not [h for _, h in impostor.requests
                    if any(k.lower() == "authorization" for k in h)]
    finally:
        record_path.write_text(real)
        impostor.close()
    # The real server, back at its address, is adopted again.
    with atomiverse.Client() as c:
        assert c.list_jobs().jobs == []


def test_a_slow_first_answer_is_asked_again_not_taken_for_an_impostor(tmp_path, monkeypatch):
    """The home's own server, slow to answer its first identity request (just started on a
    loaded machine), is asked again rather than refused; a wrong proof is still final."""
    from atomiverse import _embedded_identity
    from atomiverse_core.localhome import server_secret

    home = tmp_path / "home"
    secret = server_secret(home)
    release = threading.Event()
    asked: list[str] = []

    class SlowFirst(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            if len(asked) == 1:
                release.wait(10)  # held until the client has given up on this request
            nonce = self.path.split("nonce=", 1)[1]
            body = json.dumps({"proof": identity_proof(secret, nonce)}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # given up on
                self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowFirst)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(_embedded_identity, "PROOF_TIMEOUT_SECONDS", 0.5)
    try:
        _embedded_identity.check_server_identity(home, f"http://127.0.0.1:{server.server_port}")
    finally:
        release.set()
        server.shutdown()
        server.server_close()
    assert len(asked) == 2
