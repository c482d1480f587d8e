"""The SQL statements a piece of code sends, as the database receives them: for checking
their plans (tests, ``bench/size.py``) on the statements actually sent, not a copy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa


def sent_statements(engine: sa.Engine, fn: Callable[[], Any]) -> list[tuple[str, Any]]:
    """Each (statement, parameters) ``fn`` sends through ``engine``, in order."""
    sent: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        fn()
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    return sent
