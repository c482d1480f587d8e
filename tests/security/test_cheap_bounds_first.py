"""Finding: a 100 000-atom job ran the full model (distances, electrons) before the atom-count
cap refused it, minutes of server CPU. The cap must be checked before the model parses."""
import pytest
from atomiverse_server import submission
from atomiverse_server.settings import Settings


def test_atom_cap_checked_before_the_model(monkeypatch):
    def costly_parse(payload):
        raise AssertionError("the model parsed a job the atom-count cap should have refused")

    monkeypatch.setattr(submission, "parse_job", costly_parse)
    n = 100_000
    payload = {"type": "singlepoint",
               "atoms": {"numbers": [1] * n, "positions": [[float(i), 0.0, 0.0] for i in range(n)]}}
    with pytest.raises(submission.EntryRejected, match="100000 atoms is more than the maximum"):
        submission.validate_job(payload, Settings(max_atoms=1000))
