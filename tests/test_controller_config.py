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
