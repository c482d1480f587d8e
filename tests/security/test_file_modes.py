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


def test_existing_loose_home_is_tightened_with_a_warning(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    old = home / "old.db"
    old.write_text("x")
    old.chmod(0o644)
    srv = start_server(home)
    try:
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert stat.S_IMODE(old.stat().st_mode) == 0o600
    finally:
        stop_process(srv.proc)
    assert "made private" in (home / "server.log").read_text()
