"""The frequency driver: a finite-difference Hessian and dipole derivatives (central
differences of analytic gradients and dipoles, 6N + 1 evaluations on one session: see
``infrared``), translations and rotations projected out, harmonic frequencies with their normal
modes and IR intensities, and ideal-gas RRHO thermochemistry (ASE ``IdealGasThermo``).

Imaginary frequencies are reported as negative numbers. For the thermochemistry, imaginary
modes smaller than IMAGINARY_AS_REAL_CM1 are taken as real (numerical noise of soft modes; the
xtb program does the same), larger ones are left out (a saddle point has no vibrational
partition function along them), and the result says so in ``warnings``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ase.units import Hartree

from .contract import EngineError, Molecule
from .infrared import (
    MODES_MAX_ATOMS,
    cartesian_modes,
    displaced_gradients_and_dipoles,
    ir_intensities_km_per_mol,
    stored_modes,
)
from .optimize import SessionCalculator, opt_settings, run_optimizer

if TYPE_CHECKING:
    import ase

    from .contract import EngineHarness

IMAGINARY_AS_REAL_CM1 = 20.0
LINEAR_INERTIA_RATIO = 1e-3  # smallest / largest principal moment below this: linear
DEFAULT_TEMPERATURE_KELVIN = 298.15
DEFAULT_PRESSURE_PASCAL = 101_325.0
DEFAULT_DISPLACEMENT_ANGSTROM = 0.01


def frequencies(engine: EngineHarness, molecule: Molecule,
                payload: dict[str, Any]) -> dict[str, Any]:
    """A FrequenciesResult dict."""
    settings = _settings(payload)
    session = engine.open_session(molecule)
    result_extra: dict[str, Any] = {"optimized": False}
    warnings: list[str] = []
    positions = molecule.positions_angstrom
    if settings["optimize_first"]:
        optimizer, fmax, max_steps = opt_settings(payload)
        trace = run_optimizer(session, molecule, optimizer, fmax, max_steps, keep_frames=False)
        positions = trace.positions_angstrom
        result_extra.update(trace.summary(), optimized=True)
        if (warning := trace.warning()) is not None:
            warnings.append(warning + "; frequencies are at a non-stationary geometry")

    import ase

    atoms = ase.Atoms(numbers=molecule.numbers, positions=positions)
    calc = SessionCalculator(session)
    atoms.calc = calc
    atoms.get_forces()  # the reference point: its properties before any displacement
    energy, gradient = calc.energy_hartree, calc.gradient
    result = engine.point_result(molecule, energy, gradient, session.properties())
    hessian, dipole_derivatives = displaced_gradients_and_dipoles(
        session, atoms.get_positions(), settings["displacement_angstrom"])
    geometry = _geometry(atoms)
    freqs, modes = normal_modes(hessian, atoms, geometry)
    masses = atoms.get_masses()
    imaginary = [float(f) for f in freqs if f < 0]
    if imaginary:
        warnings.append(f"{len(imaginary)} imaginary mode(s) "
                        f"({', '.join(f'{f:.1f}' for f in imaginary)} cm^-1): not a minimum")
    stored = stored_modes(cartesian_modes(modes, masses), len(atoms))
    if stored is None:
        warnings.append(f"normal modes are not stored above {MODES_MAX_ATOMS} atoms")
    result.update(result_extra)
    result.update(
        final_positions_angstrom=np.asarray(positions).tolist(),
        frequencies_cm1=[float(f) for f in freqs],
        ir_intensities_km_per_mol=ir_intensities_km_per_mol(
            dipole_derivatives, modes, masses).tolist(),
        normal_modes_angstrom=stored,
        imaginary_frequencies_cm1=imaginary,
        n_imaginary=len(imaginary),
        geometry=geometry,
        **thermochemistry(atoms, freqs, energy, geometry, molecule.uhf, settings),
    )
    result["warnings"].extend(warnings)
    return result


def _settings(payload: dict[str, Any]) -> dict[str, Any]:
    try:
        s = {"temperature_kelvin": float(payload.get("temperature_kelvin")
                                         or DEFAULT_TEMPERATURE_KELVIN),
             "pressure_pascal": float(payload.get("pressure_pascal") or DEFAULT_PRESSURE_PASCAL),
             "symmetry_number": int(payload.get("symmetry_number") or 1),
             "displacement_angstrom": float(payload.get("displacement_angstrom")
                                            or DEFAULT_DISPLACEMENT_ANGSTROM),
             "optimize_first": bool(payload.get("optimize_first", False))}
    except (TypeError, ValueError) as e:
        raise EngineError(f"frequencies: malformed settings ({e})", "input") from e
    if min(s["temperature_kelvin"], s["pressure_pascal"], s["displacement_angstrom"]) <= 0 \
            or s["symmetry_number"] < 1:
        raise EngineError("frequencies: temperature, pressure, displacement and symmetry "
                          "number must be positive", "input")
    return s


def hessian_ev_per_angstrom2(atoms: ase.Atoms, delta: float) -> np.ndarray:
    """ASE Vibrations (nfree=2) in a private directory, removed afterwards; symmetrised."""
    from ase.vibrations import Vibrations

    with tempfile.TemporaryDirectory(prefix="atomiverse-vib-") as tmp:
        vib = Vibrations(atoms, name=str(Path(tmp) / "vib"), delta=delta, nfree=2)
        vib.run()
        hessian = vib.get_vibrations().get_hessian_2d()
    return 0.5 * (hessian + hessian.T)


def _geometry(atoms: ase.Atoms) -> str:
    if len(atoms) == 1:
        return "monatomic"
    moments = atoms.get_moments_of_inertia()
    return "linear" if moments.min() < LINEAR_INERTIA_RATIO * moments.max() else "nonlinear"


def harmonic_frequencies_cm1(hessian: np.ndarray, atoms: ase.Atoms, geometry: str) -> np.ndarray:
    """3N-6 (linear 3N-5, monatomic 0) frequencies in cm^-1, ascending, imaginary negative."""
    return normal_modes(hessian, atoms, geometry)[0]


def normal_modes(hessian: np.ndarray, atoms: ase.Atoms,
                 geometry: str) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (cm^-1, ascending, imaginary negative) and the matching orthonormal
    eigenvectors of the mass-weighted Hessian as columns, (3N, 3N-6).

    The mass-weighted Hessian is diagonalised in the complement of the translations and
    rigid rotations about the centre of mass, so those come out exactly, not as noise."""
    from ase import units

    masses = np.repeat(atoms.get_masses(), 3)
    inv_sqrt_m = 1.0 / np.sqrt(masses)
    h_mw = hessian * np.outer(inv_sqrt_m, inv_sqrt_m)
    basis = _internal_basis(atoms, geometry)
    if basis.shape[1] == 0:
        return np.zeros(0), np.zeros((3 * len(atoms), 0))
    eigenvalues, vectors = np.linalg.eigh(basis.T @ h_mw @ basis)  # eV / (Angstrom^2 amu)
    # hbar * sqrt(k/m) in eV, then cm^-1 (ASE's own conversion in VibrationsData).
    to_ev = units._hbar * 1e10 / np.sqrt(units._e * units._amu)
    freqs = np.sign(eigenvalues) * np.sqrt(np.abs(eigenvalues)) * to_ev / units.invcm
    order = np.argsort(freqs)
    return freqs[order], (basis @ vectors)[:, order]


def _internal_basis(atoms: ase.Atoms, geometry: str) -> np.ndarray:
    """Orthonormal (3N, 3N-k) basis of mass-weighted displacements orthogonal to the k
    translations and rotations (k = 6, linear 5, monatomic 3)."""
    n = len(atoms)
    sqrt_m = np.sqrt(atoms.get_masses())
    centred = atoms.get_positions() - atoms.get_center_of_mass()
    vectors = []
    for axis in np.eye(3):
        vectors.append((sqrt_m[:, None] * axis[None, :]).ravel())
    if geometry != "monatomic":
        moments, axes = np.linalg.eigh(_inertia_tensor(atoms.get_masses(), centred))
        for k in range(3):
            if geometry == "linear" and k == int(np.argmin(moments)):
                continue  # no rotation about the molecular axis
            vectors.append((sqrt_m[:, None] * np.cross(axes[:, k], centred)).ravel())
    tr = np.array(vectors).T  # (3N, k)
    u, _, _ = np.linalg.svd(tr, full_matrices=True)
    return u[:, tr.shape[1]:] if 3 * n > tr.shape[1] else np.zeros((3 * n, 0))


def _inertia_tensor(masses: np.ndarray, centred: np.ndarray) -> np.ndarray:
    r2 = (centred**2).sum(1)
    return (np.einsum("i,i", masses, r2) * np.eye(3)
            - np.einsum("i,ij,ik->jk", masses, centred, centred))


def thermochemistry(atoms: ase.Atoms, freqs_cm1: np.ndarray, energy_hartree: float,
                    geometry: str, uhf: int, settings: dict[str, Any]) -> dict[str, Any]:
    """ZPE, H, S and G from ASE's IdealGasThermo (rigid rotor, harmonic oscillator)."""
    from ase import units
    from ase.thermochemistry import IdealGasThermo

    used = np.array([abs(f) for f in freqs_cm1 if f > 0 or abs(f) < IMAGINARY_AS_REAL_CM1])
    used = used[used > 0]
    t, p = settings["temperature_kelvin"], settings["pressure_pascal"]
    thermo = IdealGasThermo(vib_energies=used * units.invcm, geometry=geometry,
                            potentialenergy=energy_hartree * Hartree, atoms=atoms,
                            symmetrynumber=settings["symmetry_number"], spin=uhf / 2,
                            vib_selection="all")
    zpe = thermo.get_ZPE_correction()
    enthalpy = thermo.get_enthalpy(t, verbose=False)
    entropy = thermo.get_entropy(t, p, verbose=False)
    gibbs = thermo.get_gibbs_energy(t, p, verbose=False)
    return {"zero_point_energy_hartree": float(zpe / Hartree),
            "enthalpy_hartree": float(enthalpy / Hartree),
            "entropy_hartree_per_kelvin": float(entropy / Hartree),
            "gibbs_energy_hartree": float(gibbs / Hartree),
            "temperature_kelvin": t, "pressure_pascal": p,
            "symmetry_number": settings["symmetry_number"]}


__all__ = ["frequencies", "harmonic_frequencies_cm1", "normal_modes", "thermochemistry"]
