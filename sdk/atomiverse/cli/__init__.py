"""The ``atomiverse`` command: ``run`` (the main job), ``local``, ``server``, ``controller``,
``scale``."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points
from typing import Any

from . import export, local, run

PLUGGED_COMMANDS = ("server", "admin", "controller", "scale")


def plugged_command(name: str) -> Any:
    """The ``main`` another installed package registers for ``atomiverse <name>``."""
    found = entry_points(group="atomiverse.commands", name=name)
    if not found:
        raise SystemExit(f"atomiverse {name}: not installed (no 'atomiverse.commands' entry "
                         f"point named {name!r}; reinstall the atomiverse package)")
    return next(iter(found)).load()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # server, admin and controller parse their own flags: hand them the rest of the line.
    if argv and argv[0] in PLUGGED_COMMANDS:
        return int(plugged_command(argv[0])(argv[1:]) or 0)

    parser = argparse.ArgumentParser(prog="atomiverse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run.add_parser(sub)
    local.add_parser(sub)
    export.add_parser(sub)
    sub.add_parser("admin", help="administer a server: workspaces, keys, balances")
    sub.add_parser("server", help="run the job API server (see `atomiverse server --help`)")
    sub.add_parser("controller", help="run a compute controller (see `atomiverse controller "
                                      "--help`)")
    sub.add_parser("scale", help="start and stop controllers with a batch scheduler's "
                                 "allocations (see `atomiverse scale --help`)")
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)
