"""Atomiverse: GFN-xTB and GFN-FF single points, geometry optimisations and frequencies, in
vacuum or implicit solvent, submitted from Python to this machine, a lab server or an HPC node.

    import atomiverse
    from atomiverse.levels import GFN2_XTB
    jobs = [atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles(s),
                                         level_of_theory=GFN2_XTB) for s in ["O", "CCO"]]
    result = atomiverse.submit_batch([j.model_dump() for j in jobs])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from atomiverse_core import jobtypes as _jobtypes
from atomiverse_core.atoms import Atoms
from atomiverse_core.jobs import Job
from atomiverse_core.jobs import use_default_client as _use_default_client
from atomiverse_core.state import State

from . import atoms, jobs, levels, records, results, schema, state  # noqa: F401
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AtomiverseError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InsufficientStorageError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    PaymentRequiredError,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
)
from ._version import __version__
from .pagination import JobsPage

if TYPE_CHECKING:
    from . import _client_jobs
    from ._client import Client, configure, get_default_client
    from ._client_jobs import (
        as_completed,
        cancel_job,
        delete_job,
        get_job,
        iter_jobs,
        list_jobs,
        rename_job,
        status,
        submit_batch,
        wait_jobs,
    )

# The HTTP client (httpx2) loads on first use. Worker processes import the job models through
# this package and never talk HTTP; the client cost each of them about 5 MB and 60 ms.
_CLIENT_ATTRIBUTES = {
    **dict.fromkeys(("Client", "configure", "get_default_client"), "._client"),
    **dict.fromkeys(("as_completed", "cancel_job", "delete_job", "get_job", "iter_jobs",
                     "list_jobs", "rename_job", "status", "submit_batch", "wait_jobs"),
                    "._client_jobs"),
    **dict.fromkeys(("to_dataframe", "export"), ".tables"),  # pandas loads on first use
    "AsyncClient": "._async_client",
    # The embedded server's own failures (subclasses of APIConnectionError), named in the docs.
    **dict.fromkeys(("CrashLoopError", "EmbeddedServerError"), "._embedded_health"),
}


# Every job type's input model (SinglePointEnergy, GeometryOptimization, ...), from the registry.
_JOB_MODELS = _jobtypes.input_models()
globals().update(_JOB_MODELS)


def _default_client() -> Any:
    return importlib.import_module("._client", __name__).get_default_client()


# A job's verbs (submit, wait, ...) reach the server through this package's default client.
_use_default_client(_default_client)


def __getattr__(name: str) -> Any:
    if name == "_client_jobs":
        value: Any = importlib.import_module("._client_jobs", __name__)
    elif name in _CLIENT_ATTRIBUTES:
        value = getattr(importlib.import_module(_CLIENT_ATTRIBUTES[name], __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def start_local(timeout: float = 120.0) -> str:
    """Start (or reuse) the embedded server and its local controller; return the server URL
    once the controller's workers are warm."""
    from . import _embedded
    from ._client import get_default_client

    url, _ = _embedded.ensure_running(wait_for_controller=True, timeout=timeout,
                                    deliberate=True)
    client = get_default_client()
    if client.embedded:
        client.account()  # connect now, so the first submission does not pay for it
    return url


def stop_local() -> bool:
    """Stop the embedded server and local controller; False if none was running. A client
    still connected to it does not start it again (its calls raise ``EmbeddedServerError``
    saying it was stopped) until ``start_local()``, ``atomiverse local start`` or a new
    ``Client`` starts it; a server that died, by contrast, is restarted by the next call."""
    from . import _embedded
    from ._client import configure

    configure()  # forget the connection to the server being stopped
    return _embedded.stop()


__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AtomiverseError",
    "Atoms",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "CrashLoopError",
    "EmbeddedServerError",
    "InsufficientStorageError",
    "InternalServerError",
    "Job",
    "JobsPage",
    "NotFoundError",
    "PayloadTooLargeError",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "RateLimitError",
    "State",
    "UnprocessableEntityError",
    "__version__",
    "_client_jobs",
    "as_completed",
    "cancel_job",
    "configure",
    "delete_job",
    "get_default_client",
    "get_job",
    "iter_jobs",
    "levels",
    "list_jobs",
    "rename_job",
    "records",
    "results",
    "start_local",
    "state",
    "status",
    "stop_local",
    "submit_batch",
    "AsyncClient",
    "to_dataframe",
    "export",
    "wait_jobs",
    # and every job type's input model (the registry's), in their sorted places:
]
__all__ += list(_JOB_MODELS)
__all__.sort()
