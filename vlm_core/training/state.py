"""Nested training state (optimizer, scheduler, RNG...) as tensors plus JSON, never pickle.

:func:`flatten` splits a state dict into a flat ``{key: tensor}`` mapping that safetensors can
store and a JSON skeleton that records the structure (dict keys keep their type, tuples stay
tuples); :func:`unflatten` puts them back together.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

_SCALARS = (bool, int, float, str, type(None))


class StateError(TypeError):
    """The state holds something that has no pickle-free representation."""


def _key(k: Any, where: str) -> list[Any]:
    if isinstance(k, bool) or not isinstance(k, (int, str)):
        raise StateError(f"state key {k!r} at '{where}' is neither an int nor a str")
    return ["i" if isinstance(k, int) else "s", k]


def flatten(obj: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """``(skeleton, tensors)`` for ``obj`` (dicts, lists, tuples, scalars, tensors, arrays)."""
    tensors: dict[str, torch.Tensor] = {}
    seen: dict[tuple[Any, ...], str] = {}

    def walk(value: Any, where: str) -> Any:
        if isinstance(value, torch.Tensor):
            key = f"t{len(tensors)}"
            t = value.detach()
            ident = (t.untyped_storage().data_ptr(), t.storage_offset(), t.dtype, tuple(t.shape))
            if t.numel() and ident in seen:  # the same tensor twice (tied weights): store once
                return {"__tensor__": seen[ident]}
            seen[ident] = key
            tensors[key] = t.to("cpu", copy=True).contiguous()
            return {"__tensor__": key}
        if isinstance(value, np.ndarray):
            key = f"t{len(tensors)}"
            tensors[key] = torch.from_numpy(np.ascontiguousarray(value).copy())
            return {"__ndarray__": key}
        if isinstance(value, np.generic):
            return walk(value.item(), where)
        if isinstance(value, dict):
            return {
                "__dict__": [[_key(k, where), walk(v, f"{where}.{k}")] for k, v in value.items()]
            }
        if isinstance(value, tuple):
            return {"__tuple__": [walk(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, _SCALARS):
            if isinstance(value, float) and value != value:
                return {"__float__": "nan"}
            if isinstance(value, float) and value in (float("inf"), float("-inf")):
                return {"__float__": "inf" if value > 0 else "-inf"}
            return value
        raise StateError(f"cannot store {type(value).__name__} at '{where}' without pickle")

    return walk(obj, "state"), tensors


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`flatten`."""

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(v) for v in node]
        if not isinstance(node, dict):
            return node
        if "__tensor__" in node:
            return tensors[node["__tensor__"]]
        if "__ndarray__" in node:
            return tensors[node["__ndarray__"]].numpy()
        if "__float__" in node:
            return float(node["__float__"])
        if "__tuple__" in node:
            return tuple(walk(v) for v in node["__tuple__"])
        if "__dict__" in node:
            return {(int(k) if t == "i" else k): walk(v) for (t, k), v in node["__dict__"]}
        raise StateError(f"unknown node in a state skeleton: {sorted(node)}")

    return walk(skeleton)
