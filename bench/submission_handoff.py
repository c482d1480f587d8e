"""The server's CPU for one submission handed to a waiting claim poll: the hand-off's claim
in a write transaction of its own after the submission's (``handoff.announce_new_work``, as
before ea735fb) against the claim inside the submission's transaction (``handoff.Handing``,
what ``POST /api/v1/jobs`` and ``/run`` do now). In this process, on a real SQLite store;
the two alternate in pairs (both orders), each pair's difference is of the same minutes.

    python bench/submission_handoff.py --calls 200 --pairs 10

The figure is the submitting thread's CPU time (``time.thread_time``) a submission, from
the route's preparation to the poll's hand-off, median over pairs, and the median of the
pairs' differences."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--pairs", type=int, default=10)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as home:
        asyncio.run(_run(Path(home), args.calls, args.pairs))


async def _run(home: Path, calls: int, pairs: int) -> None:
    import atomiverse
    from atomiverse.levels import GFN2_XTB
    from atomiverse_core.schema import JobSubmitRequest
    from atomiverse_server import db, handoff
    from atomiverse_server.notify import Notifier
    from atomiverse_server.settings import Settings
    from atomiverse_server.store import controllers as controller_store
    from atomiverse_server.store import workspaces as workspace_store
    from atomiverse_server.submission import prepare_entries, submit_entries

    engine = db.make_engine(f"sqlite:///{home / 'store.db'}")
    db.migrate(engine)
    with db.write_tx(engine) as conn:
        ws = workspace_store.create_workspace(conn, name="ws", balance=0.0)
        ctl, _ = controller_store.register_controller(
            conn, workspace_id=ws.id, name="poller", slots=1, cores_per_job=1,
            capacity=10**9, engines={"xtb": "6.7.1"}, hostname="h", serves_managed=False)
    settings = Settings(home=home / "home")
    notifier = Notifier()
    loop = asyncio.get_running_loop()
    atoms = atomiverse.Atoms.from_smiles("CCO")

    def request(i: int) -> JobSubmitRequest:
        moved = atoms.model_copy(update={"positions": [(x + 1e-4 * i, y, z) for x, y, z
                                                       in atoms.positions]})
        job = atomiverse.SinglePointEnergy(atoms=moved, level_of_theory=GFN2_XTB)
        return JobSubmitRequest(job=job.model_dump(), compute_target="poller")

    def separate(body: JobSubmitRequest) -> float:
        started = time.thread_time()
        prepared = prepare_entries([{"job": body.job, "compute_target": body.compute_target}],
                                   settings)
        with db.write_tx(engine) as conn:
            _, claimable, _ = submit_entries(conn, workspace_id=ws.id, prepared=prepared,
                                             settings=settings, local_controller=None)
        handoff.announce_new_work(engine, settings.lease_seconds, notifier, claimable)
        return time.thread_time() - started

    def inside(body: JobSubmitRequest) -> float:
        started = time.thread_time()
        prepared = prepare_entries([{"job": body.job, "compute_target": body.compute_target}],
                                   settings)
        with handoff.Handing(notifier.claim_waiters, settings.lease_seconds) as handing, \
                db.write_tx(engine) as conn:
            _, claimable, _ = submit_entries(conn, workspace_id=ws.id, prepared=prepared,
                                             settings=settings, local_controller=None)
            handing.claim(conn, claimable)
        notifier.jobs_pending.fire()
        return time.thread_time() - started

    counter = iter(range(10**9))

    async def timed(flow: Any) -> float:
        spent = 0.0
        for _ in range(calls):
            waiter = handoff.ClaimWaiter(ctl, 1, loop)
            notifier.claim_waiters.park(waiter)
            spent += await asyncio.to_thread(flow, request(next(counter)))
            handed = await waiter.handed
            assert len(handed) == 1, handed
        with db.write_tx(engine) as conn:  # out of the timing: the next run's jobs alone
            conn.execute(db.jobs.update().where(db.jobs.c.state == "running")
                         .values(state="done", finished_at=time.time()))
        return spent / calls * 1e3

    await timed(inside)  # warm: statements compiled, connections open
    await timed(separate)
    results: dict[str, list[float]] = {"separate": [], "inside": []}
    for pair in range(pairs):
        order = [("separate", separate), ("inside", inside)]
        for name, flow in order if pair % 2 == 0 else order[::-1]:
            results[name].append(await timed(flow))
    diffs = [a - b for a, b in zip(results["separate"], results["inside"], strict=True)]
    print(f"{calls} submissions x {pairs} pairs, CPU ms a submission (median): claim in its "
          f"own transaction {statistics.median(results['separate']):.3f}, in the "
          f"submission's {statistics.median(results['inside']):.3f}; saved "
          f"{statistics.median(diffs):.3f} ms (median of pair differences; range "
          f"{min(diffs):.3f} to {max(diffs):.3f})")
    engine.dispose()


if __name__ == "__main__":
    main()
