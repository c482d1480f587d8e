"""The dashboard's plots as SVG geometry for the job page's template (drawn by the server: the
page's Content-Security-Policy allows no outside script, and an SVG needs none): the energy per
optimiser step, and a frequencies job's IR spectrum (sticks and a Lorentzian-broadened curve).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from atomiverse_core.units import KCAL_PER_MOL_PER_HARTREE

IR_HALF_WIDTH_CM1 = 10.0  # Lorentzian half width at half maximum (a 20 cm^-1 band)
IR_CURVE_POINTS = 800
IR_MIN_SPAN_CM1 = 4000.0


def nice_step(span: float, target: int) -> float:
    raw = span / max(target, 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


def energy_plot(energies: list[float]) -> dict[str, Any]:
    """An SVG line plot of E - E(final) in kcal/mol per optimiser step: one point per step."""
    width, height, left, right, top, bottom = 640, 260, 64, 16, 14, 40
    final = energies[-1]
    rel = [(e - final) * KCAL_PER_MOL_PER_HARTREE for e in energies]
    lo, hi = min(min(rel), 0.0), max(max(rel), 1e-6)
    ystep = nice_step(hi - lo, 5)
    lo, hi = math.floor(lo / ystep) * ystep, math.ceil(hi / ystep) * ystep
    n = len(energies)
    xmax = max(n - 1, 1)
    xstep = max(1, int(nice_step(xmax, 8)))

    def x(i: float) -> float:
        return round(left + (width - left - right) * i / xmax, 2)

    def y(v: float) -> float:
        return round(top + (height - top - bottom) * (hi - v) / (hi - lo), 2)

    points = [{"x": x(i), "y": y(v), "step": i, "energy": f"{energies[i]:.10f}",
               "rel": f"{v:+.3f}"} for i, v in enumerate(rel)]
    yticks = [{"y": y(lo + k * ystep), "label": f"{lo + k * ystep:g}"}
              for k in range(round((hi - lo) / ystep) + 1)]
    xticks = [{"x": x(i), "label": str(i)} for i in range(0, n, xstep)]
    return {"width": width, "height": height, "left": left, "right": width - right,
            "top": top, "bottom": height - bottom, "points": points, "yticks": yticks,
            "xticks": xticks, "path": " ".join(f"{p['x']},{p['y']}" for p in points),
            "radius": 3.0 if n <= 80 else 2.0 if n <= 300 else 1.2}


def ir_spectrum(freqs_cm1: list[float], intensities_km_per_mol: list[float]) -> dict[str, Any]:
    """Sticks (one per real mode, at its intensity in km/mol) and their sum broadened by
    Lorentzians of height equal to each stick (an isolated band peaks at its stick), on a
    wavenumber axis that decreases to the right as IR spectra are drawn."""
    width, height, left, right, top, bottom = 640, 260, 64, 16, 14, 40
    modes = [(k, f, i) for k, (f, i) in enumerate(zip(freqs_cm1, intensities_km_per_mol,
                                                          strict=True)) if f > 0]
    hi_x = max(IR_MIN_SPAN_CM1, max((f for _, f, _ in modes), default=0.0) + 200.0)
    grid = np.linspace(0.0, hi_x, IR_CURVE_POINTS)
    centres = np.array([f for _, f, _ in modes])
    heights = np.array([i for _, _, i in modes])
    hwhm2 = IR_HALF_WIDTH_CM1**2
    curve = (heights * hwhm2 / ((grid[:, None] - centres) ** 2 + hwhm2)).sum(axis=1).tolist()
    top_y = max([1e-6, *curve, *heights.tolist()])
    ystep = nice_step(top_y, 4)
    hi_y = math.ceil(top_y / ystep) * ystep

    def x(nu: float) -> float:
        return round(left + (width - left - right) * (hi_x - nu) / hi_x, 2)

    def y(v: float) -> float:
        return round(top + (height - top - bottom) * (hi_y - v) / hi_y, 2)

    xstep = 500 if hi_x <= 4500 else nice_step(hi_x, 8)
    return {"width": width, "height": height, "left": left, "right": width - right,
            "top": top, "bottom": height - bottom,
            "sticks": [{"mode": k, "x": x(f), "y": y(i), "freq": f"{f:.1f}",
                        "intensity": f"{i:.2f}"} for k, f, i in modes],
            "curve": " ".join(f"{x(nu)},{y(v)}" for nu, v in zip(grid.tolist(), curve,
                                                                  strict=True)),
            "yticks": [{"y": y(k * ystep), "label": f"{k * ystep:g}"}
                       for k in range(round(hi_y / ystep) + 1)],
            "xticks": [{"x": x(k * xstep), "label": f"{k * xstep:g}"}
                       for k in range(int(hi_x // xstep) + 1)],
            "half_width": IR_HALF_WIDTH_CM1}


__all__ = ["energy_plot", "ir_spectrum", "nice_step"]
