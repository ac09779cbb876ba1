"""Device and precision policy, and preparing a model for fast inference.

Defaults: the best device present (cuda, then mps, then cpu); bf16 autocast on CUDA, fp32
elsewhere; channels-last memory format for models with 2D convolutions; inference mode.
``torch.compile`` (and CUDA graphs through its ``reduce-overhead`` / ``max-autotune`` modes) is
opt-in because compiling costs seconds to minutes and pays only for long runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from vlm_core.devices import resolve_device

CompileMode = Literal[
    "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs", "inference"
]
#: Inductor options of the "inference" preset: CUDA graphs (as reduce-overhead) plus freezing,
#: which folds the (no-grad) weights into the graph as constants for inference-only kernels.
INFERENCE_COMPILE_OPTIONS = {"triton.cudagraphs": True, "freezing": True}

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}  # fmt: skip


@dataclass(frozen=True)
class RuntimePolicy:
    """How a model runs. Build one with :func:`policy_for`; change fields with ``replace``."""

    device: torch.device
    dtype: torch.dtype  # the autocast dtype; float32 means no autocast
    channels_last: bool = True  # applied only to models with 2D convolutions
    compile: CompileMode | None = None  # None: eager
    inference_mode: bool = True
    cast_weights: bool = False  # run fully in ``dtype`` (weights cast) instead of autocasting

    @property
    def autocast_enabled(self) -> bool:
        return self.dtype != torch.float32 and not self.cast_weights

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    try:
        return _DTYPES[name.lower()]
    except KeyError:
        from vlm_core.errors import UsageError

        raise UsageError(f"unknown dtype '{name}' (use float32, bfloat16 or float16)") from None


def policy_for(
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    *,
    channels_last: bool = True,
    compile: CompileMode | None = None,
    cast_weights: bool = False,
) -> RuntimePolicy:
    """The default policy for ``device``: bf16 autocast on CUDA, fp32 on CPU and MPS."""
    dev = torch.device(resolve_device(str(device)))
    if dtype is None:
        chosen = (
            torch.bfloat16
            if dev.type == "cuda" and torch.cuda.is_bf16_supported()
            else torch.float32
        )
    else:
        chosen = parse_dtype(dtype)
    return RuntimePolicy(
        dev, chosen, channels_last=channels_last, compile=compile, cast_weights=cast_weights
    )


def has_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def prepare_model(model: nn.Module, policy: RuntimePolicy) -> nn.Module:
    """Put ``model`` in eval mode on the policy's device, channels-last when it has 2D
    convolutions, without gradients, compiled when the policy asks. Returns the model to call
    (the compiled wrapper when compiling)."""
    model.eval().requires_grad_(False)
    model.to(policy.device)
    if policy.cast_weights:
        model.to(policy.dtype)
    if policy.channels_last and has_conv2d(model):
        model.to(memory_format=torch.channels_last)
    if policy.compile == "inference":
        options: dict[str, Any] = dict(INFERENCE_COMPILE_OPTIONS)
        if policy.device.type != "cuda":
            options.pop("triton.cudagraphs")
        return torch.compile(model, options=options)  # type: ignore[return-value]
    if policy.compile is not None:
        return torch.compile(model, mode=policy.compile)  # type: ignore[return-value]
    return model


def to_input(
    batch: torch.Tensor, policy: RuntimePolicy, model: nn.Module | None = None
) -> torch.Tensor:
    """Move an input batch to the device (non-blocking from pinned memory), channels-last when
    the model is a convnet under this policy."""
    batch = batch.to(policy.device, non_blocking=True)
    if policy.cast_weights and batch.is_floating_point():
        batch = batch.to(policy.dtype)
    if batch.ndim == 4 and policy.channels_last and (model is None or has_conv2d(model)):
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


@contextlib.contextmanager
def run_context(policy: RuntimePolicy) -> Iterator[None]:
    """Inference mode (or no_grad) plus autocast to the policy's dtype on its device."""
    grad = torch.inference_mode() if policy.inference_mode else torch.no_grad()
    with (
        grad,
        torch.autocast(
            device_type=policy.device.type, dtype=policy.dtype, enabled=policy.autocast_enabled
        ),
    ):
        yield
