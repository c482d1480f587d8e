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


# Parsing the JSON of a huge job is its cost now (6 MiB for 100 000 atoms: ~60 ms of server
# CPU in orjson before the cap can look). POST /api/v1/jobs carries one job, so its body is
# capped by what max_atoms atoms can need (1 KiB an atom): a huge job is refused by its size.
HUGE_ATOMS = 100_000


def _job(positions: list[list[float]]) -> dict:
    return {"job": {"job_type": "single_point_energy", "name": "big",
                    "atoms": {"numbers": [6] * len(positions), "positions": positions,
                              "charge": 0, "multiplicity": 1},
                    "level_of_theory": {"method": "gfn2-xtb"}}}


@pytest.fixture(scope="module")
def capped_server(tmp_path_factory):
    from conftest import start_server, stop_process

    srv = start_server(tmp_path_factory.mktemp("capped"))
    yield srv, srv.new_workspace("capped")
    stop_process(srv.proc)


def test_a_huge_single_job_is_refused_by_its_size_before_its_body(capped_server):
    import json
    import socket

    srv, key = capped_server
    body = json.dumps(_job([[float(i), 0.0, 0.0] for i in range(HUGE_ATOMS)])).encode()
    host, port = srv.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        # The head and a first kilobyte: the answer comes without the rest of the body.
        s.sendall(f"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                  .encode() + body[:1024])
        answer = b""
        while chunk := s.recv(65536):  # the server closes after its 413 (Connection: close)
            answer += chunk
        answer = answer.decode()
    assert answer.startswith("HTTP/1.1 413"), answer[:200]
    assert "for one job" in answer and "maximum of 1000 atoms" in answer


def test_a_chunked_huge_single_job_is_refused_while_it_streams(capped_server):
    import json

    import httpx2 as httpx

    srv, key = capped_server
    body = json.dumps(_job([[float(i), 0.0, 0.0] for i in range(HUGE_ATOMS)])).encode()
    chunks = (body[i:i + 65536] for i in range(0, len(body), 65536))  # no Content-Length
    r = httpx.post(f"{srv.url}/api/v1/jobs", content=chunks, timeout=60,
                   headers={"Authorization": f"Bearer {key}",
                            "Content-Type": "application/json"})
    assert r.status_code == 413 and "for one job" in r.json()["detail"]


def test_the_largest_allowed_job_fits_however_it_is_formatted(capped_server):
    """1000 atoms on a 2 Angstrom grid, coordinates at full precision, indented: well under
    the cap, and refused (if at all) for its content, never its size."""
    import json

    import httpx2 as httpx

    srv, key = capped_server
    grid = [[2.0 * x + 1e-9 * (x + y + z), 2.0 * y + 1 / 3, 2.0 * z + 2 / 3]
            for x in range(10) for y in range(10) for z in range(10)]
    body = json.dumps(_job(grid), indent=8)
    assert len(body) < 1000 * 1024  # 277 KB at indent 8, for a cap of 1 MiB + 64 KiB
    r = httpx.post(f"{srv.url}/api/v1/jobs", content=body, timeout=60,
                   headers={"Authorization": f"Bearer {key}",
                            "Content-Type": "application/json"})
    assert r.status_code != 413, r.text
    assert r.status_code in (201, 422), r.text
