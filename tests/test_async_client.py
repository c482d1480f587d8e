"""atomiverse.AsyncClient against a real server and controller (issue 28, item 4): the sync
client's methods as coroutines, the same errors."""

from __future__ import annotations

import asyncio

import atomiverse
import pytest
from atomiverse.levels import GFN2_XTB
from conftest import xtb_reference


def _jobs(*smiles):
    return [atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles(s), name=s,
                                         level_of_theory=GFN2_XTB, use_cache=False).model_dump()
            for s in smiles]


def test_the_async_client_submits_follows_and_manages_jobs(server, workspace_key,
                                                           alpha_controller):
    async def scenario():
        async with atomiverse.AsyncClient(api_key=workspace_key, base_url=server.url) as c:
            res = await c.submit_batch(_jobs("O", "CO", "CCO"), compute_target=alpha_controller)
            ids = [e["job_id"] for e in res["jobs"]]
            seen = [r["job_id"] async for r in c.as_completed(ids, timeout=120)]
            records = await c.wait_jobs(ids, timeout=120)
            full = await asyncio.gather(*(c.get_job(i) for i in ids))
            renamed = await c.rename_job(ids[0], "water, renamed")
            listed = [j["job_id"] async for j in c.iter_jobs(limit=2, max_jobs=3)]
            await c.delete_job(ids[2])
            with pytest.raises(atomiverse.NotFoundError):
                await c.get_job(ids[2])
            return ids, seen, records, full, renamed, listed

    ids, seen, records, full, renamed, listed = asyncio.run(scenario())
    assert sorted(seen) == sorted(ids)
    assert [r["state"] for r in records] == ["done"] * 3
    for record in full:
        atoms = record["job"]["atoms"]
        assert abs(record["result"]["energy_hartree"]
                   - xtb_reference(atoms["numbers"], atoms["positions"])) < 1e-6
    assert renamed["name"] == "water, renamed"
    assert len(listed) == 3


def test_errors_are_the_sync_clients(server):
    async def scenario():
        async with atomiverse.AsyncClient(api_key="av_not_a_key", base_url=server.url) as c:
            await c.list_jobs()

    with pytest.raises(atomiverse.AuthenticationError):
        asyncio.run(scenario())


def test_a_fresh_homes_first_async_batch_is_stored_for_its_engine(tmp_path):
    """As the sync client: on a home whose embedded server has just started, the first
    submission waits for the local controller, so the job gets its cache key."""
    from embeddedhome import embedded_env

    point = atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles("CCN"),
                                         level_of_theory=GFN2_XTB)

    async def scenario():
        async with atomiverse.AsyncClient() as c:
            first = await c.submit_batch([point])
            (done,) = await c.wait_jobs([first["jobs"][0]["job_id"]], timeout=120)
            again = await c.submit_batch([point])
            return first, done, again

    with embedded_env(tmp_path / "home"):
        first, done, again = asyncio.run(scenario())
    assert first["jobs"][0]["status"] == "submitted" and done["state"] == "done"
    assert again["jobs"][0]["status"] == "cache_hit", again
    assert again["jobs"][0]["cached_from"] == first["jobs"][0]["job_id"]
