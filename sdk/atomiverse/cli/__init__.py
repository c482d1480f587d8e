"""The ``atomiverse`` command: ``run`` (the main job), ``local``, ``server``, ``controller``."""

from __future__ import annotations

import argparse
import sys

from . import local, run


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # server and controller parse their own flags: hand them the rest of the line.
    if argv and argv[0] == "server":
        from atomiverse_server.__main__ import main as server_main

        server_main(argv[1:])
        return 0
    if argv and argv[0] == "admin":
        from atomiverse_server.admin import main as admin_main

        return admin_main(argv[1:])
    if argv and argv[0] == "controller":
        from atomiverse_controller.__main__ import main as controller_main

        return controller_main(argv[1:])

    parser = argparse.ArgumentParser(prog="atomiverse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run.add_parser(sub)
    local.add_parser(sub)
    sub.add_parser("admin", help="administer a server: workspaces, keys, balances")
    sub.add_parser("server", help="run the job API server (see `atomiverse server --help`)")
    sub.add_parser("controller", help="run a compute controller (see `atomiverse controller "
                                      "--help`)")
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)
