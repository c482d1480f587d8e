"""A throwaway PostgreSQL server for the tests and benchmarks: ``initdb`` and ``pg_ctl`` in a
temporary directory, on a free port, stopped and removed at the end.

PostgreSQL refuses to run as root, and CI runs as root: then the cluster runs as the
``postgres`` system user (created if missing). With ``ATOMIVERSE_TEST_POSTGRES_URL`` set (a
superuser, or a role that may CREATE DATABASE) that server is used instead.

A test that needs PostgreSQL fails with the reason if it cannot be started, on a workstation
as in CI: ``scripts/install-test-deps`` (in the README's test line) installs the binaries. Used by the tests through the ``pg_cluster`` fixture (imported
into a test module, or loaded for the whole suite with ``pytest_plugins = ["pg"]`` in
conftest.py), and by ``bench/`` through :func:`start_cluster`."""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ENV_URL = "ATOMIVERSE_TEST_POSTGRES_URL"
SYSTEM_USER = "postgres"
SUPERUSER = "postgres"

# Fast and throwaway: nothing here has to survive a crash of the machine.
TEST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}
COMMON_SETTINGS = {
    "max_connections": "300",
    "shared_buffers": "256MB",
    "listen_addresses": "127.0.0.1",
}


class PostgresUnavailable(RuntimeError):
    pass


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def find_bindir() -> Path | None:
    """The directory with initdb/pg_ctl: PATH, then Debian's /usr/lib/postgresql/N/bin
    (newest), then pg_config --bindir."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parent.parent.name)
                        if Path(p).parent.parent.name.isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                             check=False)
        bindir = Path(out.stdout.strip())
        if (bindir / "initdb").exists():
            return bindir
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ensure_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    subprocess.run([useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    SYSTEM_USER], check=True, capture_output=True)
    return pwd.getpwnam(SYSTEM_USER)


@dataclass
class PostgresCluster:
    """A running server. ``url`` reaches its ``postgres`` database as a superuser;
    :meth:`new_database` makes an empty database per test."""

    url: str
    base_dir: Path | None = None  # None: an external server we did not start
    bindir: Path | None = None
    user: pwd.struct_passwd | None = None
    created: list[str] = field(default_factory=list)
    options: str = ""  # pg_ctl start -o: port, socket directory, settings
    _stopped: bool = False

    def _with_db(self, name: str) -> str:
        from sqlalchemy.engine import make_url

        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def admin_execute(self, sql: str) -> None:
        import psycopg

        url = self.url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql)

    def new_database(self, prefix: str = "atomiverse_test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.admin_execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self._with_db(name)

    def drop_database(self, url: str) -> None:
        from sqlalchemy.engine import make_url

        name = make_url(url).database
        self.admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.created:
            self.created.remove(name)

    def stop_fast(self) -> None:
        """``pg_ctl stop -m fast``: every session is disconnected, the server shuts down
        cleanly; :meth:`start_again` brings it back on the same port with the same data."""
        if self.base_dir is None:
            raise PostgresUnavailable(f"{ENV_URL} names a server these tests did not start: "
                                      f"they cannot stop and start it")
        _run_as(self.user, [str(self.bindir / "pg_ctl"), "-D", str(self.base_dir / "data"),
                            "-m", "fast", "-w", "-t", "60", "stop"])

    def start_again(self) -> None:
        assert self.base_dir is not None and self.bindir is not None
        _run_as(self.user, [str(self.bindir / "pg_ctl"), "-D", str(self.base_dir / "data"),
                            "-l", str(self.base_dir / "server.log"), "-o", self.options, "-w",
                            "-t", "60", "start"])
        _wait_ready(self)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.base_dir is None:
            for name in list(self.created):
                with contextlib.suppress(Exception):  # best effort on someone else's server
                    self.admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        data = self.base_dir / "data"
        if (data / "postmaster.pid").exists():
            _run_as(self.user, [str(self.bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                                "-w", "-t", "30", "stop"], check=False)
        shutil.rmtree(self.base_dir, ignore_errors=True)


def _run_as(user: pwd.struct_passwd | None, cmd: list[str], check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess:
    kwargs: dict = {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    if user is not None:
        kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        env.update(HOME=user.pw_dir or "/", USER=user.pw_name, LOGNAME=user.pw_name)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd="/",
                          timeout=timeout, check=False, **kwargs)
    if check and proc.returncode != 0:
        raise PostgresUnavailable(f"{' '.join(cmd[:2])} failed ({proc.returncode}): "
                                  f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc


def start_cluster(*, durable: bool = False, settings: dict[str, str] | None = None,
                  ) -> PostgresCluster:
    """Start a fresh cluster (or wrap ``ATOMIVERSE_TEST_POSTGRES_URL``). ``durable`` keeps
    PostgreSQL's default fsync/commit settings (for benchmarks); the default trades them for
    speed."""
    external = os.environ.get(ENV_URL)
    if external:
        cluster = PostgresCluster(url=external)
        try:
            cluster.admin_execute("SELECT 1")
        except Exception as e:
            raise PostgresUnavailable(f"{ENV_URL}={external!r} does not answer: {e}") from e
        return cluster
    bindir = find_bindir()
    if bindir is None:
        raise PostgresUnavailable("PostgreSQL is not installed (no initdb on PATH or under "
                                  "/usr/lib/postgresql/*/bin): apt-get install postgresql, "
                                  f"or set {ENV_URL}")
    user = _ensure_system_user() if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="atomiverse-pg-"))
    if user is not None:
        os.chown(base, user.pw_uid, user.pw_gid)
    cluster = PostgresCluster(url="", base_dir=base, bindir=bindir, user=user)
    atexit.register(cluster.stop)
    data = base / "data"
    _run_as(user, [str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust",
                   "-E", "UTF8", "--no-locale", "--no-sync"])
    conf = {**COMMON_SETTINGS, **({} if durable else TEST_SETTINGS), **(settings or {})}
    last_error = ""
    for _attempt in range(5):  # a free port can be taken between choosing and binding it
        port = _free_port()
        opts = " ".join([f"-p {port}", f"-k {base}"] + [f"-c {k}={v}" for k, v in conf.items()])
        proc = _run_as(user, [str(bindir / "pg_ctl"), "-D", str(data), "-l",
                              str(base / "server.log"), "-o", opts, "-w", "-t", "60", "start"],
                       check=False)
        if proc.returncode == 0:
            cluster.url = f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres"
            cluster.options = opts
            _wait_ready(cluster)
            return cluster
        log = base / "server.log"
        last_error = proc.stdout + proc.stderr + (log.read_text()[-2000:] if log.exists() else "")
        time.sleep(0.2)
    cluster.stop()
    raise PostgresUnavailable(f"pg_ctl start failed: {last_error}")


def _wait_ready(cluster: PostgresCluster, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            cluster.admin_execute("SELECT 1")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# ----- pytest --------------------------------------------------------------------------------
_session_cluster: PostgresCluster | None = None
_session_error: str | None = None


def _unavailable(reason: str):  # type: ignore[no-untyped-def]
    pytest.fail(f"PostgreSQL is required (bash scripts/install-test-deps installs it): {reason}",
                pytrace=False)


@pytest.fixture(scope="session")
def pg_cluster(request: pytest.FixtureRequest) -> Iterator[PostgresCluster]:
    """One PostgreSQL server for the whole session, shared even if several test modules
    import this fixture."""
    global _session_cluster, _session_error
    if _session_cluster is None and _session_error is None:
        try:
            _session_cluster = start_cluster()
            request.config.add_cleanup(_session_cluster.stop)
        except (PostgresUnavailable, OSError, subprocess.SubprocessError) as e:
            _session_error = str(e)
    if _session_cluster is None:
        _unavailable(_session_error or "not started")
    yield _session_cluster  # type: ignore[misc]


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster) -> Iterator[str]:
    """An empty database of its own for one test."""
    url = pg_cluster.new_database()
    yield url
    with contextlib.suppress(Exception):  # the cluster goes away at the end anyway
        pg_cluster.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of its own for one test, once on each backend (a module that uses it
    imports ``pg_cluster`` too)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'server.db'}"
    cluster = request.getfixturevalue("pg_cluster")
    url = cluster.new_database()
    request.addfinalizer(lambda: cluster.drop_database(url))
    return url
