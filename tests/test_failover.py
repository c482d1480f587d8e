"""Several server URLs (``atomiverse_core.servers``): the SDK clients and the controller move to
the next URL when theirs stops answering, under the one retry policy. Against scripted socket
servers (test_retry_policy's) and a port nobody listens on; the real servers, killed mid-batch,
are in tests/chaos/test_several_servers.py."""

from __future__ import annotations

import asyncio

import pytest
from atomiverse import AsyncClient, Client
from atomiverse_controller.api import ControllerAPI, ServerUnavailable
from atomiverse_controller.config import load_config
from atomiverse_core.servers import ServerList, parse_urls
from conftest import free_port
from test_retry_policy import OK, UNAVAILABLE, _ScriptedServer


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # bound and released: nobody listens there


def test_urls_are_parsed_from_a_comma_separated_string_or_a_list():
    assert parse_urls(" http://a:1/, http://b:2 ,http://a:1") == ["http://a:1", "http://b:2"]
    assert parse_urls(["https://a", "http://b/"]) == ["https://a", "http://b"]
    with pytest.raises(ValueError, match="no server URL"):
        parse_urls(" , ")
    with pytest.raises(ValueError, match="'a:1': must start with http"):
        parse_urls("a:1")


def test_threads_that_saw_one_server_fail_move_on_once():
    servers = ServerList("http://a,http://b,http://c")
    assert servers.failed("http://a") == "http://b"
    assert servers.failed("http://a") == "http://b"  # a second thread, same failure
    assert servers.failed("http://b") == "http://c"
    assert servers.failed("http://c") == "http://a"  # round again


def test_client_moves_to_the_next_server_when_its_server_is_gone():
    with _ScriptedServer([OK]) as live, \
            Client(api_key="k", base_url=f"{_dead_url()},{live.url}") as client:
        assert client.request("GET", "/x")["ok"]
        assert client.base_url == live.url  # and stays there
        client.request("GET", "/y")
    assert [path for _, path, _ in live.seen] == ["/x", "/y"]


def test_a_batch_goes_to_the_next_server_with_the_same_idempotency_key_after_a_503():
    with _ScriptedServer([UNAVAILABLE]) as down, _ScriptedServer([OK]) as live, \
            Client(api_key="k", base_url=[down.url, live.url]) as client:
        client.request("POST", "/b", json={}, idempotency_key="key-1")
    assert down.seen == [("POST", "/b", "key-1")]
    assert live.seen == [("POST", "/b", "key-1")]


def test_a_post_without_a_key_is_sent_to_the_next_server_only_if_it_reached_none():
    # Connection refused: the request reached no server, so it is safe anywhere.
    with _ScriptedServer([OK]) as live, \
            Client(api_key="k", base_url=f"{_dead_url()},{live.url}") as client:
        client.request("POST", "/job", json={})
    assert live.seen == [("POST", "/job", None)]
    # A 503 answered: the POST may not be repeated, the next server is for the next request.
    with _ScriptedServer([UNAVAILABLE]) as down, _ScriptedServer([OK]) as live, \
            Client(api_key="k", base_url=[down.url, live.url]) as client:
        with pytest.raises(Exception, match="503"):
            client.request("POST", "/job", json={})
        assert client.base_url == live.url
    assert len(down.seen) == 1 and live.seen == []


def test_async_client_moves_to_the_next_server():
    async def run(url: str) -> dict:
        async with AsyncClient(api_key="k", base_url=url) as client:
            return await client.request("GET", "/x")

    with _ScriptedServer([OK]) as live:
        assert asyncio.run(run(f"{_dead_url()},{live.url}"))["ok"]
    assert len(live.seen) == 1


def test_controller_tries_the_next_server_on_its_next_attempt():
    with _ScriptedServer([OK]) as live:
        api = ControllerAPI(f"{_dead_url()},{live.url}")
        try:
            with pytest.raises(ServerUnavailable):  # its loop's retry policy waits, then...
                api.heartbeat([])
            assert api.heartbeat([])["ok"]  # ...the next attempt reaches the live server
            assert api.server == live.url
        finally:
            api.close()


def test_controller_config_takes_a_list_from_the_file_and_commas_from_flags(tmp_path,
                                                                             monkeypatch):
    monkeypatch.delenv("ATOMIVERSE_CONTROLLER_SERVER", raising=False)
    toml = tmp_path / "controller.toml"
    toml.write_text('server = ["http://a:8000", "http://b:8000/"]\n')
    assert load_config(toml, {}).server_urls() == ["http://a:8000", "http://b:8000"]
    flags = {"server": "http://c:1,http://d:2"}
    assert load_config(toml, flags).server_urls() == ["http://c:1", "http://d:2"]
    monkeypatch.setenv("ATOMIVERSE_CONTROLLER_SERVER", "http://e:1, http://f:2")
    assert load_config(None, {}).server_urls() == ["http://e:1", "http://f:2"]
    with pytest.raises(ValueError, match="server"):
        load_config(None, {"server": "ftp://x"})
