"""The one retry policy (``atomiverse_core.retry``) and the loops that use it.

The client and controller cases talk HTTP to ``_ScriptedServer``: not the Atomiverse server
but a real socket server that answers a script of statuses, to show what each caller does
with a 503, a 429 or a refusal (the real server does not fail on request). The loops against
the real server are in test_reliability.py, test_controller_faults.py, test_embedded_heal.py."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

import pytest
from atomiverse import Client
from atomiverse._exceptions import APIConnectionError, InternalServerError, RateLimitError
from atomiverse_controller.api import ControllerAPI, ServerRefused, ServerUnavailable
from atomiverse_core import retry


class _ScriptedServer:
    """Answers each request with the next (status, headers) of ``script``; the last one
    repeats. Records every request's method, path and Idempotency-Key."""

    def __init__(self, script: list[tuple[int, dict[str, str]]]) -> None:
        self.script, self.seen = list(script), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                outer.seen.append((self.command, self.path, self.headers.get("Idempotency-Key")))
                status, headers = outer.script.pop(0) if len(outer.script) > 1 else outer.script[0]
                body = json.dumps({"detail": f"scripted {status}", "ok": status < 400}).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


OK: tuple[int, dict[str, str]] = (200, {})
UNAVAILABLE: tuple[int, dict[str, str]] = (503, {"Retry-After": "0"})


# ----- classification and waits -----------------------------------------------------------
@pytest.mark.parametrize(("status", "retry_after", "safe", "patient", "expected"), [
    (503, None, True, False, True), (502, None, True, False, True),
    (408, None, True, False, True), (504, None, True, False, True),
    (503, None, False, False, False),          # a POST without an idempotency key
    (500, None, True, False, False),           # a bug, not a hiccup, for a waiting user
    (429, 1.0, False, False, True), (429, 30.0, True, False, False), (429, None, True, False, False),
    (401, None, True, True, False), (403, None, True, True, False),
    (500, None, True, True, True), (429, None, True, True, True), (408, None, True, True, True),
    (422, None, True, True, False), (404, None, True, False, False), (200, None, True, True, False),
])
def test_which_statuses_are_worth_another_try(status, retry_after, safe, patient, expected):
    assert retry.worth_retrying(status, retry_after, safe_to_repeat=safe,
                                patient=patient) is expected


@pytest.mark.parametrize(("header", "seconds"), [
    ("1.5", 1.5), ("0", 0.0), ("-3", 0.0), ("nan", None), ("inf", None), ("soon", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", None),
])
def test_retry_after_is_read_in_seconds(header, seconds):
    assert retry.retry_after_seconds({"Retry-After": header}) == seconds
    assert retry.retry_after_seconds({}) is None


def test_backoff_doubles_to_its_cap_with_jitter_on_top():
    policy = retry.Backoff(first_seconds=0.5, max_seconds=4.0, jitter=0.5)
    for failures, base in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        waits = [policy.seconds(failures) for _ in range(200)]
        assert all(base <= w <= base * 1.5 for w in waits), (failures, min(waits), max(waits))
        assert len(set(waits)) > 1  # jittered: a fleet does not retry in step
    # A server's Retry-After replaces the doubling, capped like it
    assert 1.0 <= policy.seconds(1, retry_after=1.0) <= 1.5
    assert policy.seconds(1, retry_after=600.0) <= 4.0 * 1.5
    assert retry.RATE_LIMITED.seconds(1, retry_after=60.0) == 60.0
    assert retry.REGISTER.seconds(3) == 2.0  # no jitter


def test_retrying_tries_only_accepted_failures_and_at_most_attempts_times():
    calls = []

    def flaky():
        calls.append(1)
        raise ServerUnavailable("down", retry_after_seconds=0.0)

    policy = retry.retrying(retry.CLIENT, attempts=3,
                            retry_on=lambda e: isinstance(e, ServerUnavailable))
    with pytest.raises(ServerUnavailable):
        policy(flaky)
    assert len(calls) == 3
    calls.clear()

    def refused():
        calls.append(1)
        raise ServerRefused("no")

    with pytest.raises(ServerRefused):
        policy(refused)
    assert len(calls) == 1


def test_a_stop_ends_the_wait_at_once_without_another_try():
    stop, calls = threading.Event(), []

    def down():
        calls.append(1)
        raise ServerUnavailable("down")

    def told_to_stop_meanwhile(error: BaseException) -> bool:
        stop.set()  # as the daemon does from its signal handler while the loop waits
        return True

    # A 30 s wait (CLAIM's cap) that the stop cuts short: the test would time out otherwise.
    policy = retry.retrying(retry.Backoff(30.0, 30.0), retry_on=told_to_stop_meanwhile,
                            stop_event=stop)
    with pytest.raises(retry.Stopped):
        policy(down)
    assert len(calls) == 1


def test_poll_returns_the_first_answer_or_none_and_passes_errors_on():
    answers = iter([None, None, "up"])
    assert retry.poll(lambda: next(answers), timeout_seconds=60, interval_seconds=0) == "up"
    assert retry.poll(lambda: None, timeout_seconds=0, interval_seconds=0) is None

    def exited():
        raise RuntimeError("the server exited while starting")

    with pytest.raises(RuntimeError, match="exited"):
        retry.poll(exited, timeout_seconds=60, interval_seconds=0)


# ----- the SDK client ---------------------------------------------------------------------
def test_client_post_keeps_one_idempotency_key_across_its_retries():
    with _ScriptedServer([UNAVAILABLE, UNAVAILABLE, OK]) as server, \
            Client(api_key="k", base_url=server.url, max_retries=3) as client:
        out = client.request("POST", "/x", json={"a": 1}, idempotency_key="key-1")
    assert out["ok"] is True
    assert [s[2] for s in server.seen] == ["key-1"] * 3


def test_client_post_without_a_key_is_not_sent_twice():
    with _ScriptedServer([UNAVAILABLE, UNAVAILABLE, OK]) as server, \
            Client(api_key="k", base_url=server.url, max_retries=3) as client:
        with pytest.raises(InternalServerError, match="scripted 503"):
            client.request("POST", "/x", json={"a": 1})
        assert len(server.seen) == 1
        # ... unless the caller says it is safe to repeat
        assert client.request("POST", "/x", json={"a": 1}, retryable=True)["ok"] is True
    assert len(server.seen) == 3


def test_client_gives_up_after_max_retries():
    with (_ScriptedServer([UNAVAILABLE]) as server,
          Client(api_key="k", base_url=server.url, max_retries=2) as client,
          pytest.raises(InternalServerError, match="scripted 503")):
        client.request("GET", "/x")
    assert len(server.seen) == 3


def test_client_waits_out_a_short_retry_after_and_raises_a_long_one():
    with _ScriptedServer([(429, {"Retry-After": "0"}), OK]) as server, \
            Client(api_key="k", base_url=server.url) as client:
        assert client.request("POST", "/x", json={})["ok"] is True  # even without a key
    assert len(server.seen) == 2
    with (_ScriptedServer([(429, {"Retry-After": "30"}), OK]) as server,
          Client(api_key="k", base_url=server.url) as client,
          pytest.raises(RateLimitError) as caught):
        client.request("GET", "/x")
    assert caught.value.retry_after_seconds == 30.0 and len(server.seen) == 1


def test_client_asks_whether_it_is_still_wanted_before_every_attempt():
    asked = []

    def wanted() -> bool:
        asked.append(1)
        return len(asked) < 3

    with (_ScriptedServer([UNAVAILABLE]) as server,
          Client(api_key="k", base_url=server.url, max_retries=5) as client,
          pytest.raises(APIConnectionError, match="no longer wanted")):
        client.request("GET", "/x", wanted=wanted)
    assert len(server.seen) == 2 and len(asked) == 3


def test_client_retries_a_refused_connection_then_says_it_could_not_reach():
    with _ScriptedServer([OK]) as server:
        url = server.url
    with (Client(api_key="k", base_url=url, max_retries=1) as client,
          pytest.raises(APIConnectionError, match="could not reach")):
        client.request("GET", "/x")


# ----- the controller's side --------------------------------------------------------------
@pytest.mark.parametrize(("answer", "error"), [
    ((500, {}), ServerUnavailable), ((503, {}), ServerUnavailable),
    ((429, {"Retry-After": "1"}), ServerUnavailable), ((408, {}), ServerUnavailable),
    ((401, {}), ServerRefused), ((403, {}), ServerRefused), ((422, {}), ValueError),
])
def test_controller_api_sorts_answers_into_try_later_refused_and_wrong(answer, error):
    with _ScriptedServer([answer]) as server:
        api = ControllerAPI(server.url)
        try:
            with pytest.raises(error) as caught:
                api.heartbeat([])
        finally:
            api.close()
    if answer[1].get("Retry-After"):
        assert caught.value.retry_after_seconds == 1.0
