"""``wait_jobs``' progress bar in Jupyter: an HTML ``<progress>`` element in the cell's output,
updated in place (IPython's display ids) as jobs finish. No widget library and no script: it
shows in JupyterLab, classic Jupyter, VS Code and a saved notebook alike, with a plain-text
line for consoles that read the output as text. Outside a Jupyter kernel nothing is shown."""

from __future__ import annotations

import sys
from collections.abc import Callable


def in_jupyter() -> bool:
    """True inside a Jupyter kernel (IPython's ZMQ shell); never imports IPython itself."""
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    shell = get_ipython() if callable(get_ipython) else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _bundle(done: int, total: int) -> dict[str, str]:
    text = f"{done} of {total} jobs finished"
    return {"text/plain": text,
            "text/html": f"<div class='atomiverse-progress'><progress value='{done}' "
                         f"max='{max(total, 1)}' style='width:24em'></progress> "
                         f"<span>{text}</span></div>"}


def notebook_progress(total: int) -> Callable[[int, int], None] | None:
    """A progress callback for ``wait_jobs`` that shows a bar at once (0 of ``total``), or
    None outside Jupyter."""
    if not in_jupyter():
        return None
    from IPython.display import display, update_display

    handle = display(_bundle(0, total), raw=True, display_id=True)
    display_id = handle.display_id

    def update(done: int, total: int) -> None:
        update_display(_bundle(done, total), raw=True, display_id=display_id)

    return update


__all__ = ["in_jupyter", "notebook_progress"]
