"""`vlm bench`: the engines against the raw libraries, in the same process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vlm_core.bench.suite import SUITES as SUITE_NAMES
from vlm_core.cli.output import emit_json, table

COLUMNS = ("suite", "bench", "model", "device", "dtype", "batch", "engine_img_s", "raw_img_s",
           "engine_texts_s", "raw_texts_s", "engine_ms", "raw_ms",
           "end_to_end_img_s", "model_only_img_s", "engine_samples_per_s", "raw_samples_per_s",
           "ratio", "mfu", "peak_device_mb",
           "peak_host_mb")  # fmt: skip


@click.command("bench")
@click.argument("suites", nargs=-1, type=click.Choice(["all", *SUITE_NAMES]))
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--quick", is_flag=True, help="Fewer repeats and smaller folders.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the rows to this JSON file.",
)
@click.option("--print-json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--compile-mode", default=None,
              type=click.Choice(["default", "reduce-overhead", "max-autotune",
                                 "max-autotune-no-cudagraphs", "inference"]),
              help="torch.compile mode of the fast path (default: reduce-overhead).")  # fmt: skip
@click.option(
    "--pipeline",
    is_flag=True,
    help="Files → results against the model alone, for every task that declares it "
    "(`vlm run` over a generated folder vs the bare network passes, alternating).",
)
@click.option(
    "--explain",
    is_flag=True,
    help="Every explainable task's methods: attribution time per input and deletion/insertion "
    "AUC against random orders, on generated inputs through `vlm run`'s path.",
)
@click.option(
    "--method",
    "methods",
    multiple=True,
    help="With --explain: only this method (repeat for several).",
)
@click.option(
    "--task",
    "tasks",
    multiple=True,
    help="With --pipeline or --explain: only this task (repeat for several).",
)
@click.option(
    "--count",
    type=click.IntRange(1, 100_000),
    default=None,
    help="With --pipeline: inputs in the folder (default 200; 24 with --quick); with "
    "--explain: inputs per task (default 8; 3 with --quick).",
)
@click.option(
    "--rounds",
    type=click.IntRange(1, 50),
    default=None,
    help="With --pipeline: measured rounds of each (default 3; 2 with --quick).",
)
@click.option(
    "--memory",
    is_flag=True,
    help="With --pipeline: peak RSS of `vlm run` over 10, 100 and 1000 inputs (each in a fresh "
    "process; 10 and 100 with --quick) instead of the speed table.",
)
def bench(suites: tuple[str, ...], device: str, quick: bool, json_path: Path | None,
          print_json: bool, compile_mode: str | None, pipeline: bool, explain: bool,
          methods: tuple[str, ...], tasks: tuple[str, ...], count: int | None,
          rounds: int | None, memory: bool) -> None:  # fmt: skip
    """Benchmark the engines against raw timm / torch doing the same work (default: all), or
    with --pipeline each task's files → results against its model alone, or with --explain
    each task's explainers."""

    if explain:
        _explain(tasks, methods, device, quick, count, json_path, print_json)
        return
    if pipeline:
        _pipeline(tasks, device, quick, count, rounds, json_path, print_json, memory)
        return
    from vlm_core.bench.suite import SUITES, run_suites

    names = list(SUITES) if not suites or "all" in suites else list(dict.fromkeys(suites))
    rows = run_suites(names, device=device, quick=quick, compile_mode=compile_mode)
    if json_path is not None:
        _write_rows(json_path, rows)
    if print_json:
        emit_json(rows)
        return
    shown = [c for c in COLUMNS if any(c in r for r in rows)]
    table("vlm bench", shown, [[r.get(c, "") for c in shown] for r in rows])
    for row in rows:
        if "error" in row or "skipped" in row:
            click.echo(f"{row['suite']}: {row.get('error') or row.get('skipped')}")


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """The table's rows as JSON at ``path`` (--json), its folder made if needed."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2, default=str))


PIPELINE_COLUMNS = ("task", "inputs", "batch", "device", "pipeline_img_s_cpu", "model_img_s_cpu",
                    "ratio_cpu", "ratio_wall", "read", "run", "export", "sync")  # fmt: skip


def _pipeline(tasks: tuple[str, ...], device: str, quick: bool, count: int | None,
              rounds: int | None, json_path: Path | None, print_json: bool,
              memory: bool) -> None:  # fmt: skip

    from vlm_core.bench.pipeline import bench_pipelines, pipeline_tasks
    from vlm_core.devices import resolve_device
    from vlm_core.errors import UsageError

    known = pipeline_tasks()
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise UsageError(f"no pipeline benchmark for task '{unknown[0]}' (tasks with one: "
                         f"{', '.join(known) or 'none installed'})")  # fmt: skip
    if memory:
        from vlm_core.bench.pipeline import memory_growth

        sizes = (10, 100) if quick else (10, 100, 1000)
        rows = [memory_growth(t, sizes=sizes, device=resolve_device(device))
                for t in list(tasks) or known]  # fmt: skip
        if json_path is not None:
            _write_rows(json_path, rows)
        emit_json(rows)
        return
    rows = bench_pipelines(list(tasks) or known, count=count or (24 if quick else 200),
                           rounds=rounds or (2 if quick else 3),
                           device=resolve_device(device))  # fmt: skip
    if json_path is not None:
        _write_rows(json_path, rows)
    if print_json:
        emit_json(rows)
        return
    cells = []
    for row in rows:
        stages = row.get("stages_ms_per_input", {})
        flat = {**row, **{k.removesuffix("_ms"): v for k, v in stages.items()}}
        cells.append([flat.get(c, "") for c in PIPELINE_COLUMNS])
    table("vlm bench --pipeline (stages: wall ms per input)", list(PIPELINE_COLUMNS), cells)
    for row in rows:
        if "error" in row or "skipped" in row:
            click.echo(f"{row['task']}: {row.get('error') or row.get('skipped')}")


EXPLAIN_COLUMNS = ("task", "method", "inputs", "device", "s_per_input", "forward_passes",
                   "deletion_better", "deletion_auc", "deletion_auc_random",
                   "insertion_better")  # fmt: skip


def _explain(tasks: tuple[str, ...], methods: tuple[str, ...], device: str, quick: bool,
             count: int | None, json_path: Path | None, print_json: bool) -> None:  # fmt: skip

    from vlm_core.bench.explain import bench_explains, explain_tasks
    from vlm_core.devices import resolve_device
    from vlm_core.errors import UsageError
    from vlm_core.explain.target import METHODS

    known = explain_tasks()
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise UsageError(f"no explain benchmark for task '{unknown[0]}' (tasks with one: "
                         f"{', '.join(known) or 'none installed'})")  # fmt: skip
    strange = [m for m in methods if m not in METHODS]
    if strange:
        raise UsageError(f"unknown explainer '{strange[0]}'; choose from {', '.join(METHODS)}")
    rows = bench_explains(list(tasks) or known, methods=list(methods) or None,
                          count=count or (3 if quick else 8),
                          device=resolve_device(device))  # fmt: skip
    if json_path is not None:
        _write_rows(json_path, rows)
    if print_json:
        emit_json(rows)
        return

    def cell(value: object) -> object:
        if isinstance(value, dict) and "median" in value:
            return f"{value['median']:.3g} [{value['min']:.3g}-{value['max']:.3g}]"
        return value

    cells = [[cell(r.get(c, "")) for c in EXPLAIN_COLUMNS] for r in rows]
    table("vlm bench --explain (s per input: the attribution alone)", list(EXPLAIN_COLUMNS), cells)
    for row in rows:
        if "error" in row or "skipped" in row:
            click.echo(f"{row['task']} {row.get('method', '')}: "
                       f"{row.get('error') or row.get('skipped')}")  # fmt: skip
