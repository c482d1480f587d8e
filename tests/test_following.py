"""Following jobs: the client's watch (``atomiverse._informer``), ``as_completed``,
``Job.wait`` and the server's ``/api/v1/jobs/watch``, against a real server process.

The test drives the controller protocol itself (register, claim, complete over HTTP), so it
decides when each job changes state and can check that the client sees every change. No
assertion here is on wall-clock time: requests are counted instead."""

from __future__ import annotations

import threading
import time

import atomiverse
import httpx2 as httpx
import pytest
from atomiverse.levels import GFN2_XTB
from conftest import restart_server, start_server, stop_process, xtb_reference


def _job(name, smiles="O"):
    return atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles(smiles),
                                        level_of_theory=GFN2_XTB, name=name,
                                        use_cache=False).model_dump()


class _Box:
    """A controller driven by hand: it claims and reports when the test says so."""

    def __init__(self, url: str, key: str, name: str) -> None:
        self.url = url
        reg = httpx.post(f"{url}/api/v1/controllers/register",
                         headers={"Authorization": f"Bearer {key}"},
                         json={"name": name, "slots": 1, "engines": {"xtb": "22.1"}})
        assert reg.status_code == 200, reg.text
        self.headers = {"Authorization": f"Bearer {reg.json()['token']}"}

    def claim(self, n: int = 1) -> list[dict]:
        r = httpx.post(f"{self.url}/api/v1/controllers/claim", headers=self.headers,
                       json={"max_jobs": n, "wait_seconds": 0})
        assert r.status_code == 200, r.text
        return r.json()["jobs"]

    def finish(self, claimed: list[dict], energy: float = -5.0) -> None:
        result = {"energy_hartree": energy, "gradient_hartree_per_bohr": [[0.0] * 3] * 3,
                  "engine": "by-hand", "engine_version": "0", "wall_time_seconds": 0.0,
                  "core_seconds": 0.0}  # a water single point's shape (the server checks it)
        reports = [{"job_id": c["job_id"], "lease_id": c["lease_id"], "ok": True,
                    "result": result} for c in claimed]
        r = httpx.post(f"{self.url}/api/v1/controllers/complete", headers=self.headers,
                       json={"reports": reports})
        assert r.status_code == 200 and not r.json()["rejected"], r.text


class _Counting(atomiverse.Client):
    """A client that counts the requests it sends, by path."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.sent: list[str] = []
        self._sent_lock = threading.Lock()

    def request(self, method, path, **kw):
        with self._sent_lock:
            self.sent.append(path)
        return super().request(method, path, **kw)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("following"),
                     env_extra={"ATOMIVERSE_MAX_WATCHES": "3"})
    yield s
    stop_process(s.proc)


@pytest.fixture(scope="module")
def key(srv):
    return srv.new_workspace("followers")


def _until(predicate, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
    raise AssertionError(f"not within {timeout} s: {what}")


def test_every_state_change_reaches_a_status_loop(srv, key):
    """pending -> running -> done, each seen by plain status() calls in a loop, and the
    record seen last is the server's own."""
    box = _Box(srv.url, key, "hand-1")
    with _Counting(api_key=key, base_url=srv.url) as client:
        (entry,) = client.submit_batch([_job("watched")], compute_target="hand-1")["jobs"]
        job_id = entry["job_id"]
        assert client.status(job_id)["state"] == "pending"
        (claimed,) = box.claim()
        running = _until(lambda: client.status(job_id)["state"] == "running", "running")
        assert running
        box.finish([claimed], energy=-7.25)
        done = _until(lambda: (r := client.status(job_id))["state"] == "done" and r,
                      "done")
        assert done == client.get_job(job_id)
        assert done["result"]["energy_hartree"] == -7.25
        assert done["attempts"] == 1 and done["controller"] == "hand-1"


def test_a_finished_job_is_answered_without_a_request(srv, key):
    box = _Box(srv.url, key, "hand-2")
    with _Counting(api_key=key, base_url=srv.url) as client:
        (entry,) = client.submit_batch([_job("finished")], compute_target="hand-2")["jobs"]
        box.finish(box.claim())
        _until(lambda: client.status(entry["job_id"])["state"] == "done", "done")
        before = len(client.sent)
        for _ in range(500):
            assert client.status(entry["job_id"])["state"] == "done"
        assert len(client.sent) == before


def test_a_repeated_unchanged_read_is_paced_not_spun(srv, key):
    """The documented loop (status over every remaining job, no sleep) on jobs that do not
    change: a handful of requests, however many calls."""
    _Box(srv.url, key, "hand-3")  # registered, never claims: its jobs stay pending
    with _Counting(api_key=key, base_url=srv.url) as client:
        ids = [j["job_id"] for j in client.submit_batch(
            [_job(f"idle-{i}") for i in range(20)], compute_target="hand-3")["jobs"]]
        calls = 0
        for _ in range(3):
            for job_id in ids:
                assert client.status(job_id)["state"] == "pending"
                calls += 1
        # the submission, one fetch of the whole batch on the first read, and the watch
        # thread's long-polls (one per 20 s, or again when superseded)
        assert calls == 60
        assert client.sent.count("/api/v1/jobs/submit-batch") == 1
        assert len(client.sent) <= 5, client.sent
        assert not {f"/api/v1/jobs/{j}" for j in ids} & set(client.sent), "a GET per job"


def test_following_jobs_another_process_submitted_does_not_restart_the_watch_per_job(srv, key):
    """A process following a batch it did not submit (one of four sharing it): its first
    reads are plain GETs, not a watch restart each (two watch requests per job before), and
    every job's finish still reaches its status loop."""
    box = _Box(srv.url, key, "hand-8")
    with atomiverse.Client(api_key=key, base_url=srv.url) as submitter:
        ids = [j["job_id"] for j in submitter.submit_batch(
            [_job(f"theirs-{i}") for i in range(30)], compute_target="hand-8")["jobs"]]
    with _Counting(api_key=key, base_url=srv.url) as follower:
        first = [follower.status(j) for j in ids]
        assert {r["state"] for r in first} == {"pending"}
        first[1]["state"] = "scribbled on by the caller"
        assert follower.status(ids[1])["state"] == "pending"  # it was handed a copy
        box.finish(box.claim(30), energy=-2.5)
        remaining = set(ids)
        while remaining:
            remaining -= {j for j in remaining if follower.status(j)["state"] == "done"}
        assert follower.status(ids[-1])["result"]["energy_hartree"] == -2.5
        watches = follower.sent.count("/api/v1/jobs/watch")
        assert watches < len(ids), follower.sent

def test_as_completed_yields_each_job_once_as_it_finishes(srv, key):
    box = _Box(srv.url, key, "hand-4")
    with atomiverse.Client(api_key=key, base_url=srv.url) as client:
        ids = [j["job_id"] for j in client.submit_batch(
            [_job(f"ac-{i}") for i in range(4)], compute_target="hand-4")["jobs"]]
        seen: list[str] = []

        def follow():
            seen.extend(r["job_id"] for r in client.as_completed(ids, timeout=120))

        t = threading.Thread(target=follow)
        t.start()
        claimed = box.claim(4)
        order = [claimed[2], claimed[0], claimed[3], claimed[1]]
        for i, c in enumerate(order):
            box.finish([c], energy=-1.0 - i)
            _until(lambda n=i: len(seen) > n or not t.is_alive(), "yielded")
        t.join(60)
        assert seen == [c["job_id"] for c in order]


def test_as_completed_times_out_naming_what_is_left(srv, key):
    _Box(srv.url, key, "hand-5")
    with atomiverse.Client(api_key=key, base_url=srv.url) as client:
        ids = [j["job_id"] for j in client.submit_batch(
            [_job("never")], compute_target="hand-5")["jobs"]]
        with pytest.raises(TimeoutError, match="1 of the jobs"):
            list(client.as_completed(ids, timeout=0.5))


def test_the_watch_survives_a_server_restart_without_losing_the_change(srv, key):
    box = _Box(srv.url, key, "hand-6")
    with atomiverse.Client(api_key=key, base_url=srv.url) as client:
        (entry,) = client.submit_batch([_job("restart")], compute_target="hand-6")["jobs"]
        assert client.status(entry["job_id"])["state"] == "pending"
        stop_process(srv.proc)
        restart_server(srv)
        (claimed,) = box.claim()
        box.finish([claimed], energy=-3.5)
        done = _until(lambda: (r := client.status(entry["job_id"]))["state"] == "done"
                      and r, "done after the restart")
        assert done["result"]["energy_hartree"] == -3.5


def test_watch_and_wait_answer_404_for_ids_not_in_the_workspace(srv, key):
    other = srv.new_workspace("strangers")
    box = _Box(srv.url, other, "their-box")
    del box
    with atomiverse.Client(api_key=other, base_url=srv.url) as theirs:
        (entry,) = theirs.submit_batch([_job("theirs")], compute_target="their-box")["jobs"]
    headers = {"Authorization": f"Bearer {key}"}
    for path, body in [("/api/v1/jobs/watch", {"jobs": {entry["job_id"]: None,
                                                        "no-such-job": None}}),
                       ("/api/v1/jobs/wait", {"job_ids": [entry["job_id"], "no-such-job"]})]:
        r = httpx.post(f"{srv.url}{path}", headers=headers, json=body)
        assert r.status_code == 404, (path, r.text)
        assert sorted(r.json()["missing"]) == sorted([entry["job_id"], "no-such-job"])
        assert "theirs" not in r.text and "their-box" not in r.text
    with atomiverse.Client(api_key=key, base_url=srv.url) as client, \
            pytest.raises(atomiverse.NotFoundError):
        client.status(entry["job_id"])


def test_watches_past_the_limit_get_429_and_the_server_stays_up(srv, key):
    """The server holds at most ATOMIVERSE_MAX_WATCHES (3 here) parked watches."""
    _Box(srv.url, key, "hand-7")
    with atomiverse.Client(api_key=key, base_url=srv.url) as client:
        (entry,) = client.submit_batch([_job("limit")], compute_target="hand-7")["jobs"]
    headers = {"Authorization": f"Bearer {key}"}
    body = {"jobs": {entry["job_id"]: "pending:0"}, "timeout_seconds": 30}

    def park():  # until it is let in (a closed client's watch may hold a place a moment)
        while httpx.post(f"{srv.url}/api/v1/jobs/watch", headers=headers, json=body,
                         timeout=60).status_code == 429:
            pass

    parked = [threading.Thread(target=park) for _ in range(3)]
    for t in parked:
        t.start()
    # (a Response is falsy when it is an error: wrapped in a list to be returned)
    (refused,) = _until(lambda: (r := httpx.post(
        f"{srv.url}/api/v1/jobs/watch", headers=headers,
        json={**body, "timeout_seconds": 0})).status_code == 429 and [r], "a 429")
    assert refused.headers["Retry-After"] == "1" and "watches" in refused.json()["detail"]
    assert httpx.get(f"{srv.url}/healthz").status_code == 200
    _Box(srv.url, key, "hand-7")  # re-registering changes nothing the watches wait for
    with atomiverse.Client(api_key=key, base_url=srv.url) as client:
        client.cancel_job(entry["job_id"])  # a change: the parked watches answer
    for t in parked:
        t.join(60)
    ok = httpx.post(f"{srv.url}/api/v1/jobs/watch", headers=headers,
                    json={**body, "timeout_seconds": 0})
    assert ok.status_code == 200 and ok.json()["jobs"][0]["state"] == "cancelled"


def test_job_wait_and_as_completed_carry_the_engines_energies(server, workspace_key,
                                                             alpha_controller):
    """Real xtb on the real controller; energies against the engine called directly."""
    smiles = ["O", "CCO", "C#N"]
    jobs = [atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles(s),
                                         level_of_theory=GFN2_XTB, use_cache=False)
            for s in smiles]
    with atomiverse.Client(api_key=workspace_key, base_url=server.url) as client:
        ids = [j["job_id"] for j in client.submit_batch(
            [j.model_dump() for j in jobs], compute_target=alpha_controller)["jobs"]]
        records = {r["job_id"]: r for r in client.as_completed(ids, timeout=300)}
        single = atomiverse.SinglePointEnergy(atoms=jobs[0].atoms, level_of_theory=GFN2_XTB,
                                              use_cache=False)
        single._client = client
        single.submit(compute_target=alpha_controller).wait(timeout=300)
    assert set(records) == set(ids)
    for job, job_id in zip(jobs, ids, strict=True):
        record = records[job_id]
        assert record["state"] == "done", record
        expected = xtb_reference(job.atoms.numbers, job.atoms.positions)
        assert abs(record["result"]["energy_hartree"] - expected) < 1e-6
    assert single.state == "done"
    assert abs(single.result["energy_hartree"] - xtb_reference(
        jobs[0].atoms.numbers, jobs[0].atoms.positions)) < 1e-6


def test_a_watch_gathers_a_wave_but_answers_a_change_after_a_quiet_spell_at_once():
    # The client asks again the moment it is answered, so the window counts from the watch's
    # start: a change within it waits for the rest of the wave, a later one (the last job
    # of a batch, after a quiet spell) is not held a whole window (it was: 0.2-0.3 s late).
    from atomiverse_server.routes.longpoll import coalesced_until

    started, coalesce, deadline = 1000.0, 0.25, 1020.0
    wave = 1000.05  # a change 50 ms into the watch
    assert coalesced_until(started, coalesce, deadline) == pytest.approx(wave + 0.2)
    late = 1003.0  # the first change three seconds into the watch
    assert coalesced_until(started, coalesce, deadline) <= late
    assert coalesced_until(started, 5.0, deadline=1002.0) == 1002.0  # never past the deadline
