"""Deployment artefacts: systemd units pass systemd-analyze, the Dockerfile has what a
daemon image needs, and a controller hosted by a batch-scheduler job exits when idle."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

UNITS = ["atomiverse-server.service", "atomiverse-controller.service"]


def _atomiverse_binary() -> str:
    found = Path(sys.executable).with_name("atomiverse")
    return str(found) if found.exists() else shutil.which("atomiverse") or ""


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_unit_verifies(unit, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: bash scripts/install-test-deps installs systemd")
    binary = _atomiverse_binary()
    assert binary, "the atomiverse console script is not installed"
    text = (ROOT / "systemd" / unit).read_text()
    for key in ("Type=notify", "Restart=on-failure", "NoNewPrivileges=yes",
                "ProtectSystem=strict", "User=atomiverse"):
        assert key in text, f"{unit} lacks {key}"
    (tmp_path / unit).write_text(text.replace("/usr/local/bin/atomiverse", binary))
    out = subprocess.run([analyze, "verify", "--man=no", str(tmp_path / unit)],
                         capture_output=True, text=True, timeout=60)
    problems = [line for line in (out.stdout + out.stderr).splitlines()
                if unit in line and not re.search(r"Cannot add dependency job|tmp\.mount",
                                                  line)]
    assert out.returncode == 0 and not problems, out.stdout + out.stderr


def test_dockerfile_is_one_slim_non_root_image_with_a_health_check():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert 'ENTRYPOINT ["atomiverse"]' in text and 'CMD ["server"' in text


def test_slurm_example_is_what_atomiverse_scale_prints(tmp_path):
    """The docs' site file is valid and its batch script is the one `--dry-run` prints now
    (the job name's timestamp aside)."""
    text = (ROOT / "docs" / "deployment.md").read_text()
    section = text[text.index("## An HPC site"):text.index("## Docker")]
    site = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    shown = re.search(r"```bash\n(#!/bin/bash\n.*?)```", section, re.S).group(1)
    (tmp_path / "hpc.toml").write_text(site)
    out = subprocess.run([sys.executable, "-m", "atomiverse_controller.scale",
                          str(tmp_path / "hpc.toml"), "--dry-run"], check=False,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr

    def unstamped(script: str) -> str:
        return re.sub(r"atomiverse\.hpc\.[0-9.]+", "atomiverse.hpc.TIME", script).strip()

    assert unstamped(out.stdout) == unstamped(shown)
    assert "--exit-when-idle" in shown and "--stop-before-end" in shown


def test_controller_exits_when_idle(server, workspace_key):
    start = time.monotonic()
    proc = server.start_controller(workspace_key, "hpc-node-1", "--engine", "instant",
                                   "--slots", "1", "--exit-when-idle", "2")
    assert proc.wait(60) == 0
    assert time.monotonic() - start >= 2
    assert "event=idle_exit" in server.controller_log("hpc-node-1")
