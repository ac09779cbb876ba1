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


def _series(records: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    return [
        (r["step"], float(r[key]))
        for r in records
        if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
    ]


def curve_panels(records: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """Which logged values share an axis: ``(title, keys)`` per panel.

    Every loss (a key with ``loss`` in it: ``train_loss``, ``val_loss``, a GAN's
    ``train_loss_d``...) on one panel; the validation values that stay within [0, 1] (accuracy,
    Dice, mAP, KID) on a second with that fixed range; every other validation value (FID in the
    hundreds, PSNR in decibels) on a panel of its own, so no scale squashes another."""
    keys = sorted({k for r in records for k in r if _series(records, k)})
    losses = [k for k in keys if "loss" in k and (k.startswith(("train_", "val_")))]
    metrics = [k for k in keys if k.startswith("val_") and k not in losses]
    bounded = [k for k in metrics if all(0.0 <= v <= 1.0 for _, v in _series(records, k))]
    panels = [("loss", losses)] if losses else []
    if bounded:
        panels.append(("validation (0-1)", bounded))
    panels += [(k, [k]) for k in metrics if k not in bounded]
    return panels


def curves_figure(records: list[dict[str, Any]]) -> Any:
    """A matplotlib ``Figure`` of the logged values against the step (panels as
    :func:`curve_panels` groups them), or None when nothing was logged."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = curve_panels(records)
    if not panels:
        return None
    columns = min(len(panels), 3)
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(5.0 * columns, 3.6 * rows), dpi=100)
    FigureCanvasAgg(fig)
    for index, (title, keys) in enumerate(panels):
        ax = fig.add_subplot(rows, columns, index + 1)
        values: list[float] = []
        for key in keys:
            points = _series(records, key)
            values += [v for _, v in points]
            # validation is sparse: markers show each measurement
            ax.plot(*zip(*points, strict=True), marker="o" if key.startswith("val_") else None,
                    markersize=3, label=key)  # fmt: skip
        if title == "validation (0-1)":
            ax.set_ylim(-0.02, 1.02)
        elif values and min(values) > 0 and max(values) / min(values) > 100:
            ax.set_yscale("log")  # a loss falling by orders of magnitude
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_curves(records: list[dict[str, Any]]) -> bytes | None:
    """``curves.png``: :func:`curves_figure` as PNG bytes, or None when nothing was logged."""
    fig = curves_figure(records)
    if fig is None:
        return None
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
