"""Detection transforms (torchvision.transforms.v2, boxes as XYXY tv_tensors) and the
:class:`DetectionDataset` that feeds :class:`~vlm_driving.datasets.Annotated` items to a
torchvision detector."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from vlm_core.errors import InputError
from vlm_driving.datasets import Annotated

Target = dict[str, torch.Tensor]
Transform = Callable[..., Any]


@dataclass(frozen=True)
class AugmentConfig:
    """The training augmentation; a probability of 0 (or a range of (1, 1)) turns a step off."""

    photometric_p: float = 0.5  # RandomPhotometricDistort: brightness, contrast, hue, ...
    zoom_out_p: float = 0.2  # RandomZoomOut: the image on a larger grey canvas
    zoom_out_range: tuple[float, float] = (1.0, 1.5)  # canvas side / image side
    crop_p: float = 0.3  # RandomResizedCrop at the image's aspect: zooming in
    crop_scale: tuple[float, float] = (0.5, 1.0)  # share of the image's area a crop keeps
    flip_p: float = 0.5  # RandomHorizontalFlip
    fill: float = 0.5  # grey of padded areas, in [0, 1]
    min_box_size: float = 2.0  # px in the resized image; smaller boxes are dropped


def _to_float() -> list[Transform]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]


def train_transform(
    size: tuple[int, int], config: AugmentConfig = AugmentConfig()
) -> Callable[..., Any]:
    """``(PIL or uint8 image, {"boxes": BoundingBoxes, "labels": ...})`` → the same, augmented
    and resized to ``size`` (height, width), as a float image in [0, 1]; boxes follow, are
    clamped to the image and those under ``config.min_box_size`` px are dropped with their
    labels. The steps run on float pixels: on a 2-core CPU torchvision's photometric steps
    are tens of times slower on uint8 than on float (measured: 0.74 s against 8 ms)."""
    fill = {tv_tensors.Image: config.fill, "others": 0}
    steps: list[Transform] = _to_float()
    if config.photometric_p > 0:
        steps.append(v2.RandomPhotometricDistort(p=config.photometric_p))
    if config.zoom_out_p > 0:
        steps.append(
            v2.RandomZoomOut(fill=fill, side_range=config.zoom_out_range, p=config.zoom_out_p)
        )
    if config.crop_p > 0:
        aspect = size[1] / size[0]
        crop = v2.RandomResizedCrop(list(size), scale=config.crop_scale,
                                    ratio=(aspect * 0.9, aspect * 1.1), antialias=True)  # fmt: skip
        steps.append(v2.RandomApply([crop], p=config.crop_p))
    if config.flip_p > 0:
        steps.append(v2.RandomHorizontalFlip(p=config.flip_p))
    steps += [
        v2.Resize(list(size)),
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=config.min_box_size),
    ]
    return v2.Compose(steps)


def eval_transform(size: tuple[int, int] | None) -> Callable[..., Any]:
    """Resize a PIL or uint8 image to ``size`` (height, width) and make it float in [0, 1];
    boxes follow. ``None`` keeps the image's own size, as a run sees it (the detector's
    transform resizes it, keeping its aspect)."""
    return v2.Compose([*_to_float(), *([v2.Resize(list(size))] if size else [])])


class DetectionDataset(Dataset[tuple[torch.Tensor, Target]]):
    """Annotated images as torchvision detection samples.

    Args:
        items: the images and their boxes.
        class_names: label order; a box's label is its class's index + 1 (0 is background).
        size: the model's input (height, width) in pixels; every image is resized to it
            (None: kept at its own size, as a run gives it to the detector; not with train).
        train: augment (:func:`train_transform`) or only resize (:func:`eval_transform`).
        config: the training augmentation (default :class:`AugmentConfig`).

    A sample is ``(image, target)``: image (3, H, W) float32 in [0, 1]; target ``boxes`` (N, 4)
    float32 XYXY in the resized image's pixels, ``labels`` (N,) int64, ``image_id`` (the index)
    and ``orig_size`` ``[h, w]`` of the image on disk.
    """

    def __init__(
        self,
        items: Sequence[Annotated],
        class_names: Sequence[str],
        size: tuple[int, int] | None,
        train: bool,
        *,
        config: AugmentConfig = AugmentConfig(),
    ) -> None:
        self.items = list(items)
        self.class_names = tuple(class_names)
        self.size = size
        self.index = {name: i + 1 for i, name in enumerate(self.class_names)}
        for item in self.items:
            unknown = [label for label in item.labels if label not in self.index]
            if unknown:
                raise InputError(
                    f"{item.image}: label '{unknown[0]}' is not among the classes "
                    f"({', '.join(self.class_names)})"
                )
        if train and size is None:
            raise ValueError("training samples need a size to resize to")
        self.transform = (
            train_transform(size, config) if train and size is not None else eval_transform(size)
        )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Target]:
        item = self.items[i]
        try:
            with Image.open(item.image) as im:
                rgb = im.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise InputError(f"{item.image}: cannot decode the image ({exc})") from None
        if (rgb.height, rgb.width) != item.size:
            raise InputError(
                f"{item.image}: the image is {rgb.width}x{rgb.height} but its annotation says "
                f"{item.size[1]}x{item.size[0]} (width x height)"
            )
        boxes = tv_tensors.BoundingBoxes(
            torch.from_numpy(item.xyxy.copy()), format="XYXY", canvas_size=item.size
        )
        labels = torch.tensor([self.index[label] for label in item.labels], dtype=torch.int64)
        image, target = self.transform(rgb, {"boxes": boxes, "labels": labels})
        return image.as_subclass(torch.Tensor).clamp_(0.0, 1.0), {
            "boxes": target["boxes"].as_subclass(torch.Tensor).float(),
            "labels": target["labels"],
            "image_id": torch.tensor(i),
            "orig_size": torch.tensor(item.size),
        }


def collate(
    batch: Sequence[tuple[torch.Tensor, Target]],
) -> tuple[torch.Tensor | list[torch.Tensor], list[Target]]:
    """A batch of samples as ``(B, 3, H, W)`` (a list of (3, H, W) images when their sizes
    differ: samples kept at their own size) and a target list."""
    images = [image for image, _ in batch]
    same = all(image.shape == images[0].shape for image in images)
    return (torch.stack(images) if same else images), [target for _, target in batch]
