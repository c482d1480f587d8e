"""The dashboard pages in a real headless Chromium, against a real server, controllers and xtb:
sign in, job pages (energy, 3D view, energy plot, live state, buttons), the jobs list, and
the security rules (workspaces, escaping, cookies, cross-site requests). Screenshots go to
tests/artifacts/."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import quote

import atomiverse
import httpx2 as httpx
import numpy as np
import pytest
from atomiverse.levels import GFN2_XTB
from browser import chromium, screenshot

pytestmark = pytest.mark.timeout(240)

PARACETAMOL = "CC(=O)Nc1ccc(O)cc1"
SESSION_COOKIE = "atomiverse_session"
UI_TIMEOUT_MS = 60_000

# Counts the canvas pixels the 3D viewer drew (its background is transparent).
DRAWN_FRACTION_JS = """() => {
  const gl = document.querySelector('#viewer canvas');
  const c = document.createElement('canvas');
  c.width = gl.width; c.height = gl.height;
  const ctx = c.getContext('2d');
  ctx.drawImage(gl, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let drawn = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] > 0 && !(d[i] > 245 && d[i + 1] > 245 && d[i + 2] > 245)) drawn++;
  }
  return drawn / (c.width * c.height);
}"""


# ----- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def _open_signed_in(browser: Any, server: Any, key: str) -> Any:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.errors = []
    page.dialogs = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.goto(f"{server.url}/signin")
    page.fill("#api_key", key)
    page.click("form.stack button[type=submit]")
    page.wait_for_url(re.compile(r".*/jobs$"))
    return page


@pytest.fixture(scope="module")
def page(browser, server, workspace_key):
    """A browser tab signed in to the 'alpha' workspace."""
    p = _open_signed_in(browser, server, workspace_key)
    yield p
    p.context.close()


@pytest.fixture(autouse=True)
def _no_script_errors(request):
    yield
    if "page" in request.fixturenames:
        p = request.getfixturevalue("page")
        errors, p.errors[:] = list(p.errors), []
        assert not errors, errors


def _register(server: Any, key: str, name: str) -> str:
    """Registers a controller name with no process behind it (yet): its jobs stay pending.
    Returns the controller's token."""
    r = httpx.post(f"{server.url}/api/v1/controllers/register",
                   headers={"Authorization": f"Bearer {key}"},
                   json={"name": name, "slots": 1, "engines": {"xtb": "22.1"}})
    assert r.status_code == 200, r.text
    return r.json()["token"]


@pytest.fixture(scope="module")
def parked(server, workspace_key):
    _register(server, workspace_key, "dash-parked")
    return "dash-parked"


def _sp(smiles: str = PARACETAMOL, **kw: Any) -> dict[str, Any]:
    return atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles(smiles),
                                        level_of_theory=GFN2_XTB, **kw).model_dump()


def _submit(client: Any, payload: Any, target: str) -> str:
    return client.submit_job(payload, compute_target=target)["job_id"]


def _cluster(copies: int) -> atomiverse.Atoms:
    """Copies of paracetamol on a grid (20 atoms each): a large molecule quickly."""
    unit = atomiverse.Atoms.from_smiles(PARACETAMOL)
    pos = np.asarray(unit.positions)
    numbers, positions = [], []
    for k in range(copies):
        shift = np.array([k % 4, (k // 4) % 2, k // 8]) * 10.0
        numbers += list(unit.numbers)
        positions += (pos + shift).tolist()
    return atomiverse.Atoms(numbers=numbers, positions=positions)


def _open_job(page: Any, server: Any, job_id: str) -> None:
    page.goto(f"{server.url}/job?job_id={job_id}")
    page.wait_for_selector("#viewer[data-ready=yes]", state="attached", timeout=UI_TIMEOUT_MS)


def _screen_state(page: Any) -> str:
    return page.eval_on_selector("#job-main", "el => el.dataset.state")


def _wait_screen_state(page: Any, states: str) -> None:
    page.wait_for_function(
        f"() => '{states}'.split(',').includes(document.querySelector('#job-main')?.dataset.state)",
        timeout=UI_TIMEOUT_MS)


# ----- sign in ----------------------------------------------------------------------------------
def test_sign_in_sets_a_safe_cookie_and_sign_out_clears_it(browser, server, workspace_key):
    context = browser.new_context()
    p = context.new_page()
    p.goto(f"{server.url}/jobs")
    assert "/signin" in p.url  # not signed in: sent to sign in, and back afterwards
    p.fill("#api_key", "av_not-a-real-key")
    p.click("form.stack button[type=submit]")
    assert "not valid" in p.inner_text(".alert-error")
    p.fill("#api_key", workspace_key)
    p.click("form.stack button[type=submit]")
    p.wait_for_url(re.compile(r".*/jobs$"))
    screenshot(p, "dashboard-jobs-after-sign-in")
    (cookie,) = [c for c in context.cookies() if c["name"] == SESSION_COOKIE]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax"
    assert workspace_key not in cookie["value"] and workspace_key[3:] not in cookie["value"]
    assert p.evaluate("document.cookie") == ""  # scripts cannot read it
    p.click(".signout button")
    p.wait_for_url(re.compile(r".*/signin$"))
    assert not [c for c in context.cookies() if c["name"] == SESSION_COOKIE]
    p.goto(f"{server.url}/jobs")
    assert "/signin" in p.url
    screenshot(p, "dashboard-signin")
    context.close()


# ----- job pages ----------------------------------------------------------------------------------
def test_done_single_point_page(page, server, client, alpha_controller):
    job_id = _submit(client, _sp(name="paracetamol single point"), alpha_controller)
    (done,) = client.wait_jobs([job_id], timeout=120)
    assert done["state"] == "done"
    api = client.get_job(job_id)
    _open_job(page, server, job_id)
    shown = page.inner_text("#energy-value")
    assert float(page.get_attribute("#energy-value", "data-value")) == \
        api["result"]["energy_hartree"]
    assert abs(float(shown) - api["result"]["energy_hartree"]) < 1e-10
    assert page.inner_text("#job-name") == "paracetamol single point"
    assert _screen_state(page) == "done"
    fields = page.inner_text("#result-fields")
    for label, unit in [("HOMO-LUMO gap", "eV"), ("Dipole moment", "D"), ("Wall time", "s"),
                        ("Core time", "core-s"), ("Largest gradient", "Eₕ/a₀")]:
        assert label in fields and unit in fields
    assert f"{api['result']['homo_lumo_gap_ev']:.4f}" in fields
    details = page.inner_text("#job-fields")
    for text in ("Single point", "GFN2-xTB", alpha_controller, "Billed", "Created",
                 "Started", "Finished"):
        assert text in details
    assert page.evaluate(DRAWN_FRACTION_JS) > 0.005  # the molecule is on the canvas
    assert page.locator("#cancel-btn").count() == 0  # a finished job cannot be cancelled
    screenshot(page, "dashboard-single-point")


def test_done_optimisation_page_plots_every_step_and_plays_the_path(page, server, client,
                                                                    alpha_controller):
    payload = atomiverse.GeometryOptimization(
        atoms=atomiverse.Atoms.from_smiles("CCCCO"), level_of_theory=GFN2_XTB,
        name="butanol optimisation").model_dump()
    job_id = _submit(client, payload, alpha_controller)
    client.wait_jobs([job_id], timeout=120)
    api = client.get_job(job_id)
    assert api["state"] == "done"
    energies = api["result"]["energies_hartree"]
    _open_job(page, server, job_id)
    assert float(page.get_attribute("#energy-value", "data-value")) == \
        api["result"]["energy_hartree"]
    assert page.locator("#energy-plot circle.step-point").count() == len(energies)
    assert int(page.get_attribute("#energy-plot", "data-points")) == len(energies)
    fields = page.inner_text("#result-fields")
    assert "Converged" in fields and str(api["result"]["n_steps"]) in fields
    assert page.evaluate(DRAWN_FRACTION_JS) > 0.005
    # the viewer opens on the final geometry; Input goes to the first frame, Play walks on
    last = int(page.get_attribute("#frame-slider", "max"))
    assert last > 1 and page.input_value("#frame-slider") == str(last)
    page.click("[data-goto=first]")
    assert page.input_value("#frame-slider") == "0"
    assert page.evaluate("window.atomiverseViewer.getFrame()") == 0
    page.click("#play-btn")
    page.wait_for_function("() => window.atomiverseViewer.getFrame() > 0", timeout=UI_TIMEOUT_MS)
    page.wait_for_function(f"() => document.querySelector('#frame-slider').value === '{last}'",
                           timeout=UI_TIMEOUT_MS)
    screenshot(page, "dashboard-optimisation")


def test_state_changes_on_screen_without_reload(page, server, client, workspace_key):
    late = "dash-late"
    _register(server, workspace_key, late)
    job_id = _submit(client, _sp(name="waits for its controller", use_cache=False), late)
    _open_job(page, server, job_id)
    assert _screen_state(page) == "pending"
    assert "Pending" in page.inner_text(".job-head .badge")
    page.evaluate("window.__sameDocument = true")
    screenshot(page, "dashboard-pending")
    server.start_controller(workspace_key, late, "--slots", "1", wait=False)
    _wait_screen_state(page, "done")
    assert page.evaluate("window.__sameDocument") is True  # updated in place, not reloaded
    api = client.get_job(job_id)
    assert api["state"] == "done"
    assert float(page.get_attribute("#energy-value", "data-value")) == \
        api["result"]["energy_hartree"]
    assert "Done" in page.inner_text(".job-head .badge")
    screenshot(page, "dashboard-done-live")


def test_jobs_list_follows_its_jobs_in_place(page, server, client, workspace_key):
    """The first page of /jobs updates a job's state and the counts when the job changes,
    by the watch, without fetching the page again."""
    late = "dash-list-late"
    _register(server, workspace_key, late)
    job_id = _submit(client, _sp(name="listed, waits for its controller", use_cache=False), late)
    page.goto(f"{server.url}/jobs")
    row = f"tr[data-job-id='{job_id}'] [data-state]"
    assert page.get_attribute(row, "data-state") == "pending"
    # Nothing animates while jobs wait: 100 pulsing dots kept Chromium drawing 60 frames a
    # second, a fifth of a core during a batch (issue 22).
    assert page.evaluate("document.getAnimations().length") == 0
    done_before = int(page.inner_text("[data-count-state=done] .count-n"))
    page.evaluate("window.__sameDocument = true")
    server.start_controller(workspace_key, late, "--slots", "1", wait=False)
    page.wait_for_function(f"() => document.querySelector(\"{row}\").dataset.state === 'done'",
                           timeout=UI_TIMEOUT_MS)
    assert page.evaluate("window.__sameDocument") is True
    assert int(page.inner_text("[data-count-state=done] .count-n")) == done_before + 1
    assert page.text_content(row) == "done" and client.get_job(job_id)["state"] == "done"


def test_jobs_list_shows_a_new_submission_when_the_watch_says_so(page, server, client,
                                                                 workspace_key):
    """No timer re-reads the list: the page's watch names the newest job it shows, the
    server answers ``newer`` once a later one is submitted, and only then is the list
    fetched again (in place)."""
    late = "dash-list-newer"
    _register(server, workspace_key, late)
    _submit(client, _sp(name="shown first", use_cache=False), late)
    watches: list[dict[str, Any]] = []
    page.on("request", lambda r: watches.append(r.post_data_json)
            if r.url.endswith("/api/v1/jobs/watch") else None)
    page.goto(f"{server.url}/jobs")
    newest = page.get_attribute("#jobs-live tr[data-job-id]", "data-job-id")
    page.wait_for_function("() => true")  # the page's script has run
    page.evaluate("window.__sameDocument = true")
    new_id = _submit(client, _sp(name="submitted while the page is open", use_cache=False), late)
    page.wait_for_selector(f"#jobs-live tr[data-job-id='{new_id}']", timeout=UI_TIMEOUT_MS)
    assert page.evaluate("window.__sameDocument") is True  # the list, not the page, reloaded
    assert page.get_attribute("#jobs-live tr[data-job-id]", "data-job-id") == new_id
    assert any(w and w.get("newest_seen") == newest for w in watches), watches
    # The server's side of it: a watch naming the newest job answers newer=true at once
    # after a submission, and newer=false when its time runs out with nothing new.
    headers = {"Authorization": f"Bearer {workspace_key}"}
    quiet = httpx.post(f"{server.url}/api/v1/jobs/watch", headers=headers, timeout=30,
                       json={"jobs": {}, "newest_seen": new_id, "timeout_seconds": 0.2}).json()
    assert quiet == {"jobs": [], "newer": False}
    stale = httpx.post(f"{server.url}/api/v1/jobs/watch", headers=headers, timeout=30,
                       json={"jobs": {}, "newest_seen": newest, "timeout_seconds": 20}).json()
    assert stale == {"jobs": [], "newer": True}


def test_cancel_a_running_job_from_the_page(page, server, client, alpha_controller):
    slow = atomiverse.GeometryOptimization(
        atoms=_cluster(6), level_of_theory=GFN2_XTB, fmax=1e-4, max_steps=10000,
        name="slow cluster", use_cache=False).model_dump()
    job_id = _submit(client, slow, alpha_controller)
    deadline = time.monotonic() + 60
    while client.get_job(job_id)["state"] != "running":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.2)
    _open_job(page, server, job_id)
    assert _screen_state(page) == "running"
    assert page.is_disabled("#delete-btn")  # the API's rule: cancel first
    screenshot(page, "dashboard-running")
    page.evaluate("window.__sameDocument = true")
    page.click("#cancel-btn")
    _wait_screen_state(page, "cancelled")
    assert page.evaluate("window.__sameDocument") is True
    assert client.get_job(job_id)["state"] == "cancelled"
    screenshot(page, "dashboard-cancelled")


def test_rename_escapes_names_and_delete_follows_the_api_rules(page, server, client, parked):
    job_id = _submit(client, _sp(name="to be renamed", use_cache=False), parked)
    _open_job(page, server, job_id)
    xss = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    page.click("#rename-btn")
    page.fill("#rename-input", xss)
    page.click("#rename-form button[type=submit]")
    page.wait_for_function(
        "() => document.querySelector('#job-name').textContent.includes('<script>')",
        timeout=UI_TIMEOUT_MS)
    assert page.inner_text("#job-name") == xss
    assert client.get_job(job_id)["name"] == xss
    page.reload()
    page.wait_for_selector("#viewer[data-ready=yes]", state="attached")
    assert page.inner_text("#job-name") == xss
    page.goto(f"{server.url}/jobs?name={quote('<script>')}")
    assert page.locator(f"a.job-link[href='/job?job_id={job_id}']").inner_text() == xss
    assert page.locator("tbody script, tbody img").count() == 0
    assert page.dialogs == []
    screenshot(page, "dashboard-xss-name-in-list")
    # the server's name rules, shown as the server words them
    _open_job(page, server, job_id)
    page.click("#rename-btn")
    page.fill("#rename-input", "   ")
    page.eval_on_selector("#rename-input", "el => el.removeAttribute('required')")
    page.click("#rename-form button[type=submit]")
    page.wait_for_selector("#action-error:not([hidden])")
    assert "must not be empty" in page.inner_text("#action-error")
    # delete: not while pending; after cancelling, two clicks, then back to the list
    assert page.is_disabled("#delete-btn")
    page.click("#cancel-btn")
    _wait_screen_state(page, "cancelled")
    page.click("#delete-btn")
    assert page.inner_text("#delete-btn") == "Confirm delete"
    page.click("#delete-btn")
    page.wait_for_url(re.compile(r".*/jobs$"))
    with pytest.raises(atomiverse.NotFoundError):
        client.get_job(job_id)
    page.goto(f"{server.url}/job?job_id={job_id}")
    assert "Job not found" in page.inner_text("h1")


def test_failed_job_shows_its_error_in_full(page, server, client, workspace_key):
    broken = "dash-broken"
    token = _register(server, workspace_key, broken)
    job_id = _submit(client, _sp(name="will fail", use_cache=False), broken)
    # A controller reports the failure as the protocol allows: claim, then complete
    # with an error (no engine runs this one).
    ctl = {"Authorization": f"Bearer {token}"}
    claimed = httpx.post(f"{server.url}/api/v1/controllers/claim", headers=ctl,
                         json={"max_jobs": 1, "wait_seconds": 5}, timeout=15).json()["jobs"]
    (lease,) = [c for c in claimed if c["job_id"] == job_id]
    message = "SCF did not converge in 250 iterations\n" + "\n".join(
        f"  iteration {i}: dE = {1e-3 / (i + 1):.3e} <not & escaped>" for i in range(40))
    r = httpx.post(f"{server.url}/api/v1/controllers/complete", headers=ctl, json={
        "reports": [{"job_id": job_id, "lease_id": lease["lease_id"], "ok": False,
                     "error": message, "error_type": "convergence"}]})
    assert r.status_code == 200 and r.json()["accepted"] == [job_id], r.text
    _open_job(page, server, job_id)
    assert _screen_state(page) == "failed"
    assert page.inner_text("#job-error") == client.get_job(job_id)["error"] == message
    screenshot(page, "dashboard-failed")


def test_large_molecule_renders_without_freezing_the_page(page, server, client, parked):
    big = _cluster(16)  # 320 atoms
    job = atomiverse.SinglePointEnergy(atoms=big, level_of_theory=GFN2_XTB,
                                       name="large cluster", use_cache=False)
    job_id = _submit(client, job.model_dump(), parked)
    page.goto(f"{server.url}/job?job_id={job_id}")
    # the text of the page is there before the viewer has finished
    assert page.inner_text("#job-name") == "large cluster"
    page.wait_for_selector("#viewer[data-ready=yes]", state="attached", timeout=UI_TIMEOUT_MS)
    assert page.evaluate("window.atomiverseViewer.getModel().selectedAtoms({}).length") == 320
    assert page.evaluate(DRAWN_FRACTION_JS) > 0.005
    # and it still answers: a change of style is drawn within a frame or two
    page.select_option("#viewer-style", "stick")
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    screenshot(page, "dashboard-large-molecule")
    client.cancel_job(job_id)


# ----- jobs list --------------------------------------------------------------------------------
def test_jobs_list_counts_filters_search_and_pages(browser, server):
    key = server.new_workspace("dash-list")
    other = atomiverse.Client(api_key=key, base_url=server.url)
    try:
        target = "dash-list-parked"
        _register(server, key, target)
        ids = [_submit(other, _sp("O", name=f"water {i}", use_cache=False), target)
               for i in range(5)]
        ids.append(_submit(other, _sp("N", name="ammonia", use_cache=False), target))
        other.cancel_job(ids[0])
        p = _open_signed_in(browser, server, key)
        counts = {el.get_attribute("data-count-state"): int(el.inner_text().split()[0])
                  for el in p.query_selector_all("[data-count-state]")}
        assert counts == {"pending": 5, "running": 0, "done": 0, "failed": 0, "cancelled": 1}
        assert int(p.inner_text("a.count:not([data-count-state]) .count-n")) == 6
        rows = [r.get_attribute("data-job-id") for r in p.query_selector_all("tbody tr")]
        assert rows == ids[::-1]  # newest first
        api_names = {j["job_id"]: j["name"] for j in other.list_jobs(limit=50).jobs}
        for link in p.query_selector_all("a.job-link"):
            job_id = link.get_attribute("href").split("job_id=")[1]
            assert link.inner_text() == api_names[job_id]
        screenshot(p, "dashboard-jobs-list")
        # the first page follows the batch by itself while jobs are pending or running
        p.evaluate("window.__sameDocument = true")
        other.cancel_job(ids[1])
        p.wait_for_function("() => document.querySelector("
                            "'[data-count-state=cancelled] .count-n').textContent === '2'",
                            timeout=UI_TIMEOUT_MS)
        assert p.evaluate("window.__sameDocument") is True
        assert "Cancelled" in p.inner_text(f"tr[data-job-id='{ids[1]}'] .badge")
        # state filter
        p.click("[data-count-state=cancelled]")
        assert [r.get_attribute("data-job-id") for r in p.query_selector_all("tbody tr")] \
            == [ids[1], ids[0]]
        # name search (within the filter, then cleared)
        p.goto(f"{server.url}/jobs")
        p.fill("input[name=name]", "ammo")
        p.press("input[name=name]", "Enter")
        p.wait_for_url(re.compile(r".*name=ammo.*"))
        assert [r.get_attribute("data-job-id") for r in p.query_selector_all("tbody tr")] \
            == [ids[5]]
        # keyset pages of 2, the same as the API's
        p.goto(f"{server.url}/jobs?limit=2")
        seen: list[str] = []
        api_page = other.list_jobs(limit=2)
        while True:
            rows = [r.get_attribute("data-job-id") for r in p.query_selector_all("tbody tr")]
            assert rows == [j["job_id"] for j in api_page.jobs]
            seen += rows
            if not api_page.has_more:
                assert p.locator("a[rel=next]").count() == 0
                break
            p.click("a[rel=next]")
            api_page = api_page.next_page()
        assert seen == ids[::-1]
        # a row opens its job page
        p.goto(f"{server.url}/jobs")
        p.click(f"a.job-link[href='/job?job_id={ids[5]}']")
        p.wait_for_selector("#viewer[data-ready=yes]", state="attached")
        assert p.inner_text("#job-name") == "ammonia"
        assert not p.errors, p.errors
        p.context.close()
    finally:
        other.close()


def test_pages_never_show_another_workspaces_jobs(page, server):
    key = server.new_workspace("dash-private")
    other = atomiverse.Client(api_key=key, base_url=server.url)
    try:
        target = "private-parked"
        _register(server, key, target)
        job_id = _submit(other, _sp("O", name="private water", use_cache=False), target)
    finally:
        other.close()
    response = page.goto(f"{server.url}/job?job_id={job_id}")
    assert response.status == 404
    assert "Job not found" in page.inner_text("h1")
    assert "private water" not in page.content()
    page.goto(f"{server.url}/jobs?name=private")
    assert page.locator("tbody tr").count() == 0
    r = page.request.get(f"{server.url}/api/v1/jobs/{job_id}")
    assert r.status == 404


# ----- cross-site requests ----------------------------------------------------------------------
def test_state_changes_through_the_cookie_need_the_pages_token(page, browser, server, client,
                                                               parked):
    job_id = _submit(client, _sp(name="csrf target", use_cache=False), parked)
    cookie = next(c["value"] for c in page.context.cookies() if c["name"] == SESSION_COOKIE)
    jar = {SESSION_COOKIE: cookie}
    cancel = f"{server.url}/api/v1/jobs/{job_id}/cancel"
    # the cookie alone reads, but does not change anything
    assert httpx.get(f"{server.url}/api/v1/jobs/{job_id}", cookies=jar).status_code == 200
    assert httpx.post(cancel, cookies=jar).status_code == 403
    assert httpx.post(cancel, cookies=jar, headers={"X-CSRF-Token": "0" * 64}).status_code == 403
    token = page.get_attribute('meta[name="csrf-token"]', "content")
    assert httpx.post(cancel, cookies=jar, headers={
        "X-CSRF-Token": token, "Origin": "https://evil.example"}).status_code == 403
    assert httpx.post(f"{server.url}/signout", cookies=jar,
                      data={"csrf_token": "nope"}).status_code == 403
    assert client.get_job(job_id)["state"] == "pending"
    # a page on another site posting a form at the API, in the same browser
    attacker = page.context.new_page()
    attacker.set_content(f'<form id="f" method="post" action="{cancel}"></form>')
    with attacker.expect_navigation():
        attacker.eval_on_selector("#f", "f => f.submit()")
    assert client.get_job(job_id)["state"] == "pending"
    attacker.close()
    # Bearer keys work as before, and the page's own button works
    _open_job(page, server, job_id)
    page.click("#cancel-btn")
    _wait_screen_state(page, "cancelled")
    assert client.get_job(job_id)["state"] == "cancelled"
