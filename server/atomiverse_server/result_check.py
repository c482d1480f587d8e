"""Results a controller reports are checked against their job type's result model before they
are stored: a controller is another party (issue 23). A result of the wrong shape made the job's
pages answer 500 and ``/complete`` roll back its whole batch; now that one job fails with the
field and the reason, and the rest of the batch is stored."""

from __future__ import annotations

from typing import Any

from atomiverse_core import jobtypes
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError


def _finite(model: type[BaseModel]) -> TypeAdapter[Any]:
    """The model, refusing NaN and infinities (no energy or gradient is one)."""
    checked = type(f"Reported{model.__name__}", (model,),
                   {"model_config": ConfigDict(allow_inf_nan=False)})
    return TypeAdapter(checked)


_CHECKS = {t.name: _finite(t.result_model) for t in jobtypes.all_types()}


def result_problem(job_type: str, result: Any) -> str | None:
    """None for a valid result, else one line naming the first bad field and the reason."""
    check = _CHECKS.get(job_type)
    if check is None:
        return f"job type '{job_type}' has no result model"
    if not isinstance(result, dict):
        return "result: must be an object"
    try:
        check.validate_python(result)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "result"
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        return f"{field}: {first['msg']}{more}"
    return None

