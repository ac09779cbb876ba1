"""Run a task: validate everything first, run in batches, isolate the plugin, export atomically.

Order of work, so that a bad request writes nothing under the output folder:

1. resolve the task and validate its parameters;
2. probe every input from its header (format allow-list, size caps);
3. record the run in the run store;
4. load inputs and run the task batch by batch, wrapping each call so that a plugin that raises
   (``SystemExit`` included) is reported against its name and quarantined;
5. export into a staging folder beside ``--out`` and move it into place only on success.

A run with ``--out`` holds a lock on that folder from step 3 to its end, and writes beside a
folder that holds a finished run unless asked to overwrite it (:mod:`vlm_core.outdir`).
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vlm_core import __version__
from vlm_core.config import edit_user_config
from vlm_core.errors import TaskRunError, UsageError, VLMError, describe_exception, disk_full
from vlm_core.io.load import Probe, collect_inputs, load_input
from vlm_core.io.readers import ReaderError
from vlm_core.outdir import OutputClaim, claim_output, printable, publish, staging_dir
from vlm_core.params import validate_params
from vlm_core.plugins import Registry, get_registry
from vlm_core.runstore import RunStore
from vlm_core.runtime.seeding import seed_everything
from vlm_core.tasks import RunContext, TaskParams, TaskSpec
from vlm_core.weights.errors import WeightsError

log = logging.getLogger("vlm.run")

Progress = Callable[[float, str], None]


@dataclass
class RunRequest:
    """One `vlm run`: a task, its inputs (files, folders, globs) and parameters."""

    task: str
    inputs: Sequence[str | Path] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None
    device: str = "auto"
    batch_size: int = 1
    seed: int = 0
    image_format: str = "png"
    overwrite: bool = False  # replace a finished run in out_dir instead of writing beside it


@dataclass
class RunOutcome:
    run_id: str
    results: list[Any]  # the Result objects (empty when run with keep_results=False)
    files: list[Path]
    out_dir: Path | None
    timings_ms: dict[str, float]
    summaries: list[dict[str, Any]] = field(default_factory=list)  # one JSON summary per result
    requested_out: Path | None = None  # the --out asked for, when out_dir is beside it


def _check_outputs(spec: TaskSpec, produced: Any, expected: int) -> list[Mapping[str, Any]]:
    """The task's return value must be ``expected`` mappings of core outputs of declared kinds."""
    from vlm_core.types import OUTPUT_TYPES

    if not isinstance(produced, Sequence) or len(produced) != expected:
        got = len(produced) if isinstance(produced, Sequence) else type(produced).__name__
        raise TypeError(f"returned {got} results for {expected} inputs")
    for item in produced:
        if not isinstance(item, Mapping) or not item:
            raise TypeError(f"returned {type(item).__name__}, not a mapping of outputs")
        for name, out in item.items():
            if not isinstance(out, OUTPUT_TYPES):
                raise TypeError(f"output '{name}' is a {type(out).__name__}, not a core type")
            kind = out.kind
            if kind not in spec.outputs:
                declared = ", ".join(str(k) for k in spec.outputs)
                raise TypeError(f"output '{name}' is of kind '{kind}', not declared ({declared})")
    return list(produced)


def call_task(
    registry: Registry,
    spec: TaskSpec,
    inputs: Sequence[Any],
    params: TaskParams,
    ctx: RunContext,
    *,
    isolate: bool = True,
) -> list[Mapping[str, Any]]:
    """Call the task's run function, isolating the host from whatever it raises.

    Errors the task raises on purpose for bad input (:class:`~vlm_core.errors.UsageError`)
    and weights that cannot be found, fetched or verified (:class:`~vlm_core.weights.errors.
    WeightsError`: a wrong ``weights`` path, offline without the file) pass through: the plugin
    is not broken. Anything else, ``SystemExit`` included, quarantines the plugin (persisted in
    the user config until `vlm plugins enable`) and becomes a :class:`TaskRunError`.
    With ``isolate=False`` (the conformance check) the plugin is not quarantined.
    """
    try:
        run = spec.resolve_run()
        produced = run(inputs, params, ctx)
        return _check_outputs(spec, produced, max(len(inputs), 1))
    except KeyboardInterrupt:
        raise
    except (UsageError, WeightsError):
        raise
    except BaseException as exc:
        reason = describe_exception(exc)
        if isolate:
            quarantine(registry, spec.plugin, f"run of '{spec.id}' raised {reason}")
        raise TaskRunError(spec.plugin, spec.id, reason, quarantined=isolate) from exc


def quarantine(registry: Registry, plugin: str, reason: str) -> None:
    """Mark a plugin failed in this process and in the user config."""
    log.info("plugin '%s' quarantined: %s", plugin, reason)
    if plugin in registry.plugins:
        registry.mark_failed(plugin, "run", reason)
    with edit_user_config() as config:
        config.quarantined[plugin] = reason


def quarantine_reader(registry: Registry, exc: ReaderError) -> ReaderError:
    """Quarantine the plugin whose input reader crashed; the error to raise in its place."""
    quarantine(registry, exc.plugin, f"{exc.reader.format} reader raised {exc.detail}")
    return ReaderError(exc.reader, exc.stage, exc.detail, quarantined=True)


def _plugin_version(registry: Registry, plugin: str) -> str | None:
    record = registry.plugins.get(plugin)
    return record.version if record else None


def prepare(request: RunRequest, registry: Registry) -> tuple[TaskSpec, TaskParams, list[Probe]]:
    """Everything that can be checked before running: task, parameters, inputs, output folder."""
    spec = registry.task(request.task)
    params = validate_params(spec, request.params)
    if request.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {request.batch_size}")
    if not spec.inputs and request.inputs:
        raise UsageError(f"task '{spec.id}' takes no input files, got {len(request.inputs)}")
    if spec.inputs and not request.inputs:
        kinds = ", ".join(str(k) for k in spec.inputs)
        raise UsageError(f"task '{spec.id}' needs at least one input ({kinds})")
    probes = (
        collect_inputs([str(p) for p in request.inputs], spec.inputs, readers=registry.readers)
        if spec.inputs
        else []
    )
    if spec.max_inputs is not None and len(probes) > spec.max_inputs:
        raise UsageError(
            f"task '{spec.id}' takes at most {spec.max_inputs} inputs, got {len(probes)}"
        )
    if request.device.strip().lower() not in ("auto", "cpu", ""):
        from vlm_core.devices import resolve_device

        resolve_device(request.device)  # an explicit device must exist before anything runs
    out = request.out_dir
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    return spec, params, probes


@dataclass
class _Progress:
    """What the batch loop leaves behind for the run's summary."""

    ctx: RunContext
    timings: dict[str, float] = field(default_factory=lambda: {"load_ms": 0.0, "run_ms": 0.0})


def _results(
    spec: TaskSpec,
    params: TaskParams,
    probes: list[Probe],
    request: RunRequest,
    registry: Registry,
    base: dict[str, Any],
    state: _Progress,
    isolate: bool,
) -> Iterator[Any]:
    """Load inputs and call the task batch by batch, yielding one Result per input (with its
    provenance) as soon as its batch is done, so callers can export and drop it."""
    from vlm_core.types import InputRecord, Provenance, Result

    ctx, timings = state.ctx, state.timings
    progress = ctx.progress
    size = request.batch_size
    batches = [probes[i : i + size] for i in range(0, len(probes), size)] or [[]]
    done = 0
    for index, batch in enumerate(batches):
        t0 = time.perf_counter()
        try:
            inputs = [load_input(p, registry.readers) for p in batch]
        except ReaderError as exc:
            if not isolate:
                raise
            raise quarantine_reader(registry, exc) from exc
        records = [InputRecord(str(p.path), p.sha256(), p.format, str(p.kind)) for p in batch]
        t1 = time.perf_counter()
        produced = call_task(registry, spec, inputs, params, ctx, isolate=isolate)
        t2 = time.perf_counter()
        timings["load_ms"] += (t1 - t0) * 1e3
        timings["run_ms"] += (t2 - t1) * 1e3
        share = max(len(batch), 1)
        per_item = {
            "load": round((t1 - t0) * 1e3 / share, 3),
            "run": round((t2 - t1) * 1e3 / share, 3),
        }
        for i, outputs in enumerate(produced):
            provenance = Provenance(
                **base,
                weights_sha256=dict(ctx.weights_sha256),
                device=ctx.device_used,
                dtype=ctx.dtype,
                inputs=(records[i],) if records else (),
                timings_ms=per_item,
            )
            source = inputs[i] if inputs else None
            done += 1
            yield Result(spec.id, dict(outputs), provenance, source)
        if progress is not None:
            progress((index + 1) / len(batches), f"{done} of {max(len(probes), 1)} done")


def _export(results: Iterable[Any], claim: OutputClaim, image_format: str) -> list[Path]:
    """Export into a staging folder beside the claimed folder, then move it into place; on any
    failure the staging folder is removed, and a full disk is said as such."""
    from vlm_core.export import ExportOptions, export_results

    target = claim.target
    staging = staging_dir(target, claim.run_id)
    options = ExportOptions(image_format="jpeg" if image_format in ("jpg", "jpeg") else "png")
    try:
        staged = export_results(results, staging, options)
        publish(staging, claim)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        where = Path(exc.filename) if isinstance(exc, OSError) and exc.filename else None
        if where is not None and where.is_relative_to(staging):
            where = target / where.relative_to(staging)
        kept = f"; nothing of this run was written to {printable(str(target))}"
        full = disk_full(exc, printable(str(where or target)), kept)
        if full is not None:
            raise full from exc
        raise
    return [target / p.relative_to(staging) for p in staged]


def run_task(
    request: RunRequest,
    *,
    registry: Registry | None = None,
    store: RunStore | None = None,
    progress: Progress | None = None,
    isolate: bool = True,
    keep_results: bool = True,
) -> RunOutcome:
    """Run ``request`` end to end; see the module docstring for the order of work.

    Results are exported batch by batch as they are made. ``keep_results=False`` keeps only
    their JSON summaries (``outcome.summaries``), so memory does not grow with the number of
    inputs; the CLI runs that way. ``isolate=False`` reports a crashing plugin without
    quarantining it (conformance checks).
    """
    registry = registry or get_registry()
    store = store or RunStore.default()
    run_id = uuid.uuid4().hex
    started = time.perf_counter()
    out_text = str(request.out_dir) if request.out_dir else None
    claim: OutputClaim | None = None
    try:
        spec, params, probes = prepare(request, registry)
        if request.out_dir is not None:
            claim = claim_output(request.out_dir, run_id, overwrite=request.overwrite)
            out_text = str(claim.target)
    except VLMError as exc:
        inputs = [str(p) for p in request.inputs]
        store.start(run_id, request.task, dict(request.params), inputs, out_text)
        if isolate and isinstance(exc, ReaderError):
            crashed = quarantine_reader(registry, exc)
            store.finish(run_id, "failed", error=str(crashed))
            raise crashed from exc
        store.finish(run_id, "rejected", error=str(exc))
        raise
    param_values = params.model_dump(mode="json")
    try:
        store.start(run_id, spec.id, param_values, [str(p.path) for p in probes], out_text)
    except BaseException:
        if claim is not None:
            claim.release()
        raise
    base = {
        "run_id": run_id,
        "task": spec.id,
        "plugin": spec.plugin,
        "plugin_version": _plugin_version(registry, spec.plugin),
        "core_version": __version__,
        "seed": request.seed,
        "params": param_values,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        seed_everything(request.seed)
        ctx = RunContext(
            task=spec.id,
            plugin=spec.plugin,
            requested_device=request.device,
            seed=request.seed,
            batch_size=request.batch_size,
            progress=progress,
        )
        state = _Progress(ctx)
        kept: list[Any] = []
        summaries: list[dict[str, Any]] = []

        from vlm_core.export.writer import result_summary

        def tap() -> Iterator[Any]:
            for result in _results(spec, params, probes, request, registry, base, state, isolate):
                summaries.append(result_summary(result))
                if keep_results:
                    kept.append(result)
                yield result

        files: list[Path] = []
        if claim is not None:
            files = _export(tap(), claim, request.image_format)
        else:
            for _ in tap():
                pass
        timings = state.timings
        timings["total_ms"] = (time.perf_counter() - started) * 1e3
        if request.out_dir is not None:
            timings["export_ms"] = timings["total_ms"] - timings["load_ms"] - timings["run_ms"]
        summary = {
            "device": ctx.device_used,
            "dtype": ctx.dtype,
            "seed": request.seed,
            "core_version": __version__,
            "plugin_version": base["plugin_version"],
            "weights_sha256": dict(ctx.weights_sha256),
            "timings_ms": {k: round(v, 3) for k, v in timings.items()},
        }
        store.finish(run_id, "ok", outputs=[str(f) for f in files], provenance=summary)
        out_dir = claim.target if claim is not None else None
        beside = claim.requested if claim is not None and claim.beside else None
        return RunOutcome(run_id, kept, files, out_dir, timings, summaries, beside)
    except BaseException as exc:
        error = str(exc) if isinstance(exc, VLMError) else describe_exception(exc)
        store.finish(run_id, "failed", error=error)
        raise
    finally:
        if claim is not None:
            claim.release()
