"""Finding: the database was created 0644, readable by every other user of the machine."""
import stat

from conftest import start_server, stop_process


def test_server_creates_private_files(tmp_path):
    srv = start_server(tmp_path / "home")
    try:
        created = [p for p in srv.home.rglob("*") if p.is_file() and p.name != "server.log"]
        assert any(p.name == "server.db" for p in created)
        loose = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in created
                 if stat.S_IMODE(p.stat().st_mode) & 0o077}
        assert loose == {}
    finally:
        stop_process(srv.proc)
