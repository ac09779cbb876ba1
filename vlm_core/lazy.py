"""Package namespaces that load their submodules on first attribute access, so that importing
``vlm_core.gan``, ``vlm_core.training`` ... costs nothing (no torch) until a name is used."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any]
) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``name`` comes from the submodule
    ``exports[name]``, imported on first use and then kept in ``namespace`` (the package's
    ``globals()``) so later lookups are plain attribute reads.

        __getattr__ = lazy_exports(__name__, {"Trainer": "trainer"}, globals())
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    return __getattr__
