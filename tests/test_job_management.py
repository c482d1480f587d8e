"""Everything in sdk-job-management.txt, against a real server and real controllers."""

from __future__ import annotations

import time
import warnings

import atomiverse
import httpx2 as httpx
import psutil
import pytest
from atomiverse.levels import GFN2_XTB
from atomiverse.state import State
from conftest import free_port, metric_value


def _job(smiles="O", name=None, **kw):
    kw.setdefault("use_cache", False)
    return atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles(smiles),
                                        level_of_theory=GFN2_XTB, name=name, **kw)


@pytest.fixture
def sdk(server, workspace_key):
    """The module-level functions, pointed at the test server."""
    atomiverse.configure(api_key=workspace_key, base_url=server.url)
    yield atomiverse
    atomiverse.configure()


@pytest.fixture(scope="module")
def beta_key(server):
    return server.new_workspace("beta")


def _submit_parked(client, n, name="parked"):
    """Jobs routed to a controller that is registered but not running stay pending."""
    res = client.submit_batch([_job(name=f"{name}-{i}").model_dump() for i in range(n)],
                              compute_target="parking-lot")
    assert res["submitted"] == n, res
    return [j["job_id"] for j in res["jobs"]]


@pytest.fixture(scope="module")
def parking_lot(server, workspace_key):
    """A controller name with no running process behind it: its jobs wait."""
    r = httpx.post(f"{server.url}/api/v1/controllers/register",
                   headers={"Authorization": f"Bearer {workspace_key}"},
                   json={"name": "parking-lot", "slots": 1, "engines": {"xtb": "22.1"}})
    assert r.status_code == 200
    return "parking-lot"


def test_list_jobs_summaries_newest_first_and_pages(sdk, client, parking_lot):
    ids = _submit_parked(client, 7, name="listing")
    page = sdk.list_jobs(limit=3)
    assert isinstance(page, atomiverse.JobsPage)
    assert [j["job_id"] for j in page.jobs] == ids[::-1][:3]
    summary = page.jobs[0]
    assert set(summary) == {"job_id", "name", "state", "job_type", "created_at",
                            "billed_core_seconds", "molecule_preview"}
    assert summary["molecule_preview"]["formula"] == "H2O"
    assert len(summary["molecule_preview"]["positions"]) == 3
    assert page.has_more and page.next_cursor
    page2 = sdk.list_jobs(limit=3, cursor=page.next_cursor)
    assert [j["job_id"] for j in page2.jobs] == ids[::-1][3:6]


def test_keyset_paging_is_stable_while_jobs_arrive(sdk, client, parking_lot):
    _submit_parked(client, 6, name="stable")
    seen = []
    page = sdk.list_jobs(limit=4)
    total_before = sum(1 for _ in sdk.iter_jobs(limit=200))
    while True:
        seen += [j["job_id"] for j in page.jobs]
        _submit_parked(client, 2, name="arriving")  # lands at the head, not mid-walk
        if not page.has_more:
            break
        page = sdk.list_jobs(limit=4, cursor=page.next_cursor)
    assert len(seen) == len(set(seen)) == total_before


@pytest.mark.parametrize("limit", [0, 201, -1])
def test_limit_out_of_range_is_422(sdk, limit):
    with pytest.raises(atomiverse.AtomiverseError) as exc:
        sdk.list_jobs(limit=limit)
    assert exc.value.status_code == 422 and "limit" in exc.value.message


def test_tampered_cursor_is_422(sdk):
    with pytest.raises(atomiverse.AtomiverseError) as exc:
        sdk.list_jobs(limit=5, cursor="not-a-cursor!!")
    assert exc.value.status_code == 422 and "cursor" in exc.value.message


def test_iter_jobs_walks_pages_and_stops_at_max(sdk, client, parking_lot):
    _submit_parked(client, 5, name="iter")
    everything = list(sdk.iter_jobs(limit=2))
    assert len(everything) == len({j["job_id"] for j in everything}) >= 5
    assert len(list(sdk.iter_jobs(limit=2, max_jobs=3))) == 3


def test_job_handle_submit_wait_refresh_save_load(sdk, alpha_controller, tmp_path):
    job = _job("CCO", name="ethanol")
    assert job.submit(wait=False, compute_target=alpha_controller) is job
    assert job.job_id and job.state in (State.PENDING, State.RUNNING, State.DONE)
    path = tmp_path / "job.json"
    job.save(path)
    again = atomiverse.Job.load(path)
    assert again.job_id == job.job_id and again.atoms == job.atoms
    again.wait(timeout=120)
    assert again.state is State.DONE and again.result["energy_hartree"] < 0
    assert sdk.get_job(job.job_id)["state"] == "done"
    assert sdk._client_jobs.status(job.job_id)["result"] == again.result
    job.refresh()
    assert job.state is State.DONE and job.name == "ethanol"
    waited = _job("CCN").submit(wait=True, compute_target=alpha_controller, timeout=120)
    assert waited.state is State.DONE and waited.result is not None


def test_rename_rules(sdk, client, parking_lot):
    (job_id,) = _submit_parked(client, 1, name="to-rename")
    job = atomiverse.Job.from_record(client.get_job(job_id), client)
    job.rename("benchmark-water-b3lyp")
    assert job.name == "benchmark-water-b3lyp"
    assert sdk.rename_job(job_id, "  padded  ")["name"] == "padded"
    for bad, reason in [("   ", "empty"), ("x" * 121, "121 characters"),
                        ("tab\there", "non-printable"), ("bell\x07", "non-printable")]:
        with pytest.raises(atomiverse.AtomiverseError) as exc:
            sdk.rename_job(job_id, bad)
        assert exc.value.status_code == 422 and reason in exc.value.message
    assert sdk.rename_job(job_id, "x" * 120)["name"] == "x" * 120
    with pytest.raises(atomiverse.NotFoundError):
        sdk.rename_job("0" * 32, "ghost")


def test_cancel_pending_is_immediate_and_terminal_stays(sdk, client, parking_lot,
                                                        alpha_controller):
    (job_id,) = _submit_parked(client, 1, name="to-cancel")
    assert sdk.cancel_job(job_id)["state"] == "cancelled"
    assert sdk.get_job(job_id)["state"] == "cancelled"
    done = _job("O").submit(wait=True, compute_target=alpha_controller, timeout=120)
    done.cancel()
    assert done.state is State.DONE  # best effort: a finished job stays finished


def _worker_pids(proc) -> set[int]:
    return {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}


def test_cancel_running_kills_the_worker_and_frees_the_slot(server, workspace_key, sdk,
                                                            client):
    port = free_port()
    proc = server.start_controller(workspace_key, "one-slot", "--slots", "1",
                                   "--metrics-port", str(port))
    before = _worker_pids(proc)
    # A long optimisation: tight criterion, many steps, a flexible chain.
    slow = atomiverse.GeometryOptimization(
        atoms=atomiverse.Atoms.from_smiles("CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC"),
        level_of_theory=GFN2_XTB, fmax=1e-4, max_steps=10000, name="slow")
    slow.submit(compute_target="one-slot")
    deadline = time.monotonic() + 60
    # Computing in a worker, as the controller itself says (claimed is not started).
    while (slow.refresh().state is not State.RUNNING or metric_value(
            f"http://127.0.0.1:{port}/metrics", "atomiverse_controller_running") != 1):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    slow.cancel()
    assert slow.state is State.CANCELLED
    deadline = time.monotonic() + 30
    while before & _worker_pids(proc):
        assert time.monotonic() < deadline, "the worker running the job was not killed"
        time.sleep(0.2)
    # The controller logs the stop right after the kill: wait for the line, not a moment.
    while "reason=cancelled" not in server.controller_log("one-slot"):
        assert time.monotonic() < deadline, "the controller did not log the cancellation"
        time.sleep(0.1)
    nxt = _job("O", name="after-cancel").submit(wait=True, compute_target="one-slot",
                                                timeout=60)
    assert nxt.state is State.DONE
    assert sdk.get_job(slow.job_id)["state"] == "cancelled"


def test_delete_rules(sdk, client, parking_lot, alpha_controller):
    (pending_id,) = _submit_parked(client, 1, name="to-delete")
    with pytest.raises(atomiverse.ConflictError) as exc:
        sdk.delete_job(pending_id)
    assert exc.value.status_code == 409 and "cancel it first" in exc.value.message
    sdk.cancel_job(pending_id)
    sdk.delete_job(pending_id)
    with pytest.raises(atomiverse.NotFoundError) as exc:
        sdk.delete_job(pending_id)
    assert exc.value.status_code == 404
    sdk.delete_job(pending_id, missing_ok=True)  # cleanup code: 404 means done
    done = _job("O").submit(wait=True, compute_target=alpha_controller, timeout=120)
    done.delete()
    done.delete(missing_ok=True)
    assert all(j["job_id"] != done.job_id for j in sdk.iter_jobs(limit=200))


def test_visualize_and_dashboard_url(sdk, client, parking_lot, server, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    unsubmitted = _job()
    with pytest.raises(RuntimeError):
        unsubmitted.visualize()
    (job_id,) = _submit_parked(client, 1, name="viz")
    job = atomiverse.Job.from_record(client.get_job(job_id), client)
    url = f"{server.url}/job?job_id={job_id}"
    assert job.job_dashboard_url() == url
    assert capsys.readouterr().out == ""  # no side effect
    assert job.visualize(mode="link") == url
    assert job.visualize() == url  # headless: prints the link, still returns it
    assert capsys.readouterr().out.count(url) == 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert job.visualize(open_browser=False) == url
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)


def test_other_workspaces_jobs_are_invisible(server, client, beta_key, parking_lot):
    (job_id,) = _submit_parked(client, 1, name="alpha-private")
    beta = atomiverse.Client(api_key=beta_key, base_url=server.url)
    try:
        for call in (lambda: beta.get_job(job_id), lambda: beta.rename_job(job_id, "mine"),
                     lambda: beta.cancel_job(job_id), lambda: beta.delete_job(job_id)):
            with pytest.raises(atomiverse.NotFoundError):
                call()
        assert all(j["job_id"] != job_id for j in beta.iter_jobs(limit=200))
        with pytest.raises(atomiverse.NotFoundError):
            beta.wait_jobs([job_id], timeout=5)
        # and beta cannot route to alpha's controllers
        res = beta.submit_batch([_job().model_dump()], compute_target=parking_lot)
        assert res["jobs"][0]["status"] == "failed"
    finally:
        beta.close()
    assert client.get_job(job_id)["state"] == "pending"
