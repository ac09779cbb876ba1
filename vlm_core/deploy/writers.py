"""Writing an exported network: ONNX through ``torch.onnx.export`` (the dynamo exporter),
checked with ``onnx.checker``; ``.pt2`` through ``torch.export.export`` and
``torch.export.save``."""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlm_core.deploy.spec import TensorSpec, dynamic_shapes
from vlm_core.errors import UsageError

log = logging.getLogger(__name__)

#: the ONNX opset `vlm export` writes by default (the dynamo exporter's own default)
DEFAULT_OPSET = 18
#: the modules each format needs, named in the one-line error when one is missing
NEEDS = {"onnx": ("onnx", "onnxruntime", "onnxscript"), "pt2": ()}


def check_extras(fmt: str) -> None:
    """Refuse (exit 2, the install line) when the libraries ``fmt`` needs are missing."""
    missing = [m for m in NEEDS.get(fmt, ()) if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(
            f"--format {fmt} needs {', '.join(NEEDS[fmt])} ({', '.join(missing)} missing): "
            "pip install 'vlm-core[deploy]'"
        )


def write_onnx(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    inputs: Sequence[TensorSpec],
    outputs: Sequence[str],
    path: Path,
    *,
    opset: int = DEFAULT_OPSET,
) -> None:
    """``module`` as one self-contained ONNX file at ``path``, checked by ``onnx.checker``."""
    import onnx

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            example,
            dynamo=True,
            input_names=[s.name for s in inputs],
            output_names=list(outputs),
            dynamic_shapes=dynamic_shapes(inputs),
            opset_version=opset,
            optimize=True,
            verbose=False,
        )
    if program is None:  # pragma: no cover - the dynamo exporter always returns one
        raise RuntimeError("torch.onnx.export returned no program")
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path), full_check=True)


def write_pt2(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    inputs: Sequence[TensorSpec],
    path: Path,
) -> None:
    """``module`` as a ``torch.export`` program saved at ``path``."""
    with torch.no_grad():
        program = torch.export.export(module, example, dynamic_shapes=dynamic_shapes(inputs))
    torch.export.save(program, str(path))


def write(
    fmt: str,
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    inputs: Sequence[TensorSpec],
    outputs: Sequence[str],
    path: Path,
    *,
    opset: int = DEFAULT_OPSET,
) -> None:
    """Export ``module`` in format ``fmt`` to ``path``."""
    if fmt == "onnx":
        write_onnx(module, example, inputs, outputs, path, opset=opset)
    else:
        write_pt2(module, example, inputs, path)


def versions(fmt: str) -> dict[str, Any]:
    """The versions an export was made with (what its sidecar records)."""
    from importlib.metadata import PackageNotFoundError, version

    names = ["torch", "vlm-core", *(["onnx", "onnxruntime", "onnxscript"] if fmt == "onnx" else [])]
    found: dict[str, Any] = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found
