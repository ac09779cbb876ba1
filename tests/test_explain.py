"""Attention rollout, Grad-CAM and overlays: maps in range, on planted evidence, model intact."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import timm
import torch
from skimage import data
from torch import Tensor, nn

from vlm_core.errors import UsageError
from vlm_core.explain import (
    ExplainResult,
    apply_colormap,
    attention_rollout,
    explain,
    find_target_layer,
    grad_cam,
    is_vit_family,
    overlay,
    preprocess,
    rollout_matrix,
)
from vlm_core.explain._common import to_heat
from vlm_core.explain.gradcam import run_grad_cam
from vlm_core.explain.rollout import attention_modules, run_rollout
from vlm_core.types import Image

GRID = (3, 5)  # patch grid of the 48x80 test ViTs: non-square, so a transposition shows
VIT_SIZE = (48, 80)


@pytest.fixture(scope="module")
def astronaut() -> Image:
    return Image(pixels=data.astronaut()[:300, :450], name="astronaut")  # non-square crop


def vit(**kw: object) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=VIT_SIZE, **kw)


def resnet() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=10)


def hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


@contextmanager
def forced_attention(model: nn.Module, attention: Tensor) -> Iterator[None]:
    """Replace every attention matrix the model uses by ``attention`` (N, N)."""
    handles = [
        m.attn_drop.register_forward_hook(
            lambda _m, _a, out: attention.to(out.dtype).expand_as(out).clone()
        )
        for _, m in attention_modules(model)
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def vit_input() -> Tensor:
    return torch.randn(1, 3, *VIT_SIZE, generator=torch.Generator().manual_seed(1))


# --- rollout ------------------------------------------------------------------------------------


def test_rollout_of_the_astronaut(astronaut):
    model = vit()
    result = explain(model, astronaut)
    assert isinstance(result, ExplainResult)
    assert result.method == "rollout"
    assert result.heat.shape == (300, 450) and result.heat.dtype == np.float32
    assert result.heat.min() == 0.0 and result.heat.max() == 1.0
    assert result.layers == tuple(f"blocks.{i}.attn" for i in range(12))
    assert result.overlay.pixels.shape == (300, 450, 3)
    assert result.overlay.pixels.dtype == np.uint8
    with torch.no_grad():
        logits = model.eval()(preprocess(model, astronaut))[0]
    assert result.class_index == int(logits.argmax())
    assert result.score == pytest.approx(float(logits.max()), abs=1e-4)


def test_uniform_attention_gives_a_uniform_map():
    model = vit()
    with torch.no_grad():
        for _, m in attention_modules(model):
            m.qkv.weight.zero_()  # q = k = 0: every token attends equally to every token
            m.qkv.bias.zero_()
    saliency = run_rollout(model, vit_input())
    assert saliency.coarse.shape == GRID
    assert torch.allclose(saliency.coarse, saliency.coarse.flatten()[0].expand(GRID), atol=1e-12)
    assert saliency.coarse.min() > 0
    heat = attention_rollout(model, vit_input())
    assert heat.shape == VIT_SIZE and np.ptp(heat) == 0.0


def test_identity_attention_gives_a_uniform_map():
    model = vit()
    tokens = 1 + GRID[0] * GRID[1]
    with forced_attention(model, torch.eye(tokens)):
        saliency = run_rollout(model, vit_input())
        heat = attention_rollout(model, vit_input())
    # nothing flows from the patches to the class token: an all-zero (uniform) map
    assert torch.equal(saliency.coarse, torch.zeros(GRID, dtype=saliency.coarse.dtype))
    assert np.ptp(heat) == 0.0


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("vit_tiny_patch16_224", {}),
        ("vit_tiny_patch16_224", {"reg_tokens": 4}),
        ("vit_tiny_patch16_224", {"class_token": False, "global_pool": "avg"}),
        ("deit_tiny_distilled_patch16_224", {}),
    ],
    ids=["cls", "registers", "no-cls", "deit-distilled"],
)
def test_rollout_finds_the_attended_patch(name, kw):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, img_size=VIT_SIZE, **kw)
    assert is_vit_family(model)
    prefix = model.num_prefix_tokens
    tokens = prefix + GRID[0] * GRID[1]
    row, col = 1, 3
    attention = torch.zeros(tokens, tokens)
    attention[:, prefix + row * GRID[1] + col] = 1.0  # every token looks at patch (1, 3)
    with forced_attention(model, attention):
        saliency = run_rollout(model, vit_input())
        heat = attention_rollout(model, vit_input())
    assert saliency.coarse.shape == GRID
    assert divmod(int(saliency.coarse.argmax()), GRID[1]) == (row, col)
    y, x = np.unravel_index(heat.argmax(), heat.shape)
    assert 16 * row <= y < 16 * (row + 1) and 16 * col <= x < 16 * (col + 1)
    assert heat[16 * row : 16 * (row + 1), 16 * col : 16 * (col + 1)].mean() > 4 * heat.mean()


def test_rollout_matrix_math():
    n = 4
    uniform = torch.full((1, 2, n, n), 1.0 / n)
    one = rollout_matrix([uniform])
    assert torch.allclose(one[0], (uniform[0, 0].double() + torch.eye(n, dtype=torch.float64)) / 2)
    two = rollout_matrix([uniform, uniform])
    assert torch.allclose(two, one @ one)
    assert torch.allclose(two.sum(-1), torch.ones(1, n, dtype=torch.float64))
    # head fusion: max / min of two different heads
    heads = torch.stack([torch.eye(n), torch.full((n, n), 1.0 / n)])[None]
    fused_max = rollout_matrix([heads], "max")[0]
    expect = torch.maximum(torch.eye(n), torch.full((n, n), 1.0 / n)).double() + torch.eye(n)
    assert torch.allclose(fused_max, expect / expect.sum(-1, keepdim=True))
    fused_min = rollout_matrix([heads], "min")[0]
    expect = torch.minimum(torch.eye(n), torch.full((n, n), 1.0 / n)).double() + torch.eye(n)
    assert torch.allclose(fused_min, expect / expect.sum(-1, keepdim=True))
    assert not torch.allclose(fused_min, fused_max)


def test_discard_ratio_drops_the_weakest_weights_but_the_class_token_self_weight():
    n = 3
    a = torch.tensor([[0.1, 0.3, 0.6], [0.25, 0.2, 0.55], [0.05, 0.15, 0.8]])
    out = rollout_matrix([a[None, None]], discard_ratio=0.5)[0]  # the 4 smallest of 9 ...
    kept = a.double().clone()
    kept[2, 0] = kept[2, 1] = kept[1, 1] = 0.0  # ... but [0, 0] = 0.1 is protected
    expect = kept + torch.eye(n, dtype=torch.float64)
    assert torch.allclose(out, expect / expect.sum(-1, keepdim=True))
    with pytest.raises(UsageError, match="discard_ratio"):
        rollout_matrix([a[None, None]], discard_ratio=1.0)
    with pytest.raises(UsageError, match="head_fusion"):
        rollout_matrix([a[None, None]], "median")  # type: ignore[arg-type]


@pytest.mark.parametrize("fused", [True, False])
def test_rollout_restores_the_model_even_when_it_raises(fused):
    model = vit()
    for _, m in attention_modules(model):
        m.fused_attn = fused
    model.train()
    model.blocks[3].eval()  # a mixed state must come back as it was
    modes = [m.training for m in model.modules()]
    run_rollout(model, vit_input())
    assert [m.fused_attn for _, m in attention_modules(model)] == [fused] * 12
    assert [m.training for m in model.modules()] == modes
    assert hook_count(model) == 0

    class Boom(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            raise RuntimeError("boom in the head")

    model.head = Boom()
    modes = [m.training for m in model.modules()]
    with pytest.raises(RuntimeError, match="boom"):
        run_rollout(model, vit_input())
    assert [m.fused_attn for _, m in attention_modules(model)] == [fused] * 12
    assert [m.training for m in model.modules()] == modes
    assert hook_count(model) == 0


def test_rollout_refuses_a_convnet():
    with pytest.raises(UsageError, match="gradcam"):
        attention_rollout(resnet(), torch.zeros(1, 3, 64, 64))


# --- Grad-CAM ----------------------------------------------------------------------------------


class Planted(nn.Module):
    """Class 0 = mean redness, class 1 = mean greenness, seen through 4x4-pixel cells."""

    def __init__(self) -> None:
        super().__init__()
        conv = nn.Conv2d(3, 2, kernel_size=4, stride=4, bias=False)
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight[0, 0] = 1.0 / 16  # channel 0 averages red, channel 1 green
            conv.weight[1, 1] = 1.0 / 16
        self.features = nn.Sequential(conv, nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(2))
            self.head.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


def planted_input() -> Tensor:
    x = torch.zeros(1, 3, 48, 80)
    x[0, 0, 4:16, 8:24] = 1.0  # a red square, top left
    x[0, 1, 28:44, 52:76] = 0.7  # a larger, dimmer green one, bottom right
    return x


def test_grad_cam_peaks_on_the_evidence_for_each_class():
    model = Planted()
    assert find_target_layer(model, planted_input()) == "features"
    red = grad_cam(model, planted_input(), class_index=0)
    green = grad_cam(model, planted_input(), class_index=1)
    assert red.shape == green.shape == (48, 80)
    squares = {0: (slice(4, 16), slice(8, 24)), 1: (slice(28, 44), slice(52, 76))}
    for heat, (ys, xs) in zip((red, green), squares.values(), strict=True):
        y, x = np.unravel_index(heat.argmax(), heat.shape)
        assert ys.start <= y < ys.stop and xs.start <= x < xs.stop
        inside = np.zeros(heat.shape, dtype=bool)
        inside[ys, xs] = True
        assert heat[inside].mean() > 0.5 and heat[~inside].mean() < 0.1
    # the default class is the top-1 prediction: the green square is larger
    top1 = run_grad_cam(model, planted_input())
    assert top1.class_index == 1
    assert np.array_equal(to_heat(top1.coarse, (48, 80)), green)


def test_grad_cam_of_the_astronaut(astronaut):
    model = resnet()
    model.train()
    modes = [m.training for m in model.modules()]
    result = explain(model, astronaut)
    assert result.method == "gradcam"
    assert result.layers == ("layer4",)
    assert result.heat.shape == (300, 450) and result.heat.dtype == np.float32
    assert result.heat.min() == 0.0 and result.heat.max() == 1.0
    assert result.overlay.pixels.shape == (300, 450, 3)
    assert result.overlay.pixels.dtype == np.uint8
    assert result.overlay.name == "astronaut"
    with torch.no_grad():
        logits = model.eval()(preprocess(model, astronaut))[0]
    assert result.class_index == int(logits.argmax())
    assert result.score == pytest.approx(float(logits.max()), abs=1e-4)
    model.train()
    assert [m.training for m in model.modules()] == modes
    assert hook_count(model) == 0
    assert all(p.grad is None for p in model.parameters())


def test_grad_cam_reads_channels_last_stages():
    torch.manual_seed(0)
    model = timm.create_model(  # timm's Swin stages return (B, h, w, C)
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        depths=(1, 1, 1, 1),
        embed_dim=24,
        num_heads=(1, 1, 1, 1),
        num_classes=5,
    )
    saliency = run_grad_cam(model, torch.randn(1, 3, 224, 224))
    assert saliency.layers == ("layers.3",)
    assert saliency.coarse.shape == (7, 7)


def test_grad_cam_with_frozen_weights_and_in_inference_mode():
    model = Planted().requires_grad_(False)
    with torch.inference_mode():
        x = planted_input()
        heat = grad_cam(model, x, class_index=0)
    y, x_ = np.unravel_index(heat.argmax(), heat.shape)
    assert 4 <= y < 16 and 8 <= x_ < 24
    assert all(not p.requires_grad for p in model.parameters())


def test_grad_cam_restores_the_model_when_it_raises():
    model = Planted()
    model.train()

    def boom(_m: nn.Module, _a: object, _o: object) -> None:
        raise RuntimeError("boom in the head")

    handle = model.head.register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        grad_cam(model, planted_input(), target_layer="features")
    handle.remove()
    assert model.training and all(m.training for m in model.modules())
    assert hook_count(model) == 0


def test_grad_cam_named_layer_and_bad_requests():
    model = resnet()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert find_target_layer(model, x) == "layer4"
    heat = grad_cam(model, x, target_layer="layer3", size=(20, 30))
    assert heat.shape == (20, 30) and heat.min() >= 0.0 and heat.max() <= 1.0
    with pytest.raises(UsageError, match="did you mean 'layer4'"):
        grad_cam(model, x, target_layer="layer5")
    with pytest.raises(UsageError, match="outside the model's 10 classes"):
        grad_cam(model, x, class_index=10)
    with pytest.raises(UsageError, match="not a"):
        grad_cam(model, x, target_layer="fc")
    with pytest.raises(UsageError, match=r"\(1, C, H, W\)"):
        grad_cam(model, x[0])
    assert hook_count(model) == 0


# --- Grad-CAM on volumes ------------------------------------------------------------------------

VOLUME = (24, 32, 40)  # (D, H, W): three different sides, so a transposition shows
CUBES = {  # class 0: a bright cube of channel 0; class 1: a larger, dimmer one of channel 1
    0: (slice(4, 12), slice(4, 12), slice(8, 16)),
    1: (slice(12, 24), slice(16, 32), slice(24, 40)),
}


class Planted3D(nn.Module):
    """Class c = mean of input channel c, seen through 4x4x4-voxel cells (a 3D convnet)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        conv = nn.Conv3d(2, 2, kernel_size=4, stride=4, bias=False)
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight[0, 0] = 1.0 / 64
            conv.weight[1, 1] = 1.0 / 64
        self.features = nn.Sequential(conv)
        self.act = nn.ReLU(inplace=inplace)  # MONAI's DenseNet: in place, right after the stage
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.head = nn.Linear(2, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(2))
            self.head.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.act(self.features(x))).flatten(1))


def planted_volume() -> Tensor:
    x = torch.zeros(1, 2, *VOLUME)
    x[(0, 0, *CUBES[0])] = 1.0
    x[(0, 1, *CUBES[1])] = 0.6
    return x


def inside(where: tuple[slice, ...]) -> np.ndarray:
    mask = np.zeros(VOLUME, dtype=bool)
    mask[where] = True
    return mask


def test_grad_cam_of_a_volume_peaks_on_the_evidence_for_each_class():
    model = Planted3D()
    assert find_target_layer(model, planted_volume()) == "act"
    for class_index, cube in CUBES.items():
        heat = grad_cam(model, planted_volume(), class_index=class_index, target_layer="features")
        assert heat.shape == VOLUME and heat.dtype == np.float32
        assert heat.min() == 0.0 and heat.max() == 1.0
        peak = np.unravel_index(heat.argmax(), heat.shape)
        assert all(s.start <= i < s.stop for i, s in zip(peak, cube, strict=True)), peak
        assert heat[inside(cube)].mean() > 0.5 and heat[~inside(cube)].mean() < 0.1
    top1 = run_grad_cam(model, planted_volume(), target_layer="features")
    assert top1.class_index == 1  # the green cube holds more evidence in all
    assert top1.coarse.shape == (6, 8, 10)  # the layer's (d, h, w) grid
    assert np.array_equal(to_heat(top1.coarse, VOLUME), grad_cam(model, planted_volume()))


def test_volume_heat_is_upsampled_trilinearly():
    coarse = torch.zeros(3, 4, 5, dtype=torch.float64)
    coarse[2, 0, 4] = 1.0  # one cell: the far-depth, top, right corner
    heat = to_heat(coarse, (12, 16, 20))
    expect = torch.nn.functional.interpolate(
        coarse[None, None], size=(12, 16, 20), mode="trilinear", align_corners=False
    )[0, 0]
    expect = (expect - expect.min()) / (expect.max() - expect.min())
    np.testing.assert_allclose(heat, expect.numpy(), atol=1e-6)
    d, h, w = np.unravel_index(heat.argmax(), heat.shape)  # inside the cell's 4x4x4 block
    assert 8 <= d < 12 and 0 <= h < 4 and 16 <= w < 20
    assert heat[:4].max() == 0.0 and heat[:, 8:].max() == 0.0  # far from the cell: nothing
    assert not to_heat(torch.ones(3, 4, 5), (6, 8, 10)).any()  # constant: no preference
    with pytest.raises(UsageError, match=r"\(d, h, w\)"):
        to_heat(coarse, (12, 16))


def test_grad_cam_of_a_volume_ignores_an_in_place_relu_after_the_layer():
    """The explained activations are the layer's own, not what a later in-place op made them."""
    x = planted_volume()
    x[(0, 0, *CUBES[1])] = -0.5  # negative activations, which the ReLU after the layer zeroes
    x[(0, 1, *CUBES[0])] = -0.3

    def planted(inplace: bool) -> nn.Module:
        model = Planted3D(inplace=inplace)
        with torch.no_grad():  # class 0 now reads both channels, so both weights matter
            model.head.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 1.0]]))
        return model

    model = planted(inplace=True)
    model.train()
    in_place = grad_cam(model, x, class_index=0, target_layer="features")
    reference = grad_cam(planted(inplace=False), x, class_index=0, target_layer="features")
    np.testing.assert_array_equal(in_place, reference)  # differs by up to 1.0 without the copy
    assert model.training and hook_count(model) == 0
    assert all(p.grad is None for p in model.parameters())


def test_grad_cam_of_a_volume_checks_its_requests():
    model = Planted3D()
    heat = grad_cam(model, planted_volume(), class_index=0, size=(12, 16, 20))
    assert heat.shape == (12, 16, 20)
    with pytest.raises(UsageError, match=r"\(d, h, w\)"):
        grad_cam(model, planted_volume(), size=(16, 20))
    with pytest.raises(UsageError, match=r"not a \(1, C, d, h, w\) map"):
        grad_cam(model, planted_volume(), target_layer="head")
    with pytest.raises(UsageError, match=r"\(1, C, D, H, W\)"):
        grad_cam(model, planted_volume()[0])
    with pytest.raises(UsageError, match=r"spatial \(B, C, d, h, w\)"):
        find_target_layer(model, torch.zeros(1, 2, 4, 4, 4))  # one cell: nothing spatial
    assert hook_count(model) == 0


def test_grad_cam_of_monai_densenet121_on_a_volume():
    monai = pytest.importorskip("monai")  # MONAI's DenseNet: ReLU in place after `features`
    torch.manual_seed(0)
    model = monai.networks.nets.DenseNet121(spatial_dims=3, in_channels=1, out_channels=3)
    x = torch.randn(1, 1, 64, 48, 56, generator=torch.Generator().manual_seed(0))
    layer = find_target_layer(model, x)
    assert layer == "class_layers.relu"  # the last (B, C, d, h, w) output: 2x1x1 cells
    saliency = run_grad_cam(model, x, target_layer="features.denseblock3")
    assert saliency.coarse.shape == (4, 3, 3)
    heat = grad_cam(model, x, class_index=2, target_layer="features.denseblock3")
    assert heat.shape == (64, 48, 56) and heat.min() == 0.0 and heat.max() == 1.0
    assert hook_count(model) == 0 and all(p.grad is None for p in model.parameters())


# --- explain / overlay ----------------------------------------------------------------------


def test_explain_chooses_and_checks_the_method(astronaut):
    model = resnet()
    with pytest.raises(UsageError, match="did you mean 'gradcam'"):
        explain(model, astronaut, method="gradcm")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="gradcam"):
        explain(model, astronaut, method="rollout")
    with pytest.raises(UsageError, match="Grad-CAM, not to rollout"):
        explain(vit(), astronaut, class_index=3)
    # a ViT has no spatial feature stage: Grad-CAM needs a layer named explicitly
    with pytest.raises(UsageError, match="target_layer"):
        explain(vit(), astronaut, method="gradcam")
    result = explain(
        vit(), astronaut, method="gradcam", class_index=3, target_layer="patch_embed.proj"
    )
    assert result.method == "gradcam" and result.class_index == 3
    assert result.layers == ("patch_embed.proj",)


def test_preprocess_uses_the_models_config_and_keeps_the_whole_image(astronaut):
    model = vit()
    pixels = preprocess(model, astronaut)
    assert pixels.shape == (1, 3, *VIT_SIZE) and pixels.dtype == torch.float32
    # ViT's config has mean = std = 0.5: the white border pixel maps to +1, never cropped off
    white = Image(pixels=np.full((30, 50, 3), 255, np.uint8))
    assert torch.allclose(preprocess(model, white), torch.ones(1, 3, *VIT_SIZE))
    small = preprocess(resnet(), astronaut, {"input_size": (3, 32, 48)})
    assert small.shape == (1, 3, 32, 48)


def test_overlay_blends_a_colour_map():
    pixels = np.zeros((4, 6), np.uint16)
    pixels[0, 0] = 1000
    image = Image(pixels=pixels, name="gray16")
    heat = np.linspace(0, 1, 24, dtype=np.float32).reshape(4, 6)
    out = overlay(image, heat, alpha=1.0)
    assert out.pixels.dtype == np.uint8 and out.pixels.shape == (4, 6, 3)
    assert out.name == "gray16"
    assert out.pixels[0, 0].tolist() == [0, 0, 128]  # jet: low = dark blue
    assert out.pixels[-1, -1].tolist() == [128, 0, 0]  # high = dark red
    assert np.array_equal(overlay(image, heat, alpha=0.0).pixels, image.to_rgb_uint8())
    half = overlay(image, heat, alpha=0.5).pixels.astype(int)
    full = out.pixels.astype(int)
    assert np.abs(half - (image.to_rgb_uint8() + full) / 2).max() <= 1
    hot = apply_colormap(np.array([[0.0, 1.0]]), "hot")
    assert hot.tolist() == [[[0, 0, 0], [255, 255, 255]]]
    with pytest.raises(UsageError, match="does not match"):
        overlay(image, heat[:3])
    with pytest.raises(UsageError, match="did you mean 'jet'"):
        overlay(image, heat, colormap="jte")
    with pytest.raises(UsageError, match="alpha"):
        overlay(image, heat, alpha=1.5)


@pytest.mark.gpu
@pytest.mark.parametrize("factory", [vit, resnet], ids=["rollout", "gradcam"])
def test_explain_on_cuda_matches_cpu(factory, astronaut):
    model = factory()
    cpu = explain(model, astronaut)
    gpu = explain(model.cuda(), astronaut)
    assert (gpu.method, gpu.class_index, gpu.layers) == (cpu.method, cpu.class_index, cpu.layers)
    assert np.abs(gpu.heat - cpu.heat).mean() < 0.01
    assert np.abs(gpu.heat - cpu.heat).max() < 0.1
