"""Run a task: validate everything first, run in batches, isolate the plugin, export atomically.

Order of work, so that a bad request writes nothing under the output folder:

1. resolve the task and validate its parameters;
2. probe every input from its header (format allow-list, size caps);
3. record the run in the run store;
4. load inputs and run the task batch by batch, wrapping each call so that a plugin that raises
   (``SystemExit`` included) is reported against its name. A crash fails the input it happened
   on (a batch that crashes runs again one input at a time to find which) and the run goes on
   with the others; the plugin is quarantined only when its own bundled samples crash as well
   (:func:`judge_crash`), since one input it cannot handle does not make it broken;
5. export into a staging folder beside ``--out`` and move it into place only on success.

A run with ``--out`` holds a lock on that folder from step 3 to its end, and writes beside a
folder that holds a finished run unless asked to overwrite it (:mod:`vlm_core.outdir`).
"""

from __future__ import annotations

import dataclasses
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
from vlm_core.config import Quarantine, edit_user_config
from vlm_core.errors import (
    ParameterError,
    RefusedError,
    TaskRunError,
    UsageError,
    VLMError,
    describe_exception,
    disk_full,
)
from vlm_core.explain.target import EXPLAIN_OPTION_NAMES, ExplainOptions
from vlm_core.familiarity.verdict import ood_refusal
from vlm_core.io.limits import check_image_size
from vlm_core.io.load import Probe, collect_inputs, load_input
from vlm_core.io.readers import ReaderError
from vlm_core.outdir import OutputClaim, claim_output, printable, publish, staging_dir
from vlm_core.outputs.builtin import builtin_output_kinds
from vlm_core.outputs.kind import OutputKinds
from vlm_core.params import validate_params
from vlm_core.plugins import Registry, get_registry
from vlm_core.runstore import RunStore
from vlm_core.runtime.background import BackgroundSink, prefetch
from vlm_core.runtime.engines import RayOptions, check_engine, engine_results
from vlm_core.runtime.seeding import forked_rng, seed_everything
from vlm_core.samples import expand_samples
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
    batch_size: int | None = None  # inputs per task call; None: the task's own (spec.batch_size)
    seed: int = 0
    image_format: str = "png"
    previews: bool = True  # write the outputs' previews (overlays); False: data files only
    preview_format: str = "jpeg"  # the previews' images: "jpeg" or "png"
    overwrite: bool = False  # replace a finished run in out_dir instead of writing beside it
    origin: str = "python"  # what asks for the run ("cli", "dashboard"): kept with a quarantine
    strict: bool = False  # refuse inputs that look unlike the training data instead of answering
    engine: str = "local"  # "local", or "ray": the batches run by a Ray actor pool
    ray: RayOptions = field(default_factory=RayOptions)  # the cluster and workers of "ray"


@dataclass(frozen=True)
class InputFailure:
    """An input the plugin crashed on; the run went on with the others."""

    input: str  # the input's path
    error: str  # one line: the plugin, the task and what it raised

    def to_json(self) -> dict[str, str]:
        return {"input": self.input, "error": self.error}


@dataclass(frozen=True)
class Refusal:
    """An input refused under ``strict``: it looks unlike the task's training data."""

    input: str  # the input's path
    ood: Mapping[str, Any]  # its familiarity verdict
    error: str  # one line saying so

    def to_json(self) -> dict[str, Any]:
        return {"input": self.input, "ood": dict(self.ood), "error": self.error}


@dataclass
class RunOutcome:
    run_id: str
    results: list[Any]  # the Result objects (empty when run with keep_results=False)
    files: list[Path]
    out_dir: Path | None
    timings_ms: dict[str, float]
    summaries: list[dict[str, Any]] = field(default_factory=list)  # one JSON summary per result
    requested_out: Path | None = None  # the --out asked for, when out_dir is beside it
    failures: list[InputFailure] = field(default_factory=list)  # inputs the plugin crashed on
    refused: list[Refusal] = field(default_factory=list)  # inputs refused under strict


def _check_outputs(
    spec: TaskSpec, produced: Any, expected: int, kinds: OutputKinds
) -> list[Mapping[str, Any]]:
    """The task's return value must be ``expected`` mappings of outputs of declared kinds (the
    core's types, or a type of a kind its plugin registered)."""
    if not isinstance(produced, Sequence) or len(produced) != expected:
        got = len(produced) if isinstance(produced, Sequence) else type(produced).__name__
        raise TypeError(f"returned {got} results for {expected} inputs")
    for item in produced:
        if not isinstance(item, Mapping) or not item:
            raise TypeError(f"returned {type(item).__name__}, not a mapping of outputs")
        for name, out in item.items():
            found = kinds.for_output(out)
            if found is None:
                raise TypeError(
                    f"output '{name}' is a {type(out).__name__}, not a core type or the type "
                    "of a registered output kind"
                )
            kind = found.name
            if kind not in spec.outputs:
                declared = ", ".join(str(k) for k in spec.outputs)
                raise TypeError(f"output '{name}' is of kind '{kind}', not declared ({declared})")
    return list(produced)


def call_task(
    spec: TaskSpec,
    inputs: Sequence[Any],
    params: TaskParams,
    ctx: RunContext,
    kinds: OutputKinds | None = None,
) -> list[Mapping[str, Any]]:
    """Call the task's run function, isolating the host from whatever it raises.

    Errors the task raises on purpose for bad input (:class:`~vlm_core.errors.UsageError`)
    and weights that cannot be found, fetched or verified (:class:`~vlm_core.weights.errors.
    WeightsError`: a wrong ``weights`` path, offline without the file) pass through: the plugin
    is not broken; so does a full disk (as :class:`~vlm_core.errors.DiskFullError`). Anything
    else, ``SystemExit`` included, becomes a :class:`TaskRunError` naming the plugin; whether
    the plugin is quarantined is for the caller to judge (:func:`judge_crash`). The outputs
    are checked against ``kinds`` (the registry's ``output_kinds``; default: the core's).
    """
    try:
        run = spec.resolve_run()
        produced = run(inputs, params, ctx)
        known = kinds if kinds is not None else builtin_output_kinds()
        return _check_outputs(spec, produced, max(len(inputs), 1), known)
    except KeyboardInterrupt:
        raise
    except (UsageError, WeightsError):
        raise
    except BaseException as exc:
        full = disk_full(exc)
        if full is not None:  # the machine's trouble, not the plugin's: never judged a crash
            raise full from exc
        raise TaskRunError(spec.plugin, spec.id, describe_exception(exc)) from exc


Answer = tuple["Mapping[str, Any] | TaskRunError", "Mapping[str, Any] | None"]


def _call(
    spec: TaskSpec,
    inputs: Sequence[Any],
    params: TaskParams,
    ctx: RunContext,
    kinds: OutputKinds,
) -> list[Answer]:
    """:func:`call_task`, each input's outputs with the familiarity verdict the task recorded
    for it (:meth:`RunContext.record_ood`)."""
    ctx.take_ood(0)  # nothing a crashed call recorded carries over
    produced = call_task(spec, inputs, params, ctx, kinds)
    return list(zip(produced, ctx.take_ood(len(produced)), strict=True))


def _call_batch(
    spec: TaskSpec,
    inputs: Sequence[Any],
    params: TaskParams,
    ctx: RunContext,
    kinds: OutputKinds,
) -> list[Answer]:
    """:func:`_call` on a batch; when it crashes, the batch's inputs again one by one, so
    that only those the task crashes on fail (each as its :class:`TaskRunError`)."""
    try:
        return _call(spec, inputs, params, ctx, kinds)
    except TaskRunError as exc:
        if len(inputs) <= 1:
            return [(exc, None)]
        log.info("%s; running the batch's %d inputs one by one", exc, len(inputs))
    out: list[Answer] = []
    for item in inputs:
        try:
            out += _call(spec, [item], params, ctx, kinds)
        except TaskRunError as exc:
            out.append((exc, None))
    return out


def sample_crashes(
    spec: TaskSpec, registry: Registry, *, device: str = "cpu"
) -> list[tuple[str, str]]:
    """``(sample name, reason)`` of each of ``spec``'s bundled samples that crashes in the
    plugin (its task or its reader raises something other than a :class:`UsageError`), run
    without isolation in a temporary folder with a run store of its own. :func:`judge_crash`
    asks this after a task crashed on an input, before it quarantines the plugin: a plugin
    whose own samples run is not broken. Samples that are refused (e.g. weights missing
    offline) are not crashes."""
    import tempfile

    from vlm_core.errors import PluginError

    crashes: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix=f"vlm-samples-{spec.id}-") as tmp:
        store = RunStore(Path(tmp) / "runs.sqlite")
        for i, sample in enumerate(spec.samples):
            request = RunRequest(spec.id, [str(f) for f in sample.files], dict(sample.params),
                                 out_dir=Path(tmp) / f"sample-{i}", device=device)  # fmt: skip
            try:
                run_task(request, registry=registry, store=store, isolate=False)
            except (TaskRunError, PluginError) as exc:
                crashes.append((sample.name, getattr(exc, "reason", str(exc))))
            except UsageError:
                continue
    return crashes


def judge_crash(
    registry: Registry, spec: TaskSpec, reason: str, *, device: str, by: str, run_id: str
) -> Quarantine | None:
    """After ``spec`` crashed (``reason``) on an input: run its own bundled samples, without
    isolation, on ``device``. If one of them crashes too, the plugin is broken: it is
    quarantined (:func:`quarantine`) and the record returned. Otherwise, and for a task that
    has no samples, the crash was the input's: None, and nothing is persisted. A sample that
    is refused (missing weights offline) proves nothing either way."""
    if not spec.samples:
        log.info("task '%s' has no bundled samples to judge its crash by", spec.id)
        return None
    try:
        with forked_rng():  # the run's own random streams go on as if nothing had been judged
            crashes = sample_crashes(spec, registry, device=device)
    except Exception as exc:  # the judgement itself failed: keep the plugin, say why
        log.warning("could not run the samples of '%s': %s", spec.id, describe_exception(exc))
        return None
    if not crashes:
        log.info("the samples of '%s' run: the crash was the input's (%s)", spec.id, reason)
        return None
    name, detail = crashes[0]
    why = f"run of '{spec.id}' raised {reason}; its sample '{name}' fails too: {detail}"
    return quarantine(registry, spec.plugin, why, by=by, run_id=run_id)


def quarantine(
    registry: Registry, plugin: str, reason: str, *, by: str = "", run_id: str = ""
) -> Quarantine:
    """Mark a plugin failed in this process and in the user config (for every process that
    shares it, until `vlm plugins enable`), recording when, why and by which run."""
    log.info("plugin '%s' quarantined: %s", plugin, reason)
    at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record = Quarantine(reason=reason, at=at, by=by, run_id=run_id)
    if plugin in registry.plugins:
        registry.mark_failed(plugin, "run", reason, record)
    with edit_user_config() as config:
        config.quarantined[plugin] = record
    return record


def _reader_verdict(
    registry: Registry, spec: TaskSpec | None, exc: ReaderError, request: RunRequest, run_id: str
) -> ReaderError:
    """A plugin's input reader crashed: judged like a task crash, by the samples of the task
    that was asked for when the reader is its own plugin's (a crash in another plugin's reader
    says nothing about the task); the error to raise or record in its place."""
    if spec is None or spec.plugin != exc.plugin:
        return exc
    reason = f"{exc.reader.format} reader raised {exc.detail}"
    if judge_crash(registry, spec, reason, device=request.device, by=request.origin,
                   run_id=run_id) is None:  # fmt: skip
        return exc
    return ReaderError(exc.reader, exc.stage, exc.detail, quarantined=True)


def _plugin_version(registry: Registry, plugin: str) -> str | None:
    record = registry.plugins.get(plugin)
    return record.version if record else None


def _explain_options(spec: TaskSpec, raw: Mapping[str, Any]) -> ExplainOptions | None:
    """The core's explain parameters among ``raw`` (``explainer``, ``explain_score``,
    ``n_samples``), checked against what the task supports; None when none is given."""
    given = {key: raw[key] for key in EXPLAIN_OPTION_NAMES if key in raw}
    if not given:
        return None
    options = validate_params(_ExplainOwner(spec.id), given, ExplainOptions)
    if options.explainer is None:
        raise ParameterError(
            f"{', '.join(sorted(given))} of task '{spec.id}' need an explainer: -p explainer=METHOD"
        )
    if spec.explain is None or not spec.explainers:
        raise UsageError(f"task '{spec.id}' cannot be explained (it declares no explainers)")
    if options.explainer not in spec.explainers:
        raise UsageError(
            f"task '{spec.id}' cannot explain with '{options.explainer}'; its explainers: "
            + ", ".join(spec.explainers)
        )
    if options.explainer not in ("gradcam", "rollout"):
        import importlib.util

        missing = [
            m for m in ("captum", "skimage", "sklearn") if importlib.util.find_spec(m) is None
        ]
        if missing:
            raise UsageError(
                f"explainer '{options.explainer}' needs captum, scikit-image and scikit-learn "
                f"({', '.join(missing)} missing): pip install 'vlm-core[explain]'"
            )
    return options


@dataclass(frozen=True)
class _ExplainOwner:
    """The explain options as a parameter owner, for :func:`validate_params`' messages."""

    id: str
    params: type[ExplainOptions] = ExplainOptions


def prepare_task(
    request: RunRequest, registry: Registry
) -> tuple[TaskSpec, TaskParams, ExplainOptions | None]:
    """The task and its parameters (the task's, under a sample's, and the core's explain
    options), as every process of a run checks them (a Ray worker too)."""
    spec = registry.task(request.task)
    # `sample:NAME` inputs: the bundled sample's parameters under the ones given
    _, sample_params = expand_samples(spec, request.inputs)
    raw = {**sample_params, **request.params}
    explain = _explain_options(spec, raw)
    own = {key: value for key, value in raw.items() if key not in EXPLAIN_OPTION_NAMES}
    return spec, validate_params(spec, own), explain


def prepare(
    request: RunRequest, registry: Registry
) -> tuple[TaskSpec, TaskParams, list[Probe], ExplainOptions | None]:
    """Everything that can be checked before running: task, parameters (the task's, and the
    core's explain options), inputs, output folder, engine."""
    spec, params, explain = prepare_task(request, registry)
    inputs, _ = expand_samples(spec, request.inputs)  # `sample:NAME`: the sample's files
    check_engine(request.engine, request.ray)
    if request.batch_size is not None and request.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {request.batch_size}")
    if not spec.inputs and inputs:
        raise UsageError(f"task '{spec.id}' takes no input files, got {len(inputs)}")
    if spec.inputs and not inputs:
        kinds = ", ".join(str(k) for k in spec.inputs)
        raise UsageError(f"task '{spec.id}' needs at least one input ({kinds})")
    probes = (
        collect_inputs(
            [str(p) for p in inputs],
            spec.inputs,
            readers=registry.readers,
            check=lambda probe: check_image_size(probe, spec.image_limits, spec.id),
        )
        if spec.inputs
        else []
    )
    if request.engine != "local" and not probes:
        raise UsageError(
            f"task '{spec.id}' takes no input files: --engine {request.engine} has nothing to "
            "spread over workers"
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
    return spec, params, probes, explain


@dataclass
class RunState:
    """What the batch loop leaves behind for the run's summary."""

    ctx: RunContext
    #: wall ms per stage: reading inputs (in the reader thread), waiting for them and judging
    #: reader crashes (``load_ms``), the task's calls (``run_ms``)
    timings: dict[str, float] = field(
        default_factory=lambda: {"read_ms": 0.0, "load_ms": 0.0, "run_ms": 0.0}
    )
    failures: list[InputFailure] = field(default_factory=list)
    first_error: BaseException | None = None  # the first crash, raised when nothing ran
    refused: list[Refusal] = field(default_factory=list)  # flagged inputs refused under strict
    judged: bool = False  # whether the plugin was judged by its samples in this run
    explain: ExplainOptions | None = None  # explain each answered input with this method
    worker: dict[str, Any] | None = None  # another engine's: the device, dtype, weights it used


def _explained(
    spec: TaskSpec,
    item: Any,
    outputs: Mapping[str, Any],
    params: TaskParams,
    ctx: RunContext,
    options: ExplainOptions,
) -> dict[str, Any]:
    """``outputs`` with one more, ``attribution``: the explain engine's map for ``item``
    (:mod:`vlm_core.explain.attribution`) on the target the task builds for it. A
    :class:`UsageError` (nothing to explain in this input) stays one; anything else the
    plugin's builder raises is its crash (:class:`TaskRunError`)."""
    from vlm_core.explain.attribution import explain_target

    try:
        target = spec.resolve_explain()(item, outputs, params, ctx)
    except VLMError:
        raise
    except Exception as exc:  # a bug in the plugin's builder, reported against the plugin
        raise TaskRunError(spec.plugin, spec.id, describe_exception(exc)) from exc
    assert options.explainer is not None  # checked by prepare
    attribution = explain_target(
        target,
        options.explainer,
        n_samples=options.n_samples,
        score_faithfulness=options.explain_score,
        progress=ctx.report,
    )
    return {**outputs, "attribution": attribution}


def _judge_task_crash(
    exc: TaskRunError, spec: TaskSpec, request: RunRequest, registry: Registry, run_id: str
) -> None:
    """Judge the plugin after ``exc``; raise its quarantined error when it is found broken."""
    found = judge_crash(registry, spec, exc.reason, device=request.device, by=request.origin,
                        run_id=run_id)  # fmt: skip
    if found is not None:
        raise TaskRunError(spec.plugin, spec.id, exc.reason, quarantined=True) from exc


def _fail(
    state: RunState,
    probe: Probe,
    exc: TaskRunError | ReaderError,
    spec: TaskSpec,
    request: RunRequest,
    registry: Registry,
    run_id: str,
) -> None:
    """Record a crash on one input. The first crash of a run has the plugin judged by its own
    samples; a plugin found broken is quarantined and the run ends with its error."""
    if not state.judged:
        state.judged = True
        if isinstance(exc, ReaderError):
            verdict = _reader_verdict(registry, spec, exc, request, run_id)
            if verdict is not exc:
                raise verdict from exc
        else:
            _judge_task_crash(exc, spec, request, registry, run_id)
    log.info("%s: %s", probe.path, exc)
    state.failures.append(InputFailure(str(probe.path), str(exc)))
    state.first_error = state.first_error or exc


def _batch_share(progress: Progress, index: int, count: int) -> Progress:
    """``progress`` for the task's own reports while batch ``index`` of ``count`` runs: its
    fraction of the batch becomes the run's, so a bar never goes back."""

    def report(fraction: float, message: str) -> None:
        progress((index + fraction) / count, message)

    return report


def batch_size_of(request: RunRequest, spec: TaskSpec) -> int:
    """Inputs per task call: the request's ``batch_size``, else the task's own."""
    return request.batch_size if request.batch_size is not None else spec.batch_size


def _read_batches(
    batches: list[list[Probe]], registry: Registry
) -> Iterator[tuple[list[Probe], list[tuple[Probe, Any, str]], float]]:
    """Each batch's probes, each input loaded with its sha256 (or the :class:`ReaderError` its
    reader raised, for the run to judge) and the wall seconds reading took: what
    :func:`_results` prefetches in a thread while the task runs the batch before."""
    for batch in batches:
        t0 = time.perf_counter()
        read: list[tuple[Probe, Any, str]] = []
        for probe in batch:
            try:
                read.append((probe, load_input(probe, registry.readers), probe.sha256()))
            except ReaderError as exc:
                read.append((probe, exc, ""))
        yield batch, read, time.perf_counter() - t0


def batch_results(
    spec: TaskSpec,
    params: TaskParams,
    probes: list[Probe],
    request: RunRequest,
    registry: Registry,
    base: dict[str, Any],
    state: RunState,
    isolate: bool,
) -> Iterator[Any]:
    """Load inputs and call the task batch by batch, yielding one Result per input (with its
    provenance) as soon as its batch is done, so callers can export and drop it.

    With ``isolate``, an input the plugin crashes on (in its reader or its task) is recorded in
    ``state.failures`` and the others go on; when every input crashed, the first crash is
    raised. Without it (conformance checks), the first crash is raised at once."""
    from vlm_core.types import InputRecord, Provenance, Result

    ctx, timings = state.ctx, state.timings
    progress = ctx.progress
    size = batch_size_of(request, spec)
    batches = [probes[i : i + size] for i in range(0, len(probes), size)] or [[]]
    run_id = str(base["run_id"])
    done = 0
    ahead = prefetch(_read_batches(batches, registry), depth=1, name="vlm-run-read")
    try:
        for index, (batch, read, read_s) in enumerate(ahead):
            if progress is not None:  # what the task reports (ctx.report) is this batch's share
                ctx.progress = _batch_share(progress, index, len(batches))
            t0 = time.perf_counter()
            loaded: list[tuple[Probe, Any]] = []
            records: list[InputRecord] = []
            for probe, item, sha in read:
                if isinstance(item, ReaderError):
                    if not isolate:
                        raise item
                    _fail(state, probe, item, spec, request, registry, run_id)
                    continue
                loaded.append((probe, item))
                records.append(InputRecord(str(probe.path), sha, probe.format, str(probe.kind)))
            inputs = [item for _, item in loaded]
            t1 = time.perf_counter()
            timings["read_ms"] += read_s * 1e3
            produced: list[Answer] = []
            if isolate and inputs:
                produced = _call_batch(spec, inputs, params, ctx, registry.output_kinds)
            elif not batch:  # a task without inputs runs once: its crash is the run's
                try:
                    produced += _call(spec, inputs, params, ctx, registry.output_kinds)
                except TaskRunError as exc:
                    if isolate:
                        _judge_task_crash(exc, spec, request, registry, run_id)
                    raise
            elif inputs:
                produced += _call(spec, inputs, params, ctx, registry.output_kinds)
            t2 = time.perf_counter()
            timings["load_ms"] += (t1 - t0) * 1e3
            timings["run_ms"] += (t2 - t1) * 1e3
            share = max(len(batch), 1)
            per_item = {
                "load": round(read_s * 1e3 / share, 3),
                "run": round((t2 - t1) * 1e3 / share, 3),
            }
            for i, (outputs, ood) in enumerate(produced):
                if isinstance(outputs, TaskRunError):
                    _fail(state, loaded[i][0], outputs, spec, request, registry, run_id)
                    continue
                if request.strict and ood is not None and ood["flagged"] and loaded:
                    name = str(loaded[i][0].path)
                    why = ood_refusal(name, spec.id, ood)  # type: ignore[arg-type]
                    log.info("%s", why)
                    state.refused.append(Refusal(name, ood, why))
                    continue
                if state.explain is not None and inputs:
                    t3 = time.perf_counter()
                    try:
                        outputs = _explained(spec, inputs[i], outputs, params, ctx, state.explain)
                    except TaskRunError as exc:
                        if not isolate:
                            raise
                        _fail(state, loaded[i][0], exc, spec, request, registry, run_id)
                        continue
                    except VLMError as exc:  # this input has nothing the method can explain
                        if not isolate:
                            raise
                        name = str(loaded[i][0].path)
                        state.failures.append(InputFailure(name, f"cannot explain {name}: {exc}"))
                        state.first_error = state.first_error or exc
                        continue
                    finally:
                        timings["explain_ms"] = (
                            timings.get("explain_ms", 0.0) + (time.perf_counter() - t3) * 1e3
                        )
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
                yield Result(spec.id, dict(outputs), provenance, source, ood)
            if progress is not None:
                progress((index + 1) / len(batches), f"{done} of {max(len(probes), 1)} done")
    finally:
        ahead.close()
    if state.first_error is not None and done == 0:
        raise state.first_error
    if state.refused and done == 0 and not state.failures:
        raise RefusedError(
            "; ".join(r.error for r in state.refused[:3])
            + (f"; and {len(state.refused) - 3} more" if len(state.refused) > 3 else "")
        )


def _export(
    results: Iterable[Any],
    claim: OutputClaim,
    request: RunRequest,
    kinds: OutputKinds,
    timings: dict[str, float],
) -> list[Path]:
    """Export into a staging folder beside the claimed folder in a background writer (the
    task goes on with the next batch while a batch's files are encoded and written), make the
    folder durable with one sync, then move it into place; on any failure the staging folder
    is removed, and a full disk is said as such. ``timings`` gets the writer's busy time
    (``export_ms``) and the sync's (``sync_ms``)."""
    from vlm_core.export import ExportOptions, export_results
    from vlm_core.fileio import deferred_sync, fsync_dir, sync_folder

    target = claim.target
    staging = staging_dir(target, claim.run_id)
    options = ExportOptions(
        image_format="jpeg" if request.image_format in ("jpg", "jpeg") else "png",
        previews=request.previews,
        preview_format="png" if request.preview_format == "png" else "jpeg",
    )
    busy = {"s": 0.0, "tail": 0.0}

    def timed(items: Iterator[Any]) -> Iterator[Any]:
        for item in items:  # the time until the next item is asked for is this one's export
            t0 = time.perf_counter()
            yield item
            busy["s"] += time.perf_counter() - t0
        busy["tail"] = time.perf_counter()  # then the run-level files

    def write(items: Iterator[Any]) -> list[Path]:
        with deferred_sync():  # made durable together below, before publishing
            files = export_results(timed(items), staging, options, kinds)
        busy["s"] += time.perf_counter() - busy["tail"]
        return files

    sink: BackgroundSink[Any, list[Path]] = BackgroundSink(write, depth=2, name="vlm-run-write")
    try:
        try:
            for result in results:
                sink.put(result)
            staged = sink.finish()
        finally:
            sink.abort()  # nothing writes into the staging folder after this
        t0 = time.perf_counter()
        if staging.exists():
            sync_folder(staging)
        publish(staging, claim)
        fsync_dir(target.parent)
        timings["sync_ms"] = (time.perf_counter() - t0) * 1e3
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
    timings["export_ms"] = busy["s"] * 1e3
    return [target / p.relative_to(staging) for p in staged]


def _failures_text(failures: Sequence[InputFailure | Refusal], total: int) -> str:
    """One line for the run store: how many inputs failed or were refused, and each with its
    error."""
    listed = "; ".join(f"{f.input}: {f.error}" for f in failures)
    return f"{len(failures)} of {total} inputs failed: {listed}"


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
    inputs; the CLI runs that way.

    An input the plugin crashes on is left out and listed in ``outcome.failures`` (the run is
    recorded as ``partial``, and `vlm run` exits 1 after printing the others' results); when
    every input crashed, the first crash is raised. ``isolate=False`` (conformance checks and
    the samples that judge a crash) raises the first crash at once and never quarantines.
    """
    registry = registry or get_registry()
    store = store or RunStore.default()
    run_id = uuid.uuid4().hex
    started = time.perf_counter()
    out_text = str(request.out_dir) if request.out_dir else None
    claim: OutputClaim | None = None
    try:
        spec, params, probes, explain = prepare(request, registry)
        if request.out_dir is not None:
            claim = claim_output(request.out_dir, run_id, overwrite=request.overwrite)
            out_text = str(claim.target)
    except VLMError as exc:
        inputs = [str(p) for p in request.inputs]
        store.start(run_id, request.task, dict(request.params), inputs, out_text)
        if isolate and isinstance(exc, ReaderError):
            crashed = _reader_verdict(registry, registry.tasks.get(request.task), exc, request,
                                      run_id)  # fmt: skip
            store.finish(run_id, "failed", error=str(crashed))
            if crashed is exc:
                raise
            raise crashed from exc
        store.finish(run_id, "rejected", error=str(exc))
        raise
    param_values = params.model_dump(mode="json")
    if explain is not None:  # the run's record holds what was explained and how
        param_values.update(explain.model_dump(mode="json", exclude_none=True))
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
    failed: list[InputFailure] = []  # inputs the plugin crashed on, filled by the batch loop
    try:
        seed_everything(request.seed)
        ctx = RunContext(
            task=spec.id,
            plugin=spec.plugin,
            requested_device=request.device,
            seed=request.seed,
            batch_size=batch_size_of(request, spec),
            progress=progress,
        )
        state = RunState(ctx, failures=failed, explain=explain)
        kept: list[Any] = []
        summaries: list[dict[str, Any]] = []

        from vlm_core.export.writer import result_summary

        elsewhere = engine_results(request.engine)  # None: this process's own loop
        made = (
            elsewhere(spec, probes, request, base, state)
            if elsewhere is not None
            else batch_results(spec, params, probes, request, registry, base, state, isolate)
        )

        def tap() -> Iterator[Any]:
            for result in made:
                summaries.append(result_summary(result, registry.output_kinds))
                if keep_results:
                    kept.append(result)
                yield result

        files: list[Path] = []
        if claim is not None:
            files = _export(tap(), claim, request, registry.output_kinds, state.timings)
        else:
            for _ in tap():
                pass
        timings = state.timings
        timings["total_ms"] = (time.perf_counter() - started) * 1e3
        summary = {
            "device": ctx.device_used,
            "dtype": ctx.dtype,
            "seed": request.seed,
            "core_version": __version__,
            "plugin_version": base["plugin_version"],
            "weights_sha256": dict(ctx.weights_sha256),
            "timings_ms": {k: round(v, 3) for k, v in timings.items()},
        }
        if request.engine != "local":  # the workers ran the task: their device and weights
            summary.update(state.worker or {})
            summary["engine"] = {"name": request.engine, **dataclasses.asdict(request.ray)}
        # each answered input's familiarity verdict (None: the weights have none)
        summary["ood"] = [{"input": one["input"], "ood": one["ood"]} for one in summaries]
        if failed:
            summary["failures"] = [f.to_json() for f in failed]
        if state.refused:
            summary["refused"] = [r.to_json() for r in state.refused]
        problems: list[InputFailure | Refusal] = [*failed, *state.refused]
        store.finish(
            run_id,
            "partial" if problems else "ok",
            outputs=[str(f) for f in files],
            provenance=summary,
            error=_failures_text(problems, len(probes)) if problems else None,
        )
        out_dir = claim.target if claim is not None else None
        beside = claim.requested if claim is not None and claim.beside else None
        return RunOutcome(run_id, kept, files, out_dir, timings, summaries, beside, failed,
                          list(state.refused))  # fmt: skip
    except BaseException as exc:
        error = str(exc) if isinstance(exc, VLMError) else describe_exception(exc)
        if len(failed) > 1:
            error = _failures_text(failed, len(probes))
        store.finish(run_id, "rejected" if isinstance(exc, RefusedError) else "failed",
                     error=error)  # fmt: skip
        raise
    finally:
        if claim is not None:
            claim.release()
