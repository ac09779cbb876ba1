"""Backbones over timm: embeddings, FPN-ready feature maps, preprocessing, weights, cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from vlm_core.backbones import cached_backbone, create_backbone
from vlm_core.errors import UsageError
from vlm_core.runtime import policy_for


def test_pooled_embeddings():
    bb = create_backbone("test_resnet")
    c, h, w = bb.preprocessing.input_size
    with torch.inference_mode():
        out = bb(torch.randn(2, c, h, w))
    assert out.shape == (2, bb.num_features) and bb.feature_info is None and not bb.is_vit


@pytest.mark.parametrize("name", ["test_resnet", "test_convnext", "test_vit"])
def test_feature_maps_report_their_strides_and_channels(name):
    bb = create_backbone(name, features_only=True, **({"img_size": 64} if "vit" in name else {}))
    info = bb.feature_info
    assert info is not None and len(info.channels) == len(info.strides) >= 1
    size = 64
    with torch.inference_mode():
        maps = bb(torch.randn(1, 3, size, size))
    assert [m.shape[1] for m in maps] == list(info.channels)
    assert [size // m.shape[-1] for m in maps] == list(info.strides)


def test_out_indices_select_levels():
    bb = create_backbone("test_resnet", features_only=True, out_indices=(1, 3))
    assert len(bb.feature_info.strides) == 2
    assert bb.feature_info.strides == (4, 16)


def test_preprocessing_transform_matches_the_input_size():
    bb = create_backbone("test_vit")
    photo = PILImage.fromarray(np.zeros((300, 200, 3), np.uint8))
    tensor = bb.preprocessing.transform()(photo)
    assert tuple(tensor.shape) == bb.preprocessing.input_size
    assert bb.is_vit
    pipe = bb.preprocessing.pipeline()
    assert (
        pipe.size == tuple(bb.preprocessing.input_size[1:]) and pipe.mean == bb.preprocessing.mean
    )


def test_unknown_backbone_suggests_a_name():
    with pytest.raises(UsageError, match="unknown backbone 'resnet5'; did you mean"):
        create_backbone("resnet5")


def test_cached_backbone_is_shared_and_prepared():
    policy = policy_for("cpu")
    first, release_first = cached_backbone("test_resnet", policy=policy)
    second, release_second = cached_backbone("test_resnet", policy=policy)
    other, release_other = cached_backbone("test_resnet", policy=policy, features_only=True)
    try:
        assert first is second and other is not first
        assert not first.model.training
    finally:
        release_first(), release_second(), release_other()


def test_every_backbone_can_explain_an_image():
    from skimage.data import astronaut

    from vlm_core.types import Image

    photo = Image(pixels=astronaut()[::4, ::4].copy())
    vit = create_backbone("test_vit", num_classes=10).explain(photo)
    cnn = create_backbone("test_resnet", num_classes=10).explain(photo)
    assert (vit.method, cnn.method) == ("rollout", "gradcam")
    for result in (vit, cnn):
        assert result.heat.shape == photo.pixels.shape[:2]
        assert result.overlay.pixels.shape == photo.pixels.shape and result.heat.max() == 1.0
    with pytest.raises(UsageError, match="features_only"):
        create_backbone("test_resnet", features_only=True).explain(photo)


def test_weights_from_a_local_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    from vlm_core.fileio import sha256_file
    from vlm_core.weights import WeightsError

    source = create_backbone("test_resnet", num_classes=10)
    path = tmp_path / "test_resnet.safetensors"
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, str(path))
    digest = sha256_file(path)
    loaded = create_backbone("test_resnet", weights=str(path), num_classes=10, sha256=digest)
    assert loaded.weights_sha256 == digest
    for (name, a), (_, b) in zip(source.model.state_dict().items(),
                                 loaded.model.state_dict().items(), strict=True):  # fmt: skip
        torch.testing.assert_close(a, b, msg=name)
    features = create_backbone("test_resnet", weights=str(path), features_only=True)
    assert features.weights_sha256 == digest  # timm adapts the checkpoint to the feature wrapper
    with pytest.raises(WeightsError, match="sha256"):
        create_backbone("test_resnet", weights=str(path), sha256="0" * 64)
