"""Turn ``--param k=v`` strings (or a mapping from a form) into a validated parameter model.

This module sits below the task contract: it reads a task spec through
:class:`ParameterOwner` (what :class:`vlm_core.tasks.TaskSpec` provides) and imports nothing
of the tasks, the runner or the trainer, so that every layer can validate parameters.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from vlm_core.errors import ParameterError, did_you_mean

ModelT = TypeVar("ModelT", bound=BaseModel)
ModelT_co = TypeVar("ModelT_co", bound=BaseModel, covariant=True)


class ParameterOwner(Protocol[ModelT_co]):
    """What :func:`validate_params` reads of a task spec: its id (for the messages) and its
    parameter model (a :class:`vlm_core.tasks.TaskSpec` is one)."""

    @property
    def id(self) -> str: ...

    @property
    def params(self) -> type[ModelT_co]: ...


def parse_pairs(pairs: Iterable[str]) -> dict[str, Any]:
    """``["a=1", "b=[1,2]"]`` → ``{"a": "1", "b": [1, 2]}``; JSON for lists and objects only,
    everything else stays a string for pydantic to coerce against the field's type."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ParameterError(f"bad --param '{pair}': expected KEY=VALUE")
        if key in out:
            raise ParameterError(f"bad --param '{pair}': '{key}' is given twice")
        if value.strip()[:1] in ("[", "{"):
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ParameterError(f"bad --param '{pair}': invalid JSON ({exc.msg})") from None
        else:
            out[key] = value
    return out


def validate_params(
    spec: ParameterOwner[ModelT], raw: Mapping[str, Any], model: type[ModelT] | None = None
) -> ModelT:
    """Validate ``raw`` against the task's parameter model (or ``model``, e.g. the training
    parameters); one-line error on the first problem."""
    model = model or spec.params
    fields = model.model_fields
    for key in raw:
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise ParameterError(
                f"unknown parameter '{key}' for task '{spec.id}'{did_you_mean(key, fields)}"
                f" (parameters: {known})"
            )
    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        err = exc.errors()[0]
        if not err["loc"]:  # a model validator: a rule across parameters, not one bad value
            rule = err["msg"].removeprefix("Value error, ")
            raise ParameterError(f"bad parameters for task '{spec.id}': {rule}") from None
        loc = ".".join(str(p) for p in err["loc"]) or "parameters"
        value = err.get("input")
        raise ParameterError(
            f"bad value {value!r} for parameter '{loc}' of task '{spec.id}': {err['msg']}"
        ) from None


def under_given(params: ModelT, defaults: Mapping[str, Any] | None, owner: str = "") -> ModelT:
    """``params`` with ``defaults`` in place of the model's own defaults: a value the user
    gave (one of ``params.model_fields_set``) wins; keys that are not fields are ignored.

    How a run takes the settings its weights were made for (their card's ``inference``
    entry: a window size, a threshold) unless the user says otherwise. ``owner`` names where
    the defaults come from in the one-line error when one of them is not a valid value.
    """
    fields = type(params).model_fields
    given = params.model_fields_set
    update = {k: v for k, v in (defaults or {}).items() if k in fields and k not in given}
    if not update:
        return params
    try:
        return type(params).model_validate({**params.model_dump(include=given), **update})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "parameters"
        raise ParameterError(
            f"{owner or 'the weights'} set {loc}={err.get('input')!r}, which is not valid: "
            f"{err['msg']}"
        ) from None
