"""What the clients send: a payload (a job model, a dict, a qcelemental AtomicInput) as one
entry of a submission, and job ids as URL path segments."""

from __future__ import annotations

from typing import Any


def entry(payload: Any, compute_target: str | None) -> dict[str, Any]:
    if hasattr(payload, "model_dump") and not _is_qcschema_model(payload):
        payload = payload.model_dump(mode="json")
    if isinstance(payload, dict) and "job" in payload and "job_type" not in payload:
        return {"job": payload["job"], "compute_target": payload.get("compute_target",
                                                                     compute_target)}
    return {"job": _jsonable(payload), "compute_target": compute_target}


def _jsonable(payload: Any) -> Any:
    """``model_dump()`` (python mode) leaves tuples and enums; make them plain JSON. A
    qcelemental model (an AtomicInput) goes as its own JSON; arrays (its ``.dict()``'s
    geometry) as lists."""
    from pydantic_core import to_jsonable_python

    if _is_qcschema_model(payload):
        import json

        return json.loads(payload.json())
    return to_jsonable_python(payload, fallback=_array_as_list)


def _is_qcschema_model(payload: Any) -> bool:
    """A qcelemental model (pydantic v1 underneath: its own ``json()``)."""
    return isinstance(getattr(payload, "schema_name", None), str) and hasattr(payload, "json")


def _array_as_list(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON: send lists, numbers and strings")


def quote_job_id(job_id: str) -> str:
    from urllib.parse import quote

    return quote(str(job_id), safe="")


__all__ = ["entry", "quote_job_id"]
