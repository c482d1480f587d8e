"""``atomiverse local start|stop|status``: the embedded server and local controller."""

from __future__ import annotations

import argparse
import time
from typing import Any

from atomiverse_core.localhome import home_path

from .. import _embedded
from .._config import atomiverse_home
from .._embedded_procs import describe


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("local", help="start, stop or inspect the embedded local server")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.action == "start":
        url, _ = _embedded.ensure_running(wait_for_controller=True, deliberate=True)
        print(f"local server running at {url}")
    elif args.action == "stop":
        print("stopped" if _embedded.stop() else "not running")
    else:
        state = _embedded.status()
        report = describe(home_path(atomiverse_home()), slots=_local_slots(state))
        print("\n".join(status_lines(report)))
        return 0 if state else 3
    return 0


def _local_slots(state: dict[str, Any] | None) -> int | None:
    """The local controller's slots, as its server knows them (None if it cannot say)."""
    if state is None:
        return None
    import httpx2 as httpx

    try:
        key = _embedded.credentials()["api_key"]
        r = httpx.get(f"{state['url']}/api/v1/controllers", timeout=5.0,
                      headers={"Authorization": f"Bearer {key}"})
        for c in r.json().get("controllers", []):
            if c.get("name") == _embedded.local_controller_name():
                return c.get("slots")
    except (httpx.HTTPError, OSError, ValueError, KeyError):
        return None
    return None


def status_lines(report: dict[str, Any]) -> list[str]:
    lines = [f"home        {report['home']}"]
    server = report["server"]
    lines.append(f"server      pid {server['pid']}, up {_span(server['uptime_seconds'])}, "
                 f"{server['url']}" if server else "server      not running")
    last = report.get("server_last_restart")
    if last:
        lines.append(f"            last restart {_ago(last.get('at'))}: {last.get('reason')}")
    ctl = report["controller"]
    if ctl:
        lines.append(f"controller  pid {ctl['pid']}, up {_span(ctl['uptime_seconds'])}, "
                     f"{ctl['slots'] if ctl['slots'] is not None else '?'} slots, "
                     f"{ctl['restarts']} restarts")
        if ctl.get("last_restart"):
            r = ctl["last_restart"]
            lines.append(f"            last restart {_ago(r.get('at'))}: {r.get('reason')}")
    else:
        lines.append("controller  not running")
    for w in report["workers"]:
        lines.append(f"worker      pid {w['pid']}, up {_span(w['uptime_seconds'])}")
    return lines


def _span(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def _ago(epoch: Any) -> str:
    if not isinstance(epoch, (int, float)):
        return "at an unknown time"
    return f"{_span(time.time() - epoch)} ago"
