"""The GAN engine under DistributedDataParallel: a world of one process group, in process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import TensorDataset

from vlm_core.gan.models import build_gan
from vlm_core.gan.train import gan_setup
from vlm_core.training import TrainConfig, Trainer
from vlm_core.training.distributed import World, close_world, init_world, launched_by_torchrun


@pytest.fixture
def gloo_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    """What ``torchrun --nproc-per-node 1`` gives a process: its variables, a gloo group."""
    for name, value in {
        "TORCHELASTIC_RUN_ID": "test",
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "0",
    }.items():
        monkeypatch.setenv(name, value)
    assert launched_by_torchrun()
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    world = init_world("cpu")
    yield world
    close_world(world)


def test_torchrun_with_one_process_joins_the_group(gloo_world: World) -> None:
    assert gloo_world.distributed and gloo_world.size == 1 and gloo_world.is_main
    assert gloo_world.sum([1.0, 2.0]) == [1.0, 2.0]


def test_an_ac_gan_trains_under_ddp(gloo_world: World, tmp_path: Path) -> None:
    """The discriminator runs twice before one backward and its class head only on the real
    images: DistributedDataParallel with find_unused_parameters marked that head ready twice
    ("Expected to mark a variable ready only once"); the trainer wraps each part with a static
    graph instead."""
    torch.manual_seed(0)
    images = torch.rand(16, 1, 16, 16) * 2 - 1
    labels = torch.arange(16) % 3
    gan = build_gan({"family": "dcgan", "image_size": 16, "channels": 1, "latent_dim": 8,
                     "width": 8, "num_classes": 3, "aux_classes": True})  # fmt: skip
    setup = gan_setup(gan, TensorDataset(images, labels), aux_weight=1.0, r1_gamma=1.0)
    config = TrainConfig.model_validate({"batch_size": 8, "max_steps": 3, "device": "cpu",
                                         "tensorboard": False, "log_every": 1})  # fmt: skip
    wrapped: list[str] = []
    ddp_init = torch.nn.parallel.DistributedDataParallel.__init__

    def counting(self: object, module: torch.nn.Module, *a: object, **kw: object) -> None:
        wrapped.append(type(module).__name__)
        ddp_init(self, module, *a, **kw)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.nn.parallel.DistributedDataParallel, "__init__", counting)
        result = Trainer(setup, config, tmp_path / "run", world=gloo_world).fit()
    assert result.status == "completed" and result.step == 3
    assert wrapped == ["DCGANGenerator", "DCGANDiscriminator"]
