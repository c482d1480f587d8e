"""Issue 28, item 5: a real notebook executed headless (nbclient, an IPython kernel) against a
real server and controller: ``wait_jobs`` shows a progress bar updated in place, a job renders
as its table with a 3D view whose 3Dmol.js is inlined once per kernel, and that output draws
the molecule in a real Chromium, also where the page has RequireJS (classic Jupyter)."""

from __future__ import annotations

import json
import re
from typing import Any

import nbformat
import numpy as np
import pytest
from browser import page_with_views
from nbclient import NotebookClient

pytestmark = pytest.mark.timeout(300)
LIBRARY_MARK = "}).call(window);</script>"  # the end of the inlined 3Dmol.js
VIEW_DATA = re.compile(r"var d = (\{.*?\}), waited")


def _cells(url: str, key: str, target: str) -> list[str]:
    return [
        f"""import os
os.environ["ATOMIVERSE_BASE_URL"] = {url!r}
os.environ["ATOMIVERSE_API_KEY"] = {key!r}
import atomiverse
from atomiverse.levels import GFN2_XTB
jobs = [atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles(s), name=s,
                                     level_of_theory=GFN2_XTB) for s in ("O", "C", "N")]
ids = [j["job_id"] for j in atomiverse.submit_batch([j.model_dump() for j in jobs],
                                                    compute_target={target!r})["jobs"]]""",
        "records = atomiverse.wait_jobs(ids)",
        "[r['state'] for r in records]",
        f"""job = atomiverse.GeometryOptimization(atoms=atomiverse.Atoms.from_smiles("CCO"),
                                     level_of_theory=GFN2_XTB, name="ethanol <opt>")
job.submit(wait=True, compute_target={target!r})""",
        ("atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles('C#N'), "
         "level_of_theory=GFN2_XTB, name='not submitted')"),
        "job.job_id",
    ]


@pytest.fixture(scope="module")
def executed(server, workspace_key, alpha_controller, tmp_path_factory):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src)
                for src in _cells(server.url, workspace_key, alpha_controller)]
    cwd = tmp_path_factory.mktemp("notebook")
    NotebookClient(nb, timeout=240, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    nbformat.write(nb, str(cwd / "executed.ipynb"))  # for a look after a failure
    return nb


def _outputs(nb: Any, index: int) -> list[dict[str, Any]]:
    outputs = nb.cells[index].outputs
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, errors
    return outputs


def test_wait_jobs_shows_a_progress_bar_updated_in_place(executed):
    (bar,) = _outputs(executed, 1)  # one output, updated: not one per change
    assert bar.output_type == "display_data"
    assert "<progress value='3' max='3'" in bar.data["text/html"]
    assert bar.data["text/plain"] == "3 of 3 jobs finished"
    (states,) = _outputs(executed, 2)
    assert states.data["text/plain"] == "['done', 'done', 'done']"


def test_a_job_renders_with_a_3d_view_and_the_library_once(executed, client):
    (shown,) = _outputs(executed, 3)
    html = shown.data["text/html"]
    job_id = json.loads(_outputs(executed, 5)[0].data["text/plain"].replace("'", '"'))
    record = client.get_job(job_id)
    result = record["result"]
    assert "ethanol &lt;opt&gt;" in html and "<opt>" not in html
    assert f"<td>{result['energy_hartree']:.8f}</td>" in html and "<td>done</td>" in html
    assert html.count(LIBRARY_MARK) == 1 and "$3Dmol" in html and len(html) > 500_000
    (data,) = VIEW_DATA.findall(html)
    xyz = json.loads(data)["xyz"].splitlines()
    assert int(xyz[0]) == 9 and "final geometry" in html
    assert np.allclose([[float(c) for c in row.split()[1:]] for row in xyz[2:]],
                       result["final_positions_angstrom"], atol=1e-6)

    (second,) = _outputs(executed, 4)
    later = second.data["text/html"]
    assert "not submitted" in later and "input geometry" in later
    assert LIBRARY_MARK not in later and len(later) < 20_000  # the page has it already


@pytest.mark.parametrize("requirejs", [False, True], ids=["plain", "with-requirejs"])
def test_the_notebook_output_draws_in_chromium(executed, requirejs):
    """The two outputs as a notebook page shows them; with ``define`` as RequireJS leaves it,
    the inlined library must still define the global $3Dmol (3Dmol.js is UMD)."""
    amd = ("<script>window.define = function () { throw new Error('anonymous define'); };"
           "window.define.amd = {};</script>") if requirejs else ""
    body = amd + _outputs(executed, 3)[0].data["text/html"] + \
        _outputs(executed, 4)[0].data["text/html"]
    with page_with_views(body, 2) as (page, errors):
        assert page.evaluate("() => typeof $3Dmol") == "object"
        assert page.locator(".atomiverse-view canvas").count() == 2
    assert errors == []
