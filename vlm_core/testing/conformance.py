"""The conformance check every plugin can run on itself (and CI runs on every built-in one).

It checks that the plugin loads and registers, that every task spec is valid and every
parameter documented, that importing the entry module pulls in no torch or model library, that
every bundled sample runs and returns outputs of the declared kinds, and that edge-case and bad
inputs end in a clean :class:`~vlm_core.errors.UsageError` or a result, never a crash. For a
trainable task it trains a few steps on tiny data, evaluates, checks the save/load round trip
and runs the task with the fresh weights (:mod:`vlm_core.testing.training_checks`).

Runs use the task's declared tiny settings (:class:`~vlm_core.tasks.TinySettings`): small
images, few iterations, a tiny model; they check what the task does, not how well.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlm_core.errors import TaskRunError, UsageError, VLMError
from vlm_core.kinds import Kind
from vlm_core.plugins import Registry, get_registry
from vlm_core.tasks import Sample, TaskSpec, param_problems, validate_spec

if TYPE_CHECKING:
    from vlm_core.runstore import RunStore

HEAVY_MODULES = ("torch", "torchvision", "timm", "open_clip", "monai", "streamlit")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class ConformanceReport:
    plugin: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks) and bool(self.checks)

    @property
    def problems(self) -> list[str]:
        return [f"{c.name}: {c.detail}" for c in self.checks if not c.ok]

    def add(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append(Check(name, ok, detail))

    def to_json(self) -> dict[str, Any]:
        return {"plugin": self.plugin, "ok": self.ok, "checks": [c.__dict__ for c in self.checks]}


def heavy_imports_of(module: str) -> list[str]:
    """Heavy modules that importing ``module`` (``pkg.mod`` or ``pkg.mod:attr``) pulls in,
    measured in a fresh interpreter."""
    name = module.split(":", 1)[0]
    code = (
        "import importlib, sys\n"
        f"importlib.import_module({name!r})\n"
        f"print(','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"importing {name} failed: {tail}")
    return [m for m in proc.stdout.strip().split(",") if m]


def _edge_inputs(kind: Kind, folder: Path) -> list[Path]:
    """Valid but awkward inputs of ``kind`` that a task must handle or refuse cleanly."""
    import numpy as np
    from PIL import Image as PILImage

    paths: list[Path] = []
    if kind is Kind.IMAGE:
        cases: dict[str, Any] = {
            "tiny-1x1-gray.png": np.zeros((1, 1), np.uint8),
            "rgba-3x5.png": np.full((3, 5, 4), 200, np.uint8),
            "gray16-8x6.png": (np.arange(48, dtype=np.uint16).reshape(8, 6) * 1000),
            # extreme sizes and aspect ratios: accepted, or refused by the task's image_limits
            "wide-4000x3.png": np.full((3, 4000, 3), 90, np.uint8),
            "tall-3x4000.png": np.full((4000, 3, 3), 90, np.uint8),
            "line-65535x1.png": np.zeros((1, 65535), np.uint8),
        }
        for name, pixels in cases.items():
            PILImage.fromarray(pixels).save(folder / name)
            paths.append(folder / name)
    elif kind is Kind.VOLUME:
        import nibabel as nib

        nib.save(
            nib.Nifti1Image(np.zeros((2, 2, 1), np.float32), np.eye(4)), folder / "tiny.nii.gz"
        )
        paths.append(folder / "tiny.nii.gz")
    elif kind is Kind.TEXT:
        (folder / "short.txt").write_text("?", encoding="utf-8")
        paths.append(folder / "short.txt")
    return paths


def _try_run(run: Callable[[], Any]) -> tuple[bool, str]:
    try:
        run()
    except UsageError as exc:  # refused cleanly with a message: conformant
        return True, f"refused: {exc}"
    except TaskRunError as exc:
        return False, exc.reason
    except VLMError as exc:
        return False, str(exc)
    return True, "ran"


def _run(
    spec: TaskSpec,
    registry: Registry,
    store: RunStore,
    files: list[Path],
    params: dict[str, Any],
    out: Path | None,
    device: str = "cpu",
) -> Any:
    """One run of ``spec`` without isolation: a crash raises and quarantines nothing."""
    from vlm_core.runner import RunRequest, run_task

    request = RunRequest(spec.id, [str(f) for f in files], params, out_dir=out, device=device)
    return run_task(request, registry=registry, store=store, isolate=False)


def run_sample(
    spec: TaskSpec,
    sample: Sample,
    registry: Registry,
    out: Path,
    store: RunStore,
    device: str = "cpu",
) -> tuple[bool, str]:
    """Run one bundled sample into ``out`` with the task's tiny parameters under its own:
    (whether it ran and wrote outputs of the declared kinds, what happened). A refused sample
    (a :class:`UsageError`) has not run."""
    files, params = list(sample.files), {**spec.tiny.params, **sample.params}
    ok, detail = _try_run(partial(_run, spec, registry, store, files, params, out, device))
    if ok and detail.startswith("refused"):
        return False, detail  # a bundled sample must run, not be refused
    if not ok:
        return False, detail
    declared = {str(k) for k in spec.outputs}
    kinds = set()
    for summary in out.glob("*/result.json"):
        kinds |= {o["kind"] for o in json.loads(summary.read_text())["outputs"].values()}
    if not kinds or not kinds <= declared:
        return False, f"wrote {sorted(kinds)}, declared {sorted(declared)}"
    return True, f"outputs {sorted(kinds)}"


def _check_task(
    report: ConformanceReport, spec: TaskSpec, registry: Registry, run_samples: bool, work: Path
) -> None:
    from vlm_core.runstore import RunStore

    kinds = [n for n, k in registry.output_kinds.items() if k.plugin in ("", report.plugin)]
    problems = validate_spec(spec, report.plugin, kinds)
    report.add(f"{spec.id}: spec valid", not problems, "; ".join(problems))
    documented = param_problems(spec.params)
    report.add(f"{spec.id}: parameters documented", not documented, "; ".join(documented))
    if spec.train is not None:
        try:
            builder_ok, detail = callable(spec.resolve_train()), ""
        except Exception as exc:  # reported, not raised
            builder_ok, detail = False, f"{type(exc).__name__}: {exc}"
        report.add(f"{spec.id}: train builder imports", builder_ok, detail)
    if not run_samples:
        return
    store = RunStore(work / "runs.sqlite")
    run = partial(_run, spec, registry, store)

    if not spec.samples:
        report.add(f"{spec.id}: has bundled samples", False, "declare at least one Sample")
    for i, sample in enumerate(spec.samples):
        ok, detail = run_sample(spec, sample, registry, work / f"sample-{spec.id}-{i}", store)
        report.add(f"{spec.id}: sample '{sample.name}' runs", ok, detail)
    for kind in spec.inputs:
        edge_dir = work / f"edge-{spec.id}-{kind}"
        edge_dir.mkdir()
        for path in _edge_inputs(kind, edge_dir):
            ok, detail = _try_run(partial(run, [path], dict(spec.tiny.params), None))
            report.add(f"{spec.id}: edge input {path.name}", ok, detail)
    if spec.inputs:
        fake = work / f"not-an-image-{spec.id}.png"
        fake.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
        ok, detail = _try_run(lambda: run([fake], dict(spec.tiny.params), None))
        report.add(f"{spec.id}: bad input refused", ok and detail.startswith("refused"), detail)
    if spec.train is not None:
        from vlm_core.testing.training_checks import training_checks

        for check in training_checks(spec, registry, work / f"train-{spec.id}", store):
            report.add(*check)


def check_plugin(
    name: str, *, registry: Registry | None = None, run_samples: bool = True
) -> ConformanceReport:
    """Run every conformance check on the installed plugin ``name``."""
    registry = registry or get_registry()
    report = ConformanceReport(plugin=name)
    record = registry.plugin(name)
    report.add(
        "loads and registers",
        record.status == "healthy",
        f"{record.status}: {record.stage}: {record.error}" if record.error else record.status,
    )
    if record.status != "healthy":
        return report
    report.add("registers at least one task", bool(record.tasks), ", ".join(record.tasks))
    try:
        heavy = heavy_imports_of(record.module)
        report.add(
            "no heavy imports on import", not heavy, f"imports {', '.join(heavy)}" if heavy else ""
        )
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        report.add("no heavy imports on import", False, str(exc))
    with tempfile.TemporaryDirectory(prefix=f"vlm-conformance-{name}-") as tmp:
        for task_id in record.tasks:
            _check_task(report, registry.tasks[task_id], registry, run_samples, Path(tmp))
    return report
