"""Finding: binding a public address without TLS said nothing."""
from conftest import start_server, stop_process


def test_public_bind_without_tls_warns(tmp_path):
    srv = start_server(tmp_path / "home", "--host", "0.0.0.0")
    stop_process(srv.proc)
    assert "without TLS" in (srv.home / "server.log").read_text()


def test_loopback_bind_does_not_warn(tmp_path):
    srv = start_server(tmp_path / "home")
    stop_process(srv.proc)
    assert "without TLS" not in (srv.home / "server.log").read_text()
