"""`vlm bench`: the engines against the raw libraries, in the same process."""

from __future__ import annotations

from pathlib import Path

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
def bench(suites: tuple[str, ...], device: str, quick: bool, json_path: Path | None,
          print_json: bool, compile_mode: str | None) -> None:  # fmt: skip
    """Benchmark the engines against raw timm / torch doing the same work (default: all)."""
    import json

    from vlm_core.bench.suite import SUITES, run_suites

    names = list(SUITES) if not suites or "all" in suites else list(dict.fromkeys(suites))
    rows = run_suites(names, device=device, quick=quick, compile_mode=compile_mode)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(rows, indent=2, default=str))
    if print_json:
        emit_json(rows)
        return
    shown = [c for c in COLUMNS if any(c in r for r in rows)]
    table("vlm bench", shown, [[r.get(c, "") for c in shown] for r in rows])
    for row in rows:
        if "error" in row or "skipped" in row:
            click.echo(f"{row['suite']}: {row.get('error') or row.get('skipped')}")
