"""Exported programs against eager: the GPU check's ``export.latency`` line.

A network (a timm classifier, or a task's exported network through its deploy spec) is timed
eager, as the ``torch.export`` program's module and as an AOTInductor package
(``torch._inductor.aoti_compile_and_package``: the compiled shared library that ExecuTorch
and C++ deployments load), alternating, median ms per batch, in the same dtype. AOTInductor
needs a C++ compiler (and, on a GPU, Triton); where it cannot compile, its column says why.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["export_latency", "timm_case"]


def timm_case(name: str, size: int, batch: int) -> tuple[Any, tuple[Any, ...]]:
    """A timm classifier (random weights: latency does not depend on them) and its input."""
    import timm
    import torch

    sized: dict[str, Any] = {"img_size": size} if "vit" in name else {}  # a ViT: its positions
    model = timm.create_model(name, pretrained=False, num_classes=1000, **sized)
    return model.eval(), (torch.rand(batch, 3, size, size),)


def export_latency(
    model: Any,
    example: tuple[Any, ...],
    *,
    device: str = "cpu",
    dtype: str = "float32",
    rounds: int = 10,
    aoti: bool = True,
    dynamic_shapes: Any = None,
) -> dict[str, Any]:
    """Median ms per call of ``model`` eager, as a ``torch.export`` program and as an
    AOTInductor package on ``device`` in ``dtype``, timed in alternation after a warm-up,
    with the largest absolute difference of each against eager."""
    import torch

    from vlm_core.bench.timing import interleave

    where = torch.device(device)
    kind = getattr(torch, dtype)
    model = model.to(where, kind).eval()
    args = tuple(t.to(where, kind) if t.is_floating_point() else t.to(where) for t in example)
    with torch.no_grad():
        program = torch.export.export(model, args, dynamic_shapes=dynamic_shapes)
        exported = program.module()
        runners: dict[str, Callable[[], Any]] = {
            "eager": lambda: model(*args),
            "export": lambda: exported(*args),
        }
        notes: dict[str, str] = {}
        if aoti:
            try:
                package = _aoti_package(program)
                runners["aoti"] = lambda: package(*args)
            except Exception as exc:  # no compiler, no Triton: said, not fatal
                notes["aoti"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160]}"
        reference = model(*args)
        differences = {
            name: _max_abs(reference, fn()) for name, fn in runners.items() if name != "eager"
        }
        timed = interleave(runners, where, warmup=2, rounds=rounds)
    ms = {name: statistics.median(s) * 1000 for name, s in timed.seconds.items()}
    return {
        "device": str(where),
        "dtype": dtype,
        "batch": int(args[0].shape[0]),
        "ms": {k: round(v, 3) for k, v in ms.items()},
        "x_eager": {k: round(v / ms["eager"], 3) for k, v in ms.items() if k != "eager"},
        "max_abs": differences,
        "notes": notes,
        "rounds": rounds,
    }


def _aoti_package(program: Any) -> Callable[..., Any]:
    import torch._inductor

    folder = Path(tempfile.mkdtemp(prefix="vlm-aoti-"))
    path = torch._inductor.aoti_compile_and_package(program, package_path=str(folder / "m.pt2"))
    return torch._inductor.aoti_load_package(path)


def _max_abs(a: Any, b: Any) -> float:
    import torch

    first = a if isinstance(a, torch.Tensor) else torch.cat([t.flatten() for t in a])
    second = b if isinstance(b, torch.Tensor) else torch.cat([t.flatten() for t in b])
    return float((first.float() - second.float()).abs().max())
