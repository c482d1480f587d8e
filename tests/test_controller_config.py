"""Controller configuration: defaults, then the TOML file, then ATOMIVERSE_CONTROLLER_*
environment variables, then flags (flags win)."""

from __future__ import annotations

import pytest
from atomiverse_controller.config import load_config, physical_cores
from pydantic import ValidationError


def test_precedence_file_then_environment_then_flags(tmp_path, monkeypatch):
    toml = tmp_path / "controller.toml"
    toml.write_text('server = "http://from-file:8000"\nname = "file-name"\nslots = 3\n'
                    'memory_limit_mb = 4000\n')
    monkeypatch.setenv("ATOMIVERSE_CONTROLLER_NAME", "env-name")
    monkeypatch.setenv("ATOMIVERSE_CONTROLLER_SLOTS", "5")
    config = load_config(toml, {"slots": 7, "server": None})
    assert config.server == "http://from-file:8000"   # file, nothing above it
    assert config.name == "env-name"                  # environment over file
    assert config.slots == 7                          # flag over environment
    assert config.memory_limit_mb == 4000


def test_defaults_without_a_file(monkeypatch):
    for var in ("NAME", "SLOTS", "SERVER"):
        monkeypatch.delenv(f"ATOMIVERSE_CONTROLLER_{var}", raising=False)
    config = load_config(None, {})
    assert config.slots == physical_cores() and config.name.startswith("local-")


def test_bad_values_are_refused_with_the_field_named(tmp_path):
    toml = tmp_path / "bad.toml"
    toml.write_text("slots = 0\n")
    with pytest.raises(ValidationError, match="slots"):
        load_config(toml, {})
    toml.write_text('slot = 2\n')  # a typo is an error, not silently ignored
    with pytest.raises(ValidationError, match="slot"):
        load_config(toml, {})


def test_api_key_file_accepts_plain_text_or_the_embedded_credentials_json(tmp_path):
    plain, js = tmp_path / "key", tmp_path / "credentials.json"
    plain.write_text("av_plain\n")
    js.write_text('{"api_key": "av_json", "workspace": "local"}')
    assert load_config(None, {"api_key_file": plain}).resolved_api_key() == "av_plain"
    assert load_config(None, {"api_key_file": js}).resolved_api_key() == "av_json"


def test_idle_worker_settings_from_flags_and_environment(monkeypatch):
    from atomiverse_controller.__main__ import FLAG_FIELDS, build_parser
    from atomiverse_controller.daemon import Controller

    monkeypatch.setenv("ATOMIVERSE_CONTROLLER_WORKER_IDLE_SECONDS", "30")
    config = load_config(None, {})
    assert (config.worker_idle_seconds, config.warm_workers) == (30, 1)
    assert Controller(config).pool.idle_seconds == 30
    args = build_parser().parse_args(["--worker-idle-seconds", "0", "--warm-workers", "2"])
    config = load_config(None, {f: getattr(args, f) for f in FLAG_FIELDS})
    assert (config.worker_idle_seconds, config.warm_workers) == (0, 2)
    pool = Controller(config).pool
    assert (pool.idle_seconds, pool.keep_warm) == (None, 2)  # 0: workers never stop
    with pytest.raises(ValidationError, match="warm_workers"):
        load_config(None, {"warm_workers": -1})


def test_held_results_go_out_once_fewer_than_a_round_of_queued_jobs_remain(tmp_path):
    """Results ride along with the next report while a full round of queued jobs (one per
    slot) is still to start; after that the held ones go, ahead of the batch's last."""
    from atomiverse_controller.daemon import Controller

    controller = Controller(load_config(None, {"slots": 2, "spool_dir": tmp_path / "spool"}))
    more_coming = controller.reporter.more_coming
    controller.ledger.add_claimed([{"job_id": f"j{i}", "lease_id": "l"} for i in range(3)])
    assert more_coming()  # 3 queued behind 2 slots
    controller.ledger.next_queued()
    assert more_coming()  # 2: a full round still to start
    controller.ledger.next_queued()
    assert not more_coming()  # 1: what is held goes now
    controller.pool.staged_jobs = lambda: 1  # staged behind a running job: not started yet
    assert more_coming()


# ----- one settings model: precedence, --print-config, bad values -------------------------
def _print_config(*flags, env=None, cwd=None):
    """``atomiverse controller --print-config`` in its own process, as a user runs it."""
    import os
    import subprocess
    import sys

    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("ATOMIVERSE_CONTROLLER_") and k != "ATOMIVERSE_API_KEY"}
    return subprocess.run([sys.executable, "-m", "atomiverse_controller", "--print-config",
                           *flags], check=False, env={**environ, **(env or {})}, capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def _effective(stdout):
    """The printed settings as TOML: the output is a config file of its own."""
    import tomllib

    return tomllib.loads(stdout)


def test_each_layer_beats_the_one_below_it(tmp_path, monkeypatch):
    for var in ("NAME", "SLOTS", "SERVER", "GRACE_SECONDS"):
        monkeypatch.delenv(f"ATOMIVERSE_CONTROLLER_{var}", raising=False)
    toml = tmp_path / "controller.toml"
    toml.write_text('name = "from-file"\nslots = 3\ngrace_seconds = 5\n')
    assert load_config(None, {}).name.startswith("local-")            # default
    assert load_config(toml, {}).name == "from-file"                  # file beats default
    monkeypatch.setenv("ATOMIVERSE_CONTROLLER_NAME", "from-env")
    assert load_config(toml, {}).name == "from-env"                   # env beats file
    assert load_config(toml, {"name": "from-flag"}).name == "from-flag"  # flag beats env
    config = load_config(toml, {"name": "from-flag", "slots": None})  # None: flag not given
    assert (config.slots, config.grace_seconds) == (3, 5)


def test_print_config_shows_the_effective_settings_and_their_sources(tmp_path):
    toml = tmp_path / "controller.toml"
    toml.write_text('name = "from-file"\nslots = 3\nserver = "http://file:1"\n')
    out = _print_config("--config", str(toml), "--slots", "9",
                        env={"ATOMIVERSE_CONTROLLER_NAME": "from-env"})
    assert out.returncode == 0, out.stderr
    settings = _effective(out.stdout)
    assert (settings["slots"], settings["name"], settings["server"]) == \
        (9, "from-env", "http://file:1")
    lines = {line.split(" = ")[0]: line for line in out.stdout.splitlines() if " = " in line}
    assert lines["slots"].endswith("# flag")
    assert lines["name"].endswith("# environment ATOMIVERSE_CONTROLLER_NAME")
    assert lines["server"].endswith(f"# file {toml}")
    assert lines["warm_workers"].endswith("# default")


@pytest.mark.parametrize("where", ["flag", "environment", "file"])
def test_print_config_never_shows_the_api_key(tmp_path, where):
    key = "av_Sup3rSecretKeyText_" + where
    toml = tmp_path / "controller.toml"
    toml.write_text(f'api_key = "{key}"\n' if where == "file" else "")
    flags = ["--api-key", key] if where == "flag" else []
    env = {"ATOMIVERSE_CONTROLLER_API_KEY": key} if where == "environment" else {}
    out = _print_config("--config", str(toml), *flags, env=env)
    assert out.returncode == 0, out.stderr
    assert key not in out.stdout and key not in out.stderr
    assert _effective(out.stdout)["api_key"] == "********"  # set, and masked


def test_a_bad_setting_is_refused_naming_the_field_not_echoing_the_value(tmp_path):
    out = _print_config(env={"ATOMIVERSE_CONTROLLER_METRICS_PORT": "port-nine-thousand"})
    assert out.returncode == 2 and out.stdout == ""
    assert "metrics_port" in out.stderr and "port-nine-thousand" not in out.stderr
    toml = tmp_path / "bad.toml"
    toml.write_text("slots = 0\nprefetch = 4\n")  # out of range, and a key that is no setting
    out = _print_config("--config", str(toml))
    assert out.returncode == 2
    assert "slots" in out.stderr and "prefetch:" in out.stderr
    with pytest.raises(ValidationError, match="claim_wait_seconds"):
        load_config(None, {"claim_wait_seconds": 61})
