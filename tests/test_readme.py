"""The README's quick start is what CI runs: exactly two command lines, the second one the
same as .ci/run's test command."""

from __future__ import annotations

import re
import subprocess

from conftest import ROOT


def _quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_quick_start_is_two_lines_and_ci_runs_the_second():
    """The whole second line, character for character, is the one command .ci/run defines
    (as bash reads it) and runs, once."""
    commands = _quick_start_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    assert "atomiverse run examples/" in commands[0]
    ci_path = ROOT / ".ci" / "run"
    ci = ci_path.read_text()
    definitions = [line for line in ci.splitlines() if line.startswith("TEST_COMMAND=")]
    assert definitions == [f"TEST_COMMAND='{commands[1]}'"]
    as_bash_reads_it = subprocess.run(
        ["bash", "-c", f'{definitions[0]}\nprintf %s "$TEST_COMMAND"'],
        capture_output=True, text=True, check=True).stdout
    assert as_bash_reads_it == commands[1]
    runs = [line.strip() for line in ci.splitlines() if "$TEST_COMMAND" in line
            and not line.strip().startswith(("#", "echo "))]
    assert runs == ['bash -c "$TEST_COMMAND"']


def test_ci_runs_the_readme_line_and_nothing_else():
    """No set-up of its own in .ci/run: whatever the tests need, the README's line installs, so
    CI cannot be greener than a new user's machine."""
    ci = (ROOT / ".ci" / "run").read_text()
    code = [line.strip() for line in ci.splitlines()
            if line.strip() and not line.strip().startswith("#")]
    for forbidden in ("apt-get", "apt ", "pip install", "pg_ctl", "initdb", "export "):
        offenders = [line for line in code
                     if forbidden in line and not line.startswith("TEST_COMMAND=")]
        assert not offenders, f".ci/run does its own set-up: {offenders}"
    assert "install-test-deps" in _quick_start_commands()[1]


def test_no_test_skips_by_itself():
    """A missing system part fails the test that needs it, naming the part; nothing in the suite
    skips quietly (deselection by an explicit option is the only way out)."""
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path.name == "test_readme.py":
            continue
        text = path.read_text()
        for needle in ("pytest.skip(", "importorskip(", "mark.skipif(", "mark.skip("):
            if needle in text:
                offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert not offenders, offenders


def test_readme_names_the_pythons_and_where_xtb_python_tests_are_deselected():
    """The versions the README promises, and the one deselection it allows, agree with
    pyproject: xtb-python is a dependency only below 3.12, and its tests' marker is registered
    there with the same rule."""
    import tomllib

    text = (ROOT / "README.md").read_text()
    quick_start = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "Python 3.11, 3.12 or 3.13" in quick_start
    assert "`xtb_python` marker" in quick_start and "python_version < '3.12'" in quick_start
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "xtb>=22.1; python_version < '3.12'" in project["project"]["dependencies"]
    markers = project["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("xtb_python:") and "3.12" in m for m in markers)
