"""`vlm export` and `vlm compress`: a task's network out of Python, and smaller."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vlm_core.cli.output import emit_json

_PARAM_HELP = "A task parameter the network is loaded with (repeatable), e.g. -p dims=2."


def _dynamic(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [name.strip() for name in value.split(",") if name.strip()]


@click.command("export")
@click.argument("task")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="A new folder for the file and its model.json.")  # fmt: skip
@click.option("--weights", default="", help="The weights to export (default: the bundled).")
@click.option("--format", "fmt", type=click.Choice(["onnx", "pt2"]), default="onnx",
              show_default=True, help="ONNX or torch.export .pt2.")  # fmt: skip
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE", help=_PARAM_HELP)
@click.option("--count", type=click.IntRange(min=1), default=8, show_default=True,
              help="Held-out inputs the parity check compares.")  # fmt: skip
@click.option("--seed", type=int, default=None, help="Seed of the held-out inputs.")
@click.option("--opset", type=click.IntRange(min=13), default=None,
              help="ONNX opset (default 18).")  # fmt: skip
@click.option("--dynamic", default=None, metavar="AXES",
              help="Keep only these dynamic axes, comma-separated ('' : a static graph; "
              "default: every axis the task declares).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the model.json as JSON.")
def export_cmd(
    task: str,
    out: Path,
    weights: str,
    fmt: str,
    params: tuple[str, ...],
    count: int,
    seed: int | None,
    opset: int | None,
    dynamic: str | None,
    as_json: bool,
) -> None:
    """Export TASK's network as ONNX or .pt2 into --out, with a parity check.

    The same held-out inputs go through the torch network and the exported one (onnxruntime
    for ONNX); the differences and the task metric of both are written into model.json beside
    the file, with the opset, versions and sha256. `vlm run TASK ... -p weights=OUT` runs it.
    """
    from vlm_core.deploy.export import PARITY_SEED, export_task
    from vlm_core.params import parse_pairs

    exported = export_task(
        task,
        out=out,
        weights=weights,
        fmt=fmt,
        params=parse_pairs(params),
        count=count,
        seed=PARITY_SEED if seed is None else seed,
        opset=opset,
        dynamic=_dynamic(dynamic),
    )
    if as_json:
        emit_json(exported.sidecar)
        return
    _print_export(exported.path, exported.sidecar)


def _print_export(path: Path, sidecar: dict[str, Any]) -> None:
    from vlm_core.deploy.parity import describe

    export = sidecar["export"]
    size = path.stat().st_size / 1e6
    click.echo(f"wrote {path} ({size:.2f} MB, sha256 {sidecar['files'][path.name][:16]}…)")
    click.echo(f"parity: {describe(export['parity'])}")
    if export.get("note"):
        click.echo(f"note: {export['note']}")
    _run_line(sidecar["task"], path, bool(export.get("runs")))


def _run_line(task: str, path: Path, runs: bool) -> None:
    """How to run what was written: `vlm run` with it, or why not."""
    if not runs:
        click.echo("it holds part of the network: for deployment elsewhere, not for `vlm run`")
        return
    from vlm_core.deploy import export  # the registry the export used

    inputs = " INPUTS" if export.get_registry().task(task).inputs else ""
    click.echo(f"run it: vlm run {task}{inputs} -p weights={path}")


@click.command("compress")
@click.argument("task")
@click.option("--method", type=click.Choice(["int8", "prune", "distill"]), required=True,
              help="int8 quantisation, channel pruning or distillation.")  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="A new folder for the compressed network and compress.json.")  # fmt: skip
@click.option("--weights", default="", help="The weights to compress (default: the bundled).")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE", help=_PARAM_HELP)
@click.option("--amount", type=float, default=0.5, show_default=True,
              help="With prune: the fraction of channels removed.")  # fmt: skip
@click.option("--count", type=click.IntRange(min=1), default=8, show_default=True,
              help="Held-out input batches compared.")  # fmt: skip
@click.option("--seed", type=int, default=None, help="Seed of the held-out inputs.")
@click.option("--calibration", type=click.IntRange(min=1), default=32, show_default=True,
              help="With int8: calibration batches (in-domain, their own seed).")  # fmt: skip
@click.option("--rounds", type=click.IntRange(min=1), default=20, show_default=True,
              help="Latency rounds (original and compressed alternate).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def compress_cmd(
    task: str,
    method: str,
    out: Path,
    weights: str,
    params: tuple[str, ...],
    amount: float,
    count: int,
    seed: int | None,
    calibration: int,
    rounds: int,
    as_json: bool,
) -> None:
    """Compress TASK's network into --out and report it against the original.

    int8 quantises the ONNX export with onnxruntime (calibrated on held-out in-domain
    inputs); prune and distill are the task's own, trained through `vlm train`'s machinery.
    The report (compress.json): size, parameters, CPU latency of both in the same run and the
    task metric before and after on held-out data.
    """
    from vlm_core.deploy.compress import compress_task
    from vlm_core.deploy.export import PARITY_SEED
    from vlm_core.params import parse_pairs

    done = compress_task(
        task,
        out=out,
        method=method,
        weights=weights,
        params=parse_pairs(params),
        amount=amount,
        count=count,
        seed=PARITY_SEED if seed is None else seed,
        calibration=calibration,
        rounds=rounds,
    )
    if as_json:
        emit_json(done.report)
        return
    _print_compressed(done.path, out, done.report)


def _print_compressed(path: Path, out: Path, report: dict[str, Any]) -> None:
    from vlm_core.cli.output import table

    sizes, ms = report["size_bytes"], report["cpu_ms"]
    params = report["parameters"]
    rows = [
        (name, f"{sizes[name] / 1e6:.2f}", params.get(name, ""), f"{ms[name]:.1f}")
        for name in sizes
        if name in ms
    ]
    table(
        f"{report['task']} {report['method']} (CPU, batch {ms['batch']}, median of "
        f"{ms['rounds']} alternating rounds)",
        ("network", "size MB", "parameters", "ms per batch"),
        rows,
    )
    metric = report.get("metric")
    if metric:
        click.echo(
            f"{metric['name']}: {metric['reference']:.4f} → {metric['candidate']:.4f} "
            f"({metric['relative_change']:+.2%}) on {metric['examples']} held-out examples"
        )
    click.echo(f"wrote {path} and the report {out / 'compress.json'}")
    _run_line(report["task"], path, bool(report.get("runs", True)))
