"""Lindh's model Hessian: every term's Wilson B-vectors checked against finite differences of
the internal coordinate itself (ASE's distance, angle and dihedral), and the projection."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from atomiverse_core.drivers import model_hessian as mh

H = 1e-5  # Bohr, finite-difference step


def _gradient(coordinate, pos: np.ndarray) -> np.ndarray:
    """d coordinate / d positions (n x 3) by central differences; angles in radians."""
    grad = np.zeros_like(pos)
    for atom, axis in itertools.product(range(len(pos)), range(3)):
        plus, minus = pos.copy(), pos.copy()
        plus[atom, axis] += H
        minus[atom, axis] -= H
        delta = coordinate(plus) - coordinate(minus)
        grad[atom, axis] = (delta + np.pi) % (2 * np.pi) - np.pi  # a dihedral wraps at 2 pi
    return grad / (2 * H)


def _reference_terms(numbers: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Lindh's sum of k * rho-products * b b^T, every b from finite differences."""
    rho = mh.bondedness(numbers, pos)
    bonded = rho > mh.RHO_MIN
    n = len(pos)
    atoms = Atoms(numbers=numbers, positions=pos)  # ASE's geometry in the same (Bohr) units

    def at(p: np.ndarray) -> Atoms:
        atoms.positions = p
        return atoms

    hessian = np.zeros((3 * n, 3 * n))

    def add(k: float, coordinate) -> None:
        b = _gradient(coordinate, pos).ravel()
        hessian[:] += k * np.outer(b, b)

    for i, j in itertools.combinations(range(n), 2):
        if bonded[i, j]:
            add(mh.K_STRETCH * rho[i, j], lambda p, i=i, j=j: at(p).get_distance(i, j))
    for j in range(n):
        for i, k in itertools.combinations(np.flatnonzero(bonded[j]), 2):
            w = mh.K_BEND * rho[i, j] * rho[j, k]
            if w > mh.TERM_MIN:
                add(w, lambda p, i=i, j=j, k=k: np.radians(at(p).get_angle(i, j, k)))
    for j, k in itertools.combinations(range(n), 2):
        if not bonded[j, k]:
            continue
        for i in np.flatnonzero(bonded[j]):
            for l in np.flatnonzero(bonded[k]):
                w = mh.K_TORSION * rho[i, j] * rho[j, k] * rho[k, l]
                if len({i, j, k, l}) == 4 and w > mh.TERM_MIN:
                    add(w, lambda p, i=i, j=j, k=k, l=l:
                        np.radians(at(p).get_dihedral(i, j, k, l)))
    return hessian


@pytest.mark.parametrize("name", ["H2O2", "CH3CH2OH", "CH3CONH2"])
def test_terms_match_finite_difference_b_vectors(name: str) -> None:
    mol = molecule(name)
    pos = mol.positions / 0.52917721067  # Bohr
    # Move off any symmetry plane so no angle sits exactly at a finite-difference kink.
    pos = pos + np.random.default_rng(7).normal(scale=0.05, size=pos.shape)
    built = mh.lindh_terms(mol.numbers, pos)
    reference = _reference_terms(mol.numbers, pos)
    assert np.abs(built - reference).max() < 1e-6 * np.abs(reference).max()


def test_angles_and_chains_come_in_the_order_of_nested_loops() -> None:
    """The terms' order is the order of the sum, so it decides the last bits of the Hessian."""
    mol = molecule("CH3CH2OH")
    bonded = mh.bondedness(mol.numbers, mol.positions / 0.52917721067) > mh.RHO_MIN
    neighbours = [np.flatnonzero(row) for row in bonded]
    triples = [(i, j, k) for j in range(len(bonded))
               for i, k in itertools.combinations(neighbours[j], 2)]
    assert np.array_equal(np.array(mh._triples(bonded)).T, triples)
    chains = [(i, j, k, l) for j, k in itertools.combinations(range(len(bonded)), 2)
              if bonded[j, k] for i in neighbours[j] for l in neighbours[k]
              if len({i, j, k, l}) == 4]
    assert np.array_equal(np.array(mh._quadruples(bonded)).T, chains)


def test_accumulate_sums_the_terms_in_order_across_chunks() -> None:
    """Chunked, the sum is still one pass over the terms in order: equal, to the last bit, to
    adding each term's k b b^T in turn."""
    rng = np.random.default_rng(11)
    n_atoms, n_terms = 10, 3 * mh._CHUNK_TERMS + 17
    atoms = np.array([rng.choice(n_atoms, 4, replace=False) for _ in range(n_terms)])
    b, k = rng.normal(size=(n_terms, 4, 3)), rng.random(n_terms)
    built = np.zeros((3 * n_atoms, 3 * n_atoms))
    mh._accumulate(built, atoms, b, k)
    reference = np.zeros_like(built)
    for term_atoms, term_b, term_k in zip(atoms, b, k):
        cols = (3 * term_atoms[:, None] + np.arange(3)).ravel()
        flat = term_b.ravel()
        reference[np.ix_(cols, cols)] += (term_k * flat)[:, None] * flat[None, :]
    assert np.array_equal(built, reference)


def test_bondedness_is_lindhs_formula() -> None:
    # O-H at 1.8 Bohr: rows 2 and 1, alpha 0.3949 Bohr^-2, r_ref 2.10 Bohr.
    rho = mh.bondedness(np.array([8, 1]), np.array([[0.0, 0, 0], [1.8, 0, 0]]))
    assert rho[0, 1] == pytest.approx(np.exp(0.3949 * (2.10**2 - 1.8**2)))
    assert rho[0, 0] == 0.0


def test_projected_hessian_is_stiff_along_rigid_motions_and_floored_inside() -> None:
    mol = molecule("CH3CH2OH")
    pos = mol.positions / 0.52917721067
    hessian = mh.lindh_hessian(mol.numbers, pos)
    assert np.allclose(hessian, hessian.T)
    rigid = mh.rigid_motions(pos)
    assert rigid.shape == (3 * len(pos), 6)
    # Translations and rotations: exactly the fixed stiffness, and no coupling to the rest.
    assert np.allclose(rigid.T @ hessian @ rigid, mh.RIGID_HARTREE_PER_BOHR2 * np.eye(6))
    internal = np.eye(len(hessian)) - rigid @ rigid.T
    assert np.allclose(internal @ hessian @ rigid, 0, atol=1e-12)
    values = np.linalg.eigvalsh(internal @ hessian @ internal)
    assert values[6:].min() >= mh.FLOOR_HARTREE_PER_BOHR2 - 1e-12  # first six: the rigid zeros
    # Bond stretches stay as stiff as the model makes them: well above the floor.
    assert values.max() > 0.3


def test_linear_molecule_has_five_rigid_motions() -> None:
    pos = np.array([[0.0, 0, -2.2], [0, 0, 0], [0, 0, 2.2]])  # CO2, Bohr
    hessian = mh.lindh_hessian(np.array([8, 6, 8]), pos)
    assert mh.rigid_motions(pos).shape[1] == 5
    assert np.all(np.isfinite(hessian))
    assert np.linalg.eigvalsh(hessian).min() > 0
