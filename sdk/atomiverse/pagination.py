"""Pages of job summaries; iterating a page walks every later page too."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class JobsPage:
    jobs: list[dict[str, Any]]
    has_more: bool
    next_cursor: str | None
    _fetch_next: Callable[[str], JobsPage] | None = field(default=None, repr=False)

    def next_page(self) -> JobsPage | None:
        if not self.has_more or self.next_cursor is None or self._fetch_next is None:
            return None
        return self._fetch_next(self.next_cursor)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        page: JobsPage | None = self
        while page is not None:
            yield from page.jobs
            page = page.next_page()

    def __len__(self) -> int:
        return len(self.jobs)

    def _repr_html_(self) -> str:
        """This page's jobs as one table in notebooks (later pages are not fetched)."""
        from .records import as_records

        more = "<div>more on the next page</div>" if self.has_more else ""
        return as_records(self.jobs)._repr_html_() + more
