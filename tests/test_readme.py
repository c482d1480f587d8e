"""The README's quick start is what CI runs: exactly two command lines, the second one the
same as .ci/run's test command."""

from __future__ import annotations

import re

from conftest import ROOT


def _quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_quick_start_is_two_lines_and_ci_runs_the_second():
    commands = _quick_start_commands()
    assert len(commands) == 2
    assert "atomiverse run examples/" in commands[0]
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"TEST_COMMAND='{commands[1]}'" in ci
