"""`vlm train` and `vlm eval`."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from vlm_core.cli.output import emit_json

_PARAM_HELP = "A task parameter; repeat for several. Lists and objects as JSON."
_SET_HELP = (
    "A trainer setting (see docs/training.md), e.g. --set ema_decay=0.999; repeat for several."
)


def _settings(pairs: tuple[str, ...], **given: Any) -> dict[str, Any]:
    from vlm_core.errors import ParameterError
    from vlm_core.params import parse_pairs

    values = parse_pairs(pairs)
    for key, value in given.items():
        if value is None:
            continue
        if key in values:
            raise ParameterError(f"'{key}' is given both as an option and with --set")
        values[key] = value
    for key, value in list(values.items()):
        if isinstance(value, str) and value.strip().lower() in ("none", "null", "off"):
            values[key] = None
    return values


def _err(message: str) -> None:
    click.echo(message, err=True)


@click.command("train")
@click.argument("task")
@click.option(
    "--data",
    required=True,
    type=click.Path(path_type=Path),
    help="The training data (a folder or file in the format the task documents).",
)
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Passes over the data.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Optimizer steps.")
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for checkpoints, the metrics log and the report "
    "(default: VLM data folder/train/TASK/TIME).",
)
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in --out.")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE", help=_PARAM_HELP)
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Global batch size.")
@click.option("--lr", type=float, default=None, help="Peak learning rate.")
@click.option("--device", default=None, help="auto, cpu, cuda, cuda:N or mps (default auto).")
@click.option("--seed", type=int, default=None, help="Random seed (default 0).")
@click.option(
    "--fit-ood-only",
    "fit_ood_only",
    is_flag=True,
    help="Do not train: fit the familiarity model of --weights on --data (in-domain items) "
    "into --out, so runs with them flag inputs unlike that data.",
)
@click.option(
    "--weights",
    default=None,
    help="With --fit-ood-only: the weights (a `vlm train` folder, checkpoint, file or hub "
    "reference; default: the task's bundled weights).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def train_cmd(
    task: str,
    data: Path,
    epochs: int | None,
    steps: int | None,
    out: Path | None,
    resume: bool,
    params: tuple[str, ...],
    settings: tuple[str, ...],
    batch_size: int | None,
    lr: float | None,
    device: str | None,
    seed: int | None,
    as_json: bool,
    fit_ood_only: bool,
    weights: str | None,
) -> None:
    """Train TASK on --data; the same command works under `torchrun --nproc-per-node N`.

    The --out folder is usable at once: `vlm run TASK --param weights=OUT` takes its best
    checkpoint, `vlm eval TASK --data ... --weights OUT` re-measures it. Training ends by
    fitting the checkpoint's familiarity model (--set familiarity=false skips it);
    --fit-ood-only fits one for weights trained elsewhere.
    """
    from vlm_core.errors import UsageError, VLMError
    from vlm_core.params import parse_pairs
    from vlm_core.progress import ProgressDisplay, TrainProgress
    from vlm_core.training.api import TrainRequest, train_task
    from vlm_core.training.distributed import launched_by_torchrun

    if epochs is not None and steps is not None:
        raise UsageError("give --epochs or --steps, not both")
    if fit_ood_only:
        _fit_ood_only(task, data, out, weights, params, device, seed, batch_size, as_json)
        return
    if weights is not None:
        raise UsageError("--weights goes with --fit-ood-only (to start training from weights, "
                         "give the task's weights parameter: -p weights=...)")  # fmt: skip
    config = _settings(
        settings,
        epochs=epochs,
        max_steps=steps,
        batch_size=batch_size,
        lr=lr,
        device=device,
        seed=seed,
    )
    main = int(os.environ.get("RANK", "0")) == 0
    request = TrainRequest(
        task=task,
        data=data,
        out=out,
        params=parse_pairs(params),
        config=config,
        resume=resume,
        command=["vlm", *sys.argv[1:]] if not launched_by_torchrun() else ["torchrun", *sys.argv],
    )
    trainers: list[Any] = []
    signals: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        if signals or not trainers:
            raise KeyboardInterrupt
        signals.append(signum)
        trainers[0].request_stop()
        if main:
            _err("stopping at the next step and saving a checkpoint (again to abort)")

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ProgressDisplay(task, total=None, unit="step", quiet=as_json or not main) as display:
            progress = TrainProgress(display)
            result = train_task(request, callbacks=[progress], on_trainer=trainers.append)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if not main:
        return
    if as_json:
        emit_json(result.to_dict())
    else:
        best = result.best
        best_text = ""
        if best:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(best["metrics"].items()))
            best_text = f"; best at step {best['step']}: {shown}"
        click.echo(
            f"{result.status}: {result.step}/{result.total_steps} steps in {result.seconds:.1f} s "
            f"({result.samples_per_s:.1f} samples/s){best_text}"
        )
        click.echo(f"checkpoints, metrics.jsonl, report.json and curves.png in {result.out}")
        if result.familiarity:
            click.echo(_familiarity_line(result.familiarity))
    if result.status == "diverged":
        raise VLMError(result.message)
    if signals:
        raise SystemExit(130)


def _familiarity_line(summary: dict[str, Any]) -> str:
    rate = summary.get("calibration_flagged_rate") or 0.0
    return (
        f"familiarity: fitted on {summary.get('fit_items')} items; threshold "
        f"{summary['threshold']:.4g} flags {100 * rate:.1f}% of "
        f"{summary.get('calibration_items', 0) + (summary.get('fit_items') or 0)} in-domain "
        "scores (held-out and leave-one-out)"
    )


def _fit_ood_only(
    task: str,
    data: Path,
    out: Path | None,
    weights: str | None,
    params: tuple[str, ...],
    device: str | None,
    seed: int | None,
    batch_size: int | None,
    as_json: bool,
) -> None:
    from vlm_core.errors import UsageError
    from vlm_core.params import parse_pairs
    from vlm_core.training.api import fit_familiarity_only

    if out is None:
        raise UsageError("--fit-ood-only needs --out: the folder to write the weights and "
                         "their familiarity model into")  # fmt: skip
    found = fit_familiarity_only(
        task, data, out, weights=weights, params=parse_pairs(params), seed=seed,
        device=device or "auto", batch_size=batch_size or 16, command=["vlm", *sys.argv[1:]],
    )  # fmt: skip
    if as_json:
        emit_json(found)
        return
    click.echo(_familiarity_line(found["familiarity"]))
    click.echo(f"weights with it in {found['out']}: vlm run {task} --param weights={found['out']}")


@click.command("eval")
@click.argument("task")
@click.option(
    "--data", type=click.Path(path_type=Path), default=None,
    help="Data to evaluate on (or --shift: data the task draws itself).",
)  # fmt: skip
@click.option(
    "--shift",
    "shifts",
    multiple=True,
    metavar="NAME",
    help="Evaluate on held-out data the task's generator draws under this named shift "
    "(repeatable; 'all': every shift the task declares; see `vlm eval TASK --shift list`).",
)
@click.option(
    "--count", type=click.IntRange(min=1), default=None,
    help="With --shift: items per shift (default: the task's, 500 for the built-in tasks).",
)  # fmt: skip
@click.option(
    "--shift-seed", type=click.IntRange(min=0), default=None,
    help="With --shift: the seed the data are drawn from (default: the task's held-out seed).",
)  # fmt: skip
@click.option(
    "--keep-data", type=click.Path(path_type=Path), default=None,
    help="With --shift: keep the drawn data under this folder (one sub-folder per shift).",
)  # fmt: skip
@click.option(
    "--weights",
    default=None,
    help="A `vlm train` output folder, a checkpoint folder, or any weights reference "
    "(default: the weights the task ships).",
)
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE", help=_PARAM_HELP)
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Seed of the validation split and of what the task draws (default: the seed recorded "
    "with the weights, so training's evaluation is repeated).",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def eval_cmd(
    task: str,
    data: Path | None,
    shifts: tuple[str, ...],
    count: int | None,
    shift_seed: int | None,
    keep_data: Path | None,
    weights: str | None,
    params: tuple[str, ...],
    seed: int | None,
    device: str,
    batch_size: int,
    as_json: bool,
) -> None:
    """Measure TASK's validation metrics on --data, say which data, seed and sample count
    gave them, and compare them with the metrics the checkpoint recorded in training; or,
    with --shift, on held-out data the task draws under named shifts, one row per shift."""
    from vlm_core.errors import UsageError
    from vlm_core.params import parse_pairs
    from vlm_core.training.api import evaluate_task
    from vlm_core.training.eval_setting import describe_data

    if shifts and data is not None:
        raise UsageError("give --data or --shift, not both")
    if not shifts:
        if data is None:
            raise UsageError("vlm eval needs --data DATA, or --shift NAME for generated data")
        if count is not None or shift_seed is not None or keep_data is not None:
            raise UsageError("--count, --shift-seed and --keep-data go with --shift")
    else:
        _eval_shifts(task, shifts, count, shift_seed, keep_data, weights, parse_pairs(params),
                     device, batch_size, as_json)  # fmt: skip
        return
    assert data is not None
    result = evaluate_task(
        task,
        data,
        weights=weights,
        params=parse_pairs(params),
        seed=seed,
        device=device,
        batch_size=batch_size,
    )
    if as_json:
        emit_json(result.to_dict())
        return
    shown = ", ".join(f"{k}={v:.6g}" for k, v in sorted(result.metrics.items()))
    click.echo(f"{task} on {result.samples} validation samples: {shown}")
    if result.setting is not None:
        used = result.setting
        click.echo(f"data {describe_data(used.data)}, seed {used.seed}, device {used.device}")
    found = result.familiarity
    if found is not None:
        click.echo(
            f"familiarity: {found['flagged']} of {found['samples']} validation samples "
            f"({100 * found['rate']:.1f}%) look unlike the training data (threshold "
            f"{found['threshold']:.4g}, {found['method']})"
        )
    if not result.recorded:
        click.echo("the weights record no evaluation from training to compare with")
        return
    recorded = ", ".join(f"{k}={v:.6g}" for k, v in sorted(result.recorded.items()))
    click.echo(
        f"recorded at step {result.step}: {recorded} (max difference {result.max_abs_diff:.3g})"
    )
    if result.comparison:
        click.echo(result.comparison)


def _eval_shifts(
    task: str,
    shifts: tuple[str, ...],
    count: int | None,
    seed: int | None,
    keep: Path | None,
    weights: str | None,
    params: dict[str, Any],
    device: str,
    batch_size: int,
    as_json: bool,
) -> None:
    """`vlm eval TASK --shift ...`: one line per shift as it is measured, then a table."""
    from vlm_core.plugins import get_registry
    from vlm_core.training.api import trainable_spec
    from vlm_core.training.shifts import evaluate_shifts, task_shifts

    if "list" in shifts:
        suite = task_shifts(trainable_spec(task, get_registry(), purpose="evaluate"))
        for name, what in suite.names.items():
            click.echo(f"{name:<10} {what}")
        click.echo(f"({suite.count} items per shift from seed {suite.seed} unless --count and "
                   "--shift-seed say)")  # fmt: skip
        return

    def measured(found: Any) -> None:
        click.echo(f"{found.shift}: {found.result.samples} items measured", err=True)

    results = evaluate_shifts(task, shifts, count=count, seed=seed, weights=weights,
                              params=params, device=device, batch_size=batch_size, keep=keep,
                              on_result=measured)  # fmt: skip
    if as_json:
        emit_json([r.to_dict() for r in results])
        return
    first = results[0]
    names = sorted({k for r in results for k in r.result.metrics})
    click.echo(f"{task}: {first.count} items per shift, seed {first.seed}, weights "
               f"{first.result.weights or 'bundled'}")  # fmt: skip
    width = max(len(r.shift) for r in results) + 2
    click.echo(f"{'shift':<{width}}{'N':>6}  " + "  ".join(f"{n:>12}" for n in names))
    for r in results:
        values = [r.result.metrics.get(n) for n in names]
        cells = "  ".join(f"{v:>12.4f}" if v is not None else f"{'-':>12}" for v in values)
        click.echo(f"{r.shift:<{width}}{r.result.samples:>6}  {cells}")
    for r in results:
        found = r.result.familiarity
        if found is not None:
            click.echo(f"{r.shift}: {found['flagged']} of {found['samples']} flagged as unlike "
                       f"the training data ({100 * found['rate']:.1f}%)")  # fmt: skip
