"""Image preprocessing split between DataLoader workers (read, check, decode) and the device
(decode JPEG on CUDA with nvJPEG, resize, crop, normalise)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from vlm_core.errors import InputError

Payload = tuple[Literal["jpeg", "pixels"], torch.Tensor]


@dataclass(frozen=True)
class ImagePipeline:
    """Resize the shorter side to ``resize``, centre-crop to ``size``, scale to [0, 1] and
    normalise with ``mean``/``std`` — the usual timm evaluation transform, on uint8 tensors.

    ``gpu_decode``: read JPEG bytes in the workers and decode them on the CUDA device
    (torchvision.io.decode_jpeg); other formats, and all files on other devices, are decoded in
    the workers.
    """

    size: tuple[int, int]  # (height, width) after the crop, pixels
    resize: int  # shorter side before the crop, pixels
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    gpu_decode: bool = False

    @classmethod
    def from_data_config(cls, config: dict[str, Any], *, gpu_decode: bool = False) -> ImagePipeline:
        """From timm's data config (``timm.data.resolve_model_data_config``)."""
        _, height, width = config["input_size"]
        crop_pct = float(config.get("crop_pct") or 1.0)
        return cls(
            size=(height, width),
            resize=math.floor(min(height, width) / crop_pct),
            mean=tuple(config["mean"]),
            std=tuple(config["std"]),
            interpolation=str(config.get("interpolation", "bilinear")),
            gpu_decode=gpu_decode,
        )

    def _geometry(self, image: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        mode = InterpolationMode(
            self.interpolation if self.interpolation != "random" else "bilinear"
        )
        image = F.resize(image, [self.resize], interpolation=mode, antialias=True)
        return F.center_crop(image, list(self.size))

    def read(self, path: Path) -> Payload:
        """Worker side: check the file by content and caps, then decode it (or keep the JPEG
        bytes for the device). Raises :class:`InputError` for unusable files."""
        from torchvision.io import ImageReadMode, decode_image, read_file

        from vlm_core.io import probe_input
        from vlm_core.kinds import Kind

        probe = probe_input(Path(path), [Kind.IMAGE])
        if self.gpu_decode and probe.format == "jpeg":
            return "jpeg", read_file(str(probe.path))
        if probe.format in ("jpeg", "png"):
            try:
                image = decode_image(read_file(str(probe.path)), mode=ImageReadMode.RGB)
            except RuntimeError as exc:
                raise InputError(f"{path}: image data is truncated or corrupt ({exc})") from None
        else:
            from vlm_core.io import load_input

            rgb = load_input(probe).to_rgb_uint8()
            image = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
        return "pixels", self._geometry(image)

    @staticmethod
    def pack(payloads: list[Payload]) -> dict[str, Any]:
        """Worker side: one batch as a few large tensors (JPEG bytes concatenated, pixels
        stacked), so a batch crosses the process boundary as 3 shared-memory blocks, not one
        per image."""
        kinds = [kind for kind, _ in payloads]
        jpegs = [data for kind, data in payloads if kind == "jpeg"]
        pixels = [data for kind, data in payloads if kind == "pixels"]
        lengths = torch.tensor([t.numel() for t in jpegs], dtype=torch.int64)
        return {
            "kinds": kinds,
            "jpeg_bytes": torch.cat(jpegs) if jpegs else torch.empty(0, dtype=torch.uint8),
            "jpeg_lengths": lengths,
            "pixels": torch.stack(pixels) if pixels else torch.empty(0, dtype=torch.uint8),
        }

    @staticmethod
    def unpack(packed: dict[str, Any]) -> list[Payload]:
        """Main side: the per-image payloads of a packed batch (views, no copies)."""
        jpegs = iter(torch.split(packed["jpeg_bytes"], packed["jpeg_lengths"].tolist()))
        pixels = iter(packed["pixels"].unbind(0)) if packed["pixels"].numel() else iter(())
        return [(kind, next(jpegs) if kind == "jpeg" else next(pixels)) for kind in packed["kinds"]]

    def to_device(self, payloads: list[Payload], device: torch.device) -> torch.Tensor:
        """Device side: decode JPEGs on the device, resize and crop images of the same size
        together (one call per distinct size, not one per image), and normalise the batch;
        returns (B, 3, H, W) float32 on ``device``."""
        from torchvision.io import ImageReadMode, decode_jpeg

        jpeg_at = [i for i, (kind, _) in enumerate(payloads) if kind == "jpeg"]
        out = torch.empty((len(payloads), 3, *self.size), dtype=torch.uint8, device=device)
        if jpeg_at:
            decoded = decode_jpeg([payloads[i][1] for i in jpeg_at], mode=ImageReadMode.RGB,
                                  device=device)  # fmt: skip
            by_shape: dict[tuple[int, ...], list[int]] = {}
            for j, image in enumerate(decoded):
                by_shape.setdefault(tuple(image.shape), []).append(j)
            for members in by_shape.values():
                group = torch.stack([decoded[j] for j in members])
                index = torch.tensor([jpeg_at[j] for j in members], device=device)
                out.index_copy_(0, index, self._geometry(group))
        pixel_at = [i for i, (kind, _) in enumerate(payloads) if kind == "pixels"]
        if pixel_at:
            pixels = torch.stack([payloads[i][1] for i in pixel_at]).to(device, non_blocking=True)
            out.index_copy_(0, torch.tensor(pixel_at, device=device), pixels)
        batch = out.float().div_(255.0)
        mean = torch.tensor(self.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, -1, 1, 1)
        return batch.sub_(mean).div_(std)
