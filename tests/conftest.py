"""Shared fixtures: real server processes on free ports, real controller processes,
an embedded home per test session. Nothing here is faked."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# Engines in this process (references computed directly) get one thread, as the workers do.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import httpx2 as httpx
import pytest
from atomiverse_server import admin as admin_command
from embeddedhome import embedded_env
from seconduser import second_uid_deselection

# Tests that are mostly a fixed wait run beside the others (the 5-minute network cut).
pytest_plugins = ["overlap"]

PY = sys.executable
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric_value(url: str, name: str, **labels: str) -> float | None:
    """One sample from a Prometheus endpoint, read with prometheus_client's own parser: the
    first named ``name`` whose labels include ``labels``. None if the endpoint does not answer
    (yet) or does not export it."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(url, timeout=5).text
    except httpx.TransportError:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return None


def wait_parked(server_url: str, gauge: str, count: int = 1, timeout: float = 30.0) -> None:
    """Until the server's ``atomiverse_parked_claims`` or ``atomiverse_parked_waits`` gauge
    reaches ``count``: the long-polls a test started are parked, not merely sent."""
    deadline = time.monotonic() + timeout
    while (value := metric_value(f"{server_url}/metrics", gauge)) is None or value < count:
        assert time.monotonic() < deadline, f"{gauge} is {value} after {timeout} s, not {count}"
        time.sleep(0.05)


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Server:
    url: str
    home: Path
    database_url: str
    proc: subprocess.Popen
    env: dict[str, str]
    extra: tuple[str, ...] = ()
    controllers: list[subprocess.Popen] = field(default_factory=list)

    def admin(self, *args: str) -> dict:
        """``atomiverse admin ARGS`` on this server's database, run in this process: the same
        code as the command, without a Python start-up (0.8 s) for each of the suite's
        hundreds of workspaces and keys. The command as a process is tested on its own
        (test_purge, test_storage_backends, test_many_controllers_pg). Its answer is
        written to a buffer of the call's own (not a redirected sys.stdout): a scenario of
        tests/overlap.py may call it from another thread."""
        out = io.StringIO()
        try:
            code = admin_command.main(["--database-url", self.database_url, *args], out=out)
        except SystemExit as e:  # the command's own refusals (no such workspace...)
            code = e.code
        assert code == 0, f"admin {args[0]} exited {code!r}: {out.getvalue()[-2000:]}"
        return json.loads(out.getvalue())

    def new_workspace(self, name: str) -> str:
        return self.admin("create-workspace", name)["api_key"]

    def start_controller(self, api_key: str | None, name: str, *extra: str,
                         wait: bool = True, wait_key: str | None = None) -> subprocess.Popen:
        """A real controller process. ``api_key=None``: it must come back with the token
        already in its token file (a managed controller an admin registered)."""
        creds = ["--api-key", api_key] if api_key else []
        with open(self.home / f"controller-{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [PY, "-m", "atomiverse_controller", "--server", self.url, "--name", name,
                 *creds, "--token-file", str(self.home / f"{name}.token"),
                 "--spool-dir", str(self.home / f"spool-{name}"), *extra],
                stdout=log, stderr=log, env=self.env)
        self.controllers.append(proc)
        if wait:
            wait_for_controller(self.url, wait_key or api_key, name, proc)
        return proc

    def controller_log(self, name: str) -> str:
        return (self.home / f"controller-{name}.log").read_text()


def wait_for_controller(url: str, api_key: str, name: str, proc: subprocess.Popen,
                        timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"controller {name} exited with {proc.returncode}")
        r = httpx.get(f"{url}/api/v1/controllers",
                      headers={"Authorization": f"Bearer {api_key}"}, timeout=5)
        if any(c["name"] == name and c["status"] == "online" for c in r.json()["controllers"]):
            return
        time.sleep(0.1)
    raise TimeoutError(f"controller {name} did not register")


def launch_server(home: Path, *extra: str, env_extra: dict[str, str] | None = None,
                  port: int | None = None, database_url: str | None = None) -> Server:
    """A real server process on a free port; returns at once (start_server waits for it).
    ``database_url``: default SQLite under ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    db = database_url or f"sqlite:///{home / 'server.db'}"
    # Tests submit many batches a minute; the rate-limit tests set their own limits.
    env = {**os.environ, "ATOMIVERSE_HOME": str(home),
           "ATOMIVERSE_BATCH_RATE_PER_MINUTE": "100000",
           "ATOMIVERSE_JOB_RATE_PER_MINUTE": "100000", **(env_extra or {})}
    env.pop("ATOMIVERSE_BASE_URL", None)
    with open(home / "server.log", "ab") as log:
        proc = subprocess.Popen([PY, "-m", "atomiverse_server", "--port", str(port), "--home",
                                 str(home), "--database-url", db, "--log-level", "warning",
                                 *extra], stdout=log, stderr=log, env=env)
    return Server(url=f"http://127.0.0.1:{port}", home=home, database_url=db, proc=proc,
                  env=env, extra=extra)


def start_server(home: Path, *extra: str, env_extra: dict[str, str] | None = None,
                 port: int | None = None, database_url: str | None = None) -> Server:
    srv = launch_server(home, *extra, env_extra=env_extra, port=port, database_url=database_url)
    wait_http(f"{srv.url}/healthz", proc=srv.proc)
    return srv


def restart_server(srv: Server) -> None:
    """Start the same server again: same port, same database, same settings."""
    port = int(srv.url.rsplit(":", 1)[1])
    with open(srv.home / "server.log", "ab") as log:
        srv.proc = subprocess.Popen([PY, "-m", "atomiverse_server", "--port", str(port),
                                     "--home", str(srv.home), "--database-url",
                                     srv.database_url, "--log-level", "warning", *srv.extra],
                                    stdout=log, stderr=log, env=srv.env)
    wait_http(f"{srv.url}/healthz", proc=srv.proc)


@contextmanager
def own_server(home: Path, workspace: str, controller: str,
               *controller_args: str) -> Iterator[tuple[Server, str]]:
    """A server of the module's own, a workspace and one running controller in it; all
    stopped afterwards. Yields the server and the workspace's API key."""
    srv = start_server(home)
    try:
        key = srv.new_workspace(workspace)
        srv.start_controller(key, controller, *controller_args)
        yield srv, key
    finally:
        for c in srv.controllers:
            stop_process(c)
        stop_process(srv.proc)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real server process (not embedded, managed compute disabled) for the session."""
    srv = start_server(tmp_path_factory.mktemp("server"))
    yield srv
    for c in srv.controllers:
        stop_process(c)
    stop_process(srv.proc)


@pytest.fixture(scope="session")
def workspace_key(server: Server) -> str:
    return server.new_workspace("alpha")


@pytest.fixture(scope="session")
def alpha_controller(server: Server, workspace_key: str) -> str:
    """A real controller process, 2 slots of real xtb, registered as 'alpha-box'."""
    server.start_controller(workspace_key, "alpha-box", "--slots", "2")
    return "alpha-box"


@pytest.fixture
def client(server: Server, workspace_key: str):
    import atomiverse

    c = atomiverse.Client(api_key=workspace_key, base_url=server.url)
    yield c
    c.close()


@pytest.fixture(scope="session")
def embedded_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """ATOMIVERSE_HOME for the embedded default, with no base URL: the SDK starts the
    embedded server and local controller itself. Stopped at the end of the session."""
    home = tmp_path_factory.mktemp("embedded-home")
    with embedded_env(home):
        yield home


def xtb_python_installed() -> bool:
    """xtb-python has wheels up to Python 3.11; elsewhere the platform's engine is tblite."""
    import importlib.util

    return importlib.util.find_spec("xtb") is not None


def xtb_python_installable() -> bool:
    """Whether ``pip install .`` installs xtb-python on this Python, read from pyproject's own
    dependency marker (``python_version < '3.12'``) so the suite and the package cannot
    disagree about where it exists."""
    import tomllib

    from packaging.requirements import Requirement

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (xtb,) = [req for req in map(Requirement, deps) if req.name == "xtb"]
    return xtb.marker is None or xtb.marker.evaluate()


# The engine a test uses when the engine is not what it tests: the platform's default, which is
# xtb-python where it is installed and tblite elsewhere (Python 3.12+).
DEFAULT_ENGINE = "xtb" if xtb_python_installed() else "tblite"
# Both real engines, for parametrize: the xtb-python one carries the xtb_python marker.
REAL_ENGINES = [pytest.param("xtb", marks=pytest.mark.xtb_python, id="xtb"), "tblite"]


def _xtb_python_deselection(config: pytest.Config) -> str | None:
    """Why tests marked xtb_python are deselected here, or None when they run. They are
    deselected only where pyproject does not install xtb-python (it has no wheels for Python
    3.12+); where it should be installed and is missing, they run and fail naming the module."""
    if xtb_python_installed() or xtb_python_installable():
        return None
    version = ".".join(map(str, sys.version_info[:2]))
    return (f"tests marked xtb_python deselected: xtb-python has no wheels for Python "
            f"{version}, so pyproject installs it only on Python < 3.12 (the engine here is "
            f"tblite)")


def _deselections(config: pytest.Config) -> dict[str, str]:
    """Marker -> why its tests are deselected in this run (markers whose tests run: absent)."""
    reasons = {"xtb_python": _xtb_python_deselection(config),
               "second_uid": second_uid_deselection()}
    return {marker: why for marker, why in reasons.items() if why is not None}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    counts = {}
    for marker in _deselections(config):
        deselected = [item for item in items if item.get_closest_marker(marker)]
        if deselected:
            items[:] = [item for item in items if not item.get_closest_marker(marker)]
            config.hook.pytest_deselected(items=deselected)
        counts[marker] = len(deselected)
    config.stash[_DESELECTED] = counts


_DESELECTED = pytest.StashKey[dict[str, int]]()


def pytest_report_header(config: pytest.Config) -> list[str]:
    why = _xtb_python_deselection(config)
    uid = second_uid_deselection()
    return [f"xtb-python: {'installed, its tests run' if why is None else why}",
            f"second uid: {'running as root, its tests run' if uid is None else uid}"]


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    reasons = _deselections(config)
    for marker, count in config.stash.get(_DESELECTED, {}).items():
        if count:
            terminalreporter.write_sep("=", f"{count} {reasons[marker]}", yellow=True)


def reference_ase_calculator():
    """The default engine library's own ASE calculator, GFN2-xTB: xtb-python's where it is
    installed, else tblite's."""
    if not xtb_python_installed():
        from tblite.ase import TBLite

        return TBLite(method="GFN2-xTB", verbosity=0)
    from xtb.ase.calculator import XTB

    return XTB(method="GFN2-xTB")


def xtb_reference(numbers, positions_angstrom, charge=0, uhf=0, method="GFN2-xTB") -> float:
    """The source of truth: the platform's default engine library called directly on the same
    geometry (Hartree): xtb-python where it is installed, else tblite."""
    import numpy as np
    from ase.units import Bohr

    if not xtb_python_installed():
        from tblite.interface import Calculator as TBLite

        tb = TBLite(method, np.array(numbers), np.array(positions_angstrom) / Bohr,
                    float(charge), int(uhf))
        tb.set("verbosity", 0)
        return float(tb.singlepoint().get("energy"))

    from xtb.interface import Calculator
    from xtb.libxtb import VERBOSITY_MUTED
    from xtb.utils import get_method

    calc = Calculator(get_method(method), np.array(numbers),
                      np.array(positions_angstrom) / Bohr, charge=charge, uhf=uhf)
    calc.set_verbosity(VERBOSITY_MUTED)
    return float(calc.singlepoint().get_energy())
