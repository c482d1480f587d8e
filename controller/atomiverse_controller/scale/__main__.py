"""``atomiverse scale SITE_FILE``: keep a pool's controllers in step with its queue through
the site's batch scheduler. ``--dry-run`` prints the batch script one allocation would run."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from .site import SiteConfig, SiteError, load_site


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="atomiverse scale", description=__doc__)
    p.add_argument("site", type=Path, help="the site file (TOML, or YAML)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the site file and print the batch script one allocation "
                        "would run; nothing is submitted, no server is asked")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    os.umask(0o077)  # tokens, scripts and logs are this user's alone
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("httpx2", "httpcore2", "parsl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        site = load_site(args.site)
        if args.dry_run:
            sys.stdout.write(_dry_run(site))
            return 0
        return _serve(site)
    except SiteError as e:
        print(f"atomiverse scale: {e}", file=sys.stderr)
        return 2


def _dry_run(site: SiteConfig) -> str:
    from .provider import dry_run_script

    with tempfile.TemporaryDirectory(prefix="atomiverse-scale-") as scratch:
        return dry_run_script(site, Path(scratch))


def _api_key(site: SiteConfig) -> str:
    try:
        key = site.api_key_file.read_text().strip()
    except OSError as e:
        raise SiteError(f"api_key_file: cannot read {site.api_key_file}: {e.strerror}") \
            from None
    if not key:
        raise SiteError(f"api_key_file: {site.api_key_file} is empty")
    return key


def _serve(site: SiteConfig) -> int:
    from ..api import ServerRefused, ServerUnavailable
    from .pool import register_pool
    from .provider import check_partition, make_provider
    from .scaler import AllocationsFail, Scaler

    key = _api_key(site)
    provider = make_provider(site)
    check_partition(site, provider)  # before anything is submitted
    try:
        api, heartbeat_seconds = register_pool(site, key)
    except (ServerRefused, ServerUnavailable, ValueError) as e:
        raise SiteError(f"server: cannot register the pool {site.target!r}: {e}") from None
    scaler = Scaler(site, provider, api, heartbeat_seconds)

    def stop(signum: int, _frame: Any) -> None:
        logging.getLogger("atomiverse.scale").info("event=signal signal=%s action=stop",
                                                   signal.Signals(signum).name)
        scaler.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logging.getLogger("atomiverse.scale").info(
        "event=started target=%s scheduler=%s max_nodes=%d slots_per_node=%d", site.target,
        site.scheduler, site.max_nodes, site.slots_per_node)
    try:
        scaler.run()
    except AllocationsFail as e:
        print(f"atomiverse scale: {e}", file=sys.stderr)
        return 1
    except ServerRefused as e:
        print(f"atomiverse scale: the server refused the pool's token ({e}); remove "
              f"{site.directory / 'pool.token'} to register again with the key",
              file=sys.stderr)
        return 1
    finally:
        scaler.release_queued()
        api.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
