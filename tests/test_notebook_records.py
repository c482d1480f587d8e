"""Issue 28, item 5: the records the SDK returns (``get_job``, ``wait_jobs``, ``as_completed``,
``list_jobs``, ``submit_batch``, the async client's) render in a real notebook, executed
headless by nbclient in an IPython kernel against a real server and controller running xtb:
a record as a table with its energy and a 3D view of its structure, a list as one bounded
table, names escaped; and they stay the dicts and lists the API documents."""

from __future__ import annotations

import ast
import json
import re
from typing import Any

import nbformat
import numpy as np
import pytest
from atomiverse.records import MAX_ROWS, JobRecord, JobRecords
from browser import page_with_views
from conftest import xtb_reference
from nbclient import NotebookClient

pytestmark = pytest.mark.timeout(300)
HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'
ESCAPED = ("&lt;script&gt;window.pwned=1&lt;/script&gt;&lt;img src=x "
           "onerror=&quot;window.pwned=2&quot;&gt;")
VIEW_DATA = re.compile(r"var d = (\{.*?\}), waited")
CELLS = {  # name -> source; run in this order
    "setup": """import os
os.environ["ATOMIVERSE_BASE_URL"] = {url!r}
os.environ["ATOMIVERSE_API_KEY"] = {key!r}
import atomiverse
from atomiverse.levels import GFN2_XTB
jobs = [atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles("O"), name={name!r},
                                     level_of_theory=GFN2_XTB, use_cache=False),
        atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles("CO"), name="methanol",
                                     level_of_theory=GFN2_XTB, use_cache=False),
        atomiverse.GeometryOptimization(atoms=atomiverse.Atoms.from_smiles("CCO"),
                                        name="ethanol & co", level_of_theory=GFN2_XTB,
                                        use_cache=False)]
batch = atomiverse.submit_batch([j.model_dump() for j in jobs], compute_target={target!r})
ids = [j["job_id"] for j in batch["jobs"]]""",
    "batch": "batch",
    "waited": "records = atomiverse.wait_jobs(ids, progress=False)\nrecords",
    "record": "record = atomiverse.get_job(ids[0])\nrecord",
    "optimised": "atomiverse.get_job(ids[2])",
    "completed": """completed = list(atomiverse.as_completed(ids))  # each a JobRecord
atomiverse.records.JobRecords(completed)""",
    "shapes": """import copy, json, pickle
[isinstance(record, dict), json.loads(json.dumps(record)) == record,
 pickle.loads(pickle.dumps(record)) == record, copy.deepcopy(record) == record,
 dict(record) == record, isinstance(records, list), records == [dict(r) for r in records],
 type(records[0]).__name__, type(completed[0]).__name__,
 type(next(atomiverse.iter_jobs(limit=2))).__name__]""",
    "many": "atomiverse.records.JobRecords(list(records) * 20)",
    "page": "atomiverse.list_jobs(limit=2)",
    "summary": "next(atomiverse.iter_jobs(limit=1))  # the newest: one of the three",
    "async": """async with atomiverse.AsyncClient() as client:
    async_records = await client.wait_jobs(ids, progress=False)
    async_record = await client.get_job(ids[0])
async_records""",
    "async record": "async_record",
    "ids": "ids",
}


@pytest.fixture(scope="module")
def executed(server, workspace_key, alpha_controller, tmp_path_factory) -> dict[str, Any]:
    nb = nbformat.v4.new_notebook()
    setup = CELLS["setup"].format(url=server.url, key=workspace_key, name=HOSTILE,
                                  target=alpha_controller)
    nb.cells = [nbformat.v4.new_code_cell(setup if k == "setup" else src)
                for k, src in CELLS.items()]
    cwd = tmp_path_factory.mktemp("notebook-records")
    NotebookClient(nb, timeout=240, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    nbformat.write(nb, str(cwd / "executed.ipynb"))  # for a look after a failure
    return dict(zip(CELLS, nb.cells, strict=True))


def _output(executed: dict[str, Any], cell: str) -> dict[str, Any]:
    outputs = executed[cell].outputs
    assert not [o for o in outputs if o.output_type == "error"], outputs
    (out,) = [o for o in outputs if o.output_type == "execute_result"]
    return out.data


def _html(executed: dict[str, Any], cell: str) -> str:
    data = _output(executed, cell)
    assert "text/html" in data, f"cell {cell!r} has no HTML output: {data}"
    return data["text/html"]


@pytest.fixture(scope="module")
def server_records(executed, server, workspace_key) -> list[dict[str, Any]]:
    """The three jobs as the server gives them, read with a plain client."""
    import atomiverse

    ids = ast.literal_eval(_output(executed, "ids")["text/plain"])
    with atomiverse.Client(api_key=workspace_key, base_url=server.url) as c:
        return [dict(c.get_job(i)) for i in ids]


def _energy_cell(record: dict[str, Any]) -> str:
    return f"<td>{record['result']['energy_hartree']:.8f}</td>"


def test_the_energies_shown_are_the_engines(server_records):
    for record in server_records:
        assert record["state"] == "done", record
        atoms = record["job"]["atoms"]
        positions = record["result"].get("final_positions_angstrom") or atoms["positions"]
        assert abs(record["result"]["energy_hartree"]
                   - xtb_reference(atoms["numbers"], positions)) < 1e-6


def test_a_record_renders_as_a_table_with_its_structure(executed, server_records):
    html = _html(executed, "record")
    water = server_records[0]
    assert _energy_cell(water) in html and "<td>done</td>" in html and "<td>H2O</td>" in html
    assert f"<td>{water['result']['homo_lumo_gap_ev']:.3f}</td>" in html
    assert f"<td>{water['job_id']}</td>" in html
    assert ESCAPED in html and "window.pwned=1</script>" not in html
    assert "<img src=x" not in html
    (data,) = VIEW_DATA.findall(html)  # a single point: the geometry it was computed at
    xyz = json.loads(data)["xyz"].splitlines()
    assert int(xyz[0]) == 3 and "input geometry" in html
    assert np.allclose([[float(c) for c in row.split()[1:]] for row in xyz[2:]],
                       water["job"]["atoms"]["positions"], atol=1e-6)
    assert "$3Dmol" in html  # the bundled library, inlined with the kernel's first view


def test_an_optimised_record_shows_its_final_geometry(executed, server_records):
    html = _html(executed, "optimised")
    ethanol = server_records[2]
    assert _energy_cell(ethanol) in html and "ethanol &amp; co" in html
    (data,) = VIEW_DATA.findall(html)
    xyz = json.loads(data)["xyz"].splitlines()
    assert "final geometry" in html and int(xyz[0]) == 9
    assert np.allclose([[float(c) for c in row.split()[1:]] for row in xyz[2:]],
                       ethanol["result"]["final_positions_angstrom"], atol=1e-6)
    assert "}).call(window);</script>" not in html  # 3Dmol.js went out once, with the first


def test_records_stay_the_documented_dicts_and_lists(executed):
    assert ast.literal_eval(_output(executed, "shapes")["text/plain"]) == \
        [True] * 7 + ["JobRecord"] * 3


def test_lists_render_as_one_table_a_row_a_job(executed, server_records):
    waited = _html(executed, "waited")  # wait_jobs' records: state, result, error
    assert waited.count("<tr>") == 1 + 3 and "3 jobs: 3 done" in waited
    for record in server_records:
        assert _energy_cell(record) in waited and f"<td>{record['job_id']}</td>" in waited
    completed = _html(executed, "completed")  # as_completed's: full records, names too
    assert all(_energy_cell(r) in completed for r in server_records)
    assert ESCAPED in completed and "<script>window" not in completed
    assert "<td>methanol</td>" in completed and "atomiverse-view" not in completed

    many = _html(executed, "many")  # bounded: the first rows and how many more
    assert many.count("<tr>") == 1 + MAX_ROWS + 1 and f"... {60 - MAX_ROWS} more jobs" in many
    page = _html(executed, "page")
    assert page.count("<tr>") == 1 + 2 and "more on the next page" in page


def test_a_summary_shows_its_preview(executed, server_records):
    html = _html(executed, "summary")  # iter_jobs: no result, the preview's structure
    (shown,) = [r for r in server_records if f"<td>{r['job_id']}</td>" in html]
    assert f"<td>{shown['molecule_preview']['formula']}</td>" in html
    (data,) = VIEW_DATA.findall(html)
    xyz = json.loads(data)["xyz"].splitlines()
    assert "input geometry" in html and int(xyz[0]) == len(shown["job"]["atoms"]["numbers"])
    assert np.allclose([[float(c) for c in row.split()[1:]] for row in xyz[2:]],
                       shown["molecule_preview"]["positions"], atol=1e-6)


def test_submit_batch_renders_its_counts_and_jobs(executed, server_records):
    html = _html(executed, "batch")
    assert "3 of 3 submitted, 0 failed, 0 cache hits" in html
    assert all(f"<td>{r['job_id']}</td>" in html for r in server_records)
    assert html.count("<td>submitted</td>") == 3


def test_the_async_clients_records_render_the_same(executed, server_records):
    listed = _html(executed, "async")
    assert all(_energy_cell(r) in listed for r in server_records)
    one = _html(executed, "async record")
    assert _energy_cell(server_records[0]) in one and ESCAPED in one
    assert "<script>window" not in one and "atomiverse-view" in one


def test_odd_records_render_without_raising_or_injecting():
    """Records are data from a server: a repr must neither fail on odd values nor let them
    into the page's markup or the view's script."""
    odd = JobRecord({"name": "a" * 500, "state": "<b>", "result": "not a mapping",
                     "error": "</td></table><script>x()</script>",
                     "molecule_preview": {"symbols": ["</script><script>y()//"]},
                     "job": {"atoms": {"numbers": [1], "positions": [["NaN", 0, 0]]}}})
    html = odd._repr_html_()
    assert "<script" not in html and "&lt;b&gt;" in html and "a" * 197 + "..." in html
    assert "atomiverse-view" not in html
    assert JobRecords([None, 3, odd])._repr_html_().count("<tr>") == 1 + 3
    assert JobRecords([])._repr_html_() == \
        "<div class='atomiverse-records-summary'>0 jobs</div>"


def test_the_record_output_draws_and_runs_no_script_from_a_name(executed):
    body = _html(executed, "record") + _html(executed, "completed")
    with page_with_views(body, 1) as (page, errors):
        assert page.locator(".atomiverse-view canvas").count() == 1
        assert page.evaluate("() => typeof window.pwned") == "undefined"
        cells = page.locator("table.atomiverse-record td").all_text_contents()
        assert HOSTILE in cells
    assert errors == []
