"""Configuration. Precedence: argument to ``configure()``/``Client()``, then the environment
(``ATOMIVERSE_API_KEY``, ``ATOMIVERSE_BASE_URL``, ``ATOMIVERSE_HOME``), then the default:
no base URL means the embedded server on this machine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final


class _NotGiven:
    """Tells "argument not passed" from ``None``."""

    _instance: _NotGiven | None = None

    def __new__(cls) -> _NotGiven:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = _NotGiven()


def pick(arg: Any, env_var: str, default: Any = None) -> Any:
    if arg is not NOT_GIVEN:
        return arg
    value = os.environ.get(env_var)
    return value if value else default


def atomiverse_home() -> Path:
    return Path(os.environ.get("ATOMIVERSE_HOME") or Path.home() / ".atomiverse")
