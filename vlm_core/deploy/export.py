"""`vlm export`: a task's trained network as ONNX or ``.pt2``, with its parity check, written
into a new folder atomically (a staging folder beside it, renamed when everything passed)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm_core.deploy.formats import FORMATS
from vlm_core.deploy.spec import DeploySpec, ParityCases, TensorSpec
from vlm_core.errors import ParameterError, UsageError, VLMError
from vlm_core.plugins import Registry, get_registry
from vlm_core.tasks import TaskSpec

#: the seed of the held-out inputs parity and metrics are measured on (plugins draw their
#: generated cases from it; disjoint from every training and validation seed they use)
PARITY_SEED = 7_100_000
#: the seed of int8 calibration inputs (disjoint from the held-out seed)
CALIBRATION_SEED = 7_200_000


class ParityError(VLMError):
    """The exported network does not give the torch network's answers (exit 1)."""

    exit_code = 1


@dataclass
class Exported:
    """What `vlm export` made: the file, its sidecar and the parity report."""

    path: Path
    sidecar: dict[str, Any]

    @property
    def parity(self) -> dict[str, Any]:
        return dict(self.sidecar["export"]["parity"])


def deploy_spec(task: str, registry: Registry | None = None) -> tuple[TaskSpec, DeploySpec]:
    """The task and its deploy spec; a task without one is a usage error naming those that
    have one."""
    registry = registry or get_registry()
    spec = registry.task(task)
    found = spec.resolve_deploy()
    if found is None:
        able = sorted(t.id for t in registry.tasks.values() if t.deploy is not None)
        raise UsageError(
            f"task '{spec.id}' has no exportable network; tasks that have: "
            + (", ".join(able) or "none installed")
        )
    return spec, found


def check_out(out: Path) -> None:
    """``out`` must be a new folder (or an empty one): an export never overwrites files."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ParameterError(f"--out {out} exists and is not an empty folder; choose a new one")


@contextlib.contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A staging folder beside ``out``, renamed to ``out`` when the block succeeds and removed
    when it fails: nothing half-written is left."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    staging.chmod(0o777 & ~_umask())  # mkdtemp's folder is private; the export is not
    if out.exists():
        out.rmdir()  # empty, checked before
    staging.rename(out)


@contextlib.contextmanager
def in_place(out: Path) -> Iterator[Path]:
    """``out`` itself (new or empty, checked before), emptied again when the block fails: for
    work whose records name their folder (a training run's checkpoints and commands), which a
    staging folder renamed afterwards would leave pointing nowhere."""
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        yield out
    except BaseException:
        if made:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for child in out.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def chosen_inputs(
    inputs: tuple[TensorSpec, ...], dynamic: Sequence[str] | None, task: str
) -> tuple[TensorSpec, ...]:
    """``inputs`` with only the ``dynamic`` axes the user kept (None: all they declare); an
    axis they do not declare is a usage error."""
    if dynamic is None:
        return inputs
    declared = sorted({a.name for s in inputs for a in s.dynamic.values()})
    unknown = [name for name in dynamic if name not in declared]
    if unknown:
        raise UsageError(
            f"{task}'s network cannot take a dynamic '{unknown[0]}' axis; its dynamic axes: "
            + (", ".join(declared) or "none")
        )
    return tuple(
        TensorSpec(s.name, {i: a for i, a in s.dynamic.items() if a.name in dynamic})
        for s in inputs
    )


def export_task(
    task: str,
    *,
    out: Path,
    weights: str = "",
    fmt: str = "onnx",
    params: Mapping[str, Any] | None = None,
    count: int = 8,
    seed: int = PARITY_SEED,
    opset: int | None = None,
    dynamic: Sequence[str] | None = None,
    registry: Registry | None = None,
) -> Exported:
    """Export ``task``'s network (``weights``; empty: the bundled ones) as ``fmt`` into the new
    folder ``out``: ``model.onnx`` or ``model.pt2`` and its ``model.json`` (task, card,
    sha256, opset, versions, parity on ``count`` held-out inputs drawn with ``seed``).

    Raises:
        UsageError: an unknown format, a task without an exportable network, an output folder
            that holds files, a dynamic axis the network does not declare, a missing extra.
        ParityError: the export's outputs differ from the torch network's beyond tolerance;
            nothing is written.
    """
    from vlm_core.deploy import writers
    from vlm_core.deploy.parity import TOLERANCE, check_parity, describe
    from vlm_core.deploy.programs import load_program
    from vlm_core.params import validate_params

    if fmt not in FORMATS:
        raise UsageError(f"unknown format '{fmt}'; formats: {', '.join(FORMATS)}")
    if count < 1:
        raise UsageError(f"--count must be at least 1, got {count}")
    spec, deploy = deploy_spec(task, registry)
    check_out(out)
    writers.check_extras(fmt)
    task_params = validate_params(spec, dict(params or {}))
    loaded = deploy.load(weights, task_params)
    if loaded.exported:
        raise UsageError(f"{loaded.path} is already an exported network; give torch weights")
    inputs = chosen_inputs(deploy.input_specs(loaded), dynamic, spec.id)
    module = deploy.module(loaded)
    example = deploy.example(loaded)
    opset = opset or writers.DEFAULT_OPSET
    with staged(out) as staging:
        path = staging / f"model{FORMATS[fmt]}"
        writers.write(fmt, module, example, inputs, deploy.outputs, path, opset=opset)
        program = load_program(path)
        cases = deploy.cases(loaded, count, seed)
        static = dynamic is not None  # the user fixed axes the task declares dynamic
        if static:
            cases = fitting(cases, inputs, example)
        parity = check_parity(
            module, program, cases, tolerance=TOLERANCE[fmt], metric_may_fail=static
        )
        parity["seed"] = seed
        if not parity["passed"]:
            raise ParityError(f"the {fmt} export of {spec.id} does not match: {describe(parity)}")
        sidecar = export_sidecar(spec, deploy, loaded, path, fmt, inputs, example, opset, parity)
        write_sidecar(staging, sidecar)
    return Exported(out / path.name, sidecar)


def fitting(
    cases: ParityCases, inputs: Sequence[TensorSpec], example: Sequence[Any]
) -> ParityCases:
    """The held-out inputs a graph with static axes takes: those of the example's size on
    every axis ``inputs`` keep static (the example itself when none is)."""

    def fits(args: Sequence[Any]) -> bool:
        return all(
            t.shape[i] == e.shape[i]
            for s, t, e in zip(inputs, args, example, strict=True)
            for i in range(e.dim())
            if i not in s.dynamic
        )

    kept = [args for args in cases.inputs if fits(args)]
    return dataclasses.replace(cases, inputs=kept or [tuple(example)])


def export_sidecar(
    spec: TaskSpec,
    deploy: DeploySpec,
    loaded: Any,
    path: Path,
    fmt: str,
    inputs: Sequence[TensorSpec],
    example: Sequence[Any],
    opset: int,
    parity: Mapping[str, Any],
) -> dict[str, Any]:
    """The ``model.json`` of an export: what the weights path checks (task, card, sha256)
    and what the export was made of and with."""
    from vlm_core.deploy.writers import versions
    from vlm_core.weights import sha256_of

    described = [
        {
            "name": s.name,
            "shape": list(t.shape),
            "dtype": str(t.dtype).removeprefix("torch."),
            "dynamic": {str(i): a.name for i, a in s.dynamic.items()},
        }
        for s, t in zip(inputs, example, strict=True)
    ]
    source = loaded.sidecar
    return {
        "task": spec.id,
        "plugin": spec.plugin,
        "card": loaded.card,
        "params": loaded.params,
        "files": {path.name: sha256_of(path)},
        "export": {
            "format": fmt,
            "network": loaded.recipe.name,
            "runs": deploy.runs,
            "note": deploy.note,
            "opset": opset if fmt == "onnx" else None,
            "inputs": described,
            "outputs": list(deploy.outputs),
            "versions": versions(fmt),
            "parity": dict(parity),
        },
        "source": {
            "path": str(loaded.path),
            "sha256": loaded.sha256,
            "seed": source.get("seed"),
            "metrics": source.get("metrics"),
        },
    }


def write_sidecar(folder: Path, sidecar: Mapping[str, Any]) -> Path:
    from vlm_core.fileio import atomic_write_text
    from vlm_core.weights.layout import SIDECAR_FILE

    path = folder / SIDECAR_FILE
    atomic_write_text(path, json.dumps(sidecar, indent=2, default=str) + "\n")
    return path
