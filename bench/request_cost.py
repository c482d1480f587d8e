"""Server CPU per hot read (issue 22 item 2) on a realistic database, two checkouts alternating.

    python bench/request_cost.py [--old /path/to/old/checkout] [--backends sqlite,postgresql]
        [--jobs 3000] [--opt-every 5] [--requests 3000] [--pairs 3]

The database: ``--jobs`` finished drug-sized jobs in one workspace, every ``--opt-every``-th a
geometry optimisation with its trajectory, the others single points. Their payloads, results
and previews are real molecules of ``bench.following``'s set, their results of the schema's
shape and size (:func:`real_records`, cached under bench/results/), copied row by row with
new ids. Each checkout
(this one, and ``--old`` if given) migrates and fills a database of its own with its own code
(so each has the table layout its migrations make), and serves it from a server process of its
own. Then, pair by pair, in alternating order: ``--requests`` ``GET /api/v1/jobs/{id}`` of a
single point, as many of an optimisation, and a tenth as many list pages of 100 (the newest,
as ``/jobs`` shows them), sequential over one keep-alive connection; the server's process CPU
(user + system, psutil) over each run divided by its requests. Medians over the pairs.
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

import httpx2 as httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "bench" / "results" / "request_cost_records.json"
PACKAGES = ("sdk", "server", "controller", "core")
CALLS = ("GET single point", "GET optimisation", "list page of 100")


def _env(checkout: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(str(checkout / p) for p in PACKAGES)}


# ----- the records: computed once, for real -----------------------------------------------------
def real_records(n_sp: int = 2, n_opt: int = 1, opt_steps: int = 80) -> list[dict[str, Any]]:
    """Payload and preview of real drug-sized molecules (``bench.following``'s), with results
    of the schema's shape and size: a single point's energy, gradient and charges; an
    optimisation's ``opt_steps`` frames of positions and gradients (rounded as the schema
    stores them). Not computed here: xtb at nice 19 on a loaded machine took minutes a job,
    and what a read costs depends on the bytes, not on their values."""
    if RECORDS.exists():
        return json.loads(RECORDS.read_text())
    import random

    import atomiverse
    from atomiverse.levels import GFN2_XTB

    from bench.following import following_molecules

    rng, out = random.Random(22), []
    for i, (_, numbers, positions) in enumerate(following_molecules(n_sp + n_opt)):
        atoms = atomiverse.Atoms(numbers=numbers, positions=positions)
        opt = i >= n_sp
        job = (atomiverse.GeometryOptimization if opt else atomiverse.SinglePointEnergy)(
            atoms=atoms, level_of_theory=GFN2_XTB, name=f"cost-{i}")
        n = len(numbers)
        vectors = lambda digits: [[round(rng.uniform(-3, 3), digits) for _ in range(3)]  # noqa: E731
                                  for _ in range(n)]
        result = {"energy_hartree": -60.0 - rng.random(), "gradient_hartree_per_bohr":
                  vectors(7), "charges": [round(rng.uniform(-1, 1), 6) for _ in range(n)],
                  "dipole_debye": [0.1, 0.2, 0.3], "warnings": []}
        if opt:
            result |= {"energies_hartree": [-60.0 - k * 1e-4 for k in range(opt_steps)],
                       "trajectory_steps": list(range(opt_steps)),
                       "trajectory_positions_angstrom": [vectors(6) for _ in range(opt_steps)],
                       "trajectory_energies_hartree": [-60.0] * opt_steps,
                       "trajectory_gradients_hartree_per_bohr": [vectors(7)
                                                                 for _ in range(opt_steps)]}
        out.append({"job_type": job.model_dump(mode="json")["job_type"],
                    "payload": job.model_dump(mode="json"), "result": result,
                    "preview": job.atoms.preview()})
    RECORDS.parent.mkdir(parents=True, exist_ok=True)
    RECORDS.write_text(json.dumps(out))
    return out


def fill(url: str, n: int, opt_every: int) -> dict[str, str]:
    """Run by each checkout (``python bench/request_cost.py fill``): migrate with its own
    code, insert ``n`` finished jobs; the workspace's key and a job id of each kind."""
    from atomiverse_server import db, security
    from atomiverse_server.store import workspaces

    records = json.loads(RECORDS.read_text())
    sps = [r for r in records if r["job_type"] == "single_point_energy"]
    opts = [r for r in records if r["job_type"] != "single_point_energy"]
    engine = db.make_engine(url)
    db.migrate(engine)
    with db.write_tx(engine) as conn:
        ws = workspaces.create_workspace(conn, name=f"cost-{time.time_ns()}")
        key = workspaces.issue_api_key(conn, workspace_id=ws.id)
    t0, ids, rows = time.time() - n, {}, []
    for i in range(n):
        record = opts[i % len(opts)] if i % opt_every == 0 else sps[i % len(sps)]
        job_id = security.new_id()
        ids[record["job_type"]] = job_id
        rows.append(dict(id=job_id, workspace_id=ws.id, name=f"job-{i}",
                         job_type=record["job_type"], state="done", payload=record["payload"],
                         result=record["result"], preview=record["preview"],
                         compute_target="bench", attempts=1, walltime_seconds=3600.0,
                         created_at=t0 + i, started_at=t0 + i, finished_at=t0 + i + 0.5,
                         billed_core_seconds=1.0))
    for start in range(0, n, 500):
        with db.write_tx(engine) as conn:
            conn.execute(db.jobs.insert(), rows[start:start + 500])
    db.checkpoint_wal(engine)
    engine.dispose()
    return {"key": key, "sp": ids["single_point_energy"],
            "opt": next(v for k, v in ids.items() if k != "single_point_energy")}


# ----- a server per checkout --------------------------------------------------------------------
class Side:
    def __init__(self, label: str, checkout: Path, url: str, home: Path, args: Any) -> None:
        self.label, self.checkout = label, checkout
        out = subprocess.run([sys.executable, __file__, "fill", url, str(args.jobs),
                              str(args.opt_every)], env=_env(checkout), check=True,
                             capture_output=True, text=True).stdout
        self.ids = json.loads(out.strip().splitlines()[-1])
        port = _free_port()
        home.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "atomiverse_server", "--port", str(port), "--home",
             str(home), "--database-url", url, "--log-level", "warning"], env=_env(checkout))
        self.base = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.base, timeout=30,
                                 headers={"Authorization": f"Bearer {self.ids['key']}"})
        self._wait_ready()
        self.server = psutil.Process(self.proc.pid)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 300  # a loaded machine
        while True:
            try:
                if self.http.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.proc.terminate()
                raise RuntimeError(f"{self.label}: server did not start")
            time.sleep(0.1)  # polling a starting process: no event to wait on

    def calls(self, n: int) -> dict[str, tuple[str, int]]:
        return {"GET single point": (f"/api/v1/jobs/{self.ids['sp']}", n),
                "GET optimisation": (f"/api/v1/jobs/{self.ids['opt']}", n),
                "list page of 100": ("/api/v1/jobs?limit=100", max(n // 10, 50))}

    def server_ms(self, path: str, count: int) -> float:
        """Server CPU per request, ms, over ``count`` sequential requests."""
        assert self.http.get(path).status_code == 200  # warm: the auth cache, the statement
        t = self.server.cpu_times()
        for _ in range(count):
            self.http.get(path)
        u = self.server.cpu_times()
        return 1e3 * ((u.user + u.system) - (t.user + t.system)) / count

    def close(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(30)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_backend(backend: str, checkouts: dict[str, Path], args: Any, tmp: Path) -> dict:
    cluster = None
    if backend == "postgresql":
        sys.path.insert(0, str(ROOT / "tests"))
        from pg import start_cluster

        cluster = start_cluster(durable=True)
    sides: list[Side] = []
    try:
        for label, checkout in checkouts.items():
            url = cluster.new_database(f"cost_{label}") if cluster \
                else f"sqlite:///{tmp / label}.db"
            sides.append(Side(label, checkout, url, tmp / f"home-{backend}-{label}", args))
        figures: dict[str, dict[str, list[float]]] = {s.label: {c: [] for c in CALLS}
                                                     for s in sides}
        for pair in range(args.pairs):
            for side in (sides if pair % 2 == 0 else sides[::-1]):
                for call, (path, count) in side.calls(args.requests).items():
                    figures[side.label][call].append(side.server_ms(path, count))
            print(f"[{backend}] pair {pair + 1}: " + "; ".join(
                f"{label} " + ", ".join(f"{v[-1]:.3f}" for v in calls.values())
                for label, calls in figures.items()), flush=True)
        return figures
    finally:
        for side in sides:
            side.close()
        if cluster is not None:
            cluster.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--old", type=Path, help="a checkout of the code to compare with")
    p.add_argument("--backends", default="sqlite,postgresql")
    p.add_argument("--jobs", type=int, default=3000)
    p.add_argument("--opt-every", type=int, default=5)
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "request_cost.json")
    args = p.parse_args(argv)
    real_records()
    checkouts = {"new": ROOT, **({"old": args.old.resolve()} if args.old else {})}
    report: dict[str, Any] = {"load_average": os.getloadavg(), "jobs": args.jobs,
                              "opt_every": args.opt_every}
    with tempfile.TemporaryDirectory(prefix="atomiverse-cost-") as tmp:
        for backend in args.backends.split(","):
            report[backend] = run_backend(backend, checkouts, args, Path(tmp))
    report["load_average_after"] = os.getloadavg()
    print(f"server CPU per request, ms, median of {args.pairs} runs ({args.jobs} jobs, every "
          f"{args.opt_every}th an optimisation; load average {report['load_average'][0]:.1f}"
          f" -> {report['load_average_after'][0]:.1f}):")
    for backend in args.backends.split(","):
        for label, calls in report[backend].items():
            print(f"  {backend:<10} {label:<4} " + "  ".join(
                f"{call} {statistics.median(v):.3f}" for call, v in calls.items()))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["fill"]:
        print(json.dumps(fill(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        sys.path.insert(0, str(ROOT))
        sys.exit(main())
