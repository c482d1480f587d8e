"""``atomiverse controller``: the compute controller daemon."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="atomiverse controller", description=__doc__)
    p.add_argument("--config", type=Path, help="TOML file (default /etc/atomiverse/"
                                               "controller.toml if present)")
    p.add_argument("--server", help="job API server URL; several server processes of one "
                                    "deployment: comma-separated, tried in turn")
    p.add_argument("--name", help="controller name jobs are routed to (default local-HOST)")
    p.add_argument("--api-key", help="workspace API key, used once to register (visible in "
                                     "ps: prefer --api-key-file or ATOMIVERSE_API_KEY)")
    p.add_argument("--api-key-file", type=Path)
    p.add_argument("--token-file", type=Path, help="where the controller token is kept (0600)")
    p.add_argument("--slots", type=int, help="concurrent jobs (default: physical cores)")
    p.add_argument("--cores-per-job", type=int)
    p.add_argument("--capacity", type=int, help="outstanding jobs accepted")
    p.add_argument("--engine", choices=["xtb", "tblite", "instant"],
                   help="default: xtb-python if installed, else tblite")
    p.add_argument("--memory-limit-mb", type=int, help="address-space cap per worker")
    p.add_argument("--grace-seconds", type=float, help="drain time on the first SIGTERM")
    p.add_argument("--exit-when-idle", dest="exit_when_idle_seconds", type=float,
                   metavar="SECONDS", help="exit after this long with no work (HPC jobs)")
    p.add_argument("--worker-idle-seconds", type=float, metavar="SECONDS",
                   help="stop idle workers after this long, keeping --warm-workers (default 60; "
                        "0: never)")
    p.add_argument("--warm-workers", type=int, help="workers kept warm while idle (default 1)")
    p.add_argument("--spool-dir", type=Path)
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on 127.0.0.1:PORT")
    p.add_argument("--exit-with-pid", type=int, metavar="PID",
                   help="exit within seconds of process PID ending (the embedded server's "
                        "local controller)")
    p.add_argument("--pool", help="join this pool (registered by `atomiverse scale`)")
    p.add_argument("--prefetch-per-slot", type=int, metavar="N",
                   help="jobs held queued per slot beyond the running ones (default 32; 0: "
                        "claim only for free slots)")
    p.add_argument("--stop-before-end", dest="stop_before_end_seconds", type=float,
                   metavar="SECONDS", help="in a batch allocation: stop claiming this long "
                                           "before it ends, finish or hand back, exit")
    p.add_argument("--burst", action="store_true", help="exit when there is no more work")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective settings and where each came from (secrets "
                        "masked), then exit")
    return p


FLAG_FIELDS = ("server", "name", "api_key", "api_key_file", "token_file", "slots",
               "cores_per_job", "capacity", "engine", "memory_limit_mb", "grace_seconds",
               "exit_when_idle_seconds", "worker_idle_seconds", "warm_workers", "spool_dir",
               "metrics_port", "exit_with_pid", "pool", "prefetch_per_slot",
               "stop_before_end_seconds")


def drain_main(argv: list[str]) -> int:
    """``atomiverse controller drain NAME``: ask a controller to drain and exit."""
    import httpx2 as httpx

    p = argparse.ArgumentParser(prog="atomiverse controller drain", description=drain_main.__doc__)
    p.add_argument("name")
    p.add_argument("--server", default=os.environ.get("ATOMIVERSE_BASE_URL"), required=
                   not os.environ.get("ATOMIVERSE_BASE_URL"))
    p.add_argument("--api-key", default=os.environ.get("ATOMIVERSE_API_KEY"))
    args = p.parse_args(argv)
    from atomiverse_core.servers import parse_urls

    server = parse_urls(args.server)[0]  # any of a deployment's servers will do
    r = httpx.post(f"{server}/api/v1/controllers/{args.name}/drain",
                   headers={"Authorization": f"Bearer {args.api_key}"}, timeout=30)
    print(r.json().get("detail") or f"{args.name}: draining")
    return 0 if r.status_code == 200 else 1


def warn_if_secret_on_command_line(argv: list[str]) -> None:
    """Another local user reads a flag's value in ``ps``; the file and environment do not
    leak that way (issue 23)."""
    if any(a == "--api-key" or a.startswith("--api-key=") for a in argv):
        logging.getLogger("atomiverse_controller").warning(
            "--api-key on the command line is visible to every user of this machine (ps); "
            "use --api-key-file (mode 0600) or ATOMIVERSE_API_KEY instead")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.umask(0o077)  # spool, tokens and logs are private to this user (issue 23)
    if argv and argv[0] == "drain":
        return drain_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # One line per job event is ours to write; per-request and scheduler chatter is noise.
    for noisy in ("httpx2", "httpcore2", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Two lines per job: skip gathering what the format never prints (the logging HOWTO's
    # "Optimization" section); it was a measurable share of the daemon's CPU on big batches.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None  # the same section: no caller lookup (a stack walk) per record
    warn_if_secret_on_command_line(argv)
    from pydantic import ValidationError

    from .config import load_config, render, setting_sources

    flags = {f: getattr(args, f) for f in FLAG_FIELDS}
    try:
        config = load_config(args.config, flags)
    except ValidationError as e:
        print(f"atomiverse controller: bad settings: {_settings_errors(e)}", file=sys.stderr)
        return 2
    if args.print_config:
        sys.stdout.write(render(config, setting_sources(args.config, flags)))
        return 0
    from .daemon import Controller

    controller = Controller(config)
    controller.install_signal_handlers()
    clean = controller.run(burst=args.burst)
    return 0 if clean else 1


def _settings_errors(error: Any) -> str:
    """Each bad setting by name and why, without the value (it may be a secret)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                     for e in error.errors())


if __name__ == "__main__":
    sys.exit(main())
