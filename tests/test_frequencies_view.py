"""Issue 28, item 6: a frequencies job's IR intensities and normal modes, checked against the
xtb program's ``--hess`` on the same geometry; and the dashboard's frequencies view (table, IR
spectrum, mode selector animating the 3D view, downloads) in a real headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import atomiverse
import atomiverse.qcschema
import httpx2 as httpx
import numpy as np
import pytest
from ase.data import atomic_masses, atomic_numbers, chemical_symbols
from atomiverse.levels import GFN2_XTB
from atomiverse_controller.engines import get_engine
from atomiverse_core.qcschema import BOHR_ANGSTROM
from browser import chromium, screenshot
from conftest import DEFAULT_ENGINE
from test_dashboard import UI_TIMEOUT_MS, _open_signed_in

pytestmark = pytest.mark.timeout(300)
ACETIC_ACID = "CC(=O)O"


# ----- the driver against the xtb program ---------------------------------------------------
def _xtb(args: list[str], cwd: Path) -> None:
    exe = shutil.which("xtb")
    if exe is None:
        pytest.fail("the xtb program is missing: bash scripts/install-test-deps installs it",
                    pytrace=False)
    proc = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
                               "HOME": str(cwd)}, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def _write_xyz(path: Path, numbers: list[int], positions: Any) -> None:
    lines = [str(len(numbers)), ""]
    lines += [f"{chemical_symbols[z]} {x:.10f} {y:.10f} {z_:.10f}"
              for z, (x, y, z_) in zip(numbers, positions, strict=True)]
    path.write_text("\n".join(lines) + "\n")


def _read_xyz(path: Path) -> tuple[list[int], list[list[float]]]:
    rows = [line.split() for line in path.read_text().splitlines()[2:] if line.strip()]
    return [atomic_numbers[r[0].capitalize()] for r in rows], \
        [[float(c) for c in r[1:4]] for r in rows]


def _vibspectrum(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (cm^-1) and IR intensities (km/mol) of the real modes, from xtb's file."""
    freqs, intensities = [], []
    for line in path.read_text().splitlines():
        parts = line.split()
        if line.startswith(("$", "#")) or len(parts) < 4:
            continue
        freq, intensity = (float(parts[-4]), float(parts[-3]))
        if abs(freq) > 1e-6:  # the six translations and rotations are written as zeros
            freqs.append(freq)
            intensities.append(intensity)
    return np.array(freqs), np.array(intensities)


def _g98_modes(path: Path, n_atoms: int) -> list[np.ndarray]:
    """xtb's g98.out normal modes (Cartesian displacements, 2 decimals), (N, 3) each."""
    lines = path.read_text().splitlines()
    modes: list[np.ndarray] = []
    for i, line in enumerate(lines):
        if line.strip().startswith("Atom AN"):
            block = np.array([[float(x) for x in row.split()[2:]]
                              for row in lines[i + 1:i + 1 + n_atoms]])
            modes += [block[:, 3 * k:3 * k + 3] for k in range(block.shape[1] // 3)]
    return modes


def test_ir_intensities_and_modes_match_the_xtb_program(tmp_path):
    """At the xtb program's own minimum, our frequencies, IR intensities and normal modes
    against ``xtb --hess`` there (its step is 0.005 Bohr, ours 0.01 Angstrom)."""
    start = atomiverse.Atoms.from_smiles(ACETIC_ACID)
    _write_xyz(tmp_path / "start.xyz", list(start.numbers), start.positions)
    _xtb(["start.xyz", "--opt", "tight"], tmp_path)
    numbers, positions = _read_xyz(tmp_path / "xtbopt.xyz")
    hess_dir = tmp_path / "hess"
    hess_dir.mkdir()
    _write_xyz(hess_dir / "min.xyz", numbers, positions)
    _xtb(["min.xyz", "--hess"], hess_dir)
    xtb_freqs, xtb_ir = _vibspectrum(hess_dir / "vibspectrum")

    job = atomiverse.Frequencies(atoms=atomiverse.Atoms(numbers=numbers, positions=positions),
                                 level_of_theory=GFN2_XTB)
    result = get_engine(DEFAULT_ENGINE).compute(job.model_dump())
    atomiverse.schema.FrequenciesResult(**result)
    freqs = np.array(result["frequencies_cm1"])
    ir = np.array(result["ir_intensities_km_per_mol"])
    assert len(freqs) == len(ir) == len(xtb_freqs) == 3 * len(numbers) - 6
    stiff = xtb_freqs > 100  # the methyl torsion (~30 cm^-1) is soft in any finite difference
    assert np.allclose(freqs[stiff], xtb_freqs[stiff], atol=3.0)
    # Within 5 % for the strong bands; the weak ones within 1 km/mol (two CH3 bends 0.7 cm^-1
    # apart share their intensity a little differently: their sum agrees).
    strong = xtb_ir >= 20.0
    assert strong.sum() >= 10
    assert np.allclose(ir[strong], xtb_ir[strong], rtol=0.05)
    assert np.allclose(ir[~strong], xtb_ir[~strong], atol=1.0)
    assert np.argmax(ir) == np.argmax(xtb_ir)  # the C=O stretch, ~500 km/mol

    modes = np.array(result["normal_modes_angstrom"])
    assert modes.shape == (len(freqs), len(numbers), 3)
    assert np.allclose(np.linalg.norm(modes.reshape(len(freqs), -1), axis=1), 1.0, atol=1e-4)
    # xtb's g98.out holds the mass-weighted eigenvectors: as Cartesian displacements here.
    inv_sqrt_m = 1.0 / np.sqrt(atomic_masses[numbers])[:, None]
    for k, weighted in enumerate(_g98_modes(hess_dir / "g98.out", len(numbers))):
        theirs = weighted * inv_sqrt_m
        if not stiff[k] or min(abs(xtb_freqs[k] - f) for j, f in enumerate(xtb_freqs)
                               if j != k) < 10:
            continue  # a near-degenerate pair may mix differently
        cosine = abs(np.vdot(modes[k], theirs)) / np.linalg.norm(theirs)
        assert cosine > 0.98, (k, xtb_freqs[k], cosine)


# ----- the dashboard's frequencies view -----------------------------------------------------
MODE_STATE_JS = "() => window.atomiverseMode ? {index: window.atomiverseMode.index, " \
                "frame: window.atomiverseMode.frame} : null"
COORDS_JS = "() => window.atomiverseViewer.getModel().selectedAtoms({}).map(a => [a.x, a.y, a.z])"


@pytest.fixture(scope="module")
def page(server, workspace_key):
    with chromium() as browser:
        p = _open_signed_in(browser, server, workspace_key)
        yield p
        p.context.close()
    assert not p.errors, p.errors


@pytest.fixture(scope="module")
def formaldehyde_job(server, workspace_key, alpha_controller):
    """A finished frequencies job (optimised first) and its record from the API."""
    client = atomiverse.Client(api_key=workspace_key, base_url=server.url)
    try:
        job = atomiverse.Frequencies(atoms=atomiverse.Atoms.from_smiles("C=O"),
                                     level_of_theory=GFN2_XTB, optimize_first=True,
                                     symmetry_number=2, name="formaldehyde frequencies")
        job_id = client.submit_job(job.model_dump(), compute_target=alpha_controller)["job_id"]
        (done,) = client.wait_jobs([job_id], timeout=120)
        assert done["state"] == "done", done
        return client.get_job(job_id)
    finally:
        client.close()


def _open(page: Any, server: Any, job_id: str) -> None:
    page.goto(f"{server.url}/job?job_id={job_id}")
    page.wait_for_selector("#viewer[data-ready=yes]", state="attached", timeout=UI_TIMEOUT_MS)


def _mode_frame_coords(page: Any, index: int) -> tuple[int, np.ndarray]:
    """The viewer's coordinates at a frame of mode ``index`` other than the resting one."""
    page.wait_for_function(
        f"() => window.atomiverseMode && window.atomiverseMode.index === {index} && "
        "window.atomiverseMode.frame % 12 !== 0", timeout=UI_TIMEOUT_MS)
    both = page.evaluate(f"() => [({MODE_STATE_JS})(), ({COORDS_JS})()]")
    return both[0]["frame"], np.array(both[1])


def test_table_spectrum_and_mode_selector(page, server, formaldehyde_job):
    record = formaldehyde_job
    result = record["result"]
    freqs, ir = result["frequencies_cm1"], result["ir_intensities_km_per_mol"]
    modes = np.array(result["normal_modes_angstrom"])
    base = np.array(result["final_positions_angstrom"])
    assert len(freqs) == len(ir) == 6 and modes.shape == (6, 4, 3)
    _open(page, server, record["job_id"])

    rows = page.locator("#modes-table tbody tr")
    assert rows.count() == len(freqs)
    for k in range(len(freqs)):
        cells = rows.nth(k).locator("td")
        assert float(cells.nth(1).inner_text()) == pytest.approx(freqs[k], abs=0.051)
        assert float(cells.nth(2).inner_text()) == pytest.approx(ir[k], abs=0.0051)

    sticks = page.locator("#ir-spectrum .ir-stick")
    assert sticks.count() == len(freqs)  # all real at the minimum
    tops = [float(sticks.nth(k).get_attribute("y2")) for k in range(len(freqs))]
    strongest = int(np.argmax(ir))
    assert int(sticks.nth(int(np.argmin(tops))).get_attribute("data-mode")) == strongest
    curve = page.get_attribute("#ir-spectrum .ir-curve", "points").split()
    assert len(curve) == 800
    # The broadened curve peaks where the strongest stick stands (x decreases with wavenumber).
    peak_x = min(curve, key=lambda p: float(p.split(",")[1])).split(",")[0]
    assert float(peak_x) == pytest.approx(float(sticks.nth(strongest).get_attribute("x1")),
                                          abs=2.0)
    screenshot(page, "dashboard-frequencies")

    # A row animates its mode: every frame is the geometry displaced along that mode.
    assert page.evaluate(MODE_STATE_JS) is None and page.is_hidden("#mode-bar")
    rows.nth(strongest).click()
    first_frame, coords = _mode_frame_coords(page, strongest)
    shift = (coords - base).ravel()
    assert np.linalg.norm(shift) > 0.01
    cosine = abs(shift @ modes[strongest].ravel()) / np.linalg.norm(shift)
    assert cosine > 0.999
    page.wait_for_function(f"() => window.atomiverseMode.frame !== {first_frame} && "
                           "window.atomiverseMode.frame % 12 !== 0", timeout=UI_TIMEOUT_MS)
    assert page.is_visible("#mode-bar") and f"{strongest + 1}:" in page.inner_text("#mode-label")
    assert "current" in (rows.nth(strongest).get_attribute("class") or "")

    # A stick selects another mode; Stop puts the molecule back.
    other = (strongest + 1) % len(freqs)
    sticks.nth(other).click(force=True)
    _, coords = _mode_frame_coords(page, other)
    shift = (coords - base).ravel()
    assert abs(shift @ modes[other].ravel()) / np.linalg.norm(shift) > 0.999
    page.click("#mode-stop")
    page.wait_for_function("() => window.atomiverseMode === null", timeout=UI_TIMEOUT_MS)
    assert page.is_hidden("#mode-bar")
    assert np.allclose(np.array(page.evaluate(COORDS_JS)), base, atol=1e-4)


def test_download_buttons_return_the_structure_and_the_qcschema_record(page, server,
                                                                       formaldehyde_job,
                                                                       workspace_key):
    record = formaldehyde_job
    result = record["result"]
    _open(page, server, record["job_id"])
    with page.expect_download() as xyz_download:
        page.click("#download-xyz")
    xyz = Path(xyz_download.value.path()).read_text()
    assert xyz_download.value.suggested_filename == f"{record['job_id']}.xyz"
    lines = xyz.splitlines()
    assert int(lines[0]) == 4 and "formaldehyde frequencies" in lines[1]
    assert f"energy_hartree={result['energy_hartree']:.10f}" in lines[1]
    assert [chemical_symbols[z] for z in record["job"]["atoms"]["numbers"]] == \
        [line.split()[0] for line in lines[2:]]
    assert np.allclose([[float(c) for c in line.split()[1:]] for line in lines[2:]],
                       result["final_positions_angstrom"], atol=1e-9)

    with page.expect_download() as json_download:
        page.click("#download-json")
    data = json.loads(Path(json_download.value.path()).read_text())
    ours = atomiverse.qcschema.to_atomic_result(record)
    assert data["schema_name"] == "qcschema_output" and data["success"] is True
    assert data["properties"]["return_energy"] == result["energy_hartree"]
    assert np.array_equal(np.ravel(data["return_result"]), np.ravel(ours.return_result))
    # qcelemental keeps 8 decimals of Bohr; the frequencies' geometry, not the input's.
    assert np.allclose(np.array(data["molecule"]["geometry"]).reshape(-1, 3) * BOHR_ANGSTROM,
                       result["final_positions_angstrom"], atol=1e-8)
    extras = data["extras"]["atomiverse"]
    assert extras["frequencies_cm1"] == result["frequencies_cm1"]
    assert extras["ir_intensities_km_per_mol"] == result["ir_intensities_km_per_mol"]
    assert extras["normal_modes_angstrom"] == result["normal_modes_angstrom"]

    # Authenticated like the other job routes: no key, no file; another workspace's key, no job.
    url = f"{server.url}/api/v1/jobs/{record['job_id']}/download.json"
    assert httpx.get(url).status_code == 401
    other = server.new_workspace("freq-view-other")
    assert httpx.get(url, headers={"Authorization": f"Bearer {other}"}).status_code == 404
    ok = httpx.get(url.replace(".json", ".xyz"),
                   headers={"Authorization": f"Bearer {workspace_key}"})
    assert ok.status_code == 200 and ok.text == xyz
