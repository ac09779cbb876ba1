"""The trainer across processes: SIGKILL at random moments, and `torchrun` with two processes."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import VLM, Vlm

from vlm_core.training import find_checkpoint
from vlm_core.training.checkpoint import read_pointer
from vlm_core.training.metrics_log import read_log


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory: pytest.TempPathFactory, fixture_site: Path) -> Path:
    sys.path.insert(0, str(fixture_site))
    from vlm_fixture_good.shapes import make_shapes

    return make_shapes(tmp_path_factory.mktemp("shapes"), per_class=40, seed=1)


def _wait(predicate, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the training process")
        time.sleep(0.002)


# slow (80 s of process start-ups): the default tier keeps one real SIGKILL and resume
# (test_training_resume.py) and a save failing half-way (test_training.py)
@pytest.mark.slow
def test_sigkill_at_20_moments_never_leaves_an_unloadable_checkpoint(
    vlm: Vlm, shapes_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    root = out / "checkpoints"
    cmd = [
        *VLM, "train", "good.shapes", "--data", str(shapes_data), "--out", str(out), "--resume",
        "--steps", "100000", "--batch-size", "16", "--param", "head_hidden=1024",
        "--set", "save_every=1", "--set", "log_every=1",
    ]  # fmt: skip
    rng = random.Random(20261128)
    steps: list[int] = []
    mid_save = 0
    for i in range(20):
        before = read_pointer(out).get("last")
        proc = subprocess.Popen(
            cmd, env=vlm.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            # wait for this process to save once, so the kill lands inside training
            _wait(
                lambda p=proc, b=before: (
                    p.poll() is not None or read_pointer(out).get("last") not in (None, b)
                )
            )  # type: ignore[misc]
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            if i % 2:  # right as a save starts writing
                _wait(lambda: any(p.name.startswith(".tmp-") for p in root.iterdir()))
                time.sleep(rng.uniform(0.0, 0.02))
            else:  # anywhere
                time.sleep(rng.uniform(0.0, 0.5))
        finally:
            proc.kill()
            proc.wait()
        mid_save += any(p.name.startswith(".tmp-") for p in root.iterdir())
        last = find_checkpoint(out)
        assert last is not None, f"kill {i}: no loadable checkpoint"
        state = last.train_state()
        weights = last.model_state()
        assert state["step"] == last.step and weights, f"kill {i}"
        steps.append(last.step)
        read_log(out)  # a torn last line is tolerated
    assert steps == sorted(steps) and steps[-1] > steps[0]
    assert mid_save >= 1, "no kill landed inside a save"
    print(f"20 kills: checkpoint steps {steps}; {mid_save} kills interrupted a save")


@pytest.mark.slow  # 12 s; the default tier trains in a process group in-process (test_gan_ddp)
def test_torchrun_two_processes_match_one(vlm: Vlm, shapes_data: Path, tmp_path: Path) -> None:
    common = [
        "train", "good.shapes", "--data", str(shapes_data), "--steps", "30",
        "--batch-size", "16", "--lr", "3e-3", "--set", "val_every=15",
        "--set", "deterministic=true", "--set", "keep_last=10",
    ]  # fmt: skip
    one = subprocess.run(
        [*VLM, *common, "--out", str(tmp_path / "one")],
        env=vlm.env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "vlm_core.cli.__main__", *common, "--out", str(tmp_path / "two")],
        env=vlm.env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]

    val_one = [r for r in read_log(tmp_path / "one") if "val_loss" in r]
    val_two = [r for r in read_log(tmp_path / "two") if "val_loss" in r]
    assert [r["step"] for r in val_one] == [r["step"] for r in val_two] == [15, 30]
    for a, b in zip(val_one, val_two, strict=True):
        assert a["val_acc"] == b["val_acc"]
        assert abs(a["val_loss"] - b["val_loss"]) < 1e-5
    assert val_one[-1]["val_acc"] > 0.5  # it learned something
    train_two = [r["step"] for r in read_log(tmp_path / "two") if "train_loss" in r]
    assert len(train_two) == len(set(train_two)), "two processes wrote the metrics log"

    dirs_one = sorted(p.name for p in (tmp_path / "one" / "checkpoints").iterdir())
    dirs_two = sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir())
    assert dirs_one == dirs_two == ["step-00000015", "step-00000030"]
    a, b = find_checkpoint(tmp_path / "one"), find_checkpoint(tmp_path / "two")
    assert a is not None and b is not None
    wa, wb = a.model_state(), b.model_state()
    diff = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert diff < 1e-5, diff
    assert b.sidecar["world_size"] == 2 and len(b.train_state()["rng"]) == 2
    report = json.loads((tmp_path / "two" / "report.json").read_text())
    assert report["world_size"] == 2 and report["status"] == "completed"
    print(f"1 vs 2 processes: val {val_one} vs {val_two}; max weight difference {diff:.2e}")
