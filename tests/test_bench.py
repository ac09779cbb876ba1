"""Benchmark plumbing (the figures themselves come from `vlm bench`, never from tests)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from vlm_core.bench import suite
from vlm_core.bench.backbones import bench_backbone
from vlm_core.bench.executor import bench_executor, make_jpegs
from vlm_core.cli.bench_cmd import bench


def test_backbone_row_compares_engine_and_raw_on_the_same_batch():
    row = bench_backbone("test_resnet", device="cpu", batch_size=2, rounds=2, warmup=1)
    assert row["model"] == "test_resnet" and row["device"] == "cpu" and row["dtype"] == "float32"
    assert row["engine_img_s"] > 0 and row["raw_img_s"] > 0
    # the rates are rounded to 0.1 img/s, the ratio is not: allow what the rounding moves it by
    rounding = 0.05 * (1 / row["engine_img_s"] + 1 / row["raw_img_s"])
    assert abs(row["ratio"] - row["engine_img_s"] / row["raw_img_s"]) < 0.01 + rounding
    assert row["gflops_per_img"] > 0


def test_executor_row_counts_every_file(tmp_path):
    make_jpegs(tmp_path / "f", 6, size=(48, 64))
    row = bench_executor("test_resnet", tmp_path / "f", device="cpu", batch_size=2, workers=0,
                         rounds=2)  # fmt: skip
    assert row["files"] == 6 and row["errors"] == 0 and row["complete"]
    assert row["end_to_end_img_s"] > 0 and row["model_only_img_s"] > 0
    assert row["end_to_end_spread"]["n"] == row["model_only_spread"]["n"] == 2
    assert row["rss_mb_end"] >= row["rss_mb_first_quarter"] > 0
    for detail in row["round_details"]:  # the stages are parts of each round's one timed region
        assert sum(detail["stages_s"].values()) == pytest.approx(detail["end_to_end_s"], abs=2e-3)
        assert detail["stages_s"]["model"] > 0
    assert set(row["stages_ms_per_img"]) == {"wait", "prepare", "model", "other"}


def test_a_failing_suite_does_not_lose_the_others(monkeypatch, tmp_path):
    def boom(device, quick):
        raise RuntimeError("no such kernel")

    monkeypatch.setitem(suite.RUNNERS, "backbone", boom)
    monkeypatch.setitem(suite.RUNNERS, "cache", lambda d, q: [{"bench": "model_cache", "hits": 1}])
    out = tmp_path / "rows.json"
    result = CliRunner().invoke(bench, ["backbone", "cache", "--device", "cpu", "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert rows[0]["error"] == "RuntimeError: no such kernel" and rows[0]["suite"] == "backbone"
    assert rows[1]["hits"] == 1 and rows[1]["suite"] == "cache"
    assert "backbone: RuntimeError: no such kernel" in result.output


def test_attention_rows_time_the_same_work_as_torch():
    from vlm_core.bench.attention import bench_attention

    rows = bench_attention(device="cpu", batch=1, length=16, dim=32, heads=4, rounds=2)
    assert [r["model"].rsplit("=", 1)[1] for r in rows] == ["none", "causal", "padding"]
    assert all(r["engine_ms"] > 0 and r["raw_ms"] > 0 and r["ratio"] > 0 for r in rows)


def test_training_row_compares_the_trainer_with_a_raw_loop():
    from vlm_core.bench.training import bench_training

    row = bench_training("resnet10t", device="cpu", batch_size=4, image_size=32, steps=2, warmup=1,
                         rounds=2)  # fmt: skip
    assert row["bench"] == "training" and row["precision"] == "fp32"
    assert row["raw_samples_per_s"] > 0 and row["engine_samples_per_s"] > 0
    # medians of every round (not the best of a few), with their spread
    assert row["rounds"] == 2 and row["raw_spread"]["n"] == row["engine_spread"]["n"] == 2
    assert row["raw_samples_per_s"] == round(row["raw_spread"]["median"], 1)
    assert row["engine_samples_per_s"] == round(row["engine_spread"]["median"], 1)
    assert row["raw_spread"]["min"] <= row["raw_spread"]["median"] <= row["raw_spread"]["max"]
    expected = row["engine_spread"]["median"] / row["raw_spread"]["median"]
    assert abs(row["ratio"] - expected) <= 0.01 * expected  # the figures are rounded


def test_gan_row_compares_the_engine_step_with_a_plain_dcgan_loop():
    from vlm_core.bench.gan import bench_gan_step

    row = bench_gan_step(device="cpu", image_size=16, batch_size=4, width=8, latent_dim=8,
                         steps=2, warmup=1, rounds=1)  # fmt: skip
    assert row["bench"] == "gan_step" and row["dtype"] == "fp32" and row["image_size"] == 16
    raw, engine = row["raw_img_s"], row["engine_img_s"]
    assert raw > 0 and engine > 0
    expected = engine / raw  # of figures rounded to 0.01 img/s; the ratio to 0.001
    assert abs(row["ratio"] - expected) <= expected * (0.005 / raw + 0.005 / engine) + 5e-4
    assert row["runs"] == {"raw": [row["raw_img_s"]], "engine": [row["engine_img_s"]]}


def test_clip_rows_compare_the_engine_with_raw_open_clip_on_the_same_batch():
    from vlm_core.bench.clip import bench_clip
    from vlm_core.crossmodal import TEST_ARCH

    for texts, unit in ((False, "img"), (True, "texts")):
        row = bench_clip(TEST_ARCH, device="cpu", batch_size=4, rounds=2, warmup=1, texts=texts)
        assert row["bench"] == ("clip_text" if texts else "clip_image")
        assert row["model"] == TEST_ARCH and row["dtype"] == "float32" and row["batch"] == 4
        assert row[f"engine_{unit}_s"] > 0 and row[f"raw_{unit}_s"] > 0
        expected = row[f"engine_{unit}_s"] / row[f"raw_{unit}_s"]
        assert abs(row["ratio"] - expected) <= 0.01 * expected
    assert "clip" in suite.SUITES and "clip" in suite.RUNNERS
