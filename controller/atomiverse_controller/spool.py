"""Results on disk until the server has them: a finished job's report is written here
before it is sent and removed once the server has answered for it, so results survive a
server outage and a controller restart."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("atomiverse.controller.spool")


class Spool:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, report: dict[str, Any]) -> Path:
        return self.dir / f"{report['job_id']}.{report['lease_id']}.json"

    def put(self, report: dict[str, Any]) -> None:
        """Write ``report`` durably, or raise OSError (a full disk: ENOSPC) leaving no
        partial file behind to be mistaken for a result or to keep the space taken."""
        path = self._path(report)
        tmp = path.with_suffix(".tmp")
        try:
            with open(tmp, "w") as f:
                json.dump(report, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise

    def remove(self, report: dict[str, Any]) -> None:
        self._path(report).unlink(missing_ok=True)

    def pending(self) -> list[dict[str, Any]]:
        reports = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                reports.append(json.loads(path.read_text()))
            except (OSError, json.JSONDecodeError) as e:
                log.error("event=spool_unreadable file=%s error=%s", path.name, e)
        return reports
