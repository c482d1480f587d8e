"""Following a batch the ways chemists write it, against a direct xtb-python pool.

Each way of following (``--modes``) submits the same molecules to the embedded platform
(``compute_target="local"``, ``use_cache=False``) and follows them until all are finished:

* ``wait``: ``atomiverse.wait_jobs(ids)``;
* ``sweep``: ``status()`` over the unfinished jobs, then ``time.sleep(0.05)``, until none;
* ``doc-loop``: the loop printed in the SDK documentation ("Poll until all are done"),
  literally: ``atomiverse._client_jobs.status(jid)`` over all remaining jobs, no sleep;
* ``four-procs``: four processes (started and connected before the clock) each follow a
  quarter of the batch with ``sweep``;
* ``dashboard``: ``wait`` while Chromium shows the ``/jobs`` page and one ``/job`` page.
  Afterwards the pages stay open with nothing happening, and then the same tabs show
  ``about:blank``: the pages' own idle cost is the difference (Chromium idles at a cost of
  its own, whatever it shows).

Every platform run is paired with a run of the same molecules on a warm
``bench.baselines.DirectPool`` (one xtb-python worker per physical core), alternating which
goes first; the ratio of each pair is printed, and their median. Wall time runs from the
submission to the last job seen finished by the follower.

Then the server's own cost, as process CPU time over many requests (not wall time):
``GET /api/v1/jobs/{id}`` and a list page of 100; the idle CPU of the embedded server and
local controller together; and the server's CPU with ``--parked`` controllers parked in
claim long-polls.

    python bench/following.py                       # 200 SP + 50 opt, 2 pairs each mode
    python bench/following.py --n-sp 50 --n-opt 0 --pairs 1 --modes wait doc-loop
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.baselines import DirectPool, cpu_delta, cpu_snapshot, scoped_env
from bench.molecules import RESULTS_DIR, benchmark_molecules
from bench.server_cost import idle_cpu, parked_claims_cpu, per_request_cpu

MODES = ("wait", "sweep", "doc-loop", "four-procs", "dashboard")
FINISHED = ("done", "failed", "cancelled")
# Drug-sized molecules (17 to 40 heavy atoms, 43 atoms on average), from after the
# throughput benchmark's 200: a set that benchmark does not contain.
SKIP = 200
POOL = 1000
MIN_HEAVY_ATOMS = 17
CHILD = """
import json, sys, time
import atomiverse
atomiverse.get_default_client().account()
print("ready", flush=True)
remaining = set(json.loads(sys.stdin.readline()))
while remaining:
    for jid in list(remaining):
        if atomiverse.status(jid)["state"] in ("done", "failed", "cancelled"):
            remaining.discard(jid)
    time.sleep(0.05)
print("done", flush=True)
"""


def following_molecules(n: int) -> list[Any]:
    found = [m for m in benchmark_molecules(POOL)[SKIP:]
             if sum(z > 1 for z in m[1]) >= MIN_HEAVY_ATOMS and _valid(m)]
    if len(found) < n:
        raise ValueError(f"only {len(found)} drug-sized molecules in the first {POOL}")
    return found[:n]


def _valid(molecule: Any) -> bool:
    """The SDK accepts the geometry (a few MMFF embeddings put two atoms too close)."""
    from atomiverse import Atoms

    try:
        Atoms(numbers=molecule[1], positions=molecule[2])
    except ValueError:
        return False
    return True


def _jobs(atomiverse: Any, molecules: list[Any], kind: str) -> list[dict[str, Any]]:
    from atomiverse.levels import GFN2_XTB

    cls = atomiverse.SinglePointEnergy if kind == "sp" else atomiverse.GeometryOptimization
    return [cls(atoms=atomiverse.Atoms(numbers=z, positions=p), level_of_theory=GFN2_XTB,
                use_cache=False, name=f"follow-{kind}-{i}").model_dump()
            for i, (_, z, p) in enumerate(molecules)]


# ----- the ways of following ------------------------------------------------------------------
def follow_wait(atomiverse: Any, ids: list[str], _ctx: dict[str, Any]) -> None:
    atomiverse.wait_jobs(ids)


def follow_sweep(atomiverse: Any, ids: list[str], _ctx: dict[str, Any]) -> None:
    remaining = set(ids)
    while remaining:
        for jid in list(remaining):
            if atomiverse.status(jid)["state"] in FINISHED:
                remaining.discard(jid)
        time.sleep(0.05)


def follow_doc_loop(atomiverse: Any, ids: list[str], _ctx: dict[str, Any]) -> None:
    job_ids = list(ids)
    while job_ids:
        done = []
        for jid in job_ids:
            status = atomiverse._client_jobs.status(jid)
            if status["state"] in ("done", "failed", "cancelled"):
                done.append(jid)
        for jid in done:
            job_ids.remove(jid)


def follow_four_procs(_atomiverse: Any, ids: list[str], ctx: dict[str, Any]) -> None:
    children = ctx["children"]
    quarters = [ids[i::len(children)] for i in range(len(children))]
    for child, part in zip(children, quarters, strict=True):
        child.stdin.write(json.dumps(part) + "\n")
        child.stdin.flush()
    for child in children:
        if child.stdout.readline().strip() != "done":
            raise RuntimeError("a following process failed")


def follow_dashboard(atomiverse: Any, ids: list[str], ctx: dict[str, Any]) -> None:
    ctx["job_url"] = f"{ctx['url']}/job?job_id={ids[0]}"
    ctx["job_page"].goto(ctx["job_url"])
    atomiverse.wait_jobs(ids)


FOLLOWERS = {"wait": follow_wait, "sweep": follow_sweep, "doc-loop": follow_doc_loop,
             "four-procs": follow_four_procs, "dashboard": follow_dashboard}


# ----- set-up each mode needs outside the clock -----------------------------------------------
def _start_children(n: int = 4) -> list[subprocess.Popen]:
    children = [subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True) for _ in range(n)]
    for child in children:
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("a following process did not start")
    return children


class _Dashboard:
    """Chromium (Playwright) signed in to the embedded server, showing /jobs."""

    def __init__(self, url: str, key: str) -> None:
        from playwright.sync_api import sync_playwright

        sys.path.insert(0, str(ROOT / "tests"))
        from browser import CHROMIUM_ARGS, require_browser

        self._pw = sync_playwright().start()
        self.browser = self._pw.chromium.launch(executable_path=require_browser(),
                                                args=CHROMIUM_ARGS, headless=True)
        context = self.browser.new_context()
        jobs = context.new_page()
        jobs.goto(f"{url}/signin")
        jobs.fill("#api_key", key)
        jobs.click("form.stack button[type=submit]")
        jobs.wait_for_url(f"{url}/jobs")
        self.pages = {"jobs_page": jobs, "job_page": context.new_page()}
        self.pids = [p.pid for p in _descendants() if "chrom" in p.name()]

    def close(self) -> None:
        self.browser.close()
        self._pw.stop()


def _show_pages(ctx: dict[str, Any], mode: str) -> None:
    """Outside the clock: the dashboard's /jobs page open for its own mode, and both tabs on
    about:blank for every other. (Until stop 48, /jobs stayed open and followed each batch in
    every mode of a run that included ``dashboard``, and Chromium's CPU counted in all of them.)"""
    if "jobs_page" not in ctx:
        return
    if mode == "dashboard":
        ctx["jobs_page"].goto(f"{ctx['url']}/jobs")
    else:
        for name in ("jobs_page", "job_page"):
            ctx[name].goto("about:blank")


def _descendants() -> list[Any]:
    import psutil

    return psutil.Process().children(recursive=True)


# ----- runs -----------------------------------------------------------------------------------
def run_platform(atomiverse: Any, mode: str, jobs: list[dict[str, Any]],
                 ctx: dict[str, Any]) -> tuple[float, float]:
    """Wall and CPU seconds (every process of this tree) of one submission followed by
    ``mode``; checks that every job ended done."""
    pids = [p.pid for p in _descendants()] + [os.getpid(), *ctx.get("extra_pids", [])]
    cpu0 = cpu_snapshot(pids)
    t0 = time.perf_counter()
    res = atomiverse.submit_batch(jobs, compute_target="local")
    ids = [j["job_id"] for j in res["jobs"] if j.get("job_id")]
    FOLLOWERS[mode](atomiverse, ids, ctx)
    wall = time.perf_counter() - t0
    cpu = cpu_delta(cpu0, cpu_snapshot(pids))
    states = [r["state"] for r in atomiverse.wait_jobs(ids)]
    if len(ids) != len(jobs) or set(states) != {"done"}:
        raise RuntimeError(f"{mode}: {len(ids)} of {len(jobs)} submitted, states {set(states)}")
    return wall, cpu


def run_mode(atomiverse: Any, pool: DirectPool, mode: str, kind: str, molecules: list[Any],
             pairs: int, ctx: dict[str, Any]) -> dict[str, Any]:
    jobs = _jobs(atomiverse, molecules, kind)
    out: dict[str, Any] = {"platform": [], "direct": [], "platform_cpu": [], "direct_cpu": [],
                           "ratios": []}
    for i in range(pairs):
        order = ("direct", "platform") if i % 2 == 0 else ("platform", "direct")
        walls = {}
        for side in order:
            if side == "direct":
                r = pool.run(molecules, kind)
                walls[side] = r.wall_seconds
                out["direct_cpu"].append(r.cpu_seconds)
            else:
                if mode == "four-procs":
                    ctx["children"] = _start_children()
                    ctx["extra_pids"] = [c.pid for c in ctx["children"]]
                _show_pages(ctx, mode)
                wall, cpu = run_platform(atomiverse, mode, jobs, ctx)
                walls[side] = wall
                out["platform_cpu"].append(cpu)
                for child in ctx.pop("children", []):
                    child.wait(30)
                ctx.pop("extra_pids", None)
            out[side].append(walls[side])
        out["ratios"].append(walls["platform"] / walls["direct"])
    out["median_ratio"] = statistics.median(out["ratios"])
    print(f"  {mode:<11} {kind:<3} n={len(molecules):<4} platform/direct "
          f"{out['median_ratio']:.3f}  pairs {[round(r, 3) for r in out['ratios']]}  "
          f"platform {[round(w, 2) for w in out['platform']]} s  direct "
          f"{[round(w, 2) for w in out['direct']]} s", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-sp", type=int, default=200)
    ap.add_argument("--n-opt", type=int, default=50)
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--requests", type=int, default=3000, help="per-request CPU sample size")
    ap.add_argument("--idle-seconds", type=float, default=60.0,
                    help="idle CPU measured over this long (psutil counts 10 ms ticks)")
    ap.add_argument("--parked", type=int, default=200, help="claim long-polls parked")
    ap.add_argument("--json", type=Path, default=RESULTS_DIR / "following.json")
    args = ap.parse_args(argv)

    molecules = following_molecules(max(args.n_sp, args.n_opt))
    home = tempfile.mkdtemp(prefix="bench-following-")
    report: dict[str, Any] = {"commit": _commit(), "modes": {}}
    fresh = {"ATOMIVERSE_HOME": home, "ATOMIVERSE_BASE_URL": None, "ATOMIVERSE_API_KEY": None}
    with scoped_env(fresh), DirectPool() as pool:
        import atomiverse

        atomiverse.configure()
        url = atomiverse.start_local()
        client = atomiverse.get_default_client()
        dashboard = _Dashboard(url, client._api_key) if "dashboard" in args.modes else None
        ctx: dict[str, Any] = {"url": url}
        if dashboard is not None:
            ctx.update(dashboard.pages, extra_pids=dashboard.pids)
        try:
            for kind, n in (("sp", args.n_sp), ("opt", args.n_opt)):
                for mode in args.modes if n else ():
                    report["modes"][f"{mode}/{kind}"] = run_mode(
                        atomiverse, pool, mode, kind, molecules[:n], args.pairs, ctx)
            if dashboard is not None:
                # The pages open with nothing happening: what showing them costs.
                _show_pages(ctx, "dashboard")
                if "job_url" in ctx:
                    ctx["job_page"].goto(ctx["job_url"])
                report["idle_pages_open"] = idle_cpu(home, args.idle_seconds,
                                                     browser_pids=dashboard.pids)
                # The same browser and tabs on about:blank: what Chromium costs by itself.
                for page in dashboard.pages.values():
                    page.goto("about:blank")
                report["idle_pages_blank"] = idle_cpu(home, args.idle_seconds,
                                                      browser_pids=dashboard.pids)
                dashboard.close()
                dashboard = None
            report["per_request"] = per_request_cpu(client, args.requests)
            report["idle"] = idle_cpu(home, args.idle_seconds)
        finally:
            if dashboard is not None:
                dashboard.close()
            atomiverse.stop_local()
    if args.parked:
        report["parked_claims"] = parked_claims_cpu(args.parked, seconds=args.idle_seconds)
    _print_costs(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    return 0


def _print_costs(report: dict[str, Any]) -> None:
    for name, value in report.get("per_request", {}).items():
        print(f"  server CPU per request, {name}: {value['server_ms']:.3f} ms "
              f"(client {value['client_ms']:.3f} ms, n={value['n']})")
    idle = report.get("idle")
    if idle:
        print(f"  idle, embedded server + local controller: {idle['percent_of_core']:.3f}% of "
              f"one core over {idle['seconds']:.0f} s")
    pages = report.get("idle_pages_open")
    if pages:
        print(f"  idle with /jobs and one /job page open: server + controller "
              f"{pages['percent_of_core']:.3f}% of one core, Chromium "
              f"{pages['browser_percent_of_core']:.3f}% over {pages['seconds']:.0f} s")
    blank = report.get("idle_pages_blank")
    if pages and blank:
        print(f"  the same tabs on about:blank: Chromium {blank['browser_percent_of_core']:.3f}%; "
              f"the pages' own cost: server + controller + Chromium "
              f"{pages['percent_of_core'] + pages['browser_percent_of_core'] - blank['percent_of_core'] - blank['browser_percent_of_core']:.3f}% of one core")
    parked = report.get("parked_claims")
    if parked:
        print(f"  {parked['controllers']} controllers parked on claim: server "
              f"{parked['percent_of_core']:.2f}% of one core over {parked['seconds']:.0f} s")


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                         capture_output=True, check=False)
    return out.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
