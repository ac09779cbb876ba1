"""The conformance check's training steps: train, evaluate, reload, run with the fresh weights.

For a trainable task the check writes the task's tiny training data
(:attr:`TaskSpec.tiny <vlm_core.tasks.TaskSpec.tiny>`), trains a few steps on the CPU with its
tiny settings, evaluates the result as ``vlm eval`` does, checks the save/load round trip (the
checkpoint equals the weights the run ended with and loads into the model the task's builder
makes from the checkpoint's card), and runs the task with ``weights=`` pointing at the fresh
training folder, which the run must record in its provenance. Each step is one named check; a
step that fails ends the sequence (the later steps need what it would have made).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlm_core.errors import TaskRunError, VLMError
from vlm_core.tasks import TaskSpec

if TYPE_CHECKING:
    from torch import nn

    from vlm_core.plugins import Registry
    from vlm_core.training.trainer import Trainer

#: One check: (name, passed, what happened).
Step = tuple[str, bool, str]


class StepFailed(Exception):
    """A step of the sequence failed; its message says what happened."""


def _why(exc: BaseException) -> str:
    """One line for an exception: a vlm error's own message, else its type and message."""
    if isinstance(exc, TaskRunError):
        return exc.reason
    if isinstance(exc, VLMError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _attempt(what: Callable[[], Any]) -> Any:
    """``what()``; anything it raises (a plugin's ``SystemExit`` too) as :class:`StepFailed`."""
    try:
        return what()
    except StepFailed:
        raise
    except (Exception, SystemExit) as exc:
        raise StepFailed(_why(exc)) from exc


def write_tiny_data(spec: TaskSpec, folder: Path) -> Path:
    """Write ``spec``'s tiny training data set into ``folder``; the path to train on."""
    folder.mkdir(parents=True, exist_ok=True)
    made = spec.tiny.resolve_train_data()(folder, **dict(spec.tiny.train_data_args))
    data = Path(made) if made is not None else folder
    if not data.exists():
        raise StepFailed(f"tiny.train_data returned {data}, which does not exist")
    return data


def _train_config(spec: TaskSpec) -> dict[str, Any]:
    """The tiny trainer settings, on the CPU, logging every step and without TensorBoard."""
    return {**spec.tiny.train_config, "device": "cpu", "tensorboard": False, "log_every": 1}


def _equal_states(
    a: dict[str, Any], b: dict[str, Any], what_a: str, what_b: str
) -> tuple[bool, str]:
    """Whether two state dicts hold the same tensors, and the first difference."""
    import torch

    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))
        return False, f"{what_a} and {what_b} hold different tensors (e.g. {only[:3]})"
    for key in sorted(a):
        x, y = a[key], b[key]
        if x.shape != y.shape or x.dtype != y.dtype or not torch.equal(x.cpu(), y.cpu()):
            return False, f"tensor '{key}' of {what_a} differs from {what_b}"
    return True, f"{len(a)} tensors equal"


def _round_trip(spec: TaskSpec, data: Path, out: Path, trained_model: nn.Module | None) -> str:
    """The best checkpoint loads into the model the builder makes from its card, unchanged;
    the last one equals the weights the run ended with (when it kept no EMA)."""
    from vlm_core.params import validate_params
    from vlm_core.tasks import TrainContext
    from vlm_core.training.api import build_setup
    from vlm_core.training.checkpoint import find_checkpoint
    from vlm_core.weights.trained import load_trained

    last = find_checkpoint(out, "last")
    if last is None:
        raise StepFailed(f"training wrote no checkpoint into {out}")
    notes = []
    if trained_model is not None and not last.sidecar.get("ema"):
        ended = {k: v.detach() for k, v in trained_model.state_dict().items()}
        same, detail = _equal_states(last.model_state(), ended, "the last checkpoint",
                                     "the weights the run ended with")  # fmt: skip
        if not same:
            raise StepFailed(detail)
        notes.append(f"last checkpoint = trained weights ({detail})")
    trained = load_trained(str(out), plugin=spec.plugin, task=spec.id)
    params = validate_params(spec, spec.tiny.train_params, spec.training_params)
    ctx = TrainContext(task=spec.id, plugin=spec.plugin, device="cpu",
                       seed=int(trained.sidecar.get("seed", 0)), purpose="eval",
                       weights_card=trained.card)  # fmt: skip
    model = build_setup(spec, data, params, ctx).model
    try:
        model.load_state_dict(trained.state_dict)
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        raise StepFailed(
            "the checkpoint does not load into the model the builder makes from its card: "
            + (lines[1].strip() if len(lines) > 1 else lines[0])
        ) from None
    same, detail = _equal_states(
        {k: v.detach() for k, v in model.state_dict().items()},
        trained.state_dict,
        "the reloaded model",
        "the checkpoint",
    )
    if not same:
        raise StepFailed(detail)
    notes.append(f"reloaded = checkpoint ({detail})")
    return "; ".join(notes)


def _evaluate(spec: TaskSpec, data: Path, out: Path, registry: Registry) -> str:
    from vlm_core.training.api import evaluate_task

    batch = int(spec.tiny.train_config.get("batch_size", 2))
    result = evaluate_task(spec.id, data, weights=str(out), device="cpu", batch_size=batch,
                           registry=registry)  # fmt: skip
    if not result.metrics:
        raise StepFailed("evaluation gave no metrics")
    bad = sorted(k for k, v in result.metrics.items() if not math.isfinite(v))
    if bad:
        raise StepFailed(f"evaluation gave non-finite {', '.join(bad)}")
    for key, recorded in sorted((result.recorded or {}).items()):
        found = result.metrics.get(key)
        if (
            result.same_data
            and found is not None
            and abs(found - recorded) > 1e-4 * max(1.0, abs(recorded))
        ):
            raise StepFailed(
                f"evaluation on the training data gives {key}={found:.6g}, but training recorded "
                f"{recorded:.6g} for the same weights: is validation seeded and free of "
                "augmentation?"
            )
    shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(result.metrics.items())[:4])
    same = " (as recorded in training)" if result.same_data and result.recorded else ""
    return f"{result.samples} validation samples: {shown}{same}"


def _run_with_weights(spec: TaskSpec, out: Path, registry: Registry, work: Path, store: Any) -> str:
    """Run the task on its first sample with ``weights=`` the training folder; the run must
    record that checkpoint's sha256, and when training fitted a familiarity model, every
    result must carry its ood verdict."""
    from vlm_core.familiarity import FAMILIARITY_FILE
    from vlm_core.runner import RunRequest, run_task
    from vlm_core.weights.trained import load_trained

    if "weights" not in spec.params.model_fields:
        raise StepFailed(
            "its run parameters have no 'weights' field, so the weights it trains cannot be "
            "used (add `weights: str` naming a `vlm train` output folder or checkpoint)"
        )
    sha = load_trained(str(out), plugin=spec.plugin, task=spec.id).sha256
    sample = spec.samples[0] if spec.samples else None
    files = [str(f) for f in sample.files] if sample else []
    params = {**spec.tiny.params, **(sample.params if sample else {}), "weights": str(out)}
    request = RunRequest(spec.id, files, params, out_dir=work / "run", device="cpu")
    outcome = run_task(request, registry=registry, store=store, isolate=False)
    used = {s for r in outcome.results for s in r.provenance.weights_sha256.values()}
    if sha not in used:
        recorded = ", ".join(sorted(s[:12] for s in used)) or "none"
        raise StepFailed(
            f"the run did not record the weights it was given (checkpoint sha256 {sha[:12]}; "
            f"recorded: {recorded}): load them with load_model(..., ctx=ctx) or record them "
            "with ctx.record_weights"
        )
    trained = load_trained(str(out), plugin=spec.plugin, task=spec.id)
    if FAMILIARITY_FILE not in (trained.sidecar.get("files") or {}):
        return f"{len(outcome.results)} result(s) with weights {sha[:12]} (no familiarity model)"
    unjudged = sum(r.ood is None for r in outcome.results)
    if unjudged:
        raise StepFailed(
            f"the checkpoint has a familiarity model, but {unjudged} of {len(outcome.results)} "
            "results carry no ood verdict: take features with a FeatureTap around the run's "
            "forward pass and record each input's loaded.judge(...) with ctx.record_ood"
        )
    return f"{len(outcome.results)} result(s) with weights {sha[:12]}, each with its ood verdict"


def training_checks(spec: TaskSpec, registry: Registry, work: Path, store: Any) -> Iterator[Step]:
    """The training steps of the conformance check for ``spec`` (a trainable task), one
    :data:`Step` each, in ``work``; stops after the first that fails."""
    from vlm_core.training.api import TrainRequest, train_task

    name = spec.id
    if spec.tiny.train_data is None:
        yield (
            f"{name}: trains on tiny data",
            False,
            "declare TaskSpec(tiny=TinySettings(train_data=..., train_params=..., "
            "train_config=...)) so that its training, eval and weights are checked",
        )
        return
    work.mkdir(parents=True, exist_ok=True)
    out = work / "train"
    trainers: list[Trainer] = []
    try:
        data = _attempt(lambda: write_tiny_data(spec, work / "data"))
    except StepFailed as exc:
        yield f"{name}: writes its tiny training data", False, str(exc)
        return
    request = TrainRequest(spec.id, data, out, params=dict(spec.tiny.train_params),
                           config=_train_config(spec),
                           command=["vlm", "plugins", "validate", spec.plugin])  # fmt: skip
    sequence: list[tuple[str, Callable[[], str]]] = [
        (
            "trains on tiny data",
            lambda: _trained(train_task(request, registry=registry, on_trainer=trainers.append)),
        ),
        ("evaluates (vlm eval)", lambda: _evaluate(spec, data, out, registry)),
        *(
            [
                (
                    "evaluates under its shifts (vlm eval --shift)",
                    lambda: _evaluate_shifts(spec, out, registry, work),
                )
            ]
            if spec.shifts is not None
            else []
        ),
        (
            "save/load round trip",
            lambda: _round_trip(spec, data, out, trainers[0].setup.model if trainers else None),
        ),
        (
            "runs with weights= the fresh checkpoint",
            lambda: _run_with_weights(spec, out, registry, work, store),
        ),
    ]
    for step, action in sequence:
        try:
            detail = _attempt(action)
        except StepFailed as exc:
            yield f"{name}: {step}", False, str(exc)
            return
        yield f"{name}: {step}", True, detail


def _evaluate_shifts(spec: TaskSpec, out: Path, registry: Registry, work: Path) -> str:
    """Every declared shift's writer draws two items, and `vlm eval` measures the last shift's
    with the fresh weights: finite metrics, on exactly the items drawn (one evaluation keeps
    the check cheap; the writers are what differs between shifts)."""
    from vlm_core.training.api import recorded_params
    from vlm_core.training.shifts import evaluate_shifts, task_shifts

    suite = task_shifts(spec)
    names = list(suite.names)
    _, trained, _, params = recorded_params(spec, str(out), dict(suite.params))
    card = dict(trained.card) if trained is not None else {}
    write = suite.resolve_write()
    for name in names[:-1]:
        folder = work / "shifts" / name
        made = write(folder, shift=name, count=2, seed=suite.seed, params=params, card=card)
        if not Path(made or folder).exists():
            raise StepFailed(f"shift '{name}': the writer returned {made}, which does not exist")
    batch = int(spec.tiny.train_config.get("batch_size", 2))
    (found,) = evaluate_shifts(spec.id, names[-1:], count=2, weights=str(out), device="cpu",
                               batch_size=batch, registry=registry)  # fmt: skip
    metrics = found.result.metrics
    bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
    if not metrics or bad:
        raise StepFailed(f"shift '{found.shift}': evaluation gave no finite metrics {bad}")
    if found.result.samples != 2:
        raise StepFailed(
            f"shift '{found.shift}': the writer drew 2 items and eval measured "
            f"{found.result.samples}: write the items so that eval measures all of them"
        )
    return f"{len(names)} shifts drawn ({', '.join(names)}); '{found.shift}' measured on 2 items"


def _trained(result: Any) -> str:
    if result.status not in ("completed", "early_stopped"):
        raise StepFailed(f"training ended '{result.status}': {result.message}")
    fitted = result.familiarity
    familiarity = f", familiarity fitted on {fitted['fit_items']} items" if fitted else ""
    return f"{result.step} steps in {result.seconds:.1f} s{familiarity}"


__all__ = ["StepFailed", "training_checks", "write_tiny_data"]
