"""How a conformer search's result shows: the summary rows, the ensemble's table and frames
(the dashboard, the CLI's multi-frame ``.xyz``), and a one-line note on the search's options."""

from __future__ import annotations

from ..drivers.conformers import BOND_ORDERS_PERCEIVED, CONNECTIVITY_ONLY
from .spec import Frame, Payload, ResultRow, Table


def ensemble_rows(record: Payload, result: Payload) -> list[ResultRow]:
    conformers = result.get("conformers")
    if not conformers:
        return []
    top = conformers[0]
    bonds = result.get("bond_orders", BOND_ORDERS_PERCEIVED)
    warning = [] if bonds == BOND_ORDERS_PERCEIVED else [
        ResultRow("Bond orders", bonds, "", "bond_orders",
                  "every bond taken as single: E/Z geometry may not be kept"
                  if bonds == CONNECTIVITY_ONLY else "formal charges may be off")]
    return warning + [ResultRow("Unique conformers", len(conformers), "", "n_conformers",
                      f"of {result.get('n_candidates')} candidates, "
                      f"{result.get('n_refined')} refined"),
            ResultRow("Rotatable bonds", result.get("n_rotatable_bonds"), "", "n_rotatable"),
            ResultRow("Lowest conformer's weight", f"{top['boltzmann_weight']:.3f}", "",
                      "top_weight", f"at {result.get('temperature_kelvin')} K")]


def conformer_frames(result: Payload) -> list[Frame]:
    return [Frame(c["positions_angstrom"], c["energy_hartree"],
                  f"conformer={n + 1} relative_energy_kcal_per_mol="
                  f"{c['relative_energy_kcal_per_mol']:.4f} boltzmann_weight="
                  f"{c['boltzmann_weight']:.6f}")
            for n, c in enumerate(result.get("conformers") or [])]


def ensemble_table(result: Payload) -> Table | None:
    conformers = result.get("conformers")
    if not conformers:
        return None
    return Table("Conformers", ["#", "Energy / Eₕ", "ΔE / kcal mol⁻¹", "Weight"],
                 [[n + 1, f"{c['energy_hartree']:.8f}",
                   f"{c['relative_energy_kcal_per_mol']:.3f}", f"{c['boltzmann_weight']:.4f}"]
                  for n, c in enumerate(conformers)])


def search_note(job: Payload) -> str:
    screened = bool(job.get("screen"))
    n = job.get("n_candidates") or (
        "20 + 80 per rotatable bond" if screened else "10 + 20 per rotatable bond")
    stage = job.get("prescreen_stage")
    staged = f" in stages of {stage}" if stage else ""
    ranked = " ranked by single points" if job.get("screen_rank") else ""
    screen = f", GFN-FF screen{ranked} to ≤ {job.get('max_prescreened', 200)}{staged}" \
        if screened else ""
    return f"{n} candidates{screen}, ≤ {job.get('max_refined', 40)} refined"
