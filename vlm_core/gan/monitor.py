"""Trainer callbacks that watch a GAN while it trains: sample grids and quality metrics.

Both react to the trainer's ``checkpoint`` events (every ``save_every`` steps, at validation
and at the end) and only on the main process; they read the GAN object the trainer is
training in place.

    grid = SampleGrid(gan, out)                          # OUT/samples/step-000100.png ...
    quality = QualityTracker(gan, real, features, out)   # OUT/samples/quality.jsonl
    Trainer(setup, config, out, callbacks=[grid, quality]).fit()
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch

from vlm_core.gan.metrics import (
    FeatureNetwork,
    Images,
    QualityReport,
    extract_features,
    quality_report,
)
from vlm_core.gan.models import GAN
from vlm_core.gan.sampling import class_labels, generate, to_unit, truncated_latents

log = logging.getLogger(__name__)


def _is_main() -> bool:
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def save_grid(images: torch.Tensor, path: Path, *, nrow: int | None = None) -> Path:
    """Write (N, C, H, W) images in [0, 1] as one PNG grid (``nrow`` per row, default square)."""
    from PIL import Image
    from torchvision.utils import make_grid

    n = len(images)
    per_row = nrow or max(1, math.ceil(math.sqrt(n)))
    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=per_row, pad_value=1.0)
    array = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        array = array[:, :, 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(array).save(tmp, format="PNG")
    tmp.replace(path)
    return path


class SampleGrid:
    """A trainer callback writing a grid of the sampling generator's images at fixed latents
    to ``OUT/samples/step-NNNNNN.png`` at each checkpoint, so that grids of different steps
    show the same latents (and, for a conditional GAN, classes in row order).

    Args:
        model: the GAN being trained.
        out: the run's output folder.
        n: images per grid (default 64).
        seed: seeds the fixed latents.
        truncation: latent truncation threshold (None: off).
        events: the event kinds that write a grid (default ``checkpoint``).
    """

    def __init__(
        self,
        model: GAN,
        out: Path,
        *,
        n: int = 64,
        seed: int = 0,
        truncation: float | None = None,
        events: tuple[str, ...] = ("checkpoint",),
    ) -> None:
        self.model, self.folder, self.events = model, Path(out) / "samples", events
        self.z = truncated_latents(n, model.latent_dim, truncation=truncation, seed=seed)
        classes = (
            torch.arange(n) * model.num_classes // n if model.num_classes else None
        )  # one run of rows per class
        self.y = class_labels(model, n, classes)
        self.written: list[Path] = []
        self._last_step = -1

    def __call__(self, event: Any) -> None:
        if event.kind not in self.events or event.step == self._last_step or not _is_main():
            return
        self._last_step = event.step
        images = to_unit(generate(self.model, self.z, self.y))
        self.written.append(save_grid(images, self.folder / f"step-{event.step:06d}.png"))


class QualityTracker:
    """A trainer callback measuring FID and KID of the sampling generator against real
    images at each checkpoint; each report is appended to ``OUT/samples/quality.jsonl``
    (with the step and the feature network's name) and kept in ``history``.

    Args:
        model: the GAN being trained.
        real: real images in [0, 1] (features are extracted once, at construction).
        network: the feature network.
        out: the run's output folder (None: keep the reports in memory only).
        n: generated images per measurement (default: as many as the real images).
        seed: seeds the latents (the same at every measurement).
        kid_subsets, kid_subset_size: KID's subsets.
        events: the event kinds that measure (default ``checkpoint``).
    """

    def __init__(
        self,
        model: GAN,
        real: Images,
        network: FeatureNetwork,
        out: Path | None = None,
        *,
        n: int | None = None,
        seed: int = 0,
        batch_size: int = 256,
        kid_subsets: int = 50,
        kid_subset_size: int = 1000,
        events: tuple[str, ...] = ("checkpoint",),
    ) -> None:
        self.model, self.network, self.events = model, network, events
        self.real_features = extract_features(network, real, batch_size=batch_size)
        count = n or len(self.real_features)
        self.z = truncated_latents(count, model.latent_dim, seed=seed)
        self.y = class_labels(model, count, None, seed=seed)
        self.path = Path(out) / "samples" / "quality.jsonl" if out is not None else None
        self.batch_size, self.kid_subsets, self.kid_subset_size = (
            batch_size, kid_subsets, kid_subset_size,
        )  # fmt: skip
        self.history: list[tuple[int, QualityReport]] = []
        self._last_step = -1

    def measure(self) -> QualityReport:
        """FID and KID of the model as it is now."""
        fake = to_unit(generate(self.model, self.z, self.y, batch_size=self.batch_size))
        return quality_report(
            self.real_features,
            fake,
            self.network,
            batch_size=self.batch_size,
            kid_subsets=self.kid_subsets,
            kid_subset_size=self.kid_subset_size,
        )

    def __call__(self, event: Any) -> None:
        if event.kind not in self.events or event.step == self._last_step or not _is_main():
            return
        self._last_step = event.step
        report = self.measure()
        self.history.append((event.step, report))
        log.info("step %d: %s", event.step, report)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": event.step, **report.to_dict()}) + "\n")
