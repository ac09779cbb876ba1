"""Sliding-window segmentation through the plugin against raw MONAI doing the same work.

Same network instance, same volume (a float32 array in host memory), same ROI, sliding-window
batch, overlap, blending and precision (bf16 autocast on CUDA); both end with the uint8 label
map in host memory. The plugin's path is :func:`vlm_medical.segment.segment_array` as a run
calls it (intensity scaling on the device included); the raw path is what one writes with
MONAI directly (copy to the device, scale, ``sliding_window_inference``, argmax, copy back).
Rounds alternate between the two; the medians are compared.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import torch


def bench_sliding_window(
    *,
    device: str = "auto",
    shape: tuple[int, int, int] = (320, 320, 160),
    roi: int = 96,
    sw_batch: int = 8,
    rounds: int = 5,
    channels: tuple[int, ...] = (16, 32, 64, 128, 256),
) -> dict[str, Any]:
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import UNet

    from vlm_core.devices import resolve_device
    from vlm_medical.intensity import normalize_tensor
    from vlm_medical.params import SegmentParams
    from vlm_medical.segment import LoadedModel, segment_array

    dev = torch.device(resolve_device(device))
    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=channels,
               strides=(2,) * (len(channels) - 1), num_res_units=2)  # fmt: skip
    net = net.eval().requires_grad_(False).to(dev)
    model = LoadedModel(net, {}, "", ("background", "lesion"), spatial_dims=3)
    volume = np.random.default_rng(0).normal(100, 50, shape).astype(np.float32)
    params = SegmentParams(roi=roi, sw_batch=sw_batch, overlap=0.25, blend="gaussian",
                           fill_holes=False, min_voxels=0)  # fmt: skip
    amp = dev.type == "cuda"

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def plugin() -> np.ndarray:
        return segment_array(model, volume, np.eye(4), params, dev, flat=False)

    def raw() -> np.ndarray:
        source = torch.from_numpy(volume)
        if dev.type == "cuda":
            source = source.pin_memory()
        x = normalize_tensor(source.to(dev, non_blocking=True), "auto")[None, None]
        with torch.inference_mode(), torch.autocast(dev.type, enabled=amp, dtype=torch.bfloat16):
            logits = sliding_window_inference(x, [roi] * 3, sw_batch, net, overlap=0.25,
                                              mode="gaussian")  # fmt: skip
            labels = logits.argmax(dim=1).to(torch.uint8)
        return labels[0].cpu().numpy()

    times: dict[str, list[float]] = {"plugin": [], "raw": []}
    same = bool(np.array_equal(plugin(), raw()))  # warm-up, and the two agree
    for _ in range(rounds):
        for name, fn in (("raw", raw), ("plugin", plugin)):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    voxels = float(np.prod(shape))
    plugin_s, raw_s = statistics.median(times["plugin"]), statistics.median(times["raw"])
    return {
        "bench": "medical_sliding_window",
        "device": str(dev),
        "precision": "bf16" if amp else "fp32",
        "network": f"UNet 3D channels {list(channels)}",
        "volume": list(shape),
        "roi": roi,
        "sw_batch": sw_batch,
        "plugin_mvoxel_s": round(voxels / plugin_s / 1e6, 2),
        "raw_mvoxel_s": round(voxels / raw_s / 1e6, 2),
        "ratio": round(raw_s / plugin_s, 3),
        "same_labels": same,
        "rounds": rounds,
        "peak_device_mb": round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
        if dev.type == "cuda"
        else None,
    }
