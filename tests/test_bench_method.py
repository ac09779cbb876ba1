"""The benchmarks' method: the same model on both sides, medians of all alternating rounds, and
per-stage figures taken from the measured run itself (the figures come from the benchmarks)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))


@pytest.mark.slow
def test_the_driving_bench_compares_the_plugin_with_the_same_network_and_head(tmp_path: Path):
    """The raw side is torchvision's builder with the plugin's classes and input size, loaded
    with the checkpoint the plugin loads, cut the same way (not a 91-class COCO head)."""
    import driving_detect
    from torchvision.models import detection
    from vlm_driving.classes import CLASSES
    from vlm_driving.detector import load_detector

    name = "fasterrcnn_mobilenet_v3_large_fpn"
    torch.manual_seed(0)
    coco = getattr(detection, name)(weights=None, weights_backbone=None, num_classes=91)
    path = tmp_path / "coco.pth"
    torch.save(coco.state_dict(), path)
    plugin = load_detector(coco_model=name, coco_weights=str(path), device="cpu")
    raw = driving_detect.raw_detector(name, coco.state_dict(), plugin.min_size, plugin.max_size)
    assert driving_detect.class_rows(coco) == 91
    assert driving_detect.class_rows(raw) == driving_detect.class_rows(plugin.module)
    assert driving_detect.class_rows(raw) == len(CLASSES) + 1
    assert driving_detect.same_weights(raw, plugin.module)
    assert not driving_detect.same_weights(coco, plugin.module)
    settings = driving_detect.inference_settings(raw)
    assert settings == driving_detect.inference_settings(plugin.module)
    assert settings["min_size"] == (plugin.min_size,) and "rpn_pre_nms_top_n" in settings
    raw.rpn._pre_nms_top_n["testing"] = 150  # as torchvision's 320 variant of the network
    assert driving_detect.inference_settings(raw) != settings


def test_the_gan_bench_reports_medians_of_all_alternating_rounds(monkeypatch):
    """Not the best of a few runs: scripted throughputs come back as their medians."""
    from vlm_core.bench import gan

    made: dict[str, list[float]] = {"raw": [100.0, 300.0, 200.0], "engine": [90.0, 500.0, 110.0]}
    order: list[str] = []

    def scripted(label: str) -> Any:
        def run(*args: Any, **kwargs: Any) -> float:
            order.append(label)
            return made[label][sum(1 for o in order if o == label) - 1]

        return run

    monkeypatch.setattr(gan, "_raw_loop", scripted("raw"))
    monkeypatch.setattr(gan, "_engine", scripted("engine"))
    row = gan.bench_gan_step(device="cpu", image_size=16, batch_size=2, width=8, latent_dim=8,
                             steps=1, warmup=1, rounds=3)  # fmt: skip
    assert order == ["raw", "engine", "engine", "raw", "raw", "engine"]  # the order swaps
    assert row["order"] == order and row["rounds"] == 3
    assert row["runs"] == made
    assert row["raw_img_s"] == 200.0 and row["engine_img_s"] == 110.0  # best-of: 300 and 500
    assert row["ratio"] == 0.55
    assert row["paired_ratio"] == round(sorted([0.9, 500 / 300, 0.55])[1], 3)
    assert row["raw_spread"] == {"median": 200.0, "q1": 150.0, "q3": 250.0, "min": 100.0,
                                 "max": 300.0, "n": 3}  # fmt: skip
    with pytest.raises(ValueError, match="rounds"):
        gan.bench_gan_step(device="cpu", image_size=16, batch_size=2, width=8, latent_dim=8,
                           rounds=0)  # fmt: skip


def test_executor_stages_are_taken_from_the_measured_run(tmp_path):
    """The stage clock times the executor's own steps in the run it measures: a model that
    sleeps 50 ms per batch shows as at least that much model time, inside the end-to-end
    time."""
    import time

    from vlm_core.bench.executor import StageClock, make_jpegs
    from vlm_core.runtime import ImagePipeline, StreamingExecutor, policy_for

    files = make_jpegs(tmp_path / "f", 5, size=(24, 32))

    def model(x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.05)
        return x.mean((2, 3))

    pipeline = ImagePipeline(size=(16, 16), resize=16)
    executor = StreamingExecutor(model, pipeline, policy_for("cpu"), batch_size=2, num_workers=0)
    clock = StageClock(executor)
    t0 = time.perf_counter()
    results = list(executor.map(files))
    seconds = time.perf_counter() - t0
    stages = clock.reset()
    assert len(results) == 5 and all(r.error is None for r in results)
    assert all(r.output.shape == (3,) for r in results)  # the wrapped steps still do their work
    assert stages["model"] >= 3 * 0.05  # three batches: 2 + 2 + 1 files
    assert stages["wait"] > 0 and stages["prepare"] > 0
    assert sum(stages.values()) <= seconds
    assert clock.reset() == {"wait": 0.0, "prepare": 0.0, "model": 0.0}
