"""``atomiverse export -o FILE [--state done] [--since 2026-12-01]``: the workspace's jobs into a
file whose extension names the format (.extxyz, .xyz, .csv, .parquet, .jsonl, .db)."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import tables
from .._client import get_default_client

STATES = ("pending", "running", "done", "failed", "cancelled")
PAGE = 200


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write the workspace's jobs to a file (.extxyz, .xyz, "
                                      ".csv, .parquet, .jsonl or .db)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help=f"the file; its extension picks the format ({', '.join(tables.FORMATS)})")
    p.add_argument("--state", choices=STATES, help="only jobs in this state")
    p.add_argument("--since", type=_day, help="only jobs created on or after this date "
                                              "(YYYY-MM-DD, UTC)")
    p.add_argument("--name", help="only jobs whose name contains this")
    p.set_defaults(func=_run)


def _day(text: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=dt.UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--since: {text!r} is not a date YYYY-MM-DD") from None


def _run(args: argparse.Namespace) -> int:
    if args.output.suffix.lower() not in tables.FORMATS:
        print(f"{args.output.name}: unknown extension; supported: {', '.join(tables.FORMATS)}")
        return 2
    records = list(_records(args.state, args.since, args.name))
    tables.export(records, args.output)
    print(f"{len(records)} jobs written to {args.output}")
    return 0


def _records(state: str | None, since: dt.datetime | None,
             name: str | None) -> Iterator[dict[str, Any]]:
    """Full records (results included) of the matching jobs, newest first: pages of
    summaries, read until one is older than ``since``."""
    client = get_default_client()
    page = client.list_jobs(PAGE, state=state, name=name)
    while page is not None:
        for summary in page.jobs:
            created = dt.datetime.fromisoformat(summary["created_at"])
            if created.tzinfo is None:
                created = created.replace(tzinfo=dt.UTC)
            if since is not None and created < since:
                return  # newest first: the rest are older still
            yield client.get_job(summary["job_id"])
        page = page.next_page()
