"""Conformer searches (issue 27): real RDKit candidates, real xtb optimisations spread over a
real controller's slots, energies checked against the engine called directly on the same
geometries."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import subprocess
import sys
import time

import atomiverse
import httpx2 as httpx
import numpy as np
import pytest
from atomiverse.levels import GFN2_XTB
from conftest import DEFAULT_ENGINE, own_server, stop_process, xtb_reference

BOLTZMANN_KCAL_PER_MOL_K = 0.0019872042586
KCAL_PER_MOL_PER_HARTREE = 627.509474063


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with own_server(tmp_path_factory.mktemp("conformers"), "conformers", "conf-box", "--slots", "2") as both:
        yield both


@pytest.fixture
def client(srv):
    server, key = srv
    c = atomiverse.Client(api_key=key, base_url=server.url)
    yield c
    c.close()


def _search(client, smiles, **options):
    search = atomiverse.ConformerSearch(atoms=atomiverse.Atoms.from_smiles(smiles),
                                        level_of_theory=GFN2_XTB, name=smiles, **options)
    res = client.submit_batch([search.model_dump(mode="json")], compute_target="conf-box")
    assert res["submitted"] == 1, res
    (record,) = client.wait_jobs([res["jobs"][0]["job_id"]], timeout=600)
    assert record["state"] == "done", record
    return client.get_job(record["job_id"])  # with the search as stored ("job")


def _dihedral(p, i, j, k, m):
    b0, b1, b2 = p[i] - p[j], p[k] - p[j], p[m] - p[k]
    b1 = b1 / np.linalg.norm(b1)
    v, w = b0 - b0.dot(b1) * b1, b2 - b2.dot(b1) * b1
    return math.degrees(math.atan2(np.cross(b1, v).dot(w), v.dot(w)))


def test_butane_anti_lies_below_gauche(client):
    record = _search(client, "CCCC")
    result = record["result"]
    conformers = result["conformers"]
    assert len(conformers) >= 2 and result["n_unique"] == len(conformers)
    numbers = atomiverse.Atoms.from_smiles("CCCC").numbers
    carbons = [i for i, z in enumerate(numbers) if z == 6]
    for c in conformers:  # every energy is the engine's on that very geometry
        assert abs(c["energy_hartree"] - xtb_reference(numbers, c["positions_angstrom"])) < 1e-6
    energies = [c["energy_hartree"] for c in conformers]
    assert energies == sorted(energies)
    torsions = [abs(_dihedral(np.array(c["positions_angstrom"]), *carbons))
                for c in conformers]
    assert torsions[0] > 150, torsions  # anti is the lowest
    gauche = next(n for n, t in enumerate(torsions) if 40 < t < 90)
    gap = conformers[gauche]["relative_energy_kcal_per_mol"]
    print(f"\nGFN2-xTB butane gauche - anti: {gap:.3f} kcal/mol")
    assert gap > 0
    assert gap == pytest.approx((energies[gauche] - energies[0]) * KCAL_PER_MOL_PER_HARTREE)
    # Boltzmann weights at the search's temperature, from the energies above
    factors = [math.exp(-c["relative_energy_kcal_per_mol"] / (BOLTZMANN_KCAL_PER_MOL_K * 298.15))
               for c in conformers]
    assert [c["boltzmann_weight"] for c in conformers] == pytest.approx(
        [f / sum(factors) for f in factors])
    assert result["energy_hartree"] == energies[0]
    assert result["final_positions_angstrom"] == conformers[0]["positions_angstrom"]


def _steps(record):
    """The search's step names in order (API steps are 1-based indices into it)."""
    from atomiverse_core.jobtypes.conformers import PLAIN_STEPS, RANKED_STEPS, SCREENED_STEPS

    if not record["job"]["screen"]:
        return PLAIN_STEPS
    return RANKED_STEPS if record["job"]["screen_rank"] else SCREENED_STEPS


def _screened(screening):
    """The screen's candidates, in order: where each started and ended at GFN-FF."""
    return [{"start": start, "minimum": r["final_positions_angstrom"]}
            for job in screening
            for start, r in zip(job["job"]["candidates_angstrom"], job["result"]["candidates"],
                                strict=True) if r["final_positions_angstrom"] is not None]


def _in_prescreen_order(by_step, max_prescreened):
    """The screened candidates the prescreen goes on with, in its order: the screen
    selection's, by the rank's single points where the search ranks."""
    (selection,) = by_step["screen selection"]
    kept = selection["result"]["kept"]
    if by_step.get("rank"):
        energies = [e for c in by_step["rank"] for e in c["result"]["energies_hartree"]]
        kept = [i for _, i in sorted(zip(energies, kept, strict=True))]
    return [_screened(by_step["screen"])[i] for i in kept[:max_prescreened]]


def test_the_candidates_run_as_child_jobs_on_every_slot(client):
    record = _search(client, "CCCCCO", n_candidates=8)
    children = client.job_children(record["job_id"])
    assert [c["step"] for c in children] == sorted(c["step"] for c in children)
    prescreen = _steps(record).index("prescreen") + 1
    candidates = [client.get_job(c["job_id"]) for c in children if c["step"] == prescreen]
    # With the screen each kept candidate is prescreened from two starts.
    starts = 2 if record["job"]["screen"] and record["job"]["prescreen_both_starts"] else 1
    assert 2 <= len(candidates) <= 8 * starts
    assert all(c["job_type"] == "opt" and c["state"] == "done" for c in candidates)
    spans = sorted((c["started_at"], c["finished_at"]) for c in candidates)
    # Two slots: some candidate started before another one had finished.
    assert any(b[0] < a[1] for a, b in itertools.pairwise(spans)), spans
    ids = {c["job_id"] for c in children}
    assert {c["job_id"] for c in record["result"]["conformers"]} <= ids


def test_a_rigid_molecule_gives_one_conformer(client):
    result = _search(client, "c1ccccc1")["result"]
    assert result["n_rotatable_bonds"] == 0 and result["bond_orders"] == "perceived"
    assert result["n_unique"] == 1 and result["conformers"][0]["boltzmann_weight"] == 1.0


def test_too_many_candidates_are_refused_naming_the_field(client):
    payload = atomiverse.ConformerSearch(
        atoms=atomiverse.Atoms.from_smiles("CCCC"), level_of_theory=GFN2_XTB).model_dump()
    payload["n_candidates"] = 5000
    res = client.submit_batch([payload], compute_target="conf-box")
    assert res["failed"] == 1
    assert "n_candidates: Input should be less than or equal to 1000" in \
        res["jobs"][0]["error"]


def test_cancelling_a_search_cancels_its_children(srv, client):
    server, key = srv
    stop_process(server.start_controller(key, "parked-conf"))
    search = atomiverse.ConformerSearch(atoms=atomiverse.Atoms.from_smiles("CCCC"),
                                        level_of_theory=GFN2_XTB, use_cache=False)
    job_id = client.submit_batch([search.model_dump(mode="json")],
                                 compute_target="parked-conf")["jobs"][0]["job_id"]
    assert client.cancel_job(job_id)["state"] == "cancelled"
    assert [c["state"] for c in client.job_children(job_id)] == ["cancelled"]


def test_cli_writes_the_ensemble_as_frames(srv, tmp_path):
    server, key = srv
    smi = tmp_path / "butane.smi"
    smi.write_text("CCCC butane\n")
    out = tmp_path / "butane.jsonl"
    env = {**os.environ, "ATOMIVERSE_BASE_URL": server.url, "ATOMIVERSE_API_KEY": key}
    proc = subprocess.run([sys.executable, "-m", "atomiverse.cli", "run", str(smi), "--job",
                           "conformers", "--target", "conf-box", "-o", str(out)],
                          capture_output=True, text=True, env=env, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    conformers = row["result"]["conformers"]
    text = out.with_suffix(".xyz").read_text()
    comments = re.findall(r"^butane energy_hartree=(\S+) conformer=(\d+) "
                          r"relative_energy_kcal_per_mol=\S+ boltzmann_weight=\S+$", text, re.MULTILINE)
    assert [int(n) for _, n in comments] == list(range(1, len(conformers) + 1))
    assert [float(e) for e, _ in comments] == pytest.approx(
        [c["energy_hartree"] for c in conformers], abs=1e-9)
    frames = atomiverse.atoms.read_xyz_frames(out.with_suffix(".xyz"))
    assert len(frames) == len(conformers)
    for frame, c in zip(frames, conformers, strict=True):
        assert np.abs(np.array(frame.positions) - c["positions_angstrom"]).max() < 1e-6


def test_the_dashboard_shows_the_ensemble(srv, client):
    from browser import chromium

    server, key = srv
    record = _search(client, "CCCC")
    conformers = record["result"]["conformers"]
    with chromium() as browser:
        page = browser.new_context().new_page()
        page.goto(f"{server.url}/signin")
        page.fill("#api_key", key)
        page.click("form.stack button[type=submit]")
        page.wait_for_url(re.compile(r".*/jobs$"))
        page.goto(f"{server.url}/job?job_id={record['job_id']}")
        rows = page.locator("#result-table tbody tr")
        assert rows.count() == len(conformers)
        cells = rows.nth(1).locator("td")
        assert float(cells.nth(1).inner_text()) == pytest.approx(
            conformers[1]["energy_hartree"], abs=1e-8)
        assert float(cells.nth(3).inner_text()) == pytest.approx(
            conformers[1]["boltzmann_weight"], abs=1e-4)
        page.wait_for_function("document.querySelector('#frame-label')"
                               "?.textContent.startsWith('conformer')")
        assert page.locator("#frame-label").inner_text() == f"conformer 1 of {len(conformers)}"
        assert page.locator("#steps tbody tr").count() == len(_steps(record))


def _bridged(numbers, positions):
    """The geometry with one hydrogen of the first carbon moved between the first two
    carbons: the shape a GFN-FF prescreen of pregabalin ended in (a bridging hydrogen),
    another molecule than the input."""
    p = np.array(positions, dtype=float)
    c0, c1 = [i for i, z in enumerate(numbers) if z == 6][:2]
    h = next(i for i, z in enumerate(numbers)
             if z == 1 and np.linalg.norm(p[i] - p[c0]) < 1.2)
    axis = p[c1] - p[c0]
    side = np.cross(axis, [0.0, 0.0, 1.0] if abs(axis[2]) < 0.9 * np.linalg.norm(axis)
                    else [1.0, 0.0, 0.0])
    p[h] = (p[c0] + p[c1]) / 2 + side / np.linalg.norm(side) * 1.0
    return p.tolist()


def _select(numbers, positions, candidates, energies):
    from atomiverse_core.jobtypes.conformer_stage import run_stage

    payload = {"atoms": {"numbers": list(numbers), "positions": positions, "charge": 0},
               "operation": "select", "candidates_angstrom": candidates,
               "energies_hartree": energies, "rmsd_angstrom": 0.25,
               "energy_kcal_per_mol": 0.1, "window_kcal_per_mol": 5.0, "keep": 40}
    return run_stage(None, None, payload)


def test_a_candidate_whose_bonds_changed_is_left_out_of_the_selection():
    # A GFN-FF prescreen of pregabalin once ended one candidate with a bridging hydrogen,
    # 128 kcal/mol "below" every conformer (GFN-FF sets up its topology from each geometry
    # it starts from), and the search refined that one alone.
    atoms = atomiverse.Atoms.from_smiles("CCCCO")
    numbers, positions = atoms.numbers, [list(map(float, p)) for p in atoms.positions]
    bridged = _bridged(numbers, positions)
    energies = [-14.0, -14.0 - 128 / KCAL_PER_MOL_PER_HARTREE]
    out = _select(numbers, positions, [positions, bridged], energies)
    assert out == {"kept": [0], "n_rearranged": 1}


def test_a_selection_with_every_candidate_rearranged_fails_saying_so():
    from atomiverse_core.drivers.contract import EngineError

    atoms = atomiverse.Atoms.from_smiles("CCCCO")
    numbers, positions = atoms.numbers, [list(map(float, p)) for p in atoms.positions]
    with pytest.raises(EngineError, match="every candidate's bonds changed"):
        _select(numbers, positions, [_bridged(numbers, positions)], [-14.0])


def test_candidates_with_atoms_too_close_are_left_out_not_failing_the_search():
    """ETKDG embeds sotalol (seed 1, 250 candidates) once with a hydrogen 0.34 Angstrom from
    a carbon: refused as an optimisation's input, it failed the whole search's next step."""
    from atomiverse_core.atoms import MIN_INTERATOMIC_DISTANCE_ANGSTROM
    from atomiverse_core.drivers.conformers import generate

    atoms = atomiverse.Atoms.from_smiles("CC(C)NCC(O)c1ccc(NS(C)(=O)=O)cc1")
    made = generate(atoms.numbers, atoms.positions, atoms.charge, 250, 1, 0.0)
    closest = min(
        float(np.sqrt(d2[np.triu_indices(len(atoms), 1)].min()))
        for g in map(np.asarray, made["geometries_angstrom"])
        for d2 in [((g[:, None] - g[None]) ** 2).sum(-1)])
    assert closest >= MIN_INTERATOMIC_DISTANCE_ANGSTROM
    assert made["n_atoms_too_close"] == 1  # the premise: this seed embeds one such geometry
    assert len(made["geometries_angstrom"]) == 249
    for g in made["geometries_angstrom"]:  # every candidate is a valid job input
        atomiverse.Atoms(numbers=atoms.numbers, positions=g, charge=atoms.charge)



@pytest.mark.parametrize(("smiles", "bond_orders"), [
    # ranitidine: no bond orders fit its charge
    ("CNC(=C[N+](=O)[O-])NCCSCc1ccc(CN(C)C)o1", "perceived without charged fragments"),
    ("CC/C(=C(\\c1ccccc1)c1ccc(OCCN(C)C)cc1)c1ccccc1", "perceived"),  # Z-tamoxifen: they do
])
def test_every_candidate_keeps_the_input_s_double_bond_geometry(smiles, bond_orders):
    """Where RDKit cannot fit bond orders to the total charge (ranitidine's
    nitroethenediamine), the graph fell back to single bonds: ETKDG turned the C=C freely and
    half of the candidates were the other isomer, or not planar at all."""
    from atomiverse_core.drivers.conformers import generate
    from rdkit import Chem

    atoms = atomiverse.Atoms.from_smiles(smiles)
    mol = Chem.MolFromSmiles(smiles)
    (bond,) = [b for b in mol.GetBonds() if b.GetBondType() == Chem.BondType.DOUBLE
               and {b.GetBeginAtom().GetSymbol(), b.GetEndAtom().GetSymbol()} == {"C"}]
    j, k = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
    i = next(a.GetIdx() for a in bond.GetBeginAtom().GetNeighbors() if a.GetIdx() != k)
    m = next(a.GetIdx() for a in bond.GetEndAtom().GetNeighbors()
             if a.GetIdx() != j and a.GetAtomicNum() > 1)
    made = generate(atoms.numbers, atoms.positions, atoms.charge, 40, 42, 0.0)
    assert made["bond_orders"] == bond_orders
    start = _dihedral(np.asarray(atoms.positions), i, j, k, m)
    turned = [_dihedral(np.asarray(g), i, j, k, m) for g in made["geometries_angstrom"]]
    assert len(turned) > 30
    assert all(abs((d - start + 180) % 360 - 180) < 30 for d in turned), (start, turned)


def test_a_radical_cation_keeps_its_double_bond_as_the_neutral_molecule_s():
    """No Lewis structure has a radical cation's electrons: its graph is its neutral
    parent's, whose C=C ETKDG keeps."""
    from atomiverse_core.drivers.conformers import BOND_ORDERS_AS_NEUTRAL_MOLECULE, generate

    neutral = atomiverse.Atoms.from_smiles("C/C=C/CCCO")
    cation = atomiverse.Atoms(numbers=neutral.numbers, positions=neutral.positions, charge=1,
                              multiplicity=2)
    made = generate(cation.numbers, cation.positions, cation.charge, 20, 42, 0.0)
    assert made["bond_orders"] == BOND_ORDERS_AS_NEUTRAL_MOLECULE
    turned = [_dihedral(np.asarray(g), 0, 1, 2, 3) for g in made["geometries_angstrom"]]
    assert len(turned) > 10 and all(abs(d) > 150 for d in turned), turned  # E: trans


def test_a_graph_with_no_bond_orders_is_said_in_the_result():
    """An organozinc fits no bond orders at all: the graph is connectivity alone, and the
    result says that a double bond's geometry may be lost."""
    from atomiverse_core.drivers.conformers import CONNECTIVITY_ONLY, generate
    from atomiverse_core.jobtypes.conformer_views import ensemble_rows

    atoms = atomiverse.Atoms.from_smiles("C/C=C/CC[Zn]CC")
    made = generate(atoms.numbers, atoms.positions, atoms.charge, 4, 42, 0.0)
    assert made["bond_orders"] == CONNECTIVITY_ONLY
    assert len(made["geometries_angstrom"]) == 4
    one = {"positions_angstrom": atoms.positions, "energy_hartree": -1.0,
           "relative_energy_kcal_per_mol": 0.0, "boltzmann_weight": 1.0}
    rows = {r.key: r for r in ensemble_rows({}, {"conformers": [one],
                                                 "bond_orders": made["bond_orders"]})}
    assert "E/Z geometry may not be kept" in rows["bond_orders"].note
    assert "bond_orders" not in {r.key for r in ensemble_rows({}, {"conformers": [one]})}


def _register(server, key, name, engines):
    r = httpx.post(f"{server.url}/api/v1/controllers/register",
                   headers={"Authorization": f"Bearer {key}"},
                   json={"name": name, "slots": 1, "engines": engines})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(("engines", "options", "screen"), [
    ({"xtb": "22.1", "tblite": "0.4.0"}, {}, True),
    ({"tblite": "0.4.0"}, {}, False),  # tblite has no GFN-FF
    ({"xtb": "22.1"}, {"level_of_theory": GFN2_XTB.with_solvent("water", model="gbsa")}, False),
    ({"xtb": "22.1", "tblite": "0.4.0"}, {"engine": "tblite"}, False),
    ({"xtb": "22.1"}, {"screen": False}, False),  # what the search says, it keeps
    ({"xtb": "22.1", "tblite": "0.4.0"}, {"screen": True}, True),
])
def test_the_screen_is_settled_at_submission_from_the_targets_engines(srv, client, engines,
                                                                     options, screen):
    server, key = srv
    box = f"box-{'-'.join(engines)}-{'-'.join(f'{k}{v}' for k, v in options.items())}"[:60]
    box = re.sub(r"[^A-Za-z0-9._-]", "", box)
    _register(server, key, box, engines)
    search = atomiverse.ConformerSearch(**{"atoms": atomiverse.Atoms.from_smiles("CCCC"),
                                           "level_of_theory": GFN2_XTB, **options})
    res = client.submit_batch([search.model_dump(mode="json")], compute_target=box)
    assert res["submitted"] == 1, res
    job_id = res["jobs"][0]["job_id"]
    try:
        assert client.get_job(job_id)["job"]["screen"] is screen
    finally:
        client.cancel_job(job_id)


def _children_of(client, job_id, timeout=60.0):
    """The composite's children once it has some (it advances in the server's own thread)."""
    deadline = time.monotonic() + timeout
    while not (children := client.job_children(job_id)):
        assert time.monotonic() < deadline, f"{job_id} has no children after {timeout} s"
        time.sleep(0.05)
    return children


def test_a_search_sent_before_its_target_has_engines_settles_its_screen_once_they_come(
        srv, client):
    """The embedded local controller is stored before it registers its engines; a search
    sent then waits for them rather than starting without its screen."""
    server, key = srv
    _register(server, key, "late-box", {})
    search = atomiverse.ConformerSearch(atoms=atomiverse.Atoms.from_smiles("CCCC"),
                                        level_of_theory=GFN2_XTB, n_candidates=4)
    res = client.submit_batch([search.model_dump(mode="json")], compute_target="late-box")
    job_id = res["jobs"][0]["job_id"]
    try:
        record = client.get_job(job_id)
        assert record["state"] == "running" and record["job"]["screen"] is None
        assert client.job_children(job_id) == []  # not started: the screen is not settled
        _register(server, key, "late-box", {"xtb": "22.1", "tblite": "0.4.0"})
        (generate,) = _children_of(client, job_id)
        assert client.get_job(job_id)["job"]["screen"] is True
        assert client.get_job(generate["job_id"])["job"]["screened"] is True
    finally:
        client.cancel_job(job_id)


def test_a_search_whose_screen_its_late_engines_cannot_run_fails_naming_the_field(srv, client):
    server, key = srv
    _register(server, key, "late-tblite", {})
    search = atomiverse.ConformerSearch(atoms=atomiverse.Atoms.from_smiles("CCCC"),
                                        level_of_theory=GFN2_XTB, screen=True)
    res = client.submit_batch([search.model_dump(mode="json")], compute_target="late-tblite")
    job_id = res["jobs"][0]["job_id"]
    assert client.job_children(job_id) == []
    _register(server, key, "late-tblite", {"tblite": "0.4.0"})
    (record,) = client.wait_jobs([job_id], timeout=60)
    assert record["state"] == "failed", record
    assert record["error"].startswith("Invalid job payload: screen: "), record
    assert client.get_job(job_id)["error_type"] == "input" and client.job_children(job_id) == []


@pytest.mark.parametrize(("engines", "options"), [
    ({"tblite": "0.4.0"}, {"screen": True}),
    ({"xtb": "22.1", "tblite": "0.4.0"}, {"screen": True, "engine": "tblite"}),
])
def test_a_screen_no_allowed_engine_can_run_is_refused_at_submission(srv, client, engines,
                                                                     options):
    server, key = srv
    box = re.sub(r"[^A-Za-z0-9._-]", "", f"refuse-{'-'.join(engines)}-{len(options)}")
    _register(server, key, box, engines)
    search = atomiverse.ConformerSearch(atoms=atomiverse.Atoms.from_smiles("CCCC"),
                                        level_of_theory=GFN2_XTB, **options)
    res = client.submit_batch([search.model_dump(mode="json")], compute_target=box)
    assert res["failed"] == 1 and res["jobs"][0]["job_id"] is None, res
    assert res["jobs"][0]["error"].startswith("Invalid job payload: screen: "), res
    assert "xtb engine" in res["jobs"][0]["error"] and "tblite" in res["jobs"][0]["error"]
    with pytest.raises(atomiverse.UnprocessableEntityError) as e:  # one job alone: a 422
        client.submit_job(search, compute_target=box)
    assert "screen" in str(e.value)


@pytest.mark.xtb_python  # GFN-FF runs on xtb-python only
@pytest.mark.parametrize(("both_starts", "rank"), [(True, True), (False, True), (True, False)],
                         ids=["both starts", "GFN-FF minima", "by GFN-FF energy"])
def test_a_screened_search_optimises_every_candidate_at_gfn_ff_and_goes_on_with_the_lowest(
        client, both_starts, rank):
    assert DEFAULT_ENGINE == "xtb"
    record = _search(client, "CCCCCCO", n_candidates=24, max_prescreened=5,
                     prescreen_both_starts=both_starts, screen_rank=rank)
    assert record["job"]["screen"] is True  # settled: the box runs xtb
    result, steps = record["result"], _steps(record)
    children = client.job_children(record["job_id"])
    by_step = {name: [client.get_job(c["job_id"]) for c in children
                      if c["step"] == steps.index(name) + 1] for name in steps}
    from atomiverse_core.jobtypes.conformer_screen import SCREEN_CHUNK

    screening = by_step["screen"]
    (generated,) = by_step["candidates"]
    # Every candidate, in the order generated, a few to a job.
    assert [g for c in screening for g in c["job"]["candidates_angstrom"]] == \
        generated["result"]["geometries_angstrom"]
    assert all(1 <= len(c["job"]["candidates_angstrom"]) <= SCREEN_CHUNK for c in screening)
    assert len(screening) < len(generated["result"]["geometries_angstrom"])
    screened = _screened(screening)
    assert len(screened) == result["n_screened"] == result["n_candidates"] >= 6
    assert {c["job"]["level_of_theory"]["method"] for c in screening} == {"gfn-ff"}
    # The prescreen starts from the screen's kept candidates, at most max_prescreened: from
    # each one's GFN-FF minimum, then from its ETKDG geometry.
    (selection,) = by_step["screen selection"]
    kept = selection["result"]["kept"]
    numbers = atomiverse.Atoms.from_smiles("CCCCCCO").numbers
    if rank:  # every distinct one ranked by a GFN2-xTB single point on its GFN-FF minimum
        assert len(kept) > 5
        ranking = by_step["rank"]
        assert [g for c in ranking for g in c["job"]["candidates_angstrom"]] == \
            [screened[i]["minimum"] for i in kept]
        assert {c["job"]["level_of_theory"]["method"] for c in ranking} == {"gfn2-xtb"}
        energies = [e for c in ranking for e in c["result"]["energies_hartree"]]
        for i, e in zip(kept, energies, strict=True):
            assert abs(e - xtb_reference(numbers, screened[i]["minimum"])) < 1e-6
        kept = [i for _, i in sorted(zip(energies, kept, strict=True))][:5]
    else:
        assert "rank" not in by_step
    assert 1 <= len(kept) <= 5
    # The ETKDG geometries as many, in GFN-FF's order (the screen selection's)
    by_gfnff = selection["result"]["kept"][:len(kept)]
    prescreened = by_step["prescreen"]
    assert [c["job"]["atoms"]["positions"] for c in prescreened] == \
        [screened[i]["minimum"] for i in kept] + \
        [screened[i]["start"] for i in by_gfnff if both_starts]
    assert {c["job"]["level_of_theory"]["method"] for c in prescreened} == {"gfn2-xtb"}
    for c in result["conformers"]:  # every energy is GFN2-xTB's, the engine's own
        assert abs(c["energy_hartree"] - xtb_reference(numbers, c["positions_angstrom"])) < 1e-6


@pytest.mark.xtb_python  # GFN-FF runs on xtb-python only
@pytest.mark.parametrize(("window", "patience", "later_both"), [
    (1000.0, 0, False), (0.0, 0, False), (1000.0, 0, True), (1000.0, 1, False)],
    ids=["every stage", "while the lowest", "every stage from both starts", "while it improves"])
def test_a_staged_prescreen_goes_on_while_the_newest_stage_holds_an_energy_near_the_lowest(
        client, window, patience, later_both):
    record = _search(client, "CCCCCCO", n_candidates=24, max_prescreened=6, prescreen_stage=2,
                     prescreen_stage_window_kcal_per_mol=window,
                     prescreen_stage_patience=patience,
                     prescreen_later_stages_both_starts=later_both)
    steps = _steps(record)
    children = client.job_children(record["job_id"])
    by_step = {name: [client.get_job(c["job_id"]) for c in children
                      if c["step"] == steps.index(name) + 1] for name in steps}
    kept = _in_prescreen_order(by_step, 6)
    assert len(kept) >= 3  # at least two stages of two
    stages = [kept[i:i + 2] for i in range(0, len(kept), 2)]

    (selection,) = by_step["screen selection"]
    by_gfnff = [_screened(by_step["screen"])[i] for i in selection["result"]["kept"]]

    def starts(n, stage):  # the GFN-FF minima, then (both starts) the ETKDG geometries
        minima = [c["minimum"] for c in stage]
        if n == 0:  # the first stage's ETKDG geometries in GFN-FF's order
            return minima + [c["start"] for c in by_gfnff[:len(stage)]]
        return minima + [c["start"] for c in stage] if later_both else minima

    # Stage after stage, numbered on from the stage before; after the first, from the
    # GFN-FF minima alone unless asked for both.
    per_stage = [starts(n, stage) for n, stage in enumerate(stages)]
    expected = [p for stage in per_stage for p in stage]
    prescreened = by_step["prescreen"]
    n = len(prescreened)
    assert [c["job"]["atoms"]["positions"] for c in prescreened] == expected[:n]
    assert [c["name"].rsplit(" · ", 1)[-1] for c in children
            if c["step"] == steps.index("prescreen") + 1] == \
        [f"candidate {i + 1}" for i in range(n)]
    ends = list(itertools.accumulate(len(stage) for stage in per_stage))
    assert n in ends
    energies = [c["result"]["energy_hartree"] for c in prescreened]
    tolerance = window / KCAL_PER_MOL_PER_HARTREE

    def lowest_of(k):  # the lowest prescreen energy of stage k
        return min(energies[ends[k - 1] if k else 0:ends[k]])

    def goes_on(end):
        k = ends.index(end)
        lowered = [i for i in range(k + 1) if all(lowest_of(i) < lowest_of(j) for j in range(i))]
        return lowest_of(k) <= min(energies[:end]) + tolerance and \
            (not patience or k - max(lowered) < patience)

    assert all(goes_on(end) for end in ends[:ends.index(n)])  # went on each time
    if n < ends[-1]:
        assert not goes_on(n)  # and stopped only when the rules said so
    if window == 1000.0 and not patience:
        assert n == ends[-1]
    assert record["result"]["n_unique"] >= 1


def test_a_screen_job_s_failed_candidate_is_left_out_and_its_others_go_on():
    """How a search reads its screen: a candidate whose optimisation failed, a job that
    failed as a whole, and a search stored when the screen ran one candidate a job."""
    from atomiverse_core.jobtypes.conformer_screen import screen_size, screened_candidates
    from atomiverse_core.jobtypes.spec import Child

    a, b, c, d = ([[float(i), 0.0, 0.0]] for i in range(4))
    chunk = Child("j1", 1, "conformer_screen", "done", {"candidates_angstrom": [a, b, c]},
                  {"candidates": [{"final_positions_angstrom": b, "energy_hartree": -1.0},
                                  {"final_positions_angstrom": None, "error": "SCF diverged"},
                                  {"final_positions_angstrom": a, "energy_hartree": -2.0}]},
                  None)
    failed = Child("j2", 1, "conformer_screen", "failed", {"candidates_angstrom": [d]}, None,
                   "worker died")
    stored = Child("j3", 1, "opt", "done", {"atoms": {"positions": d}},
                   {"final_positions_angstrom": c, "energy_hartree": -3.0}, None)
    assert [tuple(x) for x in screened_candidates([chunk, failed, stored])] == [
        (a, b, -1.0), (c, a, -2.0), (d, c, -3.0)]
    assert screen_size([chunk, failed, stored]) == 5


def test_a_screen_job_whose_candidate_lacks_atoms_is_refused_naming_the_field():
    from atomiverse_core.jobtypes.conformer_screen import ConformerScreen
    from pydantic import ValidationError

    water = atomiverse.Atoms.from_smiles("O")
    good = [list(map(list, water.positions))]
    ConformerScreen(atoms=water, level_of_theory=GFN2_XTB, candidates_angstrom=good)
    with pytest.raises(ValidationError, match="candidates_angstrom: every candidate has the 3"):
        ConformerScreen(atoms=water, level_of_theory=GFN2_XTB,
                        candidates_angstrom=good + [good[0][:2]])


def test_the_rank_orders_by_single_point_and_puts_failed_ones_last():
    """How a search reads its rank jobs: lowest single point first; a candidate whose single
    point (or whole job) failed after the others, in the screen's order; cut to ``keep``."""
    from atomiverse_core.jobtypes.conformer_rank import ranked
    from atomiverse_core.jobtypes.conformer_screen import Screened
    from atomiverse_core.jobtypes.spec import Child

    kept = [Screened([[float(i), 0.0, 0.0]], [[float(i), 1.0, 0.0]], -1.0 - i) for i in range(5)]
    first = Child("r1", 3, "conformer_rank", "done",
                  {"candidates_angstrom": [k.minimum for k in kept[:3]]},
                  {"energies_hartree": [-2.0, None, -3.0], "errors": [None, "SCF", None]}, None)
    failed = Child("r2", 3, "conformer_rank", "failed",
                   {"candidates_angstrom": [k.minimum for k in kept[3:]]}, None, "worker died")
    assert ranked(kept, [first, failed], 10) == [kept[2], kept[0], kept[1], kept[3], kept[4]]
    assert ranked(kept, [first, failed], 2) == [kept[2], kept[0]]
