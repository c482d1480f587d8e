"""The catalogue of bad jobs and bad requests users will send, with what each must get.
Used by tests/test_hostile_input.py and by bench/reliability.py for docs/reliability.md."""

from __future__ import annotations

import json

import atomiverse
from atomiverse.levels import GFN2_XTB

WATER = atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles("O"),
                                     level_of_theory=GFN2_XTB, use_cache=False)


def _water_payload(**changes):
    payload = json.loads(json.dumps(WATER.model_dump(mode="json")))
    for dotted, value in changes.items():
        node = payload
        *path, last = dotted.split(".")
        for key in path:
            node = node[key]
        node[last] = value
    return payload


BAD_JOBS = {
    "no atoms": (_water_payload(**{"atoms.numbers": [], "atoms.positions": []}),
                 "atoms.numbers"),
    "too many atoms": ({**_water_payload(), "atoms": {
        "numbers": [6] * 1001, "positions": [[i * 1.5, 0.0, 0.0] for i in range(1001)],
        "charge": 0, "multiplicity": 1}}, "more than the maximum of 1000"),
    "francium": (_water_payload(**{"atoms.numbers": [87, 1, 1], "atoms.multiplicity": 2}),
                 "Z=87"),
    "nan coordinate": (_water_payload(**{"atoms.positions": [[0, 0, "NaN"], [0, 0, 1],
                                                             [1, 0, 0]]}), "atoms.positions"),
    "infinite coordinate": (_water_payload(**{"atoms.positions": [[0, 0, 1e400], [0, 0, 1],
                                                                  [1, 0, 0]]}),
                            "atoms.positions"),
    "coordinate out of bounds": (_water_payload(**{"atoms.positions": [[0, 0, 1e308],
                                                                         [0, 0, -1e308],
                                                                         [0, 1, 0]]}),
                                 "atoms.positions"),
    "NUL in the name": ({**_water_payload(), "name": "water\x00"}, "name"),
    "control character in the name": ({**_water_payload(), "name": "water\x1b[2J"}, "name"),
    "bidirectional override in the name": ({**_water_payload(), "name": "water\u202egnp.exe"},
                                           "name"),
    "atoms on top of each other": (_water_payload(**{"atoms.positions": [
        [0, 0, 0], [0, 0, 0.1], [1, 0, 0]]}), "0.100 Angstrom apart"),
    "odd electrons, singlet": (_water_payload(**{"atoms.charge": 1}),
                               "multiplicity 1 is impossible"),
    "multiplicity zero": (_water_payload(**{"atoms.multiplicity": 0}), "atoms.multiplicity"),
    "no electrons left": (_water_payload(**{"atoms.charge": 10}), "leaves 0 electrons"),
    "more electrons than the basis": (_water_payload(**{"atoms.charge": -6}),
                                      "basis can hold"),
    "fmax out of range": ({**_water_payload(), "job_type": "opt", "fmax": -1}, "fmax"),
    "max_steps out of range": ({**_water_payload(), "job_type": "opt", "max_steps": 10**9},
                               "max_steps"),
    "unknown field": ({**_water_payload(), "temperature": 300}, "temperature"),
    "unknown job type": ({**_water_payload(), "job_type": "md"}, "job_type"),
    "unknown level": (_water_payload(**{"level_of_theory.method": "b3lyp"}),
                      "level_of_theory.method"),
    "wrong type": (_water_payload(**{"atoms.charge": "minus one"}), "atoms.charge"),
    "not an object": ("just a string", "job"),
}

# name -> (request keyword arguments for httpx, expected status)
BAD_REQUESTS = {
    "malformed JSON": (dict(content=b'{"jobs": [', headers={"Content-Type":
                                                            "application/json"}), 422),
    "wrong content type": (dict(content=b"jobs=1", headers={"Content-Type": "text/plain"}),
                           422),
    "deeply nested JSON": (dict(content=b'{"jobs": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
                                headers={"Content-Type": "application/json"}), 400),
    "wrong types": (dict(json={"jobs": {"a": 1}}), 422),
    "unknown top-level field": (dict(json={"jobs": [], "priority": 9}), 422),
}

# Results a faulty or hostile controller reports for a single point: changes to a real result,
# and the field the job's error must name. Each fails its own job; the batch's others are
# stored (tests/security/test_reported_results.py).
BAD_RESULTS = {
    "energy as text": ({"energy_hartree": "very low"}, "energy_hartree"),
    "core seconds as text": ({"core_seconds": "fast"}, "core_seconds"),
    "NaN energy": ({"energy_hartree": float("nan")}, "energy_hartree"),
    "infinite gradient": ({"gradient_hartree_per_bohr": [[float("inf"), 0.0, 0.0]]},
                          "gradient_hartree_per_bohr"),
    "gradient of pairs": ({"gradient_hartree_per_bohr": [[0.0, 0.0]]},
                          "gradient_hartree_per_bohr"),
    "energy missing": ({"energy_hartree": None}, "energy_hartree"),
}
