"""Measure a task's familiarity check: flagged rates, AUROC, and what it costs.

- :func:`familiarity_table` runs a task (through :func:`vlm_core.runner.run_task`, as a user's
  run does) on held-out in-domain inputs and on inputs of each "real" source, and reports per
  source how many were flagged and the AUROC of the score (in-domain vs that source), with the
  sample sizes.
- :func:`tap_overhead` times a network's forward pass bare and with the familiarity check
  (feature tap + scoring), alternating, and reports the ratio of the medians.

Used by the plugins' ``benchmarks/familiarity.py``; torch is imported when they run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def task_scores(
    task: str,
    inputs: Sequence[Path | str],
    *,
    params: Mapping[str, Any] | None = None,
    device: str = "cpu",
    batch_size: int = 1,
) -> list[dict[str, Any] | None]:
    """The ``ood`` of each input's result (None where the result has none), from one run."""
    from vlm_core.runner import RunRequest, run_task
    from vlm_core.runstore import RunStore

    with tempfile.TemporaryDirectory(prefix="vlm-familiarity-") as tmp:
        store = RunStore(Path(tmp) / "runs.sqlite")
        request = RunRequest(task, [str(p) for p in inputs], dict(params or {}), device=device,
                             batch_size=batch_size)  # fmt: skip
        outcome = run_task(request, store=store, keep_results=False)
    if outcome.failures:
        raise RuntimeError(f"{len(outcome.failures)} inputs failed: {outcome.failures[0].error}")
    return [summary["ood"] for summary in outcome.summaries]


def auroc(in_domain: Sequence[float], other: Sequence[float]) -> float:
    """The area under the ROC curve of the score as a detector of ``other`` against
    ``in_domain`` (torchmetrics; the probability that an input of ``other`` scores higher than
    an in-domain one, ties counting 1/2)."""
    import torch
    from torchmetrics.functional.classification import binary_auroc

    if not len(in_domain) or not len(other):
        return float("nan")
    scores = torch.tensor([*in_domain, *other], dtype=torch.float64)
    labels = torch.tensor([0] * len(in_domain) + [1] * len(other))
    return float(binary_auroc(scores, labels))


def familiarity_table(
    task: str,
    in_domain: Sequence[Path | str],
    real: Mapping[str, Sequence[Path | str]],
    *,
    params: Mapping[str, Any] | None = None,
    device: str = "cpu",
    batch_size: int = 1,
) -> dict[str, Any]:
    """Flagged rate and score AUROC of ``task`` on held-out ``in_domain`` inputs and on each
    source of ``real`` inputs (``{source name: paths}``), with their sample sizes, run
    ``batch_size`` inputs per task call."""

    def scored(paths: Sequence[Path | str]) -> tuple[list[float], list[bool]]:
        oods = task_scores(task, paths, params=params, device=device, batch_size=batch_size)
        missing = sum(o is None for o in oods)
        if missing:
            raise RuntimeError(f"{task}: {missing} of {len(oods)} results carry no ood verdict")
        return [float(o["score"]) for o in oods if o], [bool(o["flagged"]) for o in oods if o]

    base_scores, base_flags = scored(in_domain)
    table: dict[str, Any] = {
        "task": task,
        "in_domain": {"n": len(base_flags), "flagged_rate": float(np.mean(base_flags))},
        "real": {},
    }
    every: list[float] = []
    all_flags: list[bool] = []
    for source, paths in real.items():
        scores, flags = scored(paths)
        every += scores
        all_flags += flags
        table["real"][source] = {
            "n": len(flags),
            "flagged_rate": float(np.mean(flags)),
            "auroc": auroc(base_scores, scores),
        }
    table["real_all"] = {"n": len(all_flags), "flagged_rate": float(np.mean(all_flags)),
                         "auroc": auroc(base_scores, every)}  # fmt: skip
    return table


def tap_overhead(
    plain: Callable[[], Any],
    checked: Callable[[], Any],
    *,
    rounds: int = 15,
    warmup: int = 2,
    device: str = "cpu",
) -> dict[str, float]:
    """Median seconds of ``plain`` (the network's forward pass) and ``checked`` (the same with
    the familiarity check), timed alternately on ``device`` (CUDA events there), and the
    overhead ``checked / plain - 1``."""
    import torch

    from vlm_core.bench.timing import interleave

    timed = interleave({"plain": plain, "checked": checked}, torch.device(device), warmup=warmup,
                       rounds=rounds)  # fmt: skip
    p, c = timed.median("plain"), timed.median("checked")
    return {"plain_s": p, "checked_s": c, "overhead": c / p - 1.0, "rounds": rounds}


def backbone_overhead(
    model_name: str = "resnet50",
    *,
    device: str = "cuda",
    batch: int = 32,
    size: int = 224,
    layers: Sequence[str] = ("layer3", "layer4"),
    rounds: int = 15,
) -> dict[str, Any]:
    """The familiarity check's cost on a timm backbone (random weights): its forward pass bare
    vs with a :class:`~vlm_core.familiarity.FeatureTap` on ``layers`` (mean and spread) and a
    k-NN verdict against a full bank (the most a fitted model holds). bf16 autocast on CUDA."""
    import contextlib

    import timm
    import torch

    from vlm_core.familiarity import FeatureTap, fit_familiarity
    from vlm_core.familiarity.model import MAX_BANK

    dev = torch.device(device)
    net = timm.create_model(model_name, pretrained=False).eval().to(dev)
    x = torch.randn(batch, 3, size, size, device=dev)

    def cast() -> Any:
        if dev.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def features() -> torch.Tensor:
        with torch.inference_mode(), cast(), FeatureTap(net, layers, stats=("mean", "std")) as tap:
            net(x)
        return tap.features()

    bank = features().numpy()
    rng = np.random.default_rng(0)
    rows = bank[rng.integers(0, len(bank), MAX_BANK)] * rng.uniform(0.9, 1.1, (MAX_BANK, 1))
    familiarity = fit_familiarity(rows.astype(np.float32))

    def plain() -> None:
        with torch.inference_mode(), cast():
            net(x)

    def checked() -> None:
        familiarity.judge(features())

    found = tap_overhead(plain, checked, rounds=rounds, device=device)
    return {"model": model_name, "batch": batch, "size": size, "layers": list(layers),
            "bank": MAX_BANK, "dims": familiarity.dims, **found}  # fmt: skip


def print_table(table: Mapping[str, Any]) -> None:
    """The table as lines a closing note can quote."""
    base = table["in_domain"]
    print(f"{table['task']}: held-out in-domain flagged {100 * base['flagged_rate']:.1f}% "
          f"(n={base['n']})")  # fmt: skip
    for source, row in {**table["real"], "ALL real": table["real_all"]}.items():
        print(f"  {source}: flagged {100 * row['flagged_rate']:.1f}% (n={row['n']}), "
              f"AUROC {row['auroc']:.3f}")  # fmt: skip


def photographs() -> list[Path]:
    """The photographs and scientific images scikit-image ships (PNG/JPEG), when installed."""
    try:
        import skimage
    except ImportError:
        return []
    folder = Path(skimage.__file__).parent / "data"
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def dicom_files() -> list[Path]:
    """The DICOM test files pydicom ships, when installed (readable or not: callers filter)."""
    try:
        import pydicom
    except ImportError:
        return []
    folder = Path(pydicom.__file__).parent / "data" / "test_files"
    return sorted(folder.glob("*.dcm"))


def nifti_files() -> list[Path]:
    """The NIfTI test volumes nibabel ships, when installed."""
    try:
        import nibabel
    except ImportError:
        return []
    folder = Path(nibabel.__file__).parent / "tests" / "data"
    return sorted([*folder.glob("*.nii"), *folder.glob("*.nii.gz")])
