"""The SDK's data model, importable exactly as the spec shows."""

from __future__ import annotations

import math

import atomiverse
import pytest
from atomiverse.levels import GFN1_XTB, GFN2_XTB
from atomiverse.state import State

# The SDK's public names, exactly: a name added or dropped is a decision, made here too.
PUBLIC_NAMES = [
    "APIConnectionError", "APIStatusError", "APITimeoutError", "AsyncClient", "AtomiverseError",
    "Atoms",
    "AuthenticationError", "BadRequestError", "Chain", "Client", "ConflictError",
    "ConformerSearch", "CrashLoopError", "EmbeddedServerError", "Frequencies", "GeometryOptimization", "Hessian",
    "InsufficientStorageError", "InternalServerError",
    "Job",
    "JobsPage", "NotFoundError", "PayloadTooLargeError", "PaymentRequiredError",
    "PermissionDeniedError", "RateLimitError", "SinglePointEnergy", "State",
    "UnprocessableEntityError", "__version__", "_client_jobs", "as_completed", "cancel_job",
    "configure", "delete_job", "export", "get_default_client", "get_job", "iter_jobs", "levels",
    "list_jobs", "records", "rename_job", "results", "start_local", "state", "status", "stop_local",
    "submit_batch", "to_dataframe", "wait_jobs"
]


def test_public_surface_is_pinned():
    assert atomiverse.__all__ == PUBLIC_NAMES  # sorted, and exactly these
    for name in PUBLIC_NAMES:
        assert hasattr(atomiverse, name), name
    assert callable(atomiverse._client_jobs.status)


def test_the_job_models_load_without_the_http_client():
    # Workers import the models through the package; the client would cost each of them memory.
    import subprocess
    import sys

    code = ("import sys, atomiverse, atomiverse.jobs, atomiverse.schema, atomiverse.levels; "
            "assert 'httpx2' not in sys.modules, 'httpx2 loaded'; "
            "atomiverse.submit_batch; assert 'httpx2' in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr


def test_from_smiles_is_deterministic_and_has_hydrogens():
    a, b = atomiverse.Atoms.from_smiles("CCO"), atomiverse.Atoms.from_smiles("CCO")
    assert a.positions == b.positions
    assert a.formula == "C2H6O" and len(a) == 9
    assert a.charge == 0 and a.multiplicity == 1
    other_seed = atomiverse.Atoms.from_smiles("CCCCO", seed=7)
    assert other_seed.positions != atomiverse.Atoms.from_smiles("CCCCO").positions


@pytest.mark.parametrize("smiles", ["CCCCS(F)(F)(F)(F)F", "F[P-](F)(F)(F)(F)F",
                                    "CC(=O)OI(OC(C)=O)c1ccccc1"])
def test_a_smiles_no_force_field_can_embed_is_refused_naming_it(smiles):
    # Neither MMFF nor UFF has parameters for these: fluorines 0.0-1.0 Angstrom apart, an
    # acetate's C-O at 0.9 Angstrom. Refused, not handed on as if it were the molecule.
    with pytest.raises(ValueError, match=r"could not embed SMILES in 3D: '.*no force field "
                                         r".*give the atoms' positions"):
        atomiverse.Atoms.from_smiles(smiles)


def test_from_smiles_without_mmff_parameters_keeps_working_where_the_bonds_come_out():
    for smiles in ["CCCC[Se]CCC", "C/C=C/CC[B-](F)(F)F"]:
        atoms = atomiverse.Atoms.from_smiles(smiles)
        assert len(atoms) > 10


def test_from_smiles_carries_formal_charge():
    acetate = atomiverse.Atoms.from_smiles("CC(=O)[O-]")
    assert acetate.charge == -1


def test_invalid_smiles_raises_value_error_naming_it():
    with pytest.raises(ValueError, match="C1CC\\(\\(C"):
        atomiverse.Atoms.from_smiles("C1CC((C")


def test_xyz_and_ase_round_trip(tmp_path):
    water = atomiverse.Atoms.from_smiles("O")
    path = tmp_path / "w.xyz"
    path.write_text(water.to_xyz("water") + water.to_xyz("again"))
    from_file = atomiverse.Atoms.from_xyz(path)
    from_text = atomiverse.Atoms.from_xyz(path.read_text(), index=1)
    assert from_file.numbers == water.numbers == from_text.numbers
    assert all(math.isclose(x, y, abs_tol=1e-7)
               for p, q in zip(from_file.positions, water.positions) for x, y in zip(p, q))
    ase_atoms = water.to_ase()
    assert list(ase_atoms.get_atomic_numbers()) == water.numbers
    assert atomiverse.Atoms.from_ase(ase_atoms).positions == water.positions


def test_job_payload_shape():
    job = atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles("O"),
                                       level_of_theory=GFN2_XTB)
    payload = job.model_dump()
    assert payload["job_type"] == "single_point_energy"
    assert payload["level_of_theory"] == {"method": "gfn2-xtb"}
    opt = atomiverse.GeometryOptimization(atoms=job.atoms, level_of_theory=GFN1_XTB)
    assert opt.model_dump()["job_type"] == "opt"
    assert job.job_id is None and job.state is None


def test_states():
    assert [s.value for s in State] == ["pending", "running", "done", "failed", "cancelled"]
    assert State.DONE.is_terminal and not State.RUNNING.is_terminal


@pytest.mark.parametrize("bad, field", [
    (dict(numbers=[1, 1], positions=[(0, 0, 0), (0, 0, 0.1)]), "0.100 Angstrom"),
    (dict(numbers=[1], positions=[(0, 0, float("nan"))]), "non-finite"),
    (dict(numbers=[1], positions=[(0, 0, 0)], multiplicity=1), "multiplicity 1 is impossible"),
    (dict(numbers=[8, 1], positions=[(0, 0, 0), (0, 0, 1)]), "impossible"),
    (dict(numbers=[1, 1], positions=[(0, 0, 0)]), "positions has 1"),
    (dict(numbers=[1, 1], positions=[(0, 0, 0), (0, 0, 0.74)], charge=2), "leaves 0 electrons"),
])
def test_atoms_rejects_impossible_molecules(bad, field):
    with pytest.raises(ValueError, match=field):
        atomiverse.Atoms(**bad)


def _grid(n: int, spacing: float = 1.5, offset: float = 0.0) -> list[tuple[float, float, float]]:
    side = math.ceil(n ** (1 / 3))
    return [(offset + spacing * (i % side), offset + spacing * (i // side % side),
             offset + spacing * (i // side**2)) for i in range(n)]


@pytest.mark.parametrize("n, pair, offset", [
    (5, (1, 3), 0.0),
    (300, (280, 299), 0.0),  # both in the second block of rows
    (300, (3, 290), 0.0),  # across blocks
    (40, (7, 8), 1e5),  # far from the origin: the check centres the molecule first
])
def test_atoms_names_the_pair_that_is_too_close(n, pair, offset):
    positions = _grid(n, offset=offset)
    a, b = pair
    positions[b] = (positions[a][0] + 0.3, positions[a][1], positions[a][2])
    positions[b + 1 if b + 1 < n else b - 1] = (offset - 50.0, offset - 50.0, offset - 50.0)
    with pytest.raises(ValueError, match=f"atoms {a} and {b} are 0.300 Angstrom apart"):
        atomiverse.Atoms(numbers=[6] * n, positions=positions)


def test_atoms_spread_over_a_huge_box_still_get_an_exact_distance_check():
    # Spread over 9e5 Angstrom (inside the +-1e6 Angstrom bound on coordinates, beyond the
    # 1e4 where the check forms exact differences): the close pair is still found and named.
    far = 9e5
    positions = [(0.0, 0.0, 0.0), (far, 0.0, 0.0), (far + 0.3, 0.0, 0.0)]
    with pytest.raises(ValueError, match="atoms 1 and 2 are 0.300 Angstrom apart"):
        atomiverse.Atoms(numbers=[6, 6, 6], positions=positions)
    ok = [(0.0, 0.0, 0.0), (far, 0.0, 0.0), (far + 0.6, 0.0, 0.0)]
    assert len(atomiverse.Atoms(numbers=[6, 6, 6], positions=ok)) == 3


def test_atoms_just_apart_enough_pass():
    positions = _grid(300, spacing=0.5 + 1e-9)
    assert len(atomiverse.Atoms(numbers=[1] * 300, positions=positions)) == 300


def test_level_rejects_unparametrised_element():
    fr = atomiverse.Atoms(numbers=[87, 1], positions=[(0, 0, 0), (0, 0, 2.5)])
    with pytest.raises(ValueError, match="Z=87"):
        atomiverse.SinglePointEnergy(atoms=fr, level_of_theory=GFN2_XTB)


def test_error_carries_status_and_message():
    err = atomiverse.AtomiverseError("nope", status_code=401)
    assert err.status_code == 401 and err.message == "nope"
    from atomiverse._exceptions import error_for_status

    assert isinstance(error_for_status(404, "x"), atomiverse.NotFoundError)
    rl = error_for_status(429, "slow down", retry_after_seconds=30.0)
    assert isinstance(rl, atomiverse.RateLimitError) and rl.retry_after_seconds == 30.0


def test_a_job_renders_as_a_compact_html_table_in_notebooks():
    job = atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles("CCO"),
                                       level_of_theory=GFN2_XTB, name="<b>ethanol</b>")
    html = job._repr_html_()
    assert "&lt;b&gt;ethanol&lt;/b&gt;" in html and "<b>" not in html  # escaped
    assert "not submitted" in html and "C2H6O" in html and "Hartree" not in html
    job._apply({"job_id": "abc123", "state": "done", "name": job.name,
                "result": {"energy_hartree": -11.39335160, "homo_lumo_gap_ev": 12.3456}})
    html = job._repr_html_()
    assert "<td>done</td>" in html and "<td>-11.39335160</td>" in html
    assert "<td>12.346</td>" in html and "<td>abc123</td>" in html
