"""Files shipped with the core: the vendored 3Dmol.js, which the dashboard serves and notebooks
inline. By path from this file: ``atomiverse_core`` is a namespace package, which
``importlib.resources`` (3.11) and Starlette's ``StaticFiles(packages=...)`` cannot read."""

from __future__ import annotations

from pathlib import Path

VENDOR_DIR = Path(__file__).resolve().parent / "vendor"
THREEDMOL_JS = VENDOR_DIR / "3dmol" / "3Dmol-min.js"

__all__ = ["THREEDMOL_JS", "VENDOR_DIR"]
