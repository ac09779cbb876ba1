"""`vlm compress`: a task's network made smaller, with a report against the original.

- ``int8``: post-training static quantisation of the ONNX export with onnxruntime
  (``quantize_static``, QDQ format, int8 weights per channel, uint8 activations), calibrated on
  held-out in-domain inputs drawn with :data:`~vlm_core.deploy.export.CALIBRATION_SEED`. The
  result is an export folder `vlm run -p weights=OUT` runs through onnxruntime. Why not
  torchao: its int8 paths target linear layers on GPU (and CPU through Inductor), while these
  networks are convolutional and run on CPUs in deployment; PyTorch's own eager/FX
  quantisation is deprecated in favour of torchao's PT2E flow, which needs Inductor (a C++
  compiler) to run fast. onnxruntime's int8 kernels run anywhere onnxruntime does.
- ``prune`` and ``distill``: the task's own functions (``DeploySpec.prune``/``distill``),
  which write a normal weights folder through the core trainer.

Every method writes ``compress.json`` into the output folder: size on disk, parameters, CPU
latency of the original and the compressed network in the same run (alternating, medians),
and the task metric of both on the held-out set.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm_core.deploy.export import (
    CALIBRATION_SEED,
    PARITY_SEED,
    check_out,
    deploy_spec,
    export_sidecar,
    in_place,
    staged,
    write_sidecar,
)
from vlm_core.errors import UsageError
from vlm_core.plugins import Registry

METHODS = ("int8", "prune", "distill")
REPORT_FILE = "compress.json"


@dataclass
class Compressed:
    """What `vlm compress` made: the weights or exported file to run, and its report."""

    path: Path
    report: dict[str, Any]


def compress_task(
    task: str,
    *,
    out: Path,
    method: str,
    weights: str = "",
    params: Mapping[str, Any] | None = None,
    amount: float = 0.5,
    count: int = 8,
    seed: int = PARITY_SEED,
    calibration: int = 32,
    rounds: int = 20,
    registry: Registry | None = None,
) -> Compressed:
    """Compress ``task``'s network (``weights``; empty: the bundled ones) with ``method`` into
    the new folder ``out``; ``amount`` is the fraction of channels pruning removes,
    ``calibration`` the number of int8 calibration batches, ``rounds`` the latency rounds.

    Raises:
        UsageError: an unknown method, one the task does not offer, a bad amount, an output
            folder holding files, a missing extra.
    """
    from vlm_core.deploy import writers
    from vlm_core.params import validate_params

    if method not in METHODS:
        raise UsageError(f"unknown method '{method}'; methods: {', '.join(METHODS)}")
    if not 0.0 < amount < 1.0:
        raise UsageError(f"--amount must be between 0 and 1 (exclusive), got {amount}")
    for name, value in (("--count", count), ("--calibration", calibration), ("--rounds", rounds)):
        if value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}")
    spec, deploy = deploy_spec(task, registry)
    if method != "int8" and getattr(deploy, method) is None:
        offered = ["int8"] + [m for m in ("prune", "distill") if getattr(deploy, m) is not None]
        raise UsageError(f"task '{spec.id}' cannot {method}; its methods: {', '.join(offered)}")
    check_out(out)
    writers.check_extras("onnx" if method == "int8" else "pt2")
    task_params = validate_params(spec, dict(params or {}))
    loaded = deploy.load(weights, task_params)
    if loaded.exported:
        raise UsageError(f"{loaded.path} is an exported network; give torch weights")
    # int8 is staged and renamed; prune and distill train in ``out`` itself, since their
    # checkpoints and commands record the folder they were written in
    with staged(out) if method == "int8" else in_place(out) as staging:
        if method == "int8":
            path, report = _int8(spec, deploy, loaded, staging, count, seed, calibration, rounds)
        else:
            if method == "prune" and deploy.prune is not None:
                made = deploy.prune(loaded, amount, staging, seed)
            elif deploy.distill is not None:
                made = deploy.distill(loaded, staging, seed)
            smaller = deploy.load(str(made), task_params)
            report = _compare_torch(deploy, loaded, smaller, count, seed, rounds, spec.batch_size)
            if method == "prune":
                report["amount"] = amount
            path = made
        runs = deploy.runs or method != "int8"  # pruned and distilled networks are torch ones
        report = {"task": spec.id, "method": method, "source": str(loaded.path), "runs": runs,
                  **report}  # fmt: skip
        (staging / REPORT_FILE).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return Compressed(out / path.relative_to(staging), report)


def _state_bytes(module: Any) -> int:
    """The bytes of a module's parameters and buffers (the exported part of a weights file)."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def _parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def _latency(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Median ms per call of each function, timed in alternation on the CPU."""
    import torch

    from vlm_core.bench.timing import interleave

    with torch.no_grad():
        timed = interleave(fns, torch.device("cpu"), warmup=2, rounds=rounds)
    return {name: statistics.median(s) * 1000 for name, s in timed.seconds.items()}


def timing_batch(cases: Any, batch: int) -> tuple[Any, ...]:
    """What latency is timed on: the first held-out input, repeated to the task's run batch
    (``TaskSpec.batch_size``, what `vlm run` hands the network at a time)."""
    first = cases.inputs[0]
    return tuple(t[:1].expand(batch, *t.shape[1:]).contiguous() for t in first)


def _compare_torch(
    deploy: Any, loaded: Any, smaller: Any, count: int, seed: int, rounds: int, batch: int
) -> dict[str, Any]:
    from vlm_core.deploy.parity import metric_change

    before, after = deploy.module(loaded), deploy.module(smaller)
    cases = deploy.cases(loaded, count, seed)
    args = timing_batch(cases, batch)
    ms = _latency({"original": lambda: before(*args), "compressed": lambda: after(*args)}, rounds)
    return {
        "size_bytes": {
            "original": loaded.path.stat().st_size,
            "compressed": smaller.path.stat().st_size,
        },
        "parameters": {"original": _parameters(before), "compressed": _parameters(after)},
        "cpu_ms": {**ms, "batch": int(args[0].shape[0]), "rounds": rounds},
        "metric": metric_change(before, after, cases),
        "seed": seed,
    }


def _int8(
    spec: Any,
    deploy: Any,
    loaded: Any,
    staging: Path,
    count: int,
    seed: int,
    calibration: int,
    rounds: int,
) -> tuple[Path, dict[str, Any]]:
    """Export fp32 ONNX, quantise it statically with onnxruntime, compare the three."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from vlm_core.deploy import writers
    from vlm_core.deploy.parity import metric_change, output_differences
    from vlm_core.deploy.programs import OnnxProgram

    module = deploy.module(loaded)
    example = deploy.example(loaded)
    fp32, prepared, path = staging / "fp32.onnx", staging / "prepared.onnx", staging / "model.onnx"
    inputs = deploy.input_specs(loaded)
    writers.write_onnx(module, example, inputs, deploy.outputs, fp32)
    # auto_merge: symbolic shape inference merges dims it cannot prove equal (a class
    # embedding's batch and a feature map's), as onnxruntime's docs advise for such graphs
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=False, auto_merge=True)
    reader = _Calibration(deploy.cases(loaded, calibration, CALIBRATION_SEED).inputs, inputs)
    quantize_static(
        str(prepared),
        str(path),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    float_program, int8_program = OnnxProgram(fp32), OnnxProgram(path)
    cases = deploy.cases(loaded, count, seed)
    args = timing_batch(cases, spec.batch_size)
    ms = _latency(
        {
            "torch_fp32": lambda: module(*args),
            "onnx_fp32": lambda: float_program(*args),
            "onnx_int8": lambda: int8_program(*args),
        },
        rounds,
    )
    sizes = {
        "torch_fp32": _state_bytes(module),
        "onnx_fp32": fp32.stat().st_size,
        "onnx_int8": path.stat().st_size,
    }
    report: dict[str, Any] = {
        "size_bytes": sizes,
        "parameters": {"torch_fp32": _parameters(module)},
        "cpu_ms": {**ms, "batch": int(args[0].shape[0]), "rounds": rounds},
        "differences": output_differences(module, int8_program, cases),
        "metric": metric_change(module, int8_program, cases),
        "calibration": {"batches": calibration, "seed": CALIBRATION_SEED},
        "seed": seed,
    }
    fp32.unlink()
    prepared.unlink()
    parity = {**report["differences"], "metric": report["metric"], "quantised": "int8"}
    sidecar = export_sidecar(
        spec, deploy, loaded, path, "onnx", inputs, example, writers.DEFAULT_OPSET, parity
    )
    sidecar["export"]["quantisation"] = "int8 static (onnxruntime QDQ, per-channel weights)"
    write_sidecar(staging, sidecar)
    return path, report


class _Calibration:
    """onnxruntime's calibration reader over the held-out calibration inputs."""

    def __init__(self, batches: Any, inputs: Any) -> None:
        self.names = [s.name for s in inputs]
        self.batches = iter(list(batches))

    def get_next(self) -> dict[str, Any] | None:
        batch = next(self.batches, None)
        if batch is None:
            return None
        return {n: t.detach().cpu().numpy() for n, t in zip(self.names, batch, strict=True)}

    def rewind(self) -> None:  # pragma: no cover - onnxruntime's protocol
        pass
