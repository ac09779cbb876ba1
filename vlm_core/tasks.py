"""Task specs: what a plugin registers and what the CLI and the dashboard build forms from.

This module is imported by plugin entry modules, so it must stay light: pydantic and the
standard library only (no numpy, no torch).
"""

from __future__ import annotations

import enum
import importlib
import importlib.util
import logging
import re
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from vlm_core.kinds import INPUT_KINDS, OUTPUT_KINDS, Capability, Kind

if TYPE_CHECKING:
    from vlm_core.familiarity.verdict import Ood
    from vlm_core.training.setup import TrainSetup
    from vlm_core.types import Input, Output

TASK_ID = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")


class TaskParams(BaseModel):
    """Base class of every task's parameter model.

    Unknown keys are rejected and values are validated on assignment. Every field must carry a
    ``description``, a default and bounds (``ge``/``le`` for numbers, ``max_length`` or a
    ``Literal`` for strings); :func:`validate_spec` checks this when a plugin registers.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


@dataclass(frozen=True)
class Sample:
    """A bundled sample input that the dashboard offers and the conformance check runs.

    ``files`` are absolute paths (use :func:`package_file` to find files shipped in a package);
    ``params`` are parameter overrides that make the sample meaningful.
    """

    name: str
    files: tuple[Path, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class ImageLimits:
    """The image sizes a task accepts, checked by the core from each input's header before the
    run (no pixel is decoded): an input outside them is refused with one line (exit code 2).

    They apply to image inputs and to the frames of video inputs. The defaults accept every
    image the core's caps let through (``VLM_MAX_IMAGE_PIXELS``); a task declares narrower
    limits where an image outside them would crash it or give a meaningless result, and pads or
    resizes inside them where that is its natural behaviour.
    """

    #: the shorter side must be at least this many pixels
    min_side: int = 1
    #: the longer side may be at most this many pixels (None: only the core's pixel cap)
    max_side: int | None = None
    #: the longer side may be at most this many times the shorter one (None: any)
    max_aspect: float | None = None

    def problem(self, width: int, height: int, task: str) -> str | None:
        """Why an image of ``width`` x ``height`` pixels is outside the limits (one line naming
        ``task``), or None when it is inside."""
        short, long = min(width, height), max(width, height)
        size = f"{width}x{height}"
        if short < self.min_side:
            how = "thinner" if long >= self.min_side else "smaller"
            return f"image {size} is {how} than {task} accepts (min side {self.min_side} px)"
        if self.max_side is not None and long > self.max_side:
            return f"image {size} is larger than {task} accepts (max side {self.max_side} px)"
        if self.max_aspect is not None and long > self.max_aspect * short:
            return (
                f"image {size} is more elongated than {task} accepts (aspect ratio "
                f"{long / short:.3g}:1, at most {self.max_aspect:g}:1)"
            )
        return None

    def problems(self) -> list[str]:
        """Contradictions in the limits themselves; an empty list means valid."""
        found: list[str] = []
        if self.min_side < 1:
            found.append(f"image_limits.min_side must be at least 1, got {self.min_side}")
        if self.max_side is not None and self.max_side < max(self.min_side, 1):
            found.append(
                f"image_limits.max_side ({self.max_side}) is below min_side ({self.min_side})"
            )
        if self.max_aspect is not None and not self.max_aspect >= 1:
            found.append(f"image_limits.max_aspect must be at least 1, got {self.max_aspect}")
        return found

    def describe(self) -> str:
        """The limits in words, for `vlm info` and the dashboard."""
        parts = [f"shorter side at least {self.min_side} px"] if self.min_side > 1 else []
        if self.max_side is not None:
            parts.append(f"longer side at most {self.max_side} px")
        if self.max_aspect is not None:
            parts.append(f"aspect ratio at most {self.max_aspect:g}:1")
        return ", ".join(parts) or "any (up to the core's pixel cap)"

    def to_json(self) -> dict[str, Any]:
        return {"min_side": self.min_side, "max_side": self.max_side, "max_aspect": self.max_aspect}


@dataclass(frozen=True)
class WeightsRef:
    """Weights a task needs: a name, the file name, its sha256 and where it can come from."""

    name: str
    filename: str
    sha256: str | None = None
    source: str | None = None  # "hf-hub:org/repo", a URL, or None for files shipped with the plugin
    size_mb: float | None = None


class RunFunction(typing.Protocol):
    """``run(inputs, params, ctx) -> outputs``.

    ``inputs`` holds one loaded item per input file; ``outputs`` must hold one mapping of output
    name to core output object per input, in order. A task without inputs receives an empty
    sequence and returns exactly one mapping.
    """

    def __call__(
        self, inputs: Sequence[Input], params: Any, ctx: RunContext
    ) -> Sequence[Mapping[str, Output]]: ...


class TrainFunction(typing.Protocol):
    """``build(data, params, ctx) -> TrainSetup``: what a task hands the core's trainer.

    ``data`` is the path given to ``vlm train --data`` / ``vlm eval --data``; ``params`` is the
    validated training parameter model (``TaskSpec.train_params``, else ``TaskSpec.params``).
    The same function serves training, evaluation and familiarity fitting (``ctx.purpose``),
    so all see the same validation split and metrics.
    """

    def __call__(self, data: Path, params: Any, ctx: TrainContext) -> TrainSetup: ...


@dataclass
class TrainContext:
    """What the core hands a task's training builder.

    ``rank`` and ``world_size`` come from ``torchrun``; a builder that splits data itself must
    split it the same way on every rank (seed it with ``seed``, not with the rank).
    """

    task: str
    plugin: str
    device: str
    seed: int = 0
    #: ``train``; ``eval``: the network as ``weights_card`` records it and the validation split;
    #: ``fit``: the network as recorded, and the training items and validation split that
    #: fit its familiarity model (``vlm train --fit-ood-only``)
    purpose: Literal["train", "eval", "fit"] = "train"
    rank: int = 0
    world_size: int = 1
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("vlm.train"))
    #: the run's output folder (``vlm train --out``); None when evaluating
    out: Path | None = None
    #: when evaluating: the card recorded with the weights (architecture, vocabulary, class
    #: names...), so a model whose shape depends on its training data is rebuilt as trained
    weights_card: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    """What the core hands a running task besides its inputs and parameters.

    ``device`` is resolved on first use (``auto``: cuda, then mps, then cpu), so tasks that never
    touch a device never import torch; the provenance records the device a task actually used.
    """

    task: str
    plugin: str
    requested_device: str = "auto"
    dtype: str = "float32"
    seed: int = 0
    batch_size: int = 1
    weights_sha256: dict[str, str] = field(default_factory=dict)
    progress: Callable[[float, str], None] | None = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("vlm.task"))
    _device: str | None = field(default=None, repr=False)
    _ood: dict[int, Any] = field(default_factory=dict, repr=False)

    @property
    def device(self) -> str:
        """The torch device string for this run (resolved, and torch imported, on first use)."""
        if self._device is None:
            from vlm_core.devices import resolve_device

            self._device = resolve_device(self.requested_device)
        return self._device

    @property
    def device_used(self) -> str:
        """The device the task asked for, or ``cpu`` when it never asked."""
        return self._device or "cpu"

    def report(self, fraction: float, message: str = "") -> None:
        """Report progress in ``[0, 1]`` to whoever is watching (CLI bar, dashboard)."""
        if self.progress is not None:
            self.progress(min(max(fraction, 0.0), 1.0), message)

    def record_weights(self, name: str, sha256: str) -> None:
        """Record the sha256 of weights the task loaded; it goes into the provenance."""
        self.weights_sha256[name] = sha256

    def record_ood(self, index: int, verdict: Ood | None) -> None:
        """Record whether input ``index`` of this call looks unlike the training data (the
        verdict of :meth:`vlm_core.weights.LoadedModel.judge`; None: weights without a
        familiarity model). It becomes the result's ``ood``; under ``--strict`` a flagged
        input is refused instead of answered."""
        self._ood[index] = verdict

    def take_ood(self, count: int) -> list[Ood | None]:
        """The verdicts recorded for a call of ``count`` inputs (None where none was), and
        forget them: what the runner does after each call."""
        found = [self._ood.get(i) for i in range(count)]
        self._ood.clear()
        return found


@dataclass(frozen=True)
class TinySettings:
    """The smallest settings at which a task still does its real work, for checks and tests.

    The conformance check (`vlm plugins validate`) runs the task's samples and edge inputs with
    ``params`` and, for a trainable task, a short training on a tiny data set, a save/load round
    trip, an evaluation and a run with the fresh weights. An author's own tests can use them
    too. Users never run with them: they only make a check cheap (seconds, not minutes).
    """

    #: run parameters that make a run cheap (small image sizes, few iterations): edge inputs
    #: run with them, and each sample with its own parameters over them
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    #: writes a tiny training data set: a callable or ``"module:function"`` (imported on first
    #: use) called as ``function(folder, **train_data_args)``; it returns the path to give
    #: ``vlm train --data`` (None: ``folder``)
    train_data: Callable[..., Path | None] | str | None = None
    #: keyword arguments of ``train_data`` (how many items, how large)
    train_data_args: Mapping[str, Any] = field(default_factory=dict, hash=False)
    #: ``vlm train --param`` values of a tiny model (small network, small images)
    train_params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    #: trainer settings (``TrainConfig`` fields) of a few steps, e.g. ``{"max_steps": 2,
    #: "batch_size": 2}``; the check trains on the CPU
    train_config: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def resolve_train_data(self) -> Callable[..., Path | None]:
        """The data writer, importing ``"module:function"`` on first use."""
        if self.train_data is None:
            raise ValueError("no tiny training data declared (TinySettings.train_data)")
        func: Callable[..., Path | None] = imported(self.train_data)
        return func


@dataclass(frozen=True)
class EvalShifts:
    """Named shifts of a trainable task's data, for `vlm eval TASK --shift NAME`: how the
    task's own generator draws held-out data under each, so users see where a model breaks.

    ``write`` is called as ``write(folder, shift=NAME, count=N, seed=S, params=P, card=C)``
    with the training parameters the evaluated weights record (under the user's), e.g. a 2D
    network's ``spatial_dims``, and their card (e.g. the classes they know); it writes
    ``count`` items drawn from ``seed`` under the shift into ``folder`` so that `vlm eval`
    measures every one of them (not a split of them), and returns the path to evaluate
    (None: ``folder``).
    """

    #: the writer: a callable or ``"module:function"`` (imported on first use)
    write: Callable[..., Path | None] | str
    #: shift name -> what it changes, in the order `--shift all` measures them; ``"none"``
    #: (the training distribution, from held-out seeds) should be one of them
    names: Mapping[str, str] = field(hash=False)
    #: the first held-out seed (no training or selection seed may reach it)
    seed: int = 0
    #: items per shift unless `--count` says (500 keeps a rate's standard error ≤ 0.023)
    count: int = 500
    #: `vlm eval --param` values the generated data needs (e.g. ``{"eval_all": True}``)
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def resolve_write(self) -> Callable[..., Path | None]:
        """The data writer, importing ``"module:function"`` on first use."""
        func: Callable[..., Path | None] = imported(self.write)
        return func


@dataclass(frozen=True)
class TaskSpec:
    """Everything the framework needs to list, document, validate and run a task."""

    id: str  # "<plugin>.<task>"
    title: str
    description: str
    domain: str
    run: RunFunction | str  # a callable, or "module:function" imported on first run
    params: type[TaskParams] = TaskParams
    inputs: tuple[Kind, ...] = (Kind.IMAGE,)  # kinds accepted for each input file; () = none
    outputs: tuple[Kind | str, ...] = ()  # output kinds: the core's, or the plugin's own
    weights: tuple[WeightsRef, ...] = ()
    samples: tuple[Sample, ...] = ()
    memory_mb: int = 256  # rough peak device memory of one batch of one item
    capabilities: frozenset[Capability] = frozenset({Capability.RUN})
    max_inputs: int | None = None  # None: any number
    #: the image sizes and aspect ratios accepted (images and video frames), checked before
    #: the run from the inputs' headers
    image_limits: ImageLimits = ImageLimits()
    #: builds the model, data, loss and metrics for `vlm train`/`vlm eval`: a callable or
    #: "module:function" (imported on first use); needs the "train" capability
    train: TrainFunction | str | None = None
    #: parameters of `vlm train --param` (None: the same model as ``params``)
    train_params: type[TaskParams] | None = None
    #: the named shifts `vlm eval --shift` draws held-out data under (None: only --data)
    shifts: EvalShifts | None = None
    #: shown wherever the task's results are (e.g. "Research use only: not for diagnosis.")
    notice: str = ""
    #: trainer settings this task trains best with (``TrainConfig`` fields, e.g. a GAN's
    #: ``{"lr": 2e-4, "schedule": "constant", "clip_grad_norm": None}``): `vlm train` and the
    #: dashboard start from them, and every setting the user gives wins over them
    train_defaults: Mapping[str, Any] = field(default_factory=dict, hash=False)
    #: the settings that make the task cheap for the conformance check and tests (tiny images,
    #: few steps, a tiny training data set): see :class:`TinySettings`
    tiny: TinySettings = field(default_factory=TinySettings, hash=False)
    #: inputs per task call when the run does not say (`vlm run --batch-size`): the task sees a
    #: batch, not a loop of one; the pipeline benchmark's model-only run uses the same number
    batch_size: int = 8
    #: the task's pipeline benchmark (`vlm bench --pipeline`): a callable or "module:function"
    #: returning a :class:`vlm_core.bench.pipeline.PipelineCase` (inputs to make, and the bare
    #: network passes its default outputs need); None: the task is not in that table
    bench: Callable[[], Any] | str | None = None
    #: how the explain engine sees one input (``-p explainer=...``): a callable or
    #: "module:function" called as ``explain(item, outputs, params, ctx)`` with the input, the
    #: task's outputs for it, its parameters and the run context, returning a
    #: :class:`vlm_core.explain.target.ExplainTarget`; None: the task cannot be explained
    explain: Callable[..., Any] | str | None = None
    #: the methods ``explain``'s targets support (names of
    #: :data:`vlm_core.explain.target.METHODS`), in the order the dashboard offers them
    explainers: tuple[str, ...] = ()
    #: how `vlm export` and `vlm compress` take the task's network out of Python: a callable
    #: or "module:function" returning a :class:`vlm_core.deploy.spec.DeploySpec`; None: the
    #: task has no exportable network
    deploy: Callable[[], Any] | str | None = None

    @property
    def plugin(self) -> str:
        return self.id.split(".", 1)[0]

    @property
    def training_params(self) -> type[TaskParams]:
        """The parameter model `vlm train` and `vlm eval` validate ``--param`` against."""
        return self.train_params or self.params

    def resolve_train(self) -> TrainFunction:
        """The training builder, importing ``"module:function"`` on first use."""
        if self.train is None:
            raise ValueError(f"task '{self.id}' cannot train")
        func: TrainFunction = imported(self.train)
        return func

    def resolve_bench(self) -> Any:
        """The task's :class:`~vlm_core.bench.pipeline.PipelineCase` (None: it has none),
        importing ``"module:function"`` on first use."""
        return None if self.bench is None else imported(self.bench)()

    def resolve_deploy(self) -> Any:
        """The task's :class:`~vlm_core.deploy.spec.DeploySpec` (None: it has none), importing
        ``"module:function"`` on first use."""
        return None if self.deploy is None else imported(self.deploy)()

    def resolve_explain(self) -> Callable[..., Any]:
        """The explain-target builder, importing ``"module:function"`` on first use."""
        if self.explain is None:
            raise ValueError(f"task '{self.id}' cannot be explained")
        func: Callable[..., Any] = imported(self.explain)
        return func

    def resolve_run(self) -> RunFunction:
        """The run function, importing ``"module:function"`` on first use."""
        func: RunFunction = imported(self.run)
        return func


def imported(ref: Any) -> Any:
    """``ref`` itself, or the attribute a ``"module:function"`` string names (its module
    imported now: a spec names its heavy parts without importing them)."""
    if not isinstance(ref, str):
        return ref
    module_name, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def package_file(package: str, *parts: str) -> Path:
    """Path of a file shipped inside ``package`` (without importing the package's code)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package '{package}' is not installed")
    return Path(next(iter(spec.submodule_search_locations)), *parts)


# ---------------------------------------------------------------------------------------------
# Validation of specs and parameter models


def _is_literal_or_enum(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return True
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(_is_literal_or_enum(a) for a in args)
    return isinstance(annotation, type) and issubclass(annotation, enum.Enum)


def _base_types(annotation: Any) -> set[Any]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        out: set[Any] = set()
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                out |= _base_types(arg)
        return out
    if origin is typing.Annotated:
        return _base_types(typing.get_args(annotation)[0])
    return {origin or annotation}


def _bounds(metadata: Sequence[Any]) -> tuple[bool, bool, bool]:
    """(has lower bound, has upper bound, has max length) from pydantic field metadata."""
    lower = upper = length = False
    for item in metadata:
        lower |= getattr(item, "ge", None) is not None or getattr(item, "gt", None) is not None
        upper |= getattr(item, "le", None) is not None or getattr(item, "lt", None) is not None
        length |= getattr(item, "max_length", None) is not None
    return lower, upper, length


def param_problems(model: type[BaseModel]) -> list[str]:
    """Problems with a parameter model; an empty list means it follows the contract."""
    problems: list[str] = []
    if model.model_config.get("extra") != "forbid":
        problems.append("parameter model must reject unknown keys (subclass TaskParams)")
    for name, info in model.model_fields.items():
        where = f"parameter '{name}'"
        if not (info.description or "").strip():
            problems.append(f"{where} has no description")
        if info.is_required():
            problems.append(f"{where} has no default")
        annotation = info.annotation
        if _is_literal_or_enum(annotation):
            continue
        kinds = _base_types(annotation)
        lower, upper, length = _bounds(info.metadata)
        if kinds & {int, float} and not kinds & {bool} and not (lower and upper):
            problems.append(f"{where} needs both bounds (ge/gt and le/lt)")
        elif kinds & {str, list, tuple, dict, set, frozenset} and not length:
            problems.append(f"{where} needs max_length (or a Literal of choices)")
    return problems


#: settings a task cannot default: they are the user's machine and reproducibility
NOT_DEFAULTABLE = ("seed", "device")


def train_defaults_problems(defaults: Mapping[str, Any], what: str = "train_defaults") -> list[str]:
    """Problems with a task's ``train_defaults`` (or other trainer settings it declares,
    named ``what`` in the messages); pydantic only, no torch import."""
    from pydantic import ValidationError

    from vlm_core.training.config import TrainConfig

    problems = [f"{what} may not set '{k}'" for k in NOT_DEFAULTABLE if k in defaults]
    try:
        TrainConfig.model_validate(dict(defaults))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or what
        problems.append(f"{what} '{where}': {err['msg']}")
    return problems


def _params_problem(model: type[BaseModel], values: Mapping[str, Any], what: str) -> str | None:
    """Why ``values`` are not valid parameters of ``model`` (one line), or None."""
    from pydantic import ValidationError

    try:
        model.model_validate(dict(values))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "value"
        return f"{what} '{where}': {err['msg']}"
    return None


def tiny_problems(spec: TaskSpec) -> list[str]:
    """Problems with a task's :class:`TinySettings` (``spec.tiny``); pydantic only."""
    tiny = spec.tiny
    if not isinstance(tiny, TinySettings):
        return ["tiny must be a vlm_core.tasks.TinySettings"]
    problems: list[str] = []
    if isinstance(spec.params, type) and issubclass(spec.params, TaskParams):
        found = _params_problem(spec.params, tiny.params, "tiny.params")
        problems += [found] if found else []
    training = (tiny.train_data, tiny.train_data_args, tiny.train_params, tiny.train_config)
    if spec.train is None:
        if any(training):
            problems.append("tiny training settings need a train builder")
        return problems
    if isinstance(tiny.train_data, str) and not re.match(r"^[\w.]+:[\w]+$", tiny.train_data):
        problems.append(f"tiny.train_data must be 'module:function', got '{tiny.train_data}'")
    elif not isinstance(tiny.train_data, str | None) and not callable(tiny.train_data):
        problems.append("tiny.train_data is neither callable nor 'module:function'")
    model = spec.training_params
    if isinstance(model, type) and issubclass(model, TaskParams):
        found = _params_problem(model, tiny.train_params, "tiny.train_params")
        problems += [found] if found else []
    problems += train_defaults_problems(tiny.train_config, "tiny.train_config")
    return problems


def shifts_problems(spec: TaskSpec) -> list[str]:
    """Problems with a task's :class:`EvalShifts` (``spec.shifts``); None has none."""
    shifts = spec.shifts
    if shifts is None:
        return []
    if not isinstance(shifts, EvalShifts):
        return ["shifts must be a vlm_core.tasks.EvalShifts"]
    problems: list[str] = []
    if spec.train is None:
        problems.append("shifts need a train builder (`vlm eval` measures through it)")
    if isinstance(shifts.write, str) and not re.match(r"^[\w.]+:[\w]+$", shifts.write):
        problems.append(f"shifts.write must be 'module:function', got '{shifts.write}'")
    elif not isinstance(shifts.write, str) and not callable(shifts.write):
        problems.append("shifts.write is neither callable nor 'module:function'")
    names = list(shifts.names)
    if not names:
        problems.append("shifts.names is empty")
    bad = [n for n in names if not re.match(r"^[a-z][a-z0-9_-]*$", str(n)) or n == "all"]
    if bad:
        problems.append(f"shift names must be lowercase words other than 'all', got {bad}")
    if shifts.count < 1 or shifts.seed < 0:
        problems.append("shifts.count must be at least 1 and shifts.seed not negative")
    return problems


def merge_train_settings(defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """The task's ``train_defaults`` under the settings the user gave; a length the user gives
    (``epochs`` or ``max_steps``) replaces the default length whichever form it has."""
    base = dict(defaults)
    if "epochs" in given or "max_steps" in given:
        base.pop("epochs", None)
        base.pop("max_steps", None)
    return {**base, **given}


def validate_spec(
    spec: TaskSpec, plugin: str, output_kinds: Collection[str] = OUTPUT_KINDS
) -> list[str]:
    """Problems with a task spec registered by ``plugin``; an empty list means valid.
    ``output_kinds``: the names of the kinds its outputs may be (the core's and the plugin's
    own, :mod:`vlm_core.outputs`)."""
    problems: list[str] = []
    if not TASK_ID.match(spec.id):
        problems.append(f"task id '{spec.id}' is not of the form '<plugin>.<task>' (lowercase)")
    elif spec.plugin != plugin:
        problems.append(f"task id '{spec.id}' must start with the plugin name '{plugin}.'")
    for attr in ("title", "description", "domain"):
        if not str(getattr(spec, attr) or "").strip():
            problems.append(f"task '{spec.id}' has an empty {attr}")
    if not (isinstance(spec.params, type) and issubclass(spec.params, TaskParams)):
        problems.append(f"task '{spec.id}': params must be a subclass of vlm_core.tasks.TaskParams")
    else:
        problems += [f"task '{spec.id}': {p}" for p in param_problems(spec.params)]
    for kind in spec.inputs:
        if kind not in INPUT_KINDS:
            problems.append(f"task '{spec.id}': '{kind}' cannot be an input kind")
    if not spec.outputs:
        problems.append(f"task '{spec.id}' declares no output kinds")
    for output in spec.outputs:
        if output not in output_kinds:
            known = ", ".join(sorted(str(k) for k in output_kinds))
            problems.append(f"task '{spec.id}': '{output}' is not an output kind (one of {known})")
    for attr in ("run", "train", "explain", "bench", "deploy"):
        value = getattr(spec, attr)
        if isinstance(value, str):
            if not re.match(r"^[\w.]+:[\w]+$", value):
                problems.append(
                    f"task '{spec.id}': {attr} must be 'module:function', got '{value}'"
                )
        elif value is not None and not callable(value):
            problems.append(f"task '{spec.id}': {attr} is neither callable nor 'module:function'")
    can_train = bool({Capability.TRAIN, Capability.EVAL} & set(spec.capabilities))
    if can_train and spec.train is None:
        problems.append(f"task '{spec.id}': capabilities 'train'/'eval' need a train builder")
    if spec.train is not None and Capability.TRAIN not in spec.capabilities:
        problems.append(f"task '{spec.id}': a train builder needs the 'train' capability")
    if spec.train_params is not None:
        if not (isinstance(spec.train_params, type) and issubclass(spec.train_params, TaskParams)):
            problems.append(f"task '{spec.id}': train_params must subclass TaskParams")
        else:
            problems += [
                f"task '{spec.id}' (train): {p}" for p in param_problems(spec.train_params)
            ]
    if spec.train_defaults:
        problems += [f"task '{spec.id}': {p}" for p in train_defaults_problems(spec.train_defaults)]
    problems += [f"task '{spec.id}': {p}" for p in tiny_problems(spec)]
    problems += [f"task '{spec.id}': {p}" for p in shifts_problems(spec)]
    if not isinstance(spec.image_limits, ImageLimits):
        problems.append(f"task '{spec.id}': image_limits must be a vlm_core.tasks.ImageLimits")
    else:
        problems += [f"task '{spec.id}': {p}" for p in spec.image_limits.problems()]
    if spec.memory_mb <= 0:
        problems.append(f"task '{spec.id}': memory_mb must be positive")
    if not isinstance(spec.batch_size, int) or not 1 <= spec.batch_size <= 1024:
        problems.append(f"task '{spec.id}': batch_size must be an integer from 1 to 1024")
    if Capability.RUN not in spec.capabilities:
        problems.append(f"task '{spec.id}': capabilities must include 'run'")
    problems += [f"task '{spec.id}': {p}" for p in _explain_problems(spec)]
    for sample in spec.samples:
        missing = [str(f) for f in sample.files if not Path(f).is_file()]
        if missing:
            problems.append(f"task '{spec.id}': sample '{sample.name}' is missing {missing}")
    return problems


def _explain_problems(spec: TaskSpec) -> list[str]:
    """An explain builder and its methods come together, the methods are the engine's, and
    the task's parameters leave the core's explain options to the core."""
    from vlm_core.explain.target import EXPLAIN_OPTION_NAMES, METHODS

    problems = []
    if bool(spec.explain) != bool(spec.explainers):
        problems.append("explain and explainers go together (a builder and its methods)")
    unknown = [m for m in spec.explainers if m not in METHODS]
    if unknown:
        problems.append(f"explainers {unknown} are not the engine's methods ({', '.join(METHODS)})")
    taken = sorted(EXPLAIN_OPTION_NAMES & set(getattr(spec.params, "model_fields", {})))
    if taken:
        problems.append(f"parameters {taken} are the core's explain options; rename them")
    return problems


def describe_param(name: str, info: Any) -> dict[str, Any]:
    """A JSON-friendly description of one parameter field (for `vlm info` and forms)."""
    lower_upper: dict[str, Any] = {}
    for item in info.metadata:
        for key in ("ge", "gt", "le", "lt", "max_length", "min_length"):
            value = getattr(item, key, None)
            if value is not None:
                lower_upper[key] = value
    annotation = info.annotation
    type_name = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
    choices = None
    if typing.get_origin(annotation) is Literal:
        choices = list(typing.get_args(annotation))
    return {
        "name": name,
        "type": type_name,
        "default": info.get_default(call_default_factory=True),
        "description": info.description,
        "bounds": lower_upper,
        "choices": choices,
    }
