"""`atomiverse scale` on a real one-node SLURM (tests/slurm.py): the figures of
docs/deployment.md, per round of a batch of real xtb single points.

- seconds from the batch's submission to the first RUNNING allocation (squeue), and to the
  first controller holding jobs (the pool's state);
- jobs lost when a running allocation is scancelled mid-batch (not done, or failed);
- allocations left once the queue is empty, idle_timeout_seconds + 10 s after the last job;
- the over-claim ratio: the most jobs held / slots of running controllers at any sample (5 a
  second).

Run as root (SLURM's daemons): `python bench/slurm_scale.py --rounds 3`."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import httpx2 as httpx  # noqa: E402
from conftest import PY, start_server, stop_process  # noqa: E402
from slurm import SlurmCluster  # noqa: E402
from test_slurm_scale import PoolWatch, molecules, write_site  # noqa: E402

IDLE_SECONDS = 8


def _poll(ready, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        time.sleep(0.1)  # SLURM has no event to wait on
    raise TimeoutError(what)


def one_round(slurm: SlurmCluster, url: str, key: str, pool_token: str, target: str,
              n_jobs: int, seed: int) -> dict[str, float]:
    auth = {"Authorization": f"Bearer {key}"}
    watch = PoolWatch(url, pool_token)
    watch.start()
    mols = molecules(n_jobs + seed)[seed:]
    t0 = time.monotonic()
    r = httpx.post(f"{url}/api/v1/jobs/submit-batch", headers=auth, timeout=60, json={
        "jobs": [{"compute_target": target, "job": {
            "job_type": "single_point_energy", "use_cache": False,
            "atoms": {"numbers": z, "positions": p},
            "level_of_theory": {"method": "gfn2-xtb"}}} for z, p in mols]})
    ids = [j["job_id"] for j in r.json()["jobs"]]
    _poll(lambda: "RUNNING" in slurm.jobs().values(), 120, "a running allocation")
    first_running = time.monotonic() - t0
    holding = _poll(lambda: [m for m in watch.http.get("/api/v1/controllers/pool").json()
                             ["members"] if m["status"] == "online" and m["running"]], 120,
                    "a controller holding jobs")
    first_holding = time.monotonic() - t0
    slurm.scancel(holding[0]["name"].rsplit(".", 1)[1])

    def states() -> list[str]:
        return [httpx.get(f"{url}/api/v1/jobs/{j}", headers=auth, timeout=30).json()["state"]
                for j in ids]

    final = _poll(lambda: (s := states()) and all(x in ("done", "failed") for x in s) and s,
                  300, "every job finished")
    emptied = time.monotonic()
    time.sleep(IDLE_SECONDS + 10)  # the measurement window itself: idle timeout + 10 s
    left = len(slurm.jobs())
    watch.stop.set()
    watch.join(5)
    watch.http.close()
    return {"first_running_s": first_running, "first_holding_s": first_holding,
            "lost": sum(s != "done" for s in final), "left": left,
            "ratio": watch.max_ratio, "batch_s": emptied - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=24)
    args = ap.parse_args()
    import subprocess as sp

    work = Path(tempfile.mkdtemp(prefix="avbench-", dir="/tmp"))
    slurm = SlurmCluster(work / "slurm", cpus=2, kill_wait_seconds=20).start()
    srv = start_server(work / "server")
    scale = None
    try:
        key_file = srv.home / "workspace.key"
        key_file.write_text(srv.new_workspace("bench"))
        key_file.chmod(0o600)
        site = write_site(work / "site.toml", srv, key_file, idle_timeout_seconds=IDLE_SECONDS)
        with open(work / "scale.log", "ab") as log:
            scale = sp.Popen([PY, "-m", "atomiverse_controller.scale", str(site)], stdout=log,
                             stderr=log, env={**srv.env, "SLURM_CONF": str(slurm.conf)})
        token = work / "scale" / "pool.token"
        _poll(token.exists, 30, "the pool")
        rows = [one_round(slurm, srv.url, key_file.read_text(), token.read_text().strip(),
                          "cluster", args.jobs, seed=i * args.jobs) for i in range(args.rounds)]
    finally:
        if scale is not None:
            stop_process(scale)
        stop_process(srv.proc)
        slurm.stop()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            check=False, capture_output=True, text=True).stdout.strip()
    print(f"atomiverse scale on one-node SLURM 22.05, {args.jobs} xtb single points "
          f"(C16H34) a round, 1-core allocations, max_nodes 2, {args.rounds} rounds, "
          f"commit {commit}")
    print("| round | to first RUNNING allocation (s) | to first controller holding jobs (s) "
          "| batch (s) | lost under scancel | allocations left after queue empty | "
          "max over-claim (held/slots) |")
    print("|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows, 1):
        print(f"| {i} | {r['first_running_s']:.1f} | {r['first_holding_s']:.1f} | "
              f"{r['batch_s']:.1f} | {r['lost']} | {r['left']} | {r['ratio']:.2f} |")
    print(f"median to first RUNNING: "
          f"{statistics.median(r['first_running_s'] for r in rows):.1f} s")


if __name__ == "__main__":
    main()
