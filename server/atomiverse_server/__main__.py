"""``python -m atomiverse_server``: run the job API server with uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import socket
import sys
from pathlib import Path
from types import FrameType

import uvicorn
from uvicorn.main import STARTUP_FAILURE

from .headertimeout import BODY_TIMEOUT_SECONDS, HEADER_TIMEOUT_SECONDS, with_header_timeout

# uvicorn answers 503 to every request, on any connection, while this many connections are
# open, idle ones included: at 1000, 1000 idle sockets (each held up to the header timeout,
# and reopened) shut out every client. An idle connection costs a few KiB; the file limit is
# raised to match (raise_file_limit).
LIMIT_CONCURRENCY = 4096
# Descriptors besides connections: database, logs, pipes to the local controller.
SPARE_FILES = 256
# How long an idle keep-alive connection stays open (uvicorn's default). Embedded (loopback,
# one user), longer than the idle controller's heartbeat (15 s): each beat then reuses its
# connection instead of opening one and having it closed by a timer 5 s later (issue 22).
KEEP_ALIVE_SECONDS = 5
EMBEDDED_KEEP_ALIVE_SECONDS = 30


def main(argv: list[str] | None = None) -> None:
    # Everything this process creates (database, WAL/SHM, logs, tokens) is private to its
    # user: other users of a shared machine must not read the database (issue 23).
    os.umask(0o077)
    p = argparse.ArgumentParser(prog="atomiverse server", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--home", type=Path, help="data directory (default ~/.atomiverse)")
    p.add_argument("--database-url", help="SQLAlchemy URL (default SQLite under home)")
    p.add_argument("--embedded", action="store_true",
                   help="single-machine mode: supervise a local controller")
    p.add_argument("--local-slots", type=int, help="slots for the embedded local controller")
    p.add_argument("--log-level", default="info")
    p.add_argument("--ssl-certfile", help="TLS certificate (PEM); serve HTTPS directly")
    p.add_argument("--ssl-keyfile", help="TLS private key (PEM, keep it 0600)")
    p.add_argument("--limit-concurrency", type=int, default=LIMIT_CONCURRENCY,
                   help="connections beyond this are answered 503 at once")
    p.add_argument("--header-timeout", type=float, default=HEADER_TIMEOUT_SECONDS,
                   help="seconds a client has to send a request's headers before the "
                        "connection is closed")
    p.add_argument("--body-timeout", type=float, default=BODY_TIMEOUT_SECONDS,
                   help="seconds a client has to send a request's body, from the end of its "
                        "headers, before the connection is closed")
    args = p.parse_args(argv)

    from .main import create_served_app
    from .settings import Settings

    overrides: dict[str, object] = {}
    if args.home:
        overrides["home"] = args.home
    if args.database_url:
        overrides["database_url"] = args.database_url
    if args.embedded:
        overrides["embedded"] = True
    if args.local_slots:
        overrides["local_controller_slots"] = args.local_slots
    settings = Settings(**overrides)  # type: ignore[arg-type]
    if settings.public_url is None:
        settings.public_url = f"http://{args.host}:{args.port}"
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    os.environ.setdefault("ATOMIVERSE_HOME", str(settings.home))
    tighten_home(Path(settings.home))
    raise_file_limit(args.limit_concurrency + SPARE_FILES)
    app = create_served_app(settings)
    warn_if_public_without_tls(args.host, tls=bool(args.ssl_certfile))
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                            access_log=False, timeout_graceful_shutdown=5,
                            # Nothing reads the client's address, and a header naming
                            # another one is believed from loopback: neither is wanted.
                            proxy_headers=False,
                            ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
                            limit_concurrency=args.limit_concurrency,
                            timeout_keep_alive=EMBEDDED_KEEP_ALIVE_SECONDS if args.embedded
                            else KEEP_ALIVE_SECONDS,
                            http=with_header_timeout(args.header_timeout,
                                                     args.body_timeout))
    server = _Server(config)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:  # the port was taken, say: uvicorn.run exits 3 the same way
        sys.exit(STARTUP_FAILURE)


def warn_if_public_without_tls(host: str, *, tls: bool) -> None:
    """Keys and session cookies cross the network in clear text unless TLS is on here or at
    a proxy in front (docs/deployment.md); loopback stays the default (issue 23)."""
    if not tls and host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("atomiverse_server").warning(
            "listening on %s without TLS: API keys travel in clear text unless a TLS proxy "
            "is in front; pass --ssl-certfile/--ssl-keyfile to serve HTTPS directly", host)


def raise_file_limit(wanted: int) -> None:
    """Raise the soft limit on open files to ``wanted`` (at most the hard limit), so that the
    connection limit, not EMFILE, is what refuses the connection past it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        logging.getLogger("atomiverse_server").warning(
            "open files are limited to %d (hard limit): fewer connections than "
            "--limit-concurrency can be served", hard)


def tighten_home(home: Path) -> None:
    """The home holds the database and tokens: 0700, and files an older version created
    readable by others are made 0600, with a warning saying so (issue 23)."""
    home.mkdir(parents=True, exist_ok=True)
    loose = [p for p in [home, *home.rglob("*")]
             if not p.is_symlink() and p.stat().st_mode & 0o077]
    for p in loose:
        p.chmod(0o700 if p.is_dir() else 0o600)
    if loose:
        logging.getLogger("atomiverse_server").warning(
            "%s: %d files and directories were readable by other users; made private "
            "(0700 directories, 0600 files)", home, len(loose))


class _Server(uvicorn.Server):
    """Tells long-polls (claims, waits) the moment shutdown begins, so they answer and their
    connections close, instead of holding the shutdown for its grace period and then being
    cancelled mid-request.

    And never ticks: uvicorn's tick (ten a second) only refreshes the Date header, which
    each request now does for itself (``datehdr``), and looks for a request to exit, which
    wakes the loop here at once. Its wake-ups were half of what an idle server cost
    (issue 22)."""

    _wake: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        should_exit = await self.on_tick(0)  # sets the Date header (a list of uvicorn's)
        while not should_exit:
            await self._wake.wait()
            self._wake.clear()
            should_exit = self.should_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        state = self.config.app.state
        # The local controller first, while this server still listens: it finishes or hands
        # back its jobs and says goodbye. Stopped after the sockets closed, it spent ~4 s
        # retrying a refused goodbye and spooled the results of jobs finishing meanwhile.
        controller = getattr(state, "local_controller", None)
        if controller is not None:
            await asyncio.to_thread(controller.stop)
        notifier = getattr(state, "notifier", None)
        if notifier is not None:
            notifier.stop()
        await super().shutdown(sockets=sockets)


if __name__ == "__main__":
    main()
