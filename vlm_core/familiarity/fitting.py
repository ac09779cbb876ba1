"""Fit a checkpoint's familiarity model from its task's training setup.

``vlm train`` calls :func:`fit_checkpoint` at the end of training for the checkpoint the
output folder resolves to (its best), and ``vlm train --fit-ood-only`` for weights trained
elsewhere: the task's :attr:`~vlm_core.training.TrainSetup.features` turn in-domain items into
the pooled features the run path computes, the model of them is fitted on the training items
(:attr:`~vlm_core.training.TrainSetup.fit_data`, else ``train_data``; at most
:data:`MAX_FIT_ITEMS`) and calibrated on the validation split, and the file is written beside
the checkpoint's weights with its sha256 and a summary added to its ``model.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vlm_core.familiarity.model import FAMILIARITY_FILE, Familiarity, Method, fit_familiarity

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

    from vlm_core.training.setup import TrainSetup

log = logging.getLogger(__name__)

#: At most this many training items are run to fit a familiarity model (a seeded subset).
MAX_FIT_ITEMS = 2048
#: The share of in-domain inputs the threshold is set to flag.
TARGET_RATE = 0.025


def dataset_features(
    model: torch.nn.Module,
    setup: TrainSetup,
    data: Dataset[Any],
    *,
    device: torch.device,
    batch: int,
    seed: int,
    limit: int = MAX_FIT_ITEMS,
) -> np.ndarray:
    """(N, D): ``setup.features`` of (at most ``limit``, a seeded subset of) ``data``'s
    items, in eval mode without gradients."""
    import torch
    from torch.utils.data import DataLoader, Subset

    from vlm_core.training.loop import to_device
    from vlm_core.training.seeded_data import FAMILIARITY_STREAM, SeededSamples

    assert setup.features is not None
    n = len(data)  # type: ignore[arg-type]
    order = np.random.default_rng(seed).permutation(n)[:limit] if n > limit else np.arange(n)
    seeded = SeededSamples(data, seed=seed, stream=FAMILIARITY_STREAM)
    items = Subset(seeded, [int(i) for i in np.sort(order)])
    loader = DataLoader(items, batch_size=batch, shuffle=False, collate_fn=setup.collate)
    rows: list[np.ndarray] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for part in loader:
                feats = setup.features(model, to_device(part, device))
                rows.append(feats.detach().float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)


def fit_setup(
    model: torch.nn.Module,
    setup: TrainSetup,
    *,
    device: torch.device,
    batch: int,
    seed: int,
    method: Method = "knn",
    info: dict[str, Any] | None = None,
) -> Familiarity:
    """A familiarity model of ``model``'s features on the setup's in-domain items."""
    fit_items = setup.fit_data if setup.fit_data is not None else setup.train_data
    train = dataset_features(model, setup, fit_items, device=device, batch=batch, seed=seed)
    held = (
        dataset_features(model, setup, setup.val_data, device=device, batch=batch, seed=seed)
        if setup.val_data is not None and len(setup.val_data)  # type: ignore[arg-type]
        else None
    )
    return fit_familiarity(train, held, method=method, target_rate=TARGET_RATE, seed=seed,
                           info={"seed": seed, **(info or {})})  # fmt: skip


def attach(folder: Path, familiarity: Familiarity) -> Path:
    """Write ``familiarity`` beside the weights in checkpoint ``folder`` and record its sha256
    and summary in the folder's ``model.json`` (both written atomically)."""
    from vlm_core.weights.hashing import sha256_of
    from vlm_core.weights.layout import MODEL_FILE, update_sidecar

    path = familiarity.save(folder / FAMILIARITY_FILE)
    sha = sha256_of(path)

    def record(sidecar: dict[str, Any]) -> None:
        sidecar.setdefault("files", {})[FAMILIARITY_FILE] = sha
        sidecar["familiarity"] = familiarity.summary()

    update_sidecar(folder / MODEL_FILE, record)
    return path


def fit_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    setup: TrainSetup,
    *,
    device: torch.device,
    batch: int,
    seed: int,
    command: Sequence[str] | None = None,
) -> Familiarity | None:
    """Fit the familiarity model of checkpoint ``folder`` (whose weights ``model`` holds) and
    attach it; None, with a log line, when the task declares no features."""
    if setup.features is None:
        log.info("%s declares no features: no familiarity model fitted", folder)
        return None
    info = {"command": list(command) if command is not None else None}
    familiarity = fit_setup(model, setup, device=device, batch=batch, seed=seed, info=info,
                            method=setup.familiarity_method)  # fmt: skip
    attach(folder, familiarity)
    log.info(
        "familiarity fitted on %d items, calibrated on %d: threshold %.4g flags %.1f%% of them",
        familiarity.info["fit_items"], familiarity.info["calibration_items"],
        familiarity.threshold, 100 * familiarity.info["calibration_flagged_rate"],
    )  # fmt: skip
    return familiarity
