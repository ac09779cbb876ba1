"""The trainer: resume, NaN guards, atomic checkpoints, failed saves, the CLI, eval and run."""

from __future__ import annotations

import errno
import json
import math
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import one_line_error
from safetensors.torch import load_file

from vlm_core.tasks import TrainContext
from vlm_core.training import TrainConfig, Trainer, find_checkpoint
from vlm_core.training import checkpoint as ckpt
from vlm_core.training.state import flatten, unflatten


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory: pytest.TempPathFactory, fixture_site: Path) -> Path:
    import sys

    sys.path.insert(0, str(fixture_site))
    from vlm_fixture_good.shapes import make_shapes

    return make_shapes(tmp_path_factory.mktemp("shapes"), per_class=40, seed=1)


def shapes_setup(data: Path, **params: Any) -> Any:
    from vlm_fixture_good.plugin import ShapesTrainParams
    from vlm_fixture_good.shapes import build

    torch.manual_seed(0)
    ctx = TrainContext(task="good.shapes", plugin="good", device="cpu", seed=0)
    return build(data, ShapesTrainParams(**params), ctx)


def config(**overrides: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "batch_size": 16,
        "lr": 3e-3,
        "device": "cpu",
        "log_every": 1,
        "tensorboard": False,
    }
    return TrainConfig(**{**base, **overrides})


def test_state_round_trips_without_pickle() -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {
        "optimizer": opt.state_dict(),
        "numpy": np.random.get_state(),
        "python": __import__("random").getstate(),
        "nan": float("nan"),
        "nested": {1: (2, "x"), "b": [None, True]},
    }
    skeleton, tensors = flatten(state)
    back = unflatten(json.loads(json.dumps(skeleton)), tensors)
    assert back["optimizer"]["param_groups"] == opt.state_dict()["param_groups"]
    for key, value in opt.state_dict()["state"][0].items():
        assert torch.equal(back["optimizer"]["state"][0][key], value)
    assert back["numpy"][0] == "MT19937"
    assert np.array_equal(back["numpy"][1], state["numpy"][1])
    assert back["python"][1] == state["python"][1]
    assert math.isnan(back["nan"])
    assert back["nested"] == {1: (2, "x"), "b": [None, True]}
    with pytest.raises(TypeError, match="without pickle"):
        flatten({"f": object()})


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path)


def test_resume_matches_an_uninterrupted_run_bitwise(shapes_data: Path, tmp_path: Path) -> None:
    """Stop at step k, resume to 2k: weights, EMA, optimizer and RNG match a straight run."""
    k = 7
    cfg = config(
        max_steps=2 * k,
        grad_accum=2,
        ema_decay=0.9,
        warmup_steps=3,
        val_every=5,
        save_every=k,
        deterministic=True,
    )
    straight = Trainer(shapes_setup(shapes_data), cfg, tmp_path / "a").fit()
    assert straight.status == "completed" and straight.step == 2 * k

    holder: list[Trainer] = []

    def stop_at_k(event: Any) -> None:
        if event.kind == "log" and event.step == k:
            holder[0].request_stop()

    first = Trainer(shapes_setup(shapes_data), cfg, tmp_path / "b", callbacks=[stop_at_k])
    holder.append(first)
    stopped = first.fit()
    assert (stopped.status, stopped.step) == ("stopped", k)
    resumed = Trainer(shapes_setup(shapes_data), cfg, tmp_path / "b", resume=True).fit()
    assert (resumed.status, resumed.step) == ("completed", 2 * k)

    a, b = find_checkpoint(tmp_path / "a"), find_checkpoint(tmp_path / "b")
    assert a is not None and b is not None and a.step == b.step == 2 * k
    for name in ("model.safetensors", "state.safetensors"):
        ta, tb = _tensors(a.path / name), _tensors(b.path / name)
        assert ta.keys() == tb.keys()
        for key in ta:
            assert torch.equal(ta[key], tb[key]), f"{name}:{key} differs"
    sa, sb = a.train_state(), b.train_state()
    assert sa["scheduler"] == sb["scheduler"]
    assert sa["scaler"] == sb["scaler"]
    assert torch.equal(sa["ema"]["n_averaged"], sb["ema"]["n_averaged"])
    assert torch.equal(sa["rng"][0]["torch"], sb["rng"][0]["torch"])
    assert a.sidecar["metrics"] == b.sidecar["metrics"]
    assert a.sidecar["ema"] is True


def test_a_nan_loss_is_skipped(shapes_data: Path, tmp_path: Path) -> None:
    setup = shapes_setup(shapes_data, nan_from=3, nan_count=2)
    result = Trainer(setup, config(max_steps=8), tmp_path / "out").fit()
    assert result.status == "completed"
    assert result.nonfinite_skipped == 2
    weights = find_checkpoint(tmp_path / "out")
    assert weights is not None
    assert all(torch.isfinite(t).all() for t in weights.model_state().values())


def test_a_nan_loss_stops_the_run_as_diverged(shapes_data: Path, tmp_path: Path) -> None:
    setup = shapes_setup(shapes_data, nan_from=5, nan_count=100)
    cfg = config(max_steps=10, save_every=1, nonfinite="stop")
    result = Trainer(setup, cfg, tmp_path / "out").fit()
    assert result.status == "diverged" and "non-finite" in result.message
    last = find_checkpoint(tmp_path / "out")
    assert last is not None and last.step == 4  # the last good step
    assert all(torch.isfinite(t).all() for t in last.model_state().values())
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["status"] == "diverged"


def test_too_many_skipped_steps_in_a_row_diverge(shapes_data: Path, tmp_path: Path) -> None:
    setup = shapes_setup(shapes_data, nan_from=2, nan_count=100)
    result = Trainer(setup, config(max_steps=50, max_nonfinite=3), tmp_path / "out").fit()
    assert result.status == "diverged"
    assert result.nonfinite_skipped == 3 and result.step == 4


def _safetensors_enospc(code: int, text: str) -> Exception:
    """What safetensors raises when the disk fills (seen on a real full tmpfs)."""
    from safetensors import SafetensorError

    return SafetensorError(f"Error while serializing: I/O error: {text} (os error {code})")


@pytest.mark.parametrize(
    ("code", "text", "error"),
    [
        (errno.ENOSPC, "No space left on device", _safetensors_enospc),
        (errno.ENOSPC, "No space left on device", OSError),
        (errno.EROFS, "Read-only file system", OSError),
    ],
)
def test_a_failed_save_leaves_the_previous_checkpoint(
    shapes_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
    text: str,
    error: Any,
) -> None:
    out = tmp_path / "out"
    Trainer(shapes_setup(shapes_data), config(max_steps=3, save_every=1), out).fit()
    before = find_checkpoint(out)
    assert before is not None and before.step == 3
    real_save = ckpt.save_file

    def failing_save(tensors: dict[str, torch.Tensor], path: str, metadata: Any = None) -> None:
        real_save(tensors, path, metadata)
        with open(path, "r+b") as fh:  # half-written, as when the disk fills up mid-file
            fh.truncate(Path(path).stat().st_size // 2)
        raise error(code, text)

    monkeypatch.setattr(ckpt, "save_file", failing_save)
    trainer = Trainer(
        shapes_setup(shapes_data), config(max_steps=6, save_every=1), out, resume=True
    )
    with pytest.raises(ckpt.CheckpointError) as info:
        trainer.fit()
    message = str(info.value)
    assert text in message and "previous checkpoint is intact" in message
    assert "\n" not in message
    after = find_checkpoint(out)
    assert after is not None and after.path == before.path and after.step == 3
    after.train_state()
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".tmp-")]


def test_checkpoint_damage_is_detected(shapes_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    Trainer(shapes_setup(shapes_data), config(max_steps=2, save_every=1, keep_last=5), out).fit()
    last = find_checkpoint(out)
    assert last is not None and last.step == 2
    with open(last.model_file, "r+b") as fh:
        fh.seek(200)
        fh.write(b"\xff" * 8)
    with pytest.raises(ckpt.CheckpointError, match="wrong sha256"):
        ckpt.verify(last.path)
    fallback = find_checkpoint(out)  # the newest intact one
    assert fallback is not None and fallback.step == 1


def test_cli_train_eval_run(
    vlm_here: Callable[..., subprocess.CompletedProcess[str]], shapes_data: Path, tmp_path: Path
) -> None:
    vlm = vlm_here
    out = tmp_path / "train"
    proc = vlm(
        "train", "good.shapes", "--data", str(shapes_data), "--epochs", "12", "--out", str(out),
        "--batch-size", "16", "--lr", "3e-3", "--set", "ema_decay=0.8", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "completed"
    assert result["best"]["metrics"]["val_acc"] > 0.6
    for name in ("checkpoints.json", "metrics.jsonl", "report.json", "curves.png"):
        assert (out / name).is_file(), name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from vlm_core.fileio import file_mode

    for file in (out / "report.json", out / "checkpoints.json", *out.glob("checkpoints/*/*")):
        assert file.stat().st_mode & 0o777 == file_mode(), file  # not owner-only
    best = find_checkpoint(out, "best")
    assert best is not None
    card = best.sidecar
    assert card["card"]["class_names"] == ["circle", "square", "triangle"]
    assert card["data"]["files"] == 120 and len(card["data"]["sha256"]) == 64
    assert card["command"][:2] == ["vlm", "train"] and card["seed"] == 0
    assert {"vlm_core", "torch", "python"} <= set(card["versions"])
    assert card["metrics"]["val_acc"] == result["best"]["metrics"]["val_acc"]

    proc = vlm("eval", "good.shapes", "--data", str(shapes_data), "--weights", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    measured = json.loads(proc.stdout)
    assert measured["step"] == best.step and measured["same_data"] is True
    assert measured["max_abs_diff"] is not None and measured["max_abs_diff"] < 1e-6
    assert measured["metrics"]["val_acc"] == pytest.approx(card["metrics"]["val_acc"], abs=1e-6)

    files = [str(shapes_data / c / "0001.png") for c in ("circle", "square", "triangle")]
    proc = vlm("run", "good.shapes", *files, "--param", f"weights={out}", "--json")
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    labels = [r["outputs"]["shape"]["text"] for r in run["results"]]
    assert len(labels) == 3 and set(labels) <= {"circle", "square", "triangle"}


@pytest.fixture
def vlm_here(
    vlm_cli: Callable[..., subprocess.CompletedProcess[str]],
    fixture_site: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`vlm` in this process with the fixture plugins (no interpreter start-up per call)."""
    monkeypatch.syspath_prepend(str(fixture_site))
    return vlm_cli


def test_cli_refuses_bad_requests(
    vlm_here: Callable[..., subprocess.CompletedProcess[str]], shapes_data: Path, tmp_path: Path
) -> None:
    vlm = vlm_here
    out = tmp_path / "o"
    cases = [
        (["train", "good.shapes", "--data", str(tmp_path / "nope"), "--steps", "1"], "no such"),
        (["train", "good.invert", "--data", str(shapes_data)], "cannot train"),
        (["train", "good.shapes", "--data", str(shapes_data), "--set", "bogus=1"], "bogus"),
        (
            ["train", "good.shapes", "--data", str(shapes_data), "--epochs", "1", "--steps", "1"],
            "not both",
        ),
        (
            ["train", "good.shapes", "--data", str(shapes_data), "--batch-size", "5000"],
            "fewer than one batch",
        ),
        (["train", "good.shapes", "--data", str(tmp_path), "--steps", "1"], "could not set up"),
        (
            ["eval", "good.shapes", "--data", str(shapes_data), "--weights", str(tmp_path)],
            "not a weights file",
        ),
        # without --weights the task's own weights are measured; this one ships none
        (["eval", "good.shapes", "--data", str(shapes_data)], "ships no weights: give --weights"),
    ]
    for args, needle in cases:
        proc = vlm(*args, "--out", str(out)) if args[0] == "train" else vlm(*args)
        assert proc.returncode in (1, 2), (args, proc.stderr)
        assert needle in one_line_error(proc), (args, proc.stderr)

    assert vlm("train", "good.shapes", "--data", str(shapes_data), "--steps", "2",
               "--out", str(out)).returncode == 0  # fmt: skip
    again = vlm(
        "train", "good.shapes", "--data", str(shapes_data), "--steps", "4", "--out", str(out)
    )
    assert "pass --resume" in one_line_error(again)
    changed = vlm("train", "good.shapes", "--data", str(shapes_data), "--steps", "4",
                  "--out", str(out), "--resume", "--lr", "0.5")  # fmt: skip
    assert "lr" in one_line_error(changed)
    diverged = vlm("train", "good.shapes", "--data", str(shapes_data), "--steps", "9",
                   "--out", str(tmp_path / "d"), "--param", "nan_from=3", "--param", "nan_count=50",
                   "--set", "nonfinite=stop")  # fmt: skip
    assert diverged.returncode == 1
    last_line = diverged.stderr.strip().splitlines()[-1]  # after the progress lines
    assert last_line.startswith("error: training diverged: non-finite loss"), diverged.stderr


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["auto", "fp16"])
def test_training_on_cuda_resumes_with_its_precision(
    shapes_data: Path, tmp_path: Path, precision: str
) -> None:
    """bf16 autocast (auto) and fp16 with a grad scaler on CUDA: stop, resume, finish."""
    out = tmp_path / "out"
    cfg = config(max_steps=20, save_every=5, val_every=10, precision=precision, device="cuda")
    holder: list[Trainer] = []

    def stop_at_10(event: Any) -> None:
        if event.kind == "log" and event.step == 10:
            holder[0].request_stop()

    first = Trainer(shapes_setup(shapes_data), cfg, out, device="cuda", callbacks=[stop_at_10])
    holder.append(first)
    assert first.fit().status == "stopped"
    result = Trainer(shapes_setup(shapes_data), cfg, out, device="cuda", resume=True).fit()
    assert (result.status, result.step) == ("completed", 20)
    last = find_checkpoint(out)
    assert last is not None and last.sidecar["device"].startswith("cuda")
    scaler = last.train_state()["scaler"]
    if precision == "fp16":
        assert scaler["scale"] > 0  # the scaler's state was saved and restored
    else:
        assert scaler == {}
    assert all(torch.isfinite(t).all() for t in last.model_state().values())
