"""The metrics log: one JSON line per logged step (``metrics.jsonl``), and TensorBoard when it
is installed. Only the main process writes."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from pathlib import Path
from typing import Any

from vlm_core.fileio import atomic_write_text
from vlm_core.training.loop import TrainError

log = logging.getLogger(__name__)

LOG_FILE = "metrics.jsonl"


def read_log(out: Path) -> list[dict[str, Any]]:
    """Every record of ``OUT/metrics.jsonl``; a torn last line (a killed process) is ignored."""
    path = out / LOG_FILE
    records: list[dict[str, Any]] = []
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


class MetricsLog:
    """Appends records to ``OUT/metrics.jsonl`` (and TensorBoard scalars)."""

    def __init__(self, out: Path, *, resume_step: int, tensorboard: bool) -> None:
        self.path = out / LOG_FILE
        # records written after the checkpoint being resumed belong to a run that was lost
        kept = [r for r in read_log(out) if int(r.get("step", 0)) <= resume_step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._tb: Any = None
        if tensorboard and importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step + 1)

    def write(self, record: dict[str, Any]) -> None:
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in record.items()
        }
        try:
            self._fh.write(json.dumps(clean) + "\n")
            self._fh.flush()
        except OSError as exc:
            raise TrainError(f"cannot write the metrics log {self.path}: {exc.strerror}") from None
        if self._tb is not None:
            step = int(record["step"])
            for key, value in record.items():
                if key not in ("step", "epoch", "time") and isinstance(value, (int, float)):
                    self._tb.add_scalar(key.replace("_", "/", 1), value, step)

    def close(self) -> None:
        self._fh.close()
        if self._tb is not None:
            self._tb.close()
