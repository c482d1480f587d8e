"""Lindh's model Hessian: a starting curvature for quasi-Newton optimisers.

ASE's BFGS starts from a multiple of the identity, so its first steps know nothing of which
motions are stiff (bond stretches) and which are soft (torsions), and it spends tens of steps
learning it. xtb's own optimiser starts from a model Hessian instead; this is the classic one
(R. Lindh, A. Bernhardsson, G. Karlstrom, P.-A. Malmqvist, Chem. Phys. Lett. 241, 423 (1995)):
a sum of stretch, bend and torsion terms over every pair, triple and quadruple of atoms,
each weighted by how bonded its pairs look, rho_ij = exp(alpha_ij (r_ref,ij^2 - r_ij^2)).
Terms too weak to matter are left out, which keeps the cost near-linear in the atom count.

The result is projected: translations and rotations get a fixed stiff curvature (forces have
none of them, so the optimiser never steps along them), and every internal mode at least
``floor`` (soft torsions the model leaves near zero would otherwise get huge steps).
Positions in Bohr, Hessian in Hartree/Bohr^2.
"""

from __future__ import annotations

import numpy as np

# Rows of the periodic table: H-He, Li-Ne, Na and beyond (Lindh's third row serves them all).
_ALPHA_BOHR2 = np.array([[1.0000, 0.3949, 0.3949],
                         [0.3949, 0.2800, 0.2800],
                         [0.3949, 0.2800, 0.2800]])
_R_REF_BOHR = np.array([[1.35, 2.10, 2.53],
                        [2.10, 2.87, 3.40],
                        [2.53, 3.40, 3.40]])
K_STRETCH, K_BEND, K_TORSION = 0.45, 0.15, 0.005  # Hartree/Bohr^2, Hartree/rad^2
RHO_MIN = 1e-4  # pairs bonded less than this carry no term
TERM_MIN = 1e-7  # a bend or torsion weaker than this (Hartree) is left out
FLOOR_HARTREE_PER_BOHR2 = 0.005  # softest curvature of an internal mode
RIGID_HARTREE_PER_BOHR2 = 1.0  # curvature given to translations and rotations
_CHUNK_TERMS = 256  # terms summed per np.add.at call (see _accumulate)


def _rows(numbers: np.ndarray) -> np.ndarray:
    z = np.asarray(numbers)
    return np.where(z <= 2, 0, np.where(z <= 10, 1, 2))


def bondedness(numbers: np.ndarray, positions_bohr: np.ndarray) -> np.ndarray:
    """Lindh's rho_ij for every pair (zero on the diagonal)."""
    rows = _rows(numbers)
    alpha = _ALPHA_BOHR2[rows[:, None], rows[None, :]]
    r_ref = _R_REF_BOHR[rows[:, None], rows[None, :]]
    diff = positions_bohr[:, None, :] - positions_bohr[None, :, :]
    rho = np.exp(alpha * (r_ref ** 2 - np.einsum("ijk,ijk->ij", diff, diff)))
    np.fill_diagonal(rho, 0.0)
    return rho


def _accumulate(hessian: np.ndarray, atoms: np.ndarray, b: np.ndarray, k: np.ndarray) -> None:
    """hessian += sum over terms t of k_t b_t b_t^T; term t moves ``atoms[t]`` (m of them) with
    Wilson B-vectors ``b[t]`` of shape (m, 3)."""
    if len(k) == 0:
        return
    n_terms, m = atoms.shape
    size = len(hessian)
    cols = (3 * atoms[:, :, None] + np.arange(3)).reshape(n_terms, 3 * m)
    flat = b.reshape(n_terms, 3 * m)
    terms = np.zeros(size * size)
    # np.add.at sums repeated indices in order, as one bincount over all terms would, but a
    # chunk at a time: thousands of torsions make (3m)^2 products each, and temporaries that
    # large cost more in page faults than the arithmetic (4.4 ms against 6.8 a build at 29 atoms)
    for start in range(0, n_terms, _CHUNK_TERMS):
        part = slice(start, start + _CHUNK_TERMS)
        blocks = k[part, None, None] * flat[part, :, None] * flat[part, None, :]
        index = cols[part, :, None] * size + cols[part, None, :]
        np.add.at(terms, index.ravel(), blocks.ravel())
    hessian += terms.reshape(size, size)


def _stretches(pos: np.ndarray, rho: np.ndarray, hessian: np.ndarray) -> None:
    i, j = np.nonzero(np.triu(rho > RHO_MIN, 1))
    u = pos[i] - pos[j]
    u /= np.linalg.norm(u, axis=1)[:, None]
    _accumulate(hessian, np.stack([i, j], 1), np.stack([u, -u], 1), K_STRETCH * rho[i, j])


def _bends(pos: np.ndarray, rho: np.ndarray, hessian: np.ndarray) -> None:
    """Angle i-j-k at centre j."""
    i, j, k = _triples(rho > RHO_MIN)
    if i.size == 0:
        return
    weight = K_BEND * rho[i, j] * rho[j, k]
    u, v = pos[i] - pos[j], pos[k] - pos[j]
    lu, lv = np.linalg.norm(u, axis=1), np.linalg.norm(v, axis=1)
    eu, ev = u / lu[:, None], v / lv[:, None]
    cos = np.clip(np.einsum("ij,ij->i", eu, ev), -1.0, 1.0)
    sin = np.sqrt(1.0 - cos ** 2)
    keep = (weight > TERM_MIN) & (sin > 1e-3)  # a linear angle has no bend of this form
    i, j, k, weight, eu, ev, lu, lv, cos, sin = (
        x[keep] for x in (i, j, k, weight, eu, ev, lu, lv, cos, sin))
    bi = (cos[:, None] * eu - ev) / (lu * sin)[:, None]
    bk = (cos[:, None] * ev - eu) / (lv * sin)[:, None]
    _accumulate(hessian, np.stack([i, j, k], 1), np.stack([bi, -bi - bk, bk], 1), weight)


def _neighbour_pairs(bonded: np.ndarray, left: np.ndarray,
                     right: np.ndarray) -> tuple[np.ndarray, ...]:
    """For each index a, every pair of a neighbour of atom left[a] and one of right[a], as
    index arrays (a, left neighbour, right neighbour), in the order of nested loops over a,
    then the left neighbour, then the right (neighbours ascending). Built without a Python
    loop: this runs whenever a model Hessian is made."""
    owner, neighbour = np.nonzero(bonded)  # neighbours, grouped by owner in ascending order
    degree = np.bincount(owner, minlength=len(bonded))
    first = np.cumsum(degree) - degree
    n_left, n_right = degree[left], degree[right]
    pairs = n_left * n_right
    index = np.repeat(np.arange(left.size), pairs)
    offset = np.arange(pairs.sum()) - np.repeat(np.cumsum(pairs) - pairs, pairs)
    return (index, neighbour[first[left[index]] + offset // n_right[index]],
            neighbour[first[right[index]] + offset % n_right[index]])


def _triples(bonded: np.ndarray) -> tuple[np.ndarray, ...]:
    """Every angle i-j-k of bonded pairs with i < k, as index arrays ordered by j, then i,
    then k."""
    atoms = np.arange(len(bonded))
    j, i, k = _neighbour_pairs(bonded, atoms, atoms)
    ordered = i < k
    return i[ordered], j[ordered], k[ordered]


def _quadruples(bonded: np.ndarray) -> tuple[np.ndarray, ...]:
    """Every chain i-j-k-l of bonded pairs with j < k and four distinct atoms, as index
    arrays."""
    j_axis, k_axis = np.nonzero(np.triu(bonded, 1))
    axis, i, l = _neighbour_pairs(bonded, j_axis, k_axis)
    j, k = j_axis[axis], k_axis[axis]
    distinct = (i != k) & (l != j) & (i != l)
    return i[distinct], j[distinct], k[distinct], l[distinct]


def _torsions(pos: np.ndarray, rho: np.ndarray, hessian: np.ndarray) -> None:
    """Dihedral i-j-k-l about the j-k axis (B-vectors of Blondel and Karplus)."""
    i, j, k, l = _quadruples(rho > RHO_MIN)
    weight = K_TORSION * rho[i, j] * rho[j, k] * rho[k, l]
    strong = weight > TERM_MIN  # about half the chains: dropped before any geometry is made
    i, j, k, l, weight = (x[strong] for x in (i, j, k, l, weight))
    if i.size == 0:
        return
    f, g, h = pos[i] - pos[j], pos[j] - pos[k], pos[l] - pos[k]
    a, b = np.cross(f, g), np.cross(h, g)
    a2, b2 = np.einsum("ij,ij->i", a, a), np.einsum("ij,ij->i", b, b)
    keep = (a2 > 1e-6) & (b2 > 1e-6)  # three atoms in a line: no torsion
    i, j, k, l, weight, f, g, h, a, b, a2, b2 = (
        x[keep] for x in (i, j, k, l, weight, f, g, h, a, b, a2, b2))
    lg = np.linalg.norm(g, axis=1)
    fg, hg = np.einsum("ij,ij->i", f, g), np.einsum("ij,ij->i", h, g)
    bi = -(lg / a2)[:, None] * a
    bl = (lg / b2)[:, None] * b
    cross_a = (fg / (a2 * lg))[:, None] * a
    cross_b = (hg / (b2 * lg))[:, None] * b
    bj = -bi + cross_a - cross_b
    bk = -bl - cross_a + cross_b
    _accumulate(hessian, np.stack([i, j, k, l], 1), np.stack([bi, bj, bk, bl], 1), weight)


def rigid_motions(positions_bohr: np.ndarray) -> np.ndarray:
    """An orthonormal basis (3n x 5 or 6) of the rigid translations and rotations."""
    n = len(positions_bohr)
    centred = positions_bohr - positions_bohr.mean(axis=0)
    motions = []
    for axis in np.eye(3):
        motions.append(np.tile(axis, n))
        motions.append(np.cross(axis, centred).ravel())
    u, s, _ = np.linalg.svd(np.array(motions).T, full_matrices=False)
    return u[:, s > 1e-6 * s.max()]


def lindh_terms(numbers: np.ndarray, positions_bohr: np.ndarray) -> np.ndarray:
    """The sum of Lindh's stretch, bend and torsion terms (3n x 3n, Hartree/Bohr^2)."""
    pos = np.asarray(positions_bohr, dtype=float)
    rho = bondedness(np.asarray(numbers), pos)
    hessian = np.zeros((3 * len(pos), 3 * len(pos)))
    _stretches(pos, rho, hessian)
    _bends(pos, rho, hessian)
    _torsions(pos, rho, hessian)
    return hessian


def lindh_hessian(numbers: np.ndarray, positions_bohr: np.ndarray,
                  floor: float = FLOOR_HARTREE_PER_BOHR2) -> np.ndarray:
    """Lindh's model Hessian (3n x 3n, Hartree/Bohr^2), projected and floored as above."""
    pos = np.asarray(positions_bohr, dtype=float)
    hessian = lindh_terms(numbers, pos)
    rigid = rigid_motions(pos)
    internal = np.eye(len(hessian)) - rigid @ rigid.T
    values, vectors = np.linalg.eigh(internal @ hessian @ internal)
    floored = (vectors * np.maximum(values, floor)) @ vectors.T
    return internal @ floored @ internal + RIGID_HARTREE_PER_BOHR2 * (rigid @ rigid.T)
