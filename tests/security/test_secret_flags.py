"""Finding: ``--api-key`` on the command line is visible in ``ps`` without a word of warning."""
import logging

from atomiverse_controller.__main__ import warn_if_secret_on_command_line


def test_api_key_flag_warns(caplog):
    with caplog.at_level(logging.WARNING):
        warn_if_secret_on_command_line(["--server", "http://x", "--api-key", "sk-secret"])
    assert "--api-key-file" in caplog.text
    assert "sk-secret" not in caplog.text  # the warning must not repeat the secret


def test_api_key_file_does_not_warn(caplog):
    with caplog.at_level(logging.WARNING):
        warn_if_secret_on_command_line(["--api-key-file", "/tmp/k"])
    assert caplog.text == ""
