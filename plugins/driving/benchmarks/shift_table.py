"""The README's table of `driving.detect` under shift, from `vlm eval --shift ... --json`.

    OMP_NUM_THREADS=1 .venv/bin/vlm eval driving.detect --shift all --json > shifts.json
    .venv/bin/python plugins/driving/benchmarks/shift_table.py shifts.json

Prints one markdown row per shift: N, mAP@.5, mAP@[.5:.95], the mAP of the boxes a run at its
default score threshold reports, and AP@.5 of every class; then the issue's bars, met or not.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vlm_driving.classes import CLASSES
from vlm_driving.evaluation import metric_name

#: The acceptance bars of issue 21 on mAP@.5 under shift.
BARS_50 = {"night": 0.85, "fog": 0.85, "dense": 0.80}
#: ... and in-domain: every class AP@.5, and mAP@[.5:.95].
BAR_CLASS_50, BAR_MAP = 0.60, 0.55


def table(rows: list[dict]) -> str:  # type: ignore[type-arg]
    heads = ["shift", "N", "mAP@.5", "mAP", "mAP@.5 at run", *(c for c in CLASSES)]
    lines = ["| " + " | ".join(heads) + " |", "|" + " --- |" * len(heads)]
    for row in rows:
        m = row["metrics"]
        cells = [row["shift"], str(row["count"]), f"{m['val_map_50']:.3f}", f"{m['val_map']:.3f}",
                 f"{m.get('val_map_50_at_run', float('nan')):.3f}"]  # fmt: skip
        cells += [f"{m.get('val_' + metric_name(c, 'ap50'), float('nan')):.3f}" for c in CLASSES]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bars(rows: list[dict]) -> list[str]:  # type: ignore[type-arg]
    by = {row["shift"]: row["metrics"] for row in rows}
    out = []
    for shift, bar in BARS_50.items():
        if shift in by:
            got = by[shift]["val_map_50"]
            out.append(f"{shift} mAP@.5 {got:.3f} >= {bar}: {'met' if got >= bar else 'NOT met'}")
    if "none" in by:
        m = by["none"]
        out.append(f"in-domain mAP {m['val_map']:.3f} >= {BAR_MAP}: "
                   f"{'met' if m['val_map'] >= BAR_MAP else 'NOT met'}")  # fmt: skip
        for c in CLASSES:
            got = m.get("val_" + metric_name(c, "ap50"), float("nan"))
            if not got >= BAR_CLASS_50:
                out.append(f"in-domain {c} AP@.5 {got:.3f} >= {BAR_CLASS_50}: NOT met")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="the JSON `vlm eval --shift --json` wrote")
    args = parser.parse_args()
    rows = json.loads(args.results.read_text())
    print(table(rows))
    print()
    print("\n".join(bars(rows)))


if __name__ == "__main__":
    main()
