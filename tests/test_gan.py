"""The GAN engine: the seed's MLP GAN and DCGAN trained through the core trainer, their
FID/KID over training, agreement with torchmetrics, NaN guards, resume, sampling."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import TensorDataset

from vlm_core.errors import UsageError
from vlm_core.gan.augment import diff_augment
from vlm_core.gan.losses import d_loss_hinge, r1_penalty
from vlm_core.gan.metrics import (
    ConvFeatures,
    InceptionV3Features,
    extract_features,
    fid,
    fit_classifier,
    frechet_distance,
    inception_score,
    kid,
)
from vlm_core.gan.models import GANArch, build_gan
from vlm_core.gan.monitor import QualityTracker, SampleGrid
from vlm_core.gan.sampling import interpolate, sample, to_unit, truncated_latents
from vlm_core.gan.train import gan_setup
from vlm_core.training import TrainConfig, Trainer, find_checkpoint

SIZE = 16


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread (and do not fight other work for cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def squares(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` 16x16 grey images in [-1, 1] of one bright square (side 4, 5 or 6) each, and the
    side's class (0, 1, 2)."""
    gen = torch.Generator().manual_seed(seed)
    images = -torch.ones(n, 1, SIZE, SIZE)
    labels = torch.randint(0, 3, (n,), generator=gen)
    for i in range(n):
        side = 4 + int(labels[i])
        a, b = torch.randint(0, SIZE - side + 1, (2,), generator=gen).tolist()
        images[i, 0, a : a + side, b : b + side] = 1.0
    return images, labels


@pytest.fixture(scope="module")
def features() -> ConvFeatures:
    """The tests' feature network: a tiny CNN trained to tell the squares' sizes apart."""
    torch.set_num_threads(1)
    images, labels = squares(384, seed=7)
    net = ConvFeatures(1, 32, num_classes=3, width=8, seed=0, name="conv-32d squares-size")
    accuracy = fit_classifier(net, to_unit(images), labels, steps=150, batch_size=64)
    assert accuracy > 0.6
    return net


@pytest.fixture(scope="module")
def random_features() -> ConvFeatures:
    """A fixed, untrained tiny CNN: the feature space the training tests measure in."""
    return ConvFeatures(1, 32, width=8, seed=0, name="conv-32d (seed 0, untrained)")


def config(**overrides: Any) -> TrainConfig:
    base = {"batch_size": 32, "lr": 2e-3, "device": "cpu", "log_every": 5, "tensorboard": False,
            "schedule": "constant", "clip_grad_norm": None}  # fmt: skip
    return TrainConfig.model_validate({**base, **overrides})


def arch(family: str, **kw: Any) -> dict[str, Any]:
    width = 64 if family == "mlp" else 16
    return {"family": family, "image_size": SIZE, "channels": 1, "latent_dim": 16,
            "width": width, **kw}  # fmt: skip


# -- training and quality ----------------------------------------------------------------------


@pytest.mark.parametrize("family", ["mlp", "dcgan"])
def test_the_seed_gans_train_and_their_fid_and_kid_improve(
    family: str, random_features: ConvFeatures, tmp_path: Path
) -> None:
    features = random_features
    torch.manual_seed(0)
    images, _ = squares(256)
    gan = build_gan(arch(family))
    out = tmp_path / family
    quality = QualityTracker(gan, to_unit(images), features, out, kid_subsets=20,
                             kid_subset_size=128)  # fmt: skip
    grids = SampleGrid(gan, out, n=16)
    before = quality.measure()
    setup = gan_setup(gan, TensorDataset(images), loss="bce", betas=(0.5, 0.999), ema_decay=0.9)
    result = Trainer(setup, config(max_steps=60, save_every=20), out,
                     callbacks=[quality, grids]).fit()  # fmt: skip
    assert result.status == "completed" and result.step == 60
    after = quality.history[-1][1]
    assert [step for step, _ in quality.history] == [20, 40, 60]
    print(f"{family}: before {before}\n{family}: after  {after}")
    # measured (seeds 0-2): FID and KID fall to 0.06-0.41 of their value before training
    assert after.fid < 0.6 * before.fid, (before, after)
    assert after.kid < 0.6 * before.kid, (before, after)
    lines = (out / "samples" / "quality.jsonl").read_text().splitlines()
    assert [json.loads(line)["feature_network"] for line in lines] == [features.name] * 3
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == [
        "step-000020.png", "step-000040.png", "step-000060.png"
    ]  # fmt: skip
    from PIL import Image

    with Image.open(out / "samples" / "step-000060.png") as grid:
        assert grid.size == (4 * (SIZE + 2) + 2, 4 * (SIZE + 2) + 2)
    card = find_checkpoint(out)
    assert card is not None and card.sidecar["card"]["architecture"]["family"] == family


def test_a_conditional_resnet_gan_trains_with_r1_and_diffaugment(tmp_path: Path) -> None:
    torch.manual_seed(0)
    images, labels = squares(64)
    gan = build_gan(arch("resnet", num_classes=3, width=8))
    setup = gan_setup(gan, TensorDataset(images, labels), r1_gamma=1.0,
                      diffaugment=("color", "translation", "cutout"), n_critic=2)  # fmt: skip
    events: list[Any] = []
    result = Trainer(setup, config(max_steps=3, log_every=1, lr=2e-4), tmp_path / "r",
                     callbacks=[events.append]).fit()  # fmt: skip
    assert result.status == "completed"
    logged = [e.values for e in events if e.kind == "log"][-1]
    assert {"train_loss_d", "train_loss_g", "train_r1"} <= set(logged)
    assert logged["train_r1"] > 0 and math.isfinite(logged["train_r1"])
    # the EMA generator moved away from the initial copy, and differs from G
    g, ema = gan["g"].state_dict(), gan["g_ema"].state_dict()
    assert any(not torch.equal(g[k], ema[k]) for k in g if k.endswith("weight"))


@pytest.mark.parametrize("family", ["resnet", "dcgan"])
def test_the_ac_gan_class_head_learns_the_real_classes(tmp_path: Path, family: str) -> None:
    torch.manual_seed(0)
    images, labels = squares(256)
    gan = build_gan(arch(family, num_classes=3, width=8, aux_classes=True))
    setup = gan_setup(gan, TensorDataset(images, labels), aux_weight=1.0, loss="hinge")
    events: list[Any] = []
    Trainer(setup, config(max_steps=60, log_every=10, lr=1e-3), tmp_path / "r",
            callbacks=[events.append]).fit()  # fmt: skip
    logged = [e.values for e in events if e.kind == "log"]
    assert {"train_aux_d", "train_aux_g"} <= set(logged[-1])
    assert logged[-1]["train_aux_d"] < logged[0]["train_aux_d"], [v["train_aux_d"] for v in logged]
    held, held_labels = squares(128, seed=9)
    with torch.no_grad():
        _, classes = gan["d"].train()(held, held_labels, with_classes=True)  # as D trains
    accuracy = (classes.argmax(1) == held_labels).float().mean()
    assert accuracy > 0.6, float(accuracy)  # chance: 1/3


def test_ac_gan_settings_that_cannot_work_are_refused() -> None:
    with pytest.raises(UsageError, match="aux_classes needs num_classes >= 2"):
        build_gan(arch("mlp", num_classes=3, aux_classes=True))
    with pytest.raises(UsageError, match="aux_classes needs num_classes >= 2"):
        build_gan(arch("resnet", aux_classes=True))
    plain = build_gan(arch("resnet", num_classes=3, width=8))
    with pytest.raises(UsageError, match="aux_weight > 0 needs"):
        gan_setup(plain, TensorDataset(*squares(8)), aux_weight=1.0)
    with pytest.raises(UsageError, match="no class head"):
        plain["d"](squares(2)[0], torch.tensor([0, 1]), with_classes=True)


# -- metrics -----------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance`")
def test_fid_and_kid_agree_with_torchmetrics(features: ConvFeatures) -> None:
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    real = to_unit(squares(200, seed=1)[0])
    fake = (
        real + 0.15 * torch.randn(200, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    ).clamp(0, 1)
    ours = fid(real, fake, features, batch_size=64)
    theirs = FrechetInceptionDistance(feature=features, normalize=True)
    theirs.update(real, real=True)
    theirs.update(fake, real=False)
    reference = float(theirs.compute())
    print(f"FID ours {ours:.9g}, torchmetrics {reference:.9g}")
    assert ours > 0 and abs(ours - reference) / reference < 0.01

    kid_mean, kid_std = kid(real, fake, features, subsets=3, subset_size=200)
    tm_kid = KernelInceptionDistance(feature=features, subsets=3, subset_size=200, normalize=True)
    tm_kid.update(real, real=True)
    tm_kid.update(fake, real=False)
    ref_mean, _ = (float(v) for v in tm_kid.compute())
    print(f"KID ours {kid_mean:.9g}, torchmetrics {ref_mean:.9g}")
    assert kid_mean > 0 and abs(kid_mean - ref_mean) / ref_mean < 0.01
    assert kid_std < 1e-9 * kid_mean  # every subset is the whole set


@pytest.mark.filterwarnings("ignore:Metric `InceptionScore`", "ignore:std\\(\\)")
def test_inception_score_agrees_with_torchmetrics(features: ConvFeatures) -> None:
    from torchmetrics.image.inception import InceptionScore

    class Logits(torch.nn.Module):  # torchmetrics hands IS networks uint8 images
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return features.logits(x.float() / 255)

    images = (to_unit(squares(120, seed=4)[0]) * 255).round().to(torch.uint8)
    ours, _ = inception_score(images.float() / 255, features, splits=1)
    theirs = InceptionScore(feature=Logits(), splits=1)
    theirs.update(images)
    reference = float(theirs.compute()[0])
    assert 1.0 < ours <= 3.0 and ours == pytest.approx(reference, rel=1e-4)


def test_frechet_distance_of_known_gaussians() -> None:
    d = 8
    mean = torch.arange(d, dtype=torch.float64)
    eye = torch.eye(d, dtype=torch.float64)
    # N(0, I) against N(m, 4I): |m|^2 + d + 4d - 2 * 2d
    assert frechet_distance(torch.zeros(d), eye, mean, 4 * eye) == pytest.approx(
        float(mean.square().sum()) + d
    )
    assert frechet_distance(mean, 4 * eye, mean, 4 * eye) == pytest.approx(0.0, abs=1e-9)


def test_features_are_batched_on_the_networks_device(features: ConvFeatures) -> None:
    images = to_unit(squares(50)[0])
    whole = extract_features(features, images, batch_size=50)
    pieces = extract_features(features, (images[i : i + 7] for i in range(0, 50, 7)))
    assert whole.shape == (50, 32) and torch.allclose(whole, pieces, atol=1e-5)


def test_inception_offline_fails_fast_and_names_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    from vlm_core.weights import WeightsError

    monkeypatch.setenv("VLM_OFFLINE", "1")
    started = time.perf_counter()
    try:
        network = InceptionV3Features()
    except WeightsError as exc:
        assert "Inception_V3" in str(exc) or "inception" in str(exc).lower()
        assert time.perf_counter() - started < 10
    else:  # the weights are present locally
        assert network.dims == 2048 and "inception-v3" in network.name


# -- NaN guards and resume ---------------------------------------------------------------------


def nan_data(n: int = 64, at: int = 37) -> TensorDataset:
    images, _ = squares(n)
    images[at, 0, 3, 3] = float("nan")  # one corrupt image: D's loss is NaN on its batch
    return TensorDataset(images)


def test_a_nan_discriminator_loss_is_skipped_and_training_continues(tmp_path: Path) -> None:
    torch.manual_seed(0)
    gan = build_gan(arch("dcgan"))  # batch norm in D: its statistics must not take the NaN
    setup = gan_setup(gan, nan_data(), loss="bce", betas=(0.5, 0.999))
    result = Trainer(setup, config(max_steps=12, batch_size=16), tmp_path / "a").fit()
    assert result.status == "completed" and result.step == 12
    assert result.nonfinite_skipped == 3  # one batch in each of the three epochs
    last = find_checkpoint(tmp_path / "a")
    assert last is not None
    assert all(torch.isfinite(t).all() for t in last.model_state().values())
    assert torch.isfinite(sample(gan, 4)).all()


def test_a_nan_discriminator_loss_stops_the_run_as_diverged(tmp_path: Path) -> None:
    torch.manual_seed(0)
    setup = gan_setup(build_gan(arch("mlp")), nan_data(), loss="bce")
    cfg = config(max_steps=12, batch_size=16, save_every=1, nonfinite="stop")
    result = Trainer(setup, cfg, tmp_path / "b").fit()
    assert result.status == "diverged" and "non-finite" in result.message
    last = find_checkpoint(tmp_path / "b")
    assert last is not None and last.step == result.step - 1
    restored = build_gan(last.sidecar["card"]["architecture"])
    restored.load_state_dict(last.model_state())
    assert all(torch.isfinite(p).all() for p in restored.parameters())


@pytest.mark.parametrize("family", ["mlp", "dcgan"])  # dcgan: batch norm in G and g_ema
def test_a_gan_run_resumes_bitwise(tmp_path: Path, family: str) -> None:
    images, _ = squares(64)

    def setup() -> Any:
        torch.manual_seed(0)
        return gan_setup(build_gan(arch(family)), TensorDataset(images), r1_gamma=0.5,
                         diffaugment=("color", "translation", "cutout"), ema_decay=0.8)  # fmt: skip

    k = 4
    cfg = config(max_steps=2 * k, batch_size=16, save_every=k, deterministic=True, log_every=1)
    Trainer(setup(), cfg, tmp_path / "a").fit()
    holder: list[Trainer] = []

    def stop(event: Any) -> None:
        if event.kind == "log" and event.step == k:
            holder[0].request_stop()

    holder.append(Trainer(setup(), cfg, tmp_path / "b", callbacks=[stop]))
    assert holder[0].fit().status == "stopped"
    assert Trainer(setup(), cfg, tmp_path / "b", resume=True).fit().status == "completed"
    a, b = find_checkpoint(tmp_path / "a"), find_checkpoint(tmp_path / "b")
    assert a is not None and b is not None and a.step == b.step == 2 * k
    assert any(key.startswith("g_ema.") for key in a.model_state())  # the EMA G resumes too
    for name in ("model.safetensors", "state.safetensors"):
        ta, tb = load_file(a.path / name), load_file(b.path / name)
        assert ta.keys() == tb.keys()
        assert all(torch.equal(ta[key], tb[key]) for key in ta), name


def test_the_ema_generator_samples_with_its_own_batch_norm_statistics() -> None:
    torch.manual_seed(0)
    gan = build_gan(arch("dcgan", num_classes=3))
    g, ema = gan["g"], gan["g_ema"]
    z, y = torch.randn(512, 16), torch.arange(512) % 3
    with torch.no_grad():
        for p in g.parameters():  # g drifts away from g_ema, as in training
            p.add_(torch.randn_like(p) * 0.3)
        for _ in range(30):  # g's running statistics describe g
            g(torch.randn(64, 16), torch.arange(64) % 3)
        gan.update_ema(0.5)
        assert gan.ema_stats_stale
        own = ema.train()(z, y)  # g_ema normalised by its own batch statistics
        stale = ema.eval()(z, y)
        gan.refresh_ema_stats()
        fresh = ema(z, y)
    assert not gan.ema_stats_stale and not ema.training
    stale_error, fresh_error = (stale - own).abs().mean(), (fresh - own).abs().mean()
    assert fresh_error < 0.25 * stale_error, (float(fresh_error), float(stale_error))
    # sampling and saving refresh stale statistics, deterministically
    gan.update_ema(0.5)
    first = sample(gan, 4, classes=[0, 1, 2, 0], seed=1)
    assert not gan.ema_stats_stale
    gan.update_ema(1.0 - 1e-12, warmup=False)  # g_ema unchanged, statistics stale again
    state = gan.state_dict()
    assert not gan.ema_stats_stale
    assert torch.allclose(sample(gan, 4, classes=[0, 1, 2, 0], seed=1), first, atol=1e-5)
    assert any(k.startswith("g_ema.") and k.endswith("running_mean") for k in state)


def test_sampling_only_weights_load_into_both_generators() -> None:
    torch.manual_seed(0)
    gan = build_gan(arch("dcgan", num_classes=3))
    with torch.no_grad():
        for p in gan["g"].parameters():
            p.add_(0.1)
    gan.update_ema(0.5)
    shipped = {k: v for k, v in gan.state_dict().items() if k.startswith("g_ema.")}
    other = build_gan(arch("dcgan", num_classes=3))
    d_before = [p.clone() for p in other["d"].parameters()]
    other.load_state_dict(shipped)
    same = sample(other, 4, classes=[0, 1, 2, 0], seed=3)
    assert torch.equal(same, sample(gan, 4, classes=[0, 1, 2, 0], seed=3))
    assert all(torch.equal(a, b) for a, b in zip(d_before, other["d"].parameters(), strict=True))
    g_ema, g = other["g_ema"].state_dict(), other["g"].state_dict()
    assert all(torch.equal(g_ema[k], g[k]) for k in g)
    with pytest.raises(RuntimeError, match="Missing key"):  # anything else loads strictly
        other.load_state_dict({k: v for k, v in gan.state_dict().items() if k.startswith("g.")})


def test_the_ema_decay_warms_up_and_the_count_is_saved() -> None:
    torch.manual_seed(0)
    gan = build_gan(arch("mlp"))
    g, ema = gan["g"], gan["g_ema"]
    start = [p.detach().clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in g.parameters():
            p.add_(1.0)
    gan.update_ema(0.999)  # first update: decay min(0.999, 1/10), 90 % of the way to g
    moved = [float((e - s).mean()) for e, s in zip(ema.parameters(), start, strict=True)]
    assert all(m == pytest.approx(0.9, abs=1e-5) for m in moved)
    assert int(gan.state_dict()["ema_updates"]) == 1
    other = build_gan(arch("mlp"))
    other.load_state_dict(gan.state_dict())
    assert int(other.ema_updates) == 1


# -- parts -------------------------------------------------------------------------------------


def test_r1_and_diffaugment_are_differentiable() -> None:
    torch.manual_seed(0)
    gan = build_gan(arch("dcgan"))
    real = squares(8)[0].requires_grad_(True)
    augmented = diff_augment(real)
    assert augmented.shape == real.shape and not torch.equal(augmented, real)
    logits = gan["d"](augmented)
    penalty = r1_penalty(logits, real)
    assert penalty > 0
    (d_loss_hinge(logits, -logits) + penalty).backward()
    assert real.grad is not None and torch.isfinite(real.grad).all() and real.grad.abs().sum() > 0
    assert all(p.grad is not None for p in gan["d"].parameters())
    with pytest.raises(UsageError, match="require grad"):
        r1_penalty(logits, squares(8)[0])
    with pytest.raises(UsageError, match="unknown DiffAugment"):
        diff_augment(real, ("colour",))


def test_truncated_sampling_is_reproducible_and_respects_the_threshold() -> None:
    z = truncated_latents(500, 16, truncation=0.5, seed=3)
    assert z.abs().max() <= 0.5 and z.std() > 0.2
    assert torch.equal(z, truncated_latents(500, 16, truncation=0.5, seed=3))
    assert not torch.equal(z, truncated_latents(500, 16, truncation=0.5, seed=4))
    torch.manual_seed(0)
    gan = build_gan(arch("dcgan"))
    a, b = sample(gan, 6, truncation=0.7, seed=1), sample(gan, 6, truncation=0.7, seed=1)
    assert a.shape == (6, 1, SIZE, SIZE) and torch.equal(a, b)
    assert a.min() >= -1 and a.max() <= 1
    assert not torch.equal(a, sample(gan, 6, truncation=0.7, seed=2))
    with pytest.raises(UsageError, match="positive threshold"):
        truncated_latents(2, 4, truncation=0.0)


def test_interpolation_ends_at_the_samples_of_its_endpoints() -> None:
    torch.manual_seed(0)
    gan = build_gan(arch("dcgan"))
    z = truncated_latents(2, 16, seed=5)
    path = interpolate(gan, z[0], z[1], 7)
    ends = sample(gan, 2, seed=5)
    assert path.shape == (7, 1, SIZE, SIZE)
    assert torch.allclose(path[0], ends[0], atol=1e-5) and torch.allclose(
        path[-1], ends[1], atol=1e-5
    )
    assert not torch.allclose(path[3], path[0], atol=1e-3)
    linear = interpolate(gan, z[0], z[1], 7, slerp_path=False)
    assert torch.allclose(linear[0], path[0], atol=1e-6)


@pytest.mark.parametrize("size", [32, 64])
def test_the_conditional_model_respects_classes(size: int) -> None:
    torch.manual_seed(0)
    gan = build_gan({"family": "resnet", "image_size": size, "channels": 3, "latent_dim": 32,
                     "num_classes": 5, "width": 8})  # fmt: skip
    images = sample(gan, 10, classes=list(range(5)) * 2, seed=0)
    assert images.shape == (10, 3, size, size)
    same_z = truncated_latents(2, 32, seed=9)
    a = gan.generator(same_z, torch.tensor([0, 0]))
    b = gan.generator(same_z, torch.tensor([3, 3]))
    assert not torch.allclose(a, b)  # the class changes the image
    x = torch.randn(4, 3, size, size)
    d = gan["d"].eval()
    scores0, scores1 = d(x, torch.zeros(4, dtype=torch.long)), d(x, torch.full((4,), 2))
    assert scores0.shape == (4,) and not torch.allclose(scores0, scores1)  # the projection
    with pytest.raises(UsageError, match="conditional"):
        d(x)
    with pytest.raises(UsageError, match=r"class labels must lie in \[0, 5\)"):
        sample(gan, 2, classes=[0, 5])


def test_architectures_are_data_and_errors_name_the_problem() -> None:
    spec = GANArch.from_dict(arch("dcgan"))
    assert GANArch.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(UsageError, match="did you mean 'dcgan'"):
        build_gan({"family": "dcgn"})
    with pytest.raises(UsageError, match="did you mean 'latent_dim'"):
        build_gan({"family": "mlp", "latent_dims": 8})
    with pytest.raises(UsageError, match="power-of-two"):
        build_gan({"family": "dcgan", "image_size": 28})
    mlp = build_gan({"family": "mlp", "image_size": 28, "channels": 1, "latent_dim": 100})
    assert sample(mlp, 3).shape == (3, 1, 28, 28) and "g_ema" in mlp


def test_importing_the_package_does_not_import_torch() -> None:
    code = "import sys, vlm_core.gan; assert 'torch' not in sys.modules; vlm_core.gan.build_gan"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_task_attaches_sample_grids_through_its_setup(tmp_path: Path) -> None:
    """A builder gets the run's folder in ``ctx.out`` and adds callbacks to its TrainSetup;
    the trainer calls them on the main process (no trainer arguments needed)."""
    from vlm_core.tasks import TrainContext

    out = tmp_path / "run"
    ctx = TrainContext("art.generate", "art", "cpu", out=out)
    images, _ = squares(64)
    gan = build_gan(arch("dcgan"))
    setup = gan_setup(gan, TensorDataset(images), loss="bce", betas=(0.5, 0.999))
    assert ctx.out is not None
    setup.callbacks = [SampleGrid(gan, ctx.out, n=4)]
    Trainer(setup, config(max_steps=4, save_every=2), out).fit()
    assert sorted(p.name for p in (out / "samples").glob("step-*.png")) == [
        "step-000002.png",
        "step-000004.png",
    ]
