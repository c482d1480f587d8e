"""How well each order of a screened conformer search's candidates finds its lowest ones: by
GFN-FF energy, or by the rank's single point at the search's level on the GFN-FF minimum.

    python bench/conformer_order.py --only propranolol --seeds 1

Runs one wide search a molecule and seed on the embedded platform: every distinct screened
candidate ranked and prescreened once, from its GFN-FF minimum, in one stage. For the five
lowest prescreen energies (kcal/mol above the stored reference), it prints their positions in
either order, and the lowest prescreen energy among the first P positions of each: what a
prescreen of P candidates in that order would have found (``conformers.py`` docs the rest).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from atomiverse_core.units import KCAL_PER_MOL_PER_HARTREE

from bench.baselines import scoped_env
from bench.conformer_reference import stored_reference
from bench.conformer_trace import screened_one_by_one
from bench.conformers import MOLECULES

WIDTHS = (10, 20, 50, 100, 150, 200, 300)
WIDE = {"max_prescreened": 1000, "prescreen_stage": None, "prescreen_both_starts": False,
        "screen_rank": True}


def wide_search(atomiverse: Any, name: str, seed: int) -> list[dict[str, float]]:
    """Every distinct screened candidate: its GFN-FF energy, its rank's single point and its
    prescreen energy (Hartree)."""
    from atomiverse.levels import GFN2_XTB

    search = atomiverse.ConformerSearch(
        atoms=atomiverse.Atoms.from_smiles(MOLECULES[name]), level_of_theory=GFN2_XTB,
        name=name, use_cache=False, seed=seed, **WIDE)
    job_id = atomiverse.submit_batch([search.model_dump(mode="json")],
                                     compute_target="local")["jobs"][0]["job_id"]
    (record,) = atomiverse.wait_jobs([job_id])
    if record["state"] != "done":
        raise RuntimeError(f"{name}: search {record['state']}: {record.get('error')}")
    client = atomiverse.get_default_client()
    gfnff, single_point, prescreen = {}, {}, {}
    for child in client.job_children(job_id):
        if child["state"] != "done":
            continue
        job = client.get_job(child["job_id"])
        if child["job_type"] == "conformer_screen":
            gfnff.update((repr(r["result"]["final_positions_angstrom"]),
                          r["result"]["energy_hartree"]) for r in screened_one_by_one(job))
        elif child["job_type"] == "conformer_rank":
            single_point.update(zip(map(repr, job["job"]["candidates_angstrom"]),
                                    job["result"]["energies_hartree"], strict=True))
        elif " · candidate " in (job.get("name") or ""):
            prescreen[repr(job["job"]["atoms"]["positions"])] = job["result"]["energy_hartree"]
    return [{"gfnff": gfnff[k], "single_point": single_point[k], "prescreen": e}
            for k, e in prescreen.items() if single_point.get(k) is not None]


def report(name: str, seed: int, rows: list[dict[str, float]], reference: float) -> None:
    def above(energy: float) -> float:
        return round((energy - reference) * KCAL_PER_MOL_PER_HARTREE, 2)

    lowest = sorted(rows, key=lambda r: r["prescreen"])[:5]
    print(f"{name} seed {seed}: {len(rows)} candidates; the five lowest prescreen energies "
          f"{[above(r['prescreen']) for r in lowest]} kcal/mol above the reference")
    for key in ("gfnff", "single_point"):
        order = sorted(rows, key=lambda r: r[key])
        position = {id(r): n + 1 for n, r in enumerate(order)}
        first = {p: above(min(r["prescreen"] for r in order[:p])) for p in WIDTHS
                 if p <= len(order)}
        print(f"  by {key}: positions {[position[id(r)] for r in lowest]}; "
              f"lowest in the first P: {first}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", required=True, choices=list(MOLECULES))
    p.add_argument("--seeds", nargs="+", type=int, default=[42])
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as home, \
            scoped_env({"ATOMIVERSE_HOME": home, "ATOMIVERSE_BASE_URL": None,
                        "ATOMIVERSE_API_KEY": None}):
        import atomiverse

        atomiverse.start_local()
        try:
            for name in args.only:
                ref = stored_reference(name, MOLECULES[name], 500)
                if ref is None:
                    print(f"{name}: no stored reference", flush=True)
                    continue
                for seed in args.seeds:
                    rows = wide_search(atomiverse, name, seed)
                    report(name, seed, rows, ref["energy_hartree"])
        finally:
            atomiverse.stop_local()


if __name__ == "__main__":
    main()
