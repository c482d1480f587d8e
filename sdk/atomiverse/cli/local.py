"""``atomiverse local start|stop|status``: the embedded server and local controller."""

from __future__ import annotations

import argparse

from .. import _embedded


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("local", help="start, stop or inspect the embedded local server")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.action == "start":
        url, _ = _embedded.ensure_running(wait_for_controller=True)
        print(f"local server running at {url}")
    elif args.action == "stop":
        print("stopped" if _embedded.stop() else "not running")
    else:
        state = _embedded.status()
        print(f"running at {state['url']} (pid {state['pid']})" if state else "not running")
        return 0 if state else 3
    return 0
