"""Reproducible resume with augmentation: a run killed at a random step (in-process, and a real
SIGKILL of a training process) and resumed ends with the same weights, bit for bit, as an
uninterrupted run, whatever the augmentation draws from: torch, numpy, Python's ``random`` or a
transform's own generator (MONAI's ``set_random_state`` protocol), in the main process or in
DataLoader workers."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Dataset

from vlm_core import hookimpl
from vlm_core.kinds import Capability, Kind
from vlm_core.runtime.seeding import seed_everything
from vlm_core.tasks import TaskParams, TaskSpec, TrainContext
from vlm_core.training import TrainConfig, Trainer, TrainSetup, find_checkpoint
from vlm_core.training import trainer as trainer_module
from vlm_core.training.api import TrainRequest, train_task
from vlm_core.training.checkpoint import read_pointer
from vlm_core.training.distributed import World
from vlm_core.training.loop import TrainError, val_loader, validate
from vlm_core.training.resume_check import check_resume
from vlm_core.training.seeded_data import TRAIN_STREAM, SeededSamples, find_randomizable

HERE = Path(__file__).parent
N, FEATURES, CLASSES = 48, 8, 3


class Jitter:
    """A transform with a generator of its own, as MONAI's random transforms have: unseeded
    until someone calls ``set_random_state``."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.R = np.random.RandomState()

    def set_random_state(self, seed: int | None = None, state: Any = None) -> Jitter:
        self.R = np.random.RandomState(seed)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.from_numpy(self.R.uniform(-self.scale, self.scale, x.shape)).float()


class Augmented(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Every kind of random source a dataset may draw from."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y
        self.transforms = [Jitter(0.2)]  # found inside a list
        self.extra = {"noise": Jitter(0.05)}  # and inside a dict

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x[i] + 0.1 * torch.randn(FEATURES)  # torch's generator (torchvision's)
        x = x * float(np.random.uniform(0.8, 1.2))  # numpy's global generator
        if random.random() < 0.5:  # Python's
            x = x.flip(0)
        return self.extra["noise"](self.transforms[0](x)), self.y[i]


class ToyParams(TaskParams):
    pass


def toy_build(data: Path, params: TaskParams, ctx: TrainContext) -> TrainSetup:
    """A classifier with dropout on augmented data; its validation draws random numbers too
    (as a GAN's latents do)."""
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(N, FEATURES, generator=g)
    y = torch.randint(0, CLASSES, (N,), generator=g)
    model = nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Dropout(0.3),
                          nn.Linear(32, CLASSES))  # fmt: skip

    def loss(m: nn.Module, batch: Any) -> torch.Tensor:
        inputs, target = batch
        if not m.training:
            inputs = inputs + 0.01 * torch.randn_like(inputs)
        return nn.functional.cross_entropy(m(inputs), target)

    return TrainSetup(model=model, train_data=Augmented(x[:40], y[:40]),
                      val_data=Augmented(x[40:], y[40:]), loss=loss)  # fmt: skip


class ToyPlugin:
    @hookimpl
    def register_tasks(self, register):  # type: ignore[no-untyped-def]
        register(
            TaskSpec(id="toy.augmented", title="Toy", description="Augmented toy training.",
                     domain="test", run="nowhere:run", train=toy_build, train_params=ToyParams,
                     outputs=(Kind.METRICS,),
                     capabilities=frozenset({Capability.RUN, Capability.TRAIN}))
        )  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors run faster on one thread than on several that wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def registry(vlm_registry: Any) -> Any:
    return vlm_registry({"toy": ToyPlugin()})


def toy_request(tmp_path: Path, **config: Any) -> TrainRequest:
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    base = {"max_steps": 14, "batch_size": 8, "save_every": 4, "val_every": 5, "lr": 1e-2,
            "device": "cpu", "tensorboard": False}  # fmt: skip
    return TrainRequest("toy.augmented", data, tmp_path / "runs", config={**base, **config})


@pytest.mark.parametrize("workers", [0, 2])
def test_a_run_killed_at_a_random_step_resumes_bitwise(
    tmp_path: Path, registry: Any, workers: int
) -> None:
    """5 steps an epoch, 14 steps: the kill lands mid-epoch and the resume replays the steps
    after the last checkpoint, in the main process or in two DataLoader workers."""
    kill_at = random.Random(f"toy kill {workers}").randint(5, 13)
    request = toy_request(tmp_path, num_workers=workers)
    check = check_resume(request, kill_at=kill_at, registry=registry)
    saved = [s for s in range(1, kill_at) if s % 4 == 0 or s % 5 == 0]  # save_every, val_every
    assert check.resumed_from == saved[-1], check.summary()
    assert check.compared > 10
    assert check.identical, check.summary()


def _toy_fit(out: Path, *, resume: bool, steps: int, pause: float = 0.0) -> None:
    """What the killed process runs, and the in-process runs it is compared with."""
    seed_everything(0)
    setup = toy_build(out, ToyParams(), TrainContext("toy.augmented", "toy", "cpu"))
    config = TrainConfig(max_steps=steps, batch_size=8, save_every=3, val_every=10, lr=1e-2,
                         log_every=1, device="cpu", tensorboard=False)  # fmt: skip
    callbacks = [lambda event: time.sleep(pause) if event.kind == "log" else None]
    Trainer(setup, config, out, resume=resume, callbacks=callbacks if pause else ()).fit()


def test_a_sigkilled_training_process_resumes_bitwise(tmp_path: Path) -> None:
    """A real training process is SIGKILLed once its checkpoints pass a drawn step, anywhere
    in a step or a save; resumed here, it ends where an uninterrupted run ends."""
    steps = 60
    out = tmp_path / "killed"
    script = (
        "import sys, torch; torch.set_num_threads(1); "
        f"sys.path.insert(0, {str(HERE)!r}); "
        "from test_training_resume import _toy_fit; from pathlib import Path; "
        f"_toy_fit(Path({str(out)!r}), resume=False, steps={steps}, pause=0.02)"
    )
    target = random.Random("sigkill").randint(9, 40)
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            last = read_pointer(out).get("last") if out.exists() else None
            if last and int(last.split("-")[1]) >= target:
                break
            time.sleep(0.005)
        assert proc.poll() is None, f"the run ended before the kill: {proc.stderr.read()}"  # type: ignore[union-attr]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = find_checkpoint(out)
    assert killed_at is not None and target <= killed_at.step < steps
    _toy_fit(out, resume=True, steps=steps)
    _toy_fit(tmp_path / "straight", resume=False, steps=steps)
    a, b = find_checkpoint(tmp_path / "straight"), find_checkpoint(out)
    assert a is not None and b is not None and a.step == b.step == steps
    for name in ("model.safetensors", "state.safetensors"):
        ta, tb = load_file(a.path / name), load_file(b.path / name)
        assert ta.keys() == tb.keys()
        for key in ta:
            assert torch.equal(ta[key], tb[key]), f"{name}:{key} differs"


def test_validation_does_not_change_what_is_trained(tmp_path: Path, registry: Any) -> None:
    """Validation draws from private generators: validating at every step or only at the end
    trains the same weights (val_every may change on a resume), and an unchanged model gets
    the same score at every validation."""
    finals = []
    for every in (1, 14):
        request = toy_request(tmp_path / str(every), val_every=every)
        train_task(request, registry=registry)
        last = find_checkpoint(request.out)  # type: ignore[arg-type]
        assert last is not None
        finals.append(last.model_state())
    assert finals[0].keys() == finals[1].keys()
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])

    setup = toy_build(tmp_path, ToyParams(), TrainContext("toy.augmented", "toy", "cpu"))
    loader = val_loader(setup, World(), batch=4, num_workers=0, pin=False, seed=0)
    assert loader is not None
    scores = [
        validate(setup.model, setup, loader, device=torch.device("cpu"), dtype=None,
                 world=World(), task="toy.augmented", seed=0)["val_loss"]
        for _ in range(2)
    ]  # fmt: skip
    assert scores[0] == scores[1]


def test_a_sample_is_made_from_its_key_alone() -> None:
    x, y = torch.randn(6, FEATURES), torch.zeros(6, dtype=torch.long)
    data = Augmented(x, y)
    assert find_randomizable(data) == [data.transforms[0], data.extra["noise"]]
    seeded = SeededSamples(data, seed=7, stream=TRAIN_STREAM, epoch=0)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    forwards = [seeded[i][0] for i in range(6)]
    # the caller's generators are untouched
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1])
    assert random.getstate() == before[2]
    # any order, any history of the global generators and of the transforms' own
    seed_everything(99)
    data.transforms[0].set_random_state(5)
    backwards = [seeded[i][0] for i in reversed(range(6))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forwards, backwards, strict=True))
    # in a copy made in another process (a DataLoader worker) too
    copy = SeededSamples(Augmented(x, y), seed=7, stream=TRAIN_STREAM, epoch=0)
    assert torch.equal(copy[3][0], forwards[3])
    # another epoch or another seed draws anew
    other_epoch = SeededSamples(data, seed=7, stream=TRAIN_STREAM, epoch=1)
    other_seed = SeededSamples(data, seed=8, stream=TRAIN_STREAM, epoch=0)
    assert not torch.equal(other_epoch[3][0], forwards[3])
    assert not torch.equal(other_seed[3][0], forwards[3])


def test_the_checkpoint_records_the_generators_and_the_seeding(
    tmp_path: Path, registry: Any
) -> None:
    request = toy_request(tmp_path, max_steps=4)
    train_task(request, registry=registry)
    last = find_checkpoint(request.out)  # type: ignore[arg-type]
    assert last is not None
    state = last.train_state()
    assert state["seeding"].startswith("vlm-seeding/")
    (rng,) = state["rng"]
    assert {"torch", "numpy", "python"} <= set(rng)
    assert os.path.getsize(last.path / "state.safetensors") > 0


def test_a_checkpoint_of_another_seeding_scheme_resumes_with_a_warning(
    tmp_path: Path, registry: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    request = toy_request(tmp_path, max_steps=4)
    train_task(request, registry=registry)
    monkeypatch.setattr(trainer_module, "SEEDING", "vlm-seeding/next")
    longer = replace(toy_request(tmp_path, max_steps=6), resume=True)
    with caplog.at_level(logging.WARNING, logger="vlm_core.training.trainer"):
        assert train_task(longer, registry=registry).step == 6
    assert "drew random numbers differently" in caplog.text


def test_processes_that_see_different_checkpoints_refuse_to_resume(
    tmp_path: Path, registry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under torchrun on machines that do not share --out, rank 0 finds the checkpoint and the
    others do not: every rank refuses at once, naming the steps, instead of hanging."""
    request = toy_request(tmp_path, max_steps=4)
    train_task(request, registry=registry)
    monkeypatch.setattr(World, "gather", lambda self, obj: [obj, None])  # rank 1 sees none
    longer = replace(toy_request(tmp_path, max_steps=6), resume=True)
    with pytest.raises(TrainError, match=r"last step by rank: 4, none\); --out must be one"):
        train_task(longer, registry=registry)
