"""A Streamlit form built from a task's parameter model (a :class:`~vlm_core.tasks.TaskParams`).

One widget per field, chosen from its type and bounds:

* ``bool`` → checkbox
* ``Literal[...]`` or an ``Enum`` → selectbox of the choices
* ``int`` / ``float`` → number input limited by ``ge``/``gt`` and ``le``/``lt``
* ``str`` → text input limited to ``max_length`` characters
* lists, tuples, dicts and anything else → a JSON text field

The widgets only collect values; :func:`validated_params` checks them with
:func:`vlm_core.params.validate_params`, the same validation the CLI uses, and shows its
one-line :class:`~vlm_core.errors.ParameterError` in an error box.
"""

from __future__ import annotations

import enum
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import streamlit as st
from pydantic.fields import FieldInfo

from vlm_core.errors import ParameterError
from vlm_core.params import validate_params
from vlm_core.tasks import TaskParams, TaskSpec, describe_param

LONG_TEXT = 200  # strings allowed to be longer than this get a text area


@dataclass(frozen=True)
class JsonText:
    """The text of a JSON field, decoded when the form is submitted."""

    text: str


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` → ``(X, True)``; anything else → ``(annotation, False)``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        if len(args) == 1:
            return args[0], optional
        if all(typing.get_origin(a) is Literal for a in args):
            choices = [c for a in args for c in typing.get_args(a)]
            return Literal[tuple(choices)], optional
    return annotation, False


def _choices(annotation: Any) -> list[Any] | None:
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return list(annotation)
    return None


def _same_choice(option: Any, value: Any) -> bool:
    return bool(option == value or getattr(option, "value", option) == value)


def _limits(bounds: Mapping[str, Any], integer: bool) -> tuple[Any, Any]:
    """Inclusive widget limits from pydantic bounds (exclusive bounds are checked on submit)."""
    low = bounds.get("ge", bounds.get("gt"))
    high = bounds.get("le", bounds.get("lt"))
    if integer:
        if "gt" in bounds and "ge" not in bounds:
            low = math.floor(bounds["gt"]) + 1
        if "lt" in bounds and "le" not in bounds:
            high = math.ceil(bounds["lt"]) - 1
        return (None if low is None else int(low)), (None if high is None else int(high))
    return (None if low is None else float(low)), (None if high is None else float(high))


def _float_step(low: float | None, high: float | None) -> tuple[float, str | None]:
    """A step of about a hundredth of the range, and a format that shows it."""
    if low is None or high is None or high <= low:
        return 0.01, None
    step = 10.0 ** math.floor(math.log10((high - low) / 100))
    if step >= 0.01:
        return min(step, 1.0), None
    decimals = -math.floor(math.log10(step))
    return step, f"%.{decimals}f"


def _in_range(value: Any, low: Any, high: Any) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return (low is None or value >= low) and (high is None or value <= high)


def _help(described: Mapping[str, Any]) -> str:
    text = described["description"] or ""
    bounds = described["bounds"]
    if bounds:
        limits = ", ".join(f"{k} {v}" for k, v in bounds.items())
        text = f"{text} ({limits})" if text else limits
    return text


def field_widget(
    name: str,
    info: FieldInfo,
    value: Any,
    key: str,
    *,
    label: str | None = None,
    step: float | None = None,
    number_format: str | None = None,
    placeholder: str | None = None,
) -> Any:
    """Draw the widget for one parameter, starting at ``value``; return what it holds.

    ``label`` replaces the name shown above the widget; ``step`` and ``number_format`` the step
    and format a float's number input derives from its bounds (for values spanning decades,
    such as a learning rate); ``placeholder`` is what an empty number or text field shows
    (what leaving it empty means).
    """
    label = label or name
    described = describe_param(name, info)
    default = described["default"]
    help_text = _help(described)
    annotation, optional = _strip_optional(info.annotation)
    choices = _choices(annotation)
    if annotation is bool:
        return st.checkbox(label, value=bool(value), help=help_text, key=key)
    if choices is not None:
        options = [None, *choices] if optional else choices
        index = next((i for i, o in enumerate(options) if _same_choice(o, value)), 0)
        return st.selectbox(
            label,
            options,
            index=index,
            format_func=lambda o: "—" if o is None else str(getattr(o, "value", o)),
            help=help_text,
            key=key,
        )
    if annotation in (int, float):
        integer = annotation is int
        low, high = _limits(described["bounds"], integer)
        if value is not None and not _in_range(value, low, high):
            st.warning(f"'{name}' was {value!r}, outside its bounds; starting from {default!r}.")
            value = default
        if value is not None:
            value = int(value) if integer else float(value)
        if integer:
            return st.number_input(
                label,
                min_value=low,
                max_value=high,
                value=value,
                step=1,
                help=help_text,
                key=key,
                placeholder=placeholder,
            )
        derived_step, derived_format = _float_step(low, high)
        return st.number_input(
            label,
            min_value=low,
            max_value=high,
            value=value,
            step=step or derived_step,
            format=number_format or derived_format,
            help=help_text,
            key=key,
            placeholder=placeholder,
        )
    if annotation is str:
        max_chars = described["bounds"].get("max_length")
        text = "" if value is None else str(value)
        widget = st.text_area if max_chars is not None and max_chars > LONG_TEXT else st.text_input
        entered = widget(
            label, value=text, max_chars=max_chars, help=help_text, key=key, placeholder=placeholder
        )
        return None if optional and not entered else entered
    text = json.dumps(
        value, default=lambda o: sorted(o) if isinstance(o, (set, frozenset)) else str(o)
    )
    return JsonText(st.text_input(label, value=text, help=f"{help_text} — JSON", key=key) or "")


def parameter_form(
    spec: TaskSpec,
    *,
    key: str,
    initial: Mapping[str, Any] | None = None,
    model: type[TaskParams] | None = None,
) -> dict[str, Any]:
    """Draw one widget per parameter of ``spec`` (call it inside ``st.form``).

    Args:
        spec: the task whose parameter model the form is built from.
        key: prefix of the widget keys; change it to start the widgets again from ``initial``.
        initial: starting values by parameter name (defaults for the others).
        model: another parameter model of the task (its training parameters).

    Returns:
        The raw values by name, to be checked with :func:`validated_params` on submit.
    """
    initial = initial or {}
    fields = (model or spec.params).model_fields
    if not fields:
        st.caption("This task has no parameters.")
    values: dict[str, Any] = {}
    for name, info in fields.items():
        start = initial.get(name, info.get_default(call_default_factory=True))
        values[name] = field_widget(name, info, start, f"{key}.{name}")
    return values


def decode(spec: TaskSpec, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The form's values with JSON fields decoded; :class:`ParameterError` on bad JSON."""
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if isinstance(value, JsonText):
            try:
                value = json.loads(value.text)
            except json.JSONDecodeError as exc:
                raise ParameterError(
                    f"bad value {value.text!r} for parameter '{name}' of task '{spec.id}': "
                    f"not valid JSON ({exc.msg})"
                ) from None
        out[name] = value
    return out


def validated_params(
    spec: TaskSpec, raw: Mapping[str, Any], model: type[TaskParams] | None = None
) -> dict[str, Any] | None:
    """Validate the form's values; the parameters as a dict, or ``None`` after an error box.

    Only the values that differ from their parameter's default are returned: the form shows
    every field, and a field left at its default must not count as the user's choice, so that
    the settings the weights were made for (their card's ``inference``, which a run takes
    wherever the user gave none) stay in force, as in `vlm run`.
    """
    try:
        params = validate_params(spec, decode(spec, raw), model)
    except ParameterError as exc:
        st.error(str(exc), icon="⚠️")
        return None
    return params.model_dump(mode="json", exclude_defaults=True)
