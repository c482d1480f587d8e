"""The submit-and-wait, claim and report requests answered below FastAPI
(``atomiverse_server.fastwrites``) answer exactly what the routes answer.

The same request goes to the app when anything about it is unusual: here an extra query
parameter, which the routes ignore and the fast path does not take. So ``?via=app`` gives the
route's own answer to compare with; the server's ``atomiverse_fast_answers_total`` counter
shows which of the two answered. Errors are not the fast path's to answer: they fall through
(the body handed on) and keep the app's one format."""

from __future__ import annotations

import re
import threading
import uuid
from typing import Any

import atomiverse
import httpx2 as httpx
import pytest
from atomiverse.levels import GFN2_XTB
from atomiverse.schema import JobPublic
from conftest import start_server, stop_process

pytestmark = pytest.mark.timeout(120)
APP = {"via": "app"}  # an unknown parameter: the routes ignore it, the fast path steps aside
# Records differ by these between two submissions of the same job.
OWN = {"job_id", "created_at", "started_at", "finished_at", "lease_id"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    # Credentials remembered for a minute, not a second: a request the test means for the
    # fast path must not be the one that finds its credential expired (and goes to the app).
    s = start_server(tmp_path_factory.mktemp("fastwrites"),
                     env_extra={"ATOMIVERSE_AUTH_CACHE_SECONDS": "60"})
    yield s
    stop_process(s.proc)


class Tenant:
    """A new workspace whose key the server has seen, and a controller (its token seen too)
    that runs nothing: the test claims and reports by hand."""

    def __init__(self, srv: Any) -> None:
        self.url = srv.url
        self.key = srv.new_workspace(f"fw-{uuid.uuid4().hex[:12]}")
        self.h = {"Authorization": f"Bearer {self.key}"}
        r = httpx.post(f"{srv.url}/api/v1/controllers/register", headers=self.h,
                       json={"name": "by-hand", "slots": 1, "engines": {"xtb": "1"}})
        assert r.status_code == 200, r.text
        self.th = {"Authorization": f"Bearer {r.json()['token']}"}
        # Seen once each through the app: the auth cache knows both from now on (1 s).
        self.post("/api/v1/controllers/claim", {"max_jobs": 1, "wait_seconds": 0}, self.th,
                  params=APP)

    def post(self, path: str, body: Any, headers: dict[str, str], params: Any = None,
             **kw: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", headers=headers, json=body, params=params,
                          timeout=60, **kw)

    def run(self, name: str, params: dict[str, Any]) -> httpx.Response:
        return self.post("/api/v1/jobs/run", {"job": _job(name), "compute_target": "by-hand"},
                         self.h, params=params)

    def claim(self, params: Any = None) -> httpx.Response:
        return self.post("/api/v1/controllers/claim", {"max_jobs": 5, "wait_seconds": 5},
                         self.th, params=params)

    def complete(self, reports: list[dict[str, Any]], params: Any = None) -> httpx.Response:
        return self.post("/api/v1/controllers/complete", {"reports": reports}, self.th,
                         params=params)


def _job(name: str) -> dict[str, Any]:
    return atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles("CCO"),
                                        level_of_theory=GFN2_XTB, name=name,
                                        use_cache=False).model_dump(mode="json")


def _result(energy: float) -> dict[str, Any]:
    return {"energy_hartree": energy, "gradient_hartree_per_bohr": [[0.125, -1e-9, 3.0]] * 9,
            "engine": "by-hand", "engine_version": "0", "wall_time_seconds": 0.5,
            "core_seconds": 0.5, "partial_charges_e": [0.1] * 9}


def _fast_answers(srv: Any) -> dict[str, float]:
    text = httpx.get(f"{srv.url}/metrics").text
    return {m[1]: float(m[2]) for m in
            re.finditer(r'atomiverse_fast_answers_total\{route="(\w+)"\} (\S+)', text)}


def _counted(srv: Any, before: dict[str, float]) -> dict[str, float]:
    after = _fast_answers(srv)
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def _same_record(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert list(a) == list(b) == list(JobPublic.model_fields)
    assert {k: v for k, v in a.items() if k not in OWN} == \
        {k: v for k, v in b.items() if k not in OWN}


def test_a_run_whose_wait_runs_out_is_the_routes_own_answer(srv):
    t = Tenant(srv)
    before = _fast_answers(srv)
    slow = t.run("parked", {"timeout_seconds": "0.2", **APP})
    assert _counted(srv, before) == {}
    fast = t.run("parked", {"timeout_seconds": "0.2"})
    assert _counted(srv, before) == {"run": 1}
    assert slow.status_code == fast.status_code == 201, (slow.text, fast.text)
    assert fast.headers["content-type"] == "application/json"
    _same_record(slow.json(), fast.json())
    assert fast.json()["state"] == "pending"


def _run_to_completion(t: Tenant, params: dict[str, Any], via: Any) -> tuple[Any, Any, Any]:
    """A /run request answered once the job is done: claimed and reported by hand (both
    through ``via``) while the run waits. Returns the run's, the claim's and the report's
    answers."""
    answer: dict[str, httpx.Response] = {}
    runner = threading.Thread(target=lambda: answer.setdefault("run", t.run("done", params)))
    runner.start()
    claim = t.claim(via)  # parked until the submission hands it the job
    (job,) = claim.json()["jobs"]
    report = t.complete([{"job_id": job["job_id"], "lease_id": job["lease_id"], "ok": True,
                          "result": _result(-11.25)}], via)
    runner.join(60)
    return answer["run"], claim, report


def test_a_run_claimed_and_reported_is_the_routes_own_answer(srv):
    t = Tenant(srv)
    before = _fast_answers(srv)
    slow_run, slow_claim, slow_report = _run_to_completion(t, {"timeout_seconds": 30, **APP},
                                                           APP)
    assert _counted(srv, before) == {}
    fast_run, fast_claim, fast_report = _run_to_completion(t, {"timeout_seconds": 30}, None)
    assert _counted(srv, before) == {"run": 1, "claim": 1, "complete": 1}
    for slow, fast in ((slow_run, fast_run), (slow_claim, fast_claim),
                       (slow_report, fast_report)):
        assert slow.status_code == fast.status_code, (slow.text, fast.text)
    assert fast_run.status_code == 201
    _same_record(slow_run.json(), fast_run.json())
    assert fast_run.json()["state"] == "done"
    assert fast_run.json()["result"]["energy_hartree"] == -11.25
    (slow_job,), (fast_job,) = slow_claim.json()["jobs"], fast_claim.json()["jobs"]
    assert list(slow_job) == list(fast_job)
    assert {k: v for k, v in slow_job.items() if k not in OWN} == \
        {k: v for k, v in fast_job.items() if k not in OWN}
    assert fast_report.json() == {"accepted": [fast_job["job_id"]], "rejected": []}
    assert slow_report.json() == {"accepted": [slow_job["job_id"]], "rejected": []}


def test_credentials_not_yet_remembered_are_looked_up_on_the_fast_path(srv):
    """A key or token the auth cache does not hold (new here, or its second expired: every
    second for every client and controller) is looked up and the request answered below
    FastAPI, not sent through the app (issue 28: three to four times the server's CPU)."""
    workspace = f"fw-new-{uuid.uuid4().hex[:12]}"
    first_key = srv.new_workspace(workspace)
    r = httpx.post(f"{srv.url}/api/v1/controllers/register",
                   headers={"Authorization": f"Bearer {first_key}"},
                   json={"name": "by-hand", "slots": 1, "engines": {"xtb": "1"}})
    token = r.json()["token"]  # not yet sent to the server
    h = {"Authorization": f"Bearer {srv.admin('issue-key', workspace)['api_key']}"}  # nor this
    before = _fast_answers(srv)
    first = httpx.post(f"{srv.url}/api/v1/jobs/run", headers=h, params={"timeout_seconds": 0},
                       json={"job": _job("first"), "compute_target": "by-hand"}, timeout=60)
    assert first.status_code == 201, first.text
    assert first.json()["state"] == "pending"
    assert _counted(srv, before) == {"run": 1}
    before = _fast_answers(srv)
    claim = httpx.post(f"{srv.url}/api/v1/controllers/claim",
                       headers={"Authorization": f"Bearer {token}"},
                       json={"max_jobs": 1, "wait_seconds": 0}, timeout=60)
    assert _counted(srv, before) == {"claim": 1}
    assert claim.status_code == 200, claim.text
    assert [j["job_id"] for j in claim.json()["jobs"]] == [first.json()["job_id"]]


def test_a_report_is_heard_once_whichever_path_it_takes(srv):
    """Lease fencing: the second report of the same attempt is turned away, fast or not."""
    t = Tenant(srv)
    t.run("twice", {"timeout_seconds": 0})
    (job,) = t.claim().json()["jobs"]
    report = [{"job_id": job["job_id"], "lease_id": job["lease_id"], "ok": True,
               "result": _result(-1.5)}]
    before = _fast_answers(srv)
    assert t.complete(report).json() == {"accepted": [job["job_id"]], "rejected": []}
    again_fast, again_app = t.complete(report), t.complete(report, APP)
    assert _counted(srv, before) == {"complete": 2}
    assert again_fast.json() == again_app.json() == {"accepted": [], "rejected": [job["job_id"]]}
    wrong = [{**report[0], "job_id": "no-such-job"}]
    assert t.complete(wrong).json() == t.complete(wrong, APP).json() == {
        "accepted": [], "rejected": ["no-such-job"]}
    stored = httpx.get(f"{srv.url}/api/v1/jobs/{job['job_id']}", headers=t.h).json()
    assert stored["state"] == "done" and stored["result"]["energy_hartree"] == -1.5


def test_an_invalid_result_fails_its_job_on_both_paths(srv):
    """The result is still checked against its job type's model (not just the wire model)."""
    t = Tenant(srv)
    records = []
    for via in (APP, None):
        t.run("bad result", {"timeout_seconds": 0})
        (job,) = t.claim(via).json()["jobs"]
        bad = {**_result(-1.0), "energy_hartree": "lots"}
        r = t.complete([{"job_id": job["job_id"], "lease_id": job["lease_id"], "ok": True,
                         "result": bad}], via)
        assert r.json() == {"accepted": [job["job_id"]], "rejected": []}
        records.append(httpx.get(f"{srv.url}/api/v1/jobs/{job['job_id']}", headers=t.h).json())
    slow, fast = records
    assert slow["state"] == fast["state"] == "failed"
    assert slow["error"] == fast["error"] and "energy_hartree" in fast["error"]


BAD_BODIES = [
    ("/api/v1/jobs/run", {"job": {"job_type": "single_point"}, "compute_target": "by-hand"}),
    ("/api/v1/jobs/run", {"job": {}, "extra": 1}),
    ("/api/v1/jobs/run", {"compute_target": "by-hand"}),
    ("/api/v1/jobs/run", {"job": {}, "compute_target": "x" * 101}),
    ("/api/v1/jobs/run", {"job": {}, "compute_target": "nobody-of-that-name"}),
    ("/api/v1/jobs/run", []),
    ("/api/v1/controllers/claim", {"max_jobs": 0}),
    ("/api/v1/controllers/claim", {"max_jobs": 1, "wait_seconds": 61}),
    ("/api/v1/controllers/claim", {"max_jobs": "1"}),
    ("/api/v1/controllers/claim", {"max_jobs": 1, "extra": True}),
    ("/api/v1/controllers/complete", {"reports": [{"job_id": "x"}]}),
    ("/api/v1/controllers/complete", {"reports": [{"job_id": "x", "lease_id": "y",
                                                   "ok": 1}]}),
    ("/api/v1/controllers/complete", {}),
]


@pytest.mark.parametrize("path,body", BAD_BODIES)
def test_invalid_bodies_get_the_routes_own_errors(srv, path, body):
    t = Tenant(srv)
    headers = t.h if path.endswith("/run") else t.th
    slow = t.post(path, body, headers, params=APP)
    fast = t.post(path, body, headers)
    assert slow.status_code == fast.status_code and slow.status_code >= 400, fast.text
    assert fast.json() == slow.json() and "detail" in fast.json()


@pytest.mark.parametrize("content", [b"", b"{", b'{"max_jobs": NaN}', b"[" * 5000 + b"]" * 5000,
                                     b'{"max_jobs": 1, "wait_seconds": 0, "max_jobs": 2}'])
def test_bodies_that_are_not_plain_json_get_the_routes_own_answers(srv, content):
    t = Tenant(srv)
    path = "/api/v1/controllers/claim"
    h = {**t.th, "Content-Type": "application/json"}
    slow = httpx.post(f"{srv.url}{path}", headers=h, content=content, params=APP)
    fast = httpx.post(f"{srv.url}{path}", headers=h, content=content)
    assert slow.status_code == fast.status_code, (slow.text, fast.text)
    assert fast.json() == slow.json()


@pytest.mark.parametrize("params", [{"timeout_seconds": "61"}, {"timeout_seconds": "-1"},
                                    {"timeout_seconds": "soon"}, {"timeout_seconds": "1e-1"}])
def test_odd_run_parameters_get_the_routes_own_answers(srv, params):
    t = Tenant(srv)
    slow, fast = t.run("odd", {**params, **APP}), t.run("odd", params)
    assert slow.status_code == fast.status_code, (slow.text, fast.text)
    if slow.status_code == 201:
        _same_record(slow.json(), fast.json())
    else:
        assert fast.json() == slow.json()


def test_credentials_are_checked_before_anything_else(srv):
    """Unknown, missing, wrong-kind and doubled credentials go to the app: 401 before the
    body is looked at, as before."""
    t = Tenant(srv)
    job = {"job": _job("x"), "compute_target": "by-hand"}
    cases = [
        ("/api/v1/jobs/run", {}, job),
        ("/api/v1/jobs/run", {"Authorization": "Bearer av_unknown"}, job),
        ("/api/v1/jobs/run", t.th, job),  # a controller token where a key is needed
        ("/api/v1/controllers/claim", t.h, {"max_jobs": 1, "wait_seconds": 0}),
        ("/api/v1/controllers/complete", {"Authorization": "Bearer avc_unknown"},
         {"reports": []}),
    ]
    before = _fast_answers(srv)
    for path, headers, body in cases:
        r = httpx.post(f"{srv.url}{path}", headers=headers, json=body)
        assert r.status_code == 401, (path, r.text)
        assert "detail" in r.json()
    assert _counted(srv, before) == {}


def test_a_body_over_the_limit_is_refused_by_its_size(srv):
    """By its declared length, and while it is read when it comes in chunks (no length)."""
    t = Tenant(srv)
    huge = b'{"job": {"atoms": {"numbers": [' + b"1," * 5_000_000 + b'1]}}}'
    for params in (None, APP):
        for content in (huge, (huge[i:i + 65536] for i in range(0, len(huge), 65536))):
            r = httpx.post(f"{srv.url}/api/v1/jobs/run", params=params, content=content,
                           headers={**t.h, "Content-Type": "application/json"})
            assert r.status_code == 413, r.text
            assert "larger than the limit" in r.json()["detail"]


def test_the_job_rate_limit_holds_on_the_fast_path(tmp_path):
    """Every /run counts against the workspace's job rate, whichever path answers it, and
    the refusal is the app's 429 (Retry-After, one detail line)."""
    s = start_server(tmp_path / "limited", env_extra={"ATOMIVERSE_JOB_RATE_PER_MINUTE": "2",
                                                      "ATOMIVERSE_AUTH_CACHE_SECONDS": "60"})
    try:
        t = Tenant(s)
        before = _fast_answers(s)
        first, second = t.run("one", {"timeout_seconds": 0, **APP}), \
            t.run("two", {"timeout_seconds": 0})
        assert first.status_code == second.status_code == 201
        refused_fast, refused_app = t.run("three", {"timeout_seconds": 0}), \
            t.run("four", {"timeout_seconds": 0, **APP})
        assert _counted(s, before) == {"run": 2}  # the accepted one and the refusal
        for r in (refused_fast, refused_app):
            assert r.status_code == 429, r.text
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["detail"].startswith("Rate limit: at most 2 job submissions")
        listed = httpx.get(f"{s.url}/api/v1/jobs", headers=t.h).json()["jobs"]
        assert sorted(j["name"] for j in listed) == ["one", "two"]
    finally:
        stop_process(s.proc)
