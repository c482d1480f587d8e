"""Jobs in Jupyter: a compact table and a 3D view of a structure with the bundled 3Dmol.js
(``vendor/3dmol``, the copy the dashboard serves), for :meth:`Job._repr_html_` and the SDK's
job records (``atomiverse.records``).

No network: the library goes inline, once per kernel (the first view's output carries it, about
540 kB; later views use the ``$3Dmol`` it defined in the page). It runs with ``define``,
``module`` and ``exports`` hidden, so in a notebook that has RequireJS (classic Jupyter) it
still defines the global rather than an anonymous AMD module. Where the notebook does not run
scripts (an untrusted notebook, a static rendering), the view's placeholder text says so and
the table around it is all there is.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from functools import cache
from html import escape
from typing import Any

from .assets import THREEDMOL_JS

VIEW_MAX_ATOMS = 5000  # above this a notebook output would be megabytes of coordinates
VIEW_WIDTH_PX = 420
VIEW_HEIGHT_PX = 300
_WAIT_FOR_LIBRARY_MS = 10_000

_library_sent = False


@cache
def _library_source() -> str:
    js = THREEDMOL_JS.read_text(encoding="utf-8")
    return js.replace("</script", "<\\/script")  # cannot end the <script> element early


def library_script() -> str:
    """The <script> defining ``$3Dmol`` in the page, or "" if this kernel sent it already."""
    global _library_sent
    if _library_sent:
        return ""
    _library_sent = True
    return ("<script>(function (define, module, exports) {\n" + _library_source()
            + "\n}).call(window);</script>")


def _xyz(symbols: list[str], positions: list[Any]) -> str:
    lines = [str(len(symbols)), "atomiverse"]
    lines += [f"{s} {p[0]:.6f} {p[1]:.6f} {p[2]:.6f}" for s, p in zip(symbols, positions,
                                                                      strict=True)]
    return "\n".join(lines) + "\n"


def structure_view(symbols: list[str], positions: list[Any], caption: str = "") -> str:
    """HTML for a rotatable 3D view (ball and stick) of one geometry in Angstrom; "" for
    none or too many atoms."""
    if not symbols or len(symbols) != len(positions) or len(symbols) > VIEW_MAX_ATOMS:
        return ""
    view_id = f"atomiverse-view-{uuid.uuid4().hex}"
    # No "<" at all inside the script ("</script", "<!--"): JSON reads \u003c as "<".
    data = json.dumps({"id": view_id, "xyz": _xyz(symbols, positions)}).replace("<", "\\u003c")
    script = f"""<script>(function () {{
  var d = {data}, waited = 0;
  function draw() {{
    var el = document.getElementById(d.id);
    if (!el) return;
    if (typeof $3Dmol === "undefined") {{
      if ((waited += 50) < {_WAIT_FOR_LIBRARY_MS}) {{ setTimeout(draw, 50); return; }}
      el.textContent = "3Dmol.js is not loaded in this page: run the notebook's first "
        + "atomiverse view again";
      return;
    }}
    el.textContent = "";
    var v = $3Dmol.createViewer(el, {{backgroundColor: "white"}});
    v.addModel(d.xyz, "xyz");
    v.setStyle({{}}, {{stick: {{radius: 0.13, colorscheme: "Jmol"}},
                      sphere: {{scale: 0.24, colorscheme: "Jmol"}}}});
    v.zoomTo();
    v.render();
    el.setAttribute("data-ready", "yes");
  }}
  draw();
}})();</script>"""
    note = f"<div style='font-size:smaller;color:#666'>{escape(caption)}</div>" if caption \
        else ""
    return (f"{library_script()}<div id='{view_id}' class='atomiverse-view' "
            f"style='position:relative;width:{VIEW_WIDTH_PX}px;height:{VIEW_HEIGHT_PX}px'>"
            "(3D view: needs a notebook that runs scripts, e.g. a trusted Jupyter notebook)"
            f"</div>{note}{script}")


def html_table(columns: Sequence[str], rows: Sequence[Sequence[str]], *, css_class: str,
               more: str = "") -> str:
    """A table with a header row and one row per entry of ``rows``, every text escaped; a
    column empty in every row is left out. ``more``: a last row spanning the table ("... 40
    more jobs")."""
    keep = [i for i in range(len(columns)) if any(row[i] for row in rows)]
    head = "".join(f"<th>{escape(columns[i])}</th>" for i in keep)
    body = "".join("<tr>" + "".join(f"<td>{escape(row[i])}</td>" for i in keep) + "</tr>"
                   for row in rows)
    if more:
        body += f"<tr><td colspan='{max(len(keep), 1)}'>{escape(more)}</td></tr>"
    return (f"<table class='{escape(css_class)}'><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


__all__ = ["VIEW_MAX_ATOMS", "html_table", "library_script", "structure_view"]
