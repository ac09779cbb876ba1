"""Image-caption and image-question-answer data for the captioner.

Two file formats, image paths relative to the file's folder:

- **COCO captions JSON** — ``{"images": [{"id": 1, "file_name": "a.jpg"}, ...],
  "annotations": [{"image_id": 1, "caption": "..."}, ...]}`` (the layout of
  ``captions_train2017.json``); an image's captions become its references;
- **CSV** with a header row: ``image,caption`` for captions, ``image,question,answer`` for
  visual QA, or all four columns (a row may then carry a caption, a question with its answer,
  or both).

:func:`read_captions` reads either into :class:`CaptionItem` s (one per image, or per image and
question, with every reference), checking every entry; a problem is one
:class:`~vlm_core.errors.InputError` naming the file and the entry. :class:`CaptionDataset`
turns items into ``(image tensor, token ids)`` samples and :func:`collate_captions` pads them
into a batch for :mod:`~vlm_core.crossmodal.caption_setup`.

"""

from __future__ import annotations

import csv
import io
import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from vlm_core.crossmodal.vocab import Vocab
from vlm_core.errors import InputError, UsageError
from vlm_core.io import load_input, probe_input
from vlm_core.kinds import Kind

log = logging.getLogger("vlm.crossmodal")

__all__ = [
    "CaptionDataset",
    "CaptionItem",
    "collate_captions",
    "read_caption_csv",
    "read_captions",
    "read_coco_captions",
    "split_items",
]


@dataclass(frozen=True)
class CaptionItem:
    """One image (and question) with its reference captions (or answers)."""

    image: Path  # absolute path of the image file
    captions: tuple[str, ...]  # the references: captions, or answers to `question`
    question: str | None = None  # None: a caption item

    def texts(self) -> list[str]:
        """Every text of the item (for building a vocabulary)."""
        return [*self.captions, *([self.question] if self.question else [])]


def _where(path: Path, entry: str) -> str:
    return f"{path}: {entry}"


def _image_path(source: Path, entry: str, name: object) -> Path:
    if not isinstance(name, str) or not name.strip():
        raise InputError(_where(source, f"{entry} has no image file name"))
    image = (source.parent / name).resolve()
    if not image.is_file():
        raise InputError(_where(source, f"{entry}: image file {name!r} not found at {image}"))
    return image


def _text(value: object) -> str:
    return " ".join(value.split()) if isinstance(value, str) else ""


def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise InputError(f"{path}: no such {what} file")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_coco_captions(path: Path) -> list[CaptionItem]:
    """The images of a COCO captions file with their captions (images without one are
    skipped with a warning)."""
    path = Path(path)
    try:
        data = json.loads(_read_text(path, "COCO captions"))
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})"
        ) from None
    images, annotations = (
        (data.get("images"), data.get("annotations")) if isinstance(data, dict) else (None, None)
    )
    if not isinstance(images, list) or not isinstance(annotations, list):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise InputError(
            f"{path}: a COCO captions file is an object with 'images' and 'annotations' lists; "
            f"found {found}"
        )
    files: dict[Any, Path] = {}
    for i, image in enumerate(images):
        entry = f"images[{i}]"
        if not isinstance(image, dict) or "id" not in image:
            raise InputError(_where(path, f"{entry} has no 'id'"))
        image_id = image["id"]
        if not isinstance(image_id, (int, str)) or isinstance(image_id, bool):
            raise InputError(_where(path, f"{entry}: id {image_id!r} is not an integer or string"))
        if image_id in files:
            raise InputError(_where(path, f"{entry}: duplicate image id {image_id!r}"))
        files[image_id] = _image_path(path, f"{entry} (id {image_id!r})", image.get("file_name"))
    captions: dict[Any, list[str]] = {}
    for i, ann in enumerate(annotations):
        entry = f"annotations[{i}]"
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise InputError(_where(path, f"{entry} has no 'image_id'"))
        image_id = ann["image_id"]
        if not isinstance(image_id, (int, str)) or image_id not in files:
            raise InputError(_where(path, f"{entry}: image_id {image_id!r} is not in 'images'"))
        caption = _text(ann.get("caption"))
        if not caption:
            raise InputError(_where(path, f"{entry} (image_id {image_id!r}): empty caption"))
        captions.setdefault(image_id, []).append(caption)
    if not captions:
        raise InputError(f"{path}: no captions (the 'annotations' list is empty)")
    uncaptioned = len(files) - len(captions)
    if uncaptioned:
        log.warning("%s: %d image(s) without a caption skipped", path, uncaptioned)
    return [CaptionItem(files[k], tuple(captions[k])) for k in files if k in captions]


def read_caption_csv(path: Path) -> list[CaptionItem]:
    """The rows of a caption / visual-QA CSV, grouped by image (and question)."""
    path = Path(path)
    text = _read_text(path, "caption CSV")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise InputError(f"{path}: empty file; the first row must be a header (image,caption)")
        columns = [name.strip().lower() for name in header]
        missing = [] if "image" in columns else ["image"]
        if ("question" in columns) != ("answer" in columns):
            missing.append("answer" if "question" in columns else "question")
        elif "caption" not in columns and "question" not in columns:
            missing.append("caption")
        if missing:
            raise InputError(
                f"{path}: missing column(s) {', '.join(missing)} in the header "
                f"({','.join(columns)}); it needs image,caption and/or image,question,answer"
            )
        names = ("image", "caption", "question", "answer")
        at = {name: columns.index(name) for name in names if name in columns}
        groups: dict[tuple[Path, str | None], list[str]] = {}
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(columns):
                fields = f"{len(row)} field(s), the header has {len(columns)}"
                raise InputError(_where(path, f"line {line}: {fields}"))
            cells = {name: _text(row[i]) for name, i in at.items()}
            image = _image_path(path, f"line {line}", cells["image"])
            caption, question, answer = (
                cells.get(k, "") for k in ("caption", "question", "answer")
            )
            if question and not answer:
                raise InputError(_where(path, f"line {line}: question without an answer"))
            if answer and not question:
                raise InputError(_where(path, f"line {line}: answer without a question"))
            if not caption and not question:
                raise InputError(_where(path, f"line {line}: empty caption"))
            if caption:
                groups.setdefault((image, None), []).append(caption)
            if question:
                groups.setdefault((image, question), []).append(answer)
    except csv.Error as exc:
        raise InputError(f"{path}: not a valid CSV (line {reader.line_num}: {exc})") from None
    if not groups:
        raise InputError(f"{path}: no rows after the header")
    return [CaptionItem(image, tuple(refs), question) for (image, question), refs in groups.items()]


def read_captions(path: Path) -> list[CaptionItem]:
    """Items of a COCO captions ``.json`` or a caption / QA ``.csv`` file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        return read_coco_captions(path)
    if suffix == ".csv":
        return read_caption_csv(path)
    raise InputError(f"{path}: caption data is a COCO captions .json or a .csv file")


def split_items(
    items: Sequence[CaptionItem], val_fraction: float = 0.1, *, seed: int = 0
) -> tuple[list[CaptionItem], list[CaptionItem]]:
    """``(train, val)``: a seeded split *by image*, so no image is on both sides."""
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"val_fraction must be in [0, 1), got {val_fraction}")
    images = sorted({item.image for item in items})
    random.Random(seed).shuffle(images)
    n_val = round(len(images) * val_fraction)
    if val_fraction > 0 and n_val == 0 and len(images) > 1:
        n_val = 1
    held_out = set(images[:n_val])
    return (
        [item for item in items if item.image not in held_out],
        [item for item in items if item.image in held_out],
    )


class CaptionDataset(Dataset[dict[str, Any]]):
    """A map-style dataset of captioner samples.

    Args:
        items: the images and their references.
        vocab: encodes the texts.
        transform: PIL image -> (3, S, S) tensor (``Captioner.transform``).
        max_positions: the decoder's length (``CaptionerArch.max_positions``); longer
            sequences are cut (the caption's end first).
        per_caption: one sample per (item, reference) pair — for training — or, when False,
            one per item whose token ids are its first reference's — for validation, where
            every reference goes to the metrics.

    A sample is a dict: ``image`` (3, S, S) float, ``tokens`` (L,) long (prefix, caption,
    ``<eos>``), ``prefix_len`` (how many leading tokens are the prefix, not trained on),
    ``question`` (str or None) and ``references`` (list of str).
    """

    def __init__(
        self,
        items: Sequence[CaptionItem],
        vocab: Vocab,
        transform: Callable[[Any], torch.Tensor],
        *,
        max_positions: int,
        per_caption: bool = True,
    ) -> None:
        self.items = list(items)
        self.vocab, self.transform = vocab, transform
        self.max_positions = max_positions
        self.index = (
            [(i, j) for i, item in enumerate(self.items) for j in range(len(item.captions))]
            if per_caption
            else [(i, 0) for i in range(len(self.items))]
        )

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from PIL import Image as PIL

        i, j = self.index[index]
        item = self.items[i]
        image = load_input(probe_input(item.image, [Kind.IMAGE]))
        ids, prefix_len = self.vocab.sequence(item.captions[j], item.question, self.max_positions)
        return {
            "image": self.transform(PIL.fromarray(image.to_rgb_uint8())),
            "tokens": torch.tensor(ids, dtype=torch.long),
            "prefix_len": prefix_len,
            "question": item.question,
            "references": list(item.captions),
        }


def collate_captions(samples: Sequence[dict[str, Any]], pad: int = 0) -> dict[str, Any]:
    """A batch of samples: ``images`` (B, 3, S, S), ``tokens`` (B, L) right-padded with
    ``pad``, ``prefix_len`` (B,), ``questions`` and ``references`` (lists)."""
    return {
        "images": torch.stack([s["image"] for s in samples]),
        "tokens": pad_sequence([s["tokens"] for s in samples], batch_first=True, padding_value=pad),
        "prefix_len": torch.tensor([s["prefix_len"] for s in samples], dtype=torch.long),
        "questions": [s["question"] for s in samples],
        "references": [s["references"] for s in samples],
    }
