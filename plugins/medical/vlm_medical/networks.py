"""MONAI networks by name, rebuilt from the ``architecture`` a checkpoint's card records."""

from __future__ import annotations

from typing import Any

from torch import nn

#: The default: a small residual 3D UNet (about 0.3 M parameters).
DEFAULT_UNET: dict[str, Any] = {
    "name": "unet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "channels": [16, 32, 64, 128],
    "strides": [2, 2, 2],
    "num_res_units": 1,
}

#: SwinUNETR, the attention-based alternative (needs patch sides divisible by 32).
DEFAULT_SWIN: dict[str, Any] = {
    "name": "swinunetr",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "feature_size": 12,
    "depths": [2, 2, 2, 2],
    "num_heads": [3, 6, 12, 24],
}


#: The sides a network takes, by name: (a multiple of, at least). A UNet halves each side three
#: times; SwinUNETR merges patches five times. Patches and sliding windows are rounded to these.
SIDES: dict[str, tuple[int, int]] = {"unet": (8, 16), "swinunetr": (32, 64)}


def sides_of(network: nn.Module) -> tuple[int, int]:
    """:data:`SIDES` of a built network (unwrapped from DistributedDataParallel)."""
    from monai.networks.nets import SwinUNETR

    bare = getattr(network, "module", network)
    return SIDES["swinunetr" if isinstance(bare, SwinUNETR) else "unet"]


def architecture(name: str, out_channels: int = 2, spatial_dims: int = 3) -> dict[str, Any]:
    """The card's architecture of network ``name`` with ``out_channels`` classes, 2D or 3D."""
    base = DEFAULT_SWIN if name == "swinunetr" else DEFAULT_UNET
    return {**base, "out_channels": out_channels, "spatial_dims": spatial_dims}


def spatial_dims(arch: dict[str, Any]) -> int:
    """2 for a network of images (or slices), 3 for one of volumes."""
    return int(arch.get("spatial_dims", 3))


def build_network(arch: dict[str, Any]) -> nn.Module:
    """The MONAI network described by ``arch`` (see :data:`DEFAULT_UNET`)."""
    from monai.networks.nets import SwinUNETR, UNet

    kwargs = {k: v for k, v in arch.items() if k != "name"}
    if arch["name"] == "unet":
        return UNet(**kwargs)
    if arch["name"] == "swinunetr":
        return SwinUNETR(**kwargs)
    raise ValueError(f"unknown network '{arch['name']}' (unet, swinunetr)")
