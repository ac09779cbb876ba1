"""The final report: ``report.json`` and ``curves.png`` (loss and metric curves)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from vlm_core.fileio import atomic_write_bytes, atomic_write_text
from vlm_core.training.loop import TrainError
from vlm_core.training.metrics_log import read_log

REPORT_FILE = "report.json"
CURVES_FILE = "curves.png"


def plot_curves(records: list[dict[str, Any]]) -> bytes | None:
    """A PNG with the training loss and every validation value against the step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train = [(r["step"], r["train_loss"]) for r in records if r.get("train_loss") is not None]
    val_keys = sorted(
        {k for r in records for k, v in r.items() if k.startswith("val_") and v is not None}
    )
    if not train and not val_keys:
        return None
    panels = 1 + bool(val_keys)
    fig = Figure(figsize=(5.5 * panels, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, panels, 1)
    if train:
        ax.plot(*zip(*train, strict=True), label="train_loss")
    val_loss = [(r["step"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
    if val_loss:
        ax.plot(*zip(*val_loss, strict=True), marker="o", label="val_loss")
    ax.set_xlabel("step")
    ax.set_title("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    others = [k for k in val_keys if k != "val_loss"]
    if others:
        ax2 = fig.add_subplot(1, panels, 2)
        for key in others:
            points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
            if points:
                ax2.plot(*zip(*points, strict=True), marker="o", label=key)
        ax2.set_xlabel("step")
        ax2.set_title("validation")
        ax2.grid(alpha=0.3)
        ax2.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_report(out: Path, report: dict[str, Any]) -> None:
    """Write ``report.json`` and, when anything was logged, ``curves.png``."""
    png = plot_curves(read_log(out))
    try:
        if png is not None:
            atomic_write_bytes(out / CURVES_FILE, png)
            report = {**report, "curves": CURVES_FILE}
        atomic_write_text(out / REPORT_FILE, json.dumps(report, indent=2, default=str) + "\n")
    except OSError as exc:
        raise TrainError(
            f"cannot write the report in {out}: {exc.strerror}; the checkpoints are intact"
        ) from None
