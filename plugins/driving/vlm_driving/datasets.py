"""Detection data sets on disk: COCO instances JSON and the Ultralytics YOLO layout.

Readers validate everything a model would trip over later (missing images, unknown classes,
boxes outside the image) and raise :class:`~vlm_core.errors.InputError` with one line that
names the file and the entry. Writers emit the same formats, so the scene generator's output
reads back unchanged. No torch here: the tensors live in :mod:`vlm_driving.augment`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from vlm_core.errors import InputError, ParameterError, UsageError
from vlm_core.fileio import atomic_write_bytes, atomic_write_text

logger = logging.getLogger(__name__)

#: Image files the YOLO reader picks up in an images folder.
IMAGE_SUFFIXES: tuple[str, ...] = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
#: Names of a COCO file found in a data folder (besides ``instances*.json``).
COCO_NAMES: tuple[str, ...] = ("annotations.json",)
#: Names of a YOLO data file found in a data folder.
YOLO_YAML_NAMES: tuple[str, ...] = ("data.yaml", "data.yml")
SPLITS: tuple[str, ...] = ("train", "val")


@dataclass(frozen=True, eq=False)
class Annotated:
    """One image and its boxes."""

    image: Path
    xyxy: np.ndarray  # (N, 4) float32 pixels, x0 y0 x1 y1 inside the image (read-only)
    labels: tuple[str, ...]  # N class names, one per box
    size: tuple[int, int]  # (height, width) in pixels, as stored (no EXIF rotation)

    def __post_init__(self) -> None:
        boxes = np.array(self.xyxy, dtype=np.float32).reshape(-1, 4)
        if len(boxes) != len(self.labels):
            raise ValueError(f"{self.image}: {len(boxes)} boxes but {len(self.labels)} labels")
        boxes.setflags(write=False)
        object.__setattr__(self, "xyxy", boxes)


@dataclass(frozen=True)
class DetectionData:
    """The items of one split of a data set and its class names."""

    items: list[Annotated]
    class_names: tuple[str, ...]  # in label order (model label = index + 1; 0 is background)
    source: Path  # the file read: COCO JSON or YOLO data.yaml / classes.txt
    format: str  # "coco" | "yolo"


# --- shared checks -------------------------------------------------------------------------


def _image_size(path: Path, where: str | None = None) -> tuple[int, int]:
    """(height, width) from the image header, without decoding pixels; errors start with
    ``where`` (default: the image's path)."""
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InputError(f"{where or path}: not a readable image ({exc})") from None
    return height, width


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _clip_box(box: Sequence[float], size: tuple[int, int]) -> list[float] | None:
    """``box`` (x0 y0 x1 y1, px) clipped to the image, or None when it reaches outside by more
    than the tolerance (1 px or 1 % of the side, whichever is larger) or has no area inside."""
    height, width = size
    x0, y0, x1, y1 = box
    tx, ty = max(1.0, 0.01 * width), max(1.0, 0.01 * height)
    if x0 < -tx or y0 < -ty or x1 > width + tx or y1 > height + ty:
        return None
    clipped = [min(max(x0, 0.0), width), min(max(y0, 0.0), height)]
    clipped += [min(max(x1, 0.0), width), min(max(y1, 0.0), height)]
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return None
    return clipped


def _describe_ids(values: Iterable[Any]) -> str:
    ids = list(values)
    ordered = sorted(ids, key=str) if any(isinstance(i, str) for i in ids) else sorted(ids)
    ints = len(ordered) > 2 and all(isinstance(i, int) for i in ordered)
    if ints and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}..{ordered[-1]}"
    return ", ".join(str(i) for i in ordered) or "none"


def _boxes(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32).reshape(-1, 4)


# --- COCO ------------------------------------------------------------------------------------


def _load_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        truncated = "; the file ends early (truncated?)" if exc.pos >= len(text.rstrip()) else ""
        raise InputError(
            f"{path}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg}){truncated}"
        ) from None


def _field(entry: Any, key: str, where: str, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(entry, dict):
        raise InputError(f"{where}: is a {type(entry).__name__}, expected an object")
    if key not in entry:
        raise InputError(f"{where}: has no '{key}'")
    value = entry[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InputError(f"{where}: '{key}' is {value!r}, expected {what}")
    return value


def _coco_categories(doc: dict[str, Any], name: str) -> dict[Any, str]:
    categories: dict[Any, str] = {}
    for k, entry in enumerate(doc["categories"]):
        where = f"{name}: categories[{k}]"
        cid = _field(entry, "id", where, (int, str), "an integer id")
        label = _field(entry, "name", where, str, "a name")
        if cid in categories:
            raise InputError(f"{where}: duplicate category id {cid}")
        if label in categories.values():
            raise InputError(f"{where} (id {cid}): duplicate category name '{label}'")
        categories[cid] = label
    if not categories:
        raise InputError(f"{name}: 'categories' is empty; a detection data set needs classes")
    return dict(sorted(categories.items(), key=lambda kv: (str(type(kv[0])), kv[0])))


def _resolve_image(file_name: str, folder: Path, where: str) -> Path:
    for candidate in (folder / file_name, folder / "images" / file_name):
        if candidate.is_file():
            return candidate
    raise InputError(f"{where} '{file_name}': no such file in {folder} or {folder / 'images'}")


def read_coco(path: Path) -> DetectionData:
    """A COCO instances JSON file (what the KITTI / BDD100K converters emit).

    Image ``file_name`` resolves against the JSON's folder, then an ``images/`` folder beside
    it. Class names follow category id order. Crowd annotations (``iscrowd`` 1) are skipped;
    boxes outside the image by at most 1 px or 1 % are clipped, further out is an error.
    """
    path = Path(path)
    name, folder = str(path), path.parent
    doc = _load_json(path)
    if not isinstance(doc, dict):
        raise InputError(f"{name}: the top level is a {type(doc).__name__}, expected an object")
    for key in ("images", "annotations", "categories"):
        if key not in doc:
            raise InputError(
                f"{name}: no top-level '{key}' (a COCO instances file has images, "
                "annotations and categories)"
            )
        if not isinstance(doc[key], list):
            raise InputError(f"{name}: '{key}' is a {type(doc[key]).__name__}, expected a list")
    categories = _coco_categories(doc, name)
    class_names = tuple(categories.values())

    images: dict[Any, tuple[int, Path, tuple[int, int]]] = {}
    for k, entry in enumerate(doc["images"]):
        where = f"{name}: images[{k}]"
        iid = _field(entry, "id", where, (int, str), "an integer id")
        file_name = _field(entry, "file_name", f"{where} (id {iid})", str, "a file name")
        if iid in images:
            raise InputError(
                f"{where} '{file_name}': duplicate image id {iid} (also images[{images[iid][0]}])"
            )
        image = _resolve_image(file_name, folder, where)
        actual = _image_size(image, f"{where} '{file_name}'")
        if "width" in entry or "height" in entry:
            width = _field(entry, "width", f"{where} '{file_name}'", int, "a width in pixels")
            height = _field(entry, "height", f"{where} '{file_name}'", int, "a height in pixels")
            if (height, width) != actual:
                raise InputError(
                    f"{where} '{file_name}': the JSON says {width}x{height} (width x height) "
                    f"but the file is {actual[1]}x{actual[0]}"
                )
        images[iid] = (k, image, actual)

    rows: dict[Any, list[list[float]]] = {iid: [] for iid in images}
    labels: dict[Any, list[str]] = {iid: [] for iid in images}
    crowd = 0
    for k, entry in enumerate(doc["annotations"]):
        where = f"{name}: annotations[{k}]"
        if isinstance(entry, dict) and "id" in entry:
            where += f" (id {entry['id']})"
        iid = _field(entry, "image_id", where, (int, str), "an image id")
        if iid not in images:
            raise InputError(
                f"{where}: image_id {iid} is not among the {len(images)} images "
                f"({_describe_ids(images)})"
            )
        cid = _field(entry, "category_id", where, (int, str), "a category id")
        if cid not in categories:
            raise InputError(
                f"{where}: category_id {cid} is not among the categories "
                f"({_describe_ids(categories)})"
            )
        if entry.get("iscrowd", 0) == 1:
            crowd += 1
            continue
        bbox = entry.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(map(_is_number, bbox)):
            raise InputError(f"{where}: bbox is {bbox!r}, expected 4 numbers [x, y, w, h]")
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            raise InputError(f"{where}: bbox {bbox} has width {w:g} and height {h:g}, not > 0")
        _, image, size = images[iid]
        box = _clip_box((x, y, x + w, y + h), size)
        if box is None:
            raise InputError(
                f"{where}: bbox {bbox} lies outside its image '{image.name}' "
                f"({size[1]}x{size[0]}) by more than 1 px or 1 %"
            )
        rows[iid].append(box)
        labels[iid].append(categories[cid])
    if crowd:
        logger.info("%s: skipped %d crowd annotations (iscrowd=1)", name, crowd)
    items = [
        Annotated(image, _boxes(rows[iid]), tuple(labels[iid]), size)
        for iid, (_, image, size) in images.items()
    ]
    return DetectionData(items, class_names, path, "coco")


def _label_list(items: Sequence[Annotated], class_names: Sequence[str]) -> dict[str, int]:
    index = {label: i for i, label in enumerate(class_names)}
    if len(index) != len(class_names):
        raise UsageError(f"class names repeat: {list(class_names)}")
    for item in items:
        for label in item.labels:
            if label not in index:
                raise UsageError(
                    f"{item.image}: label '{label}' is not among the class names "
                    f"({', '.join(class_names)})"
                )
    return index


def write_coco(items: Sequence[Annotated], class_names: Sequence[str], path: Path) -> Path:
    """Write ``items`` as a COCO instances JSON at ``path`` (atomically); category ids are
    1..n in ``class_names`` order and ``file_name`` is relative to the JSON's folder."""
    path = Path(path)
    index = _label_list(items, class_names)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, item in enumerate(items, start=1):
        height, width = item.size
        rel = os.path.relpath(Path(item.image).absolute(), path.parent.absolute())
        images.append(
            {"id": image_id, "file_name": Path(rel).as_posix(), "width": width, "height": height}
        )
        for (x0, y0, x1, y1), label in zip(item.xyxy.tolist(), item.labels, strict=True):
            w, h = x1 - x0, y1 - y0
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": index[label] + 1,
                    "bbox": [x0, y0, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(class_names)]
    doc = {"images": images, "annotations": annotations, "categories": categories}
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return path


# --- YOLO ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _YoloLayout:
    names: tuple[str, ...]
    names_file: Path  # data.yaml or classes.txt
    train: tuple[Path, ...]  # image folders or .txt lists of images
    val: tuple[Path, ...]  # () when the layout has no validation split of its own


def _yolo_names(raw: Any, where: Path) -> tuple[str, ...]:
    if isinstance(raw, list) and raw and all(isinstance(n, str) for n in raw):
        return tuple(raw)
    if isinstance(raw, dict) and raw:
        try:
            by_id = {int(k): str(v) for k, v in raw.items()}
        except (TypeError, ValueError):
            by_id = {}
        if sorted(by_id) == list(range(len(raw))):
            return tuple(by_id[i] for i in range(len(raw)))
    raise InputError(
        f"{where}: 'names' is {raw!r}, expected a list of class names or a mapping "
        "{0: name, 1: name, ...} with ids 0..n-1"
    )


def _yolo_from_yaml(file: Path) -> _YoloLayout:
    try:
        doc = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or exc
        raise InputError(f"{file}: not valid YAML ({at}{problem})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{file}: cannot read ({exc})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{file}: expected a mapping with 'train' and 'names'")
    for key in ("train", "names"):
        if key not in doc:
            raise InputError(f"{file}: no '{key}' (a YOLO data.yaml has path, train, val, names)")
    names = _yolo_names(doc["names"], file)
    if "nc" in doc and doc["nc"] != len(names):
        raise InputError(f"{file}: nc is {doc['nc']} but 'names' lists {len(names)} classes")
    root = file.parent / str(doc.get("path") or ".")

    def sources(key: str) -> tuple[Path, ...]:
        raw = doc.get(key)
        if raw is None:
            return ()
        entries = raw if isinstance(raw, list) else [raw]
        if not entries or not all(isinstance(e, str) for e in entries):
            raise InputError(f"{file}: '{key}' is {raw!r}, expected a folder or list of folders")
        out = tuple(root / e for e in entries)
        for entry, source in zip(entries, out, strict=True):
            if not (source.is_dir() or (source.is_file() and source.suffix == ".txt")):
                raise InputError(
                    f"{file}: {key} '{entry}' is no image folder or .txt list under {root}"
                )
        return out

    train, val = sources("train"), sources("val")
    if {p.resolve() for p in val} == {p.resolve() for p in train}:
        logger.info("%s: val is the training set; no separate validation split", file)
        val = ()
    return _YoloLayout(names, file, train, val)


def _yolo_from_folder(root: Path) -> _YoloLayout:
    names_file = next(
        (f for f in (root / "classes.txt", root / "labels" / "classes.txt") if f.is_file()), None
    )
    if names_file is None:
        raise InputError(
            f"{root}: no class names; looked for data.yaml, classes.txt and labels/classes.txt"
        )
    names = tuple(
        line.strip() for line in names_file.read_text(encoding="utf-8").splitlines() if line.strip()
    )
    if not names:
        raise InputError(f"{names_file}: lists no class names (one a line)")
    images = root / "images"
    if (images / "train").is_dir():
        val = (images / "val",) if (images / "val").is_dir() else ()
        return _YoloLayout(names, names_file, (images / "train",), val)
    return _YoloLayout(names, names_file, (images,), ())


def _yolo_layout(path: Path) -> _YoloLayout:
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        return _yolo_from_yaml(path)
    if path.is_dir():
        for name in YOLO_YAML_NAMES:
            if (path / name).is_file():
                return _yolo_from_yaml(path / name)
        if (path / "images").is_dir() and (path / "labels").is_dir():
            return _yolo_from_folder(path)
    raise InputError(
        f"{path}: not a YOLO data set; expected a data.yaml, or images/ and labels/ folders "
        "with a classes.txt"
    )


def _label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``/images/`` in the path becomes ``/labels/``, suffix .txt."""
    a, b = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    text = str(image)
    if a in text:
        head, tail = text.rsplit(a, 1)
        text = head + b + tail
    return Path(text).with_suffix(".txt")


def _list_images(source: Path) -> list[Path]:
    if source.is_dir():
        return sorted(
            p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
    images = []
    for n, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            image = source.parent / line.strip()
            if not image.is_file():
                raise InputError(f"{source} line {n}: no such image '{line.strip()}'")
            images.append(image)
    return images


def _read_label_file(
    label: Path, size: tuple[int, int], names: tuple[str, ...], names_file: Path
) -> tuple[list[list[float]], list[str]]:
    height, width = size
    rows, labels = [], []
    for n, line in enumerate(label.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{label} line {n}"
        if len(fields) != 5:
            raise InputError(
                f"{where}: expected 5 fields (class cx cy w h), found {len(fields)}"
                + ("; segmentation polygons are not supported" if len(fields) > 5 else "")
            )
        try:
            values = [float(f) for f in fields]
        except ValueError:
            bad = next(f for f in fields if not _is_float(f))
            raise InputError(f"{where}: '{bad}' is not a number") from None
        if not all(map(math.isfinite, values)):
            raise InputError(f"{where}: '{line.strip()}' holds a non-finite number")
        cls, cx, cy, w, h = values
        if not cls.is_integer():
            raise InputError(f"{where}: class '{fields[0]}' is not an integer index")
        if not 0 <= cls < len(names):
            raise InputError(
                f"{where}: class {int(cls)} is not among the {len(names)} names of {names_file}"
            )
        if w <= 0 or h <= 0:
            raise InputError(f"{where}: zero-size box (w {w:g}, h {h:g})")
        x0, y0 = (cx - w / 2) * width, (cy - h / 2) * height
        box = _clip_box((x0, y0, x0 + w * width, y0 + h * height), size)
        if box is None:
            raise InputError(
                f"{where}: box (cx {cx:g}, cy {cy:g}, w {w:g}, h {h:g}) reaches outside the "
                "image; coordinates are normalised to [0, 1]"
            )
        rows.append(box)
        labels.append(names[int(cls)])
    return rows, labels


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_orphans(source: Path, labels: set[Path]) -> None:
    """A label file in the folder paired with image folder ``source`` must have an image."""
    folder = _label_path(source / "_").parent
    if not source.is_dir() or not folder.is_dir() or folder == source:
        return
    orphans = sorted(
        p for p in folder.rglob("*.txt") if p.name != "classes.txt" and p not in labels
    )
    if orphans:
        more = f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else ""
        raise InputError(f"{orphans[0]}: a label file without an image in {source}{more}")


def read_yolo(path: Path, split: str = "train") -> DetectionData:
    """An Ultralytics YOLO data set: a ``data.yaml`` (``path``, ``train``, ``val``, ``names``)
    or a folder with ``images/`` and ``labels/`` (optionally ``images/train``, ``images/val``)
    and a ``classes.txt``.

    Label lines are ``class cx cy w h`` normalised to [0, 1]. An image without a label file has
    no objects; a label file without an image is an error. A relative ``path`` in data.yaml
    resolves against the yaml's folder.
    """
    path = Path(path)
    _check_split(split)
    layout = _yolo_layout(path)
    sources = layout.train if split == "train" else layout.val
    if not sources:
        raise InputError(f"{layout.names_file}: the data set has no '{split}' split")
    items = []
    for source in sources:
        seen: set[Path] = set()
        for image in _list_images(source):
            size = _image_size(image)
            label = _label_path(image)
            seen.add(label)
            rows, labels = (
                _read_label_file(label, size, layout.names, layout.names_file)
                if label.is_file()
                else ([], [])
            )
            items.append(Annotated(image, _boxes(rows), tuple(labels), size))
        _check_orphans(source, seen)
    return DetectionData(items, layout.names, layout.names_file, "yolo")


def write_yolo(
    items: Sequence[Annotated],
    class_names: Sequence[str],
    folder: Path,
    *,
    val: Sequence[Annotated] = (),
) -> Path:
    """Write an Ultralytics layout under ``folder`` and return its ``data.yaml``.

    Images outside ``folder/images`` are copied in (names must be unique); every image gets a
    label file (empty for none). With ``val`` items the layout is ``images/train`` and
    ``images/val``; without, ``images/`` serves as both ``train`` and ``val`` (Ultralytics
    requires ``val``; this reader then sees no separate validation split).
    """
    folder = Path(folder)
    index = _label_list([*items, *val], class_names)
    splits = {"train": items, "val": val} if val else {"": items}
    for sub, members in splits.items():
        images = folder / "images" / sub if sub else folder / "images"
        names: set[str] = set()
        for item in members:
            if item.image.name in names:
                raise UsageError(f"{item.image}: two images named '{item.image.name}' in {images}")
            names.add(item.image.name)
            target = images / item.image.name
            if not (target.exists() and target.resolve() == Path(item.image).resolve()):
                atomic_write_bytes(target, Path(item.image).read_bytes())
            height, width = item.size
            lines = [
                f"{index[label]} {(x0 + x1) / 2 / width:.8g} {(y0 + y1) / 2 / height:.8g} "
                f"{(x1 - x0) / width:.8g} {(y1 - y0) / height:.8g}"
                for (x0, y0, x1, y1), label in zip(item.xyxy.tolist(), item.labels, strict=True)
            ]
            atomic_write_text(_label_path(target), "".join(f"{line}\n" for line in lines))
    doc = {
        "train": "images/train" if val else "images",
        "val": "images/val" if val else "images",
        "names": dict(enumerate(class_names)),
    }
    data_yaml = folder / "data.yaml"
    atomic_write_text(data_yaml, yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return data_yaml


# --- format detection and splits -------------------------------------------------------------


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ParameterError(f"unknown split '{split}' (the splits are train, val)")


def _coco_candidates(folder: Path) -> list[Path]:
    named = [folder / n for n in COCO_NAMES if (folder / n).is_file()]
    return named + sorted(p for p in folder.glob("instances*.json") if p.is_file())


def _coco_file(path: Path, split: str) -> Path | None:
    """The COCO file of ``split`` for ``path`` (a .json file or a folder), None if none."""
    if path.is_file():
        if split == "train":
            return path
        if "train" in path.name:
            head, tail = path.name.rsplit("train", 1)
            sibling = path.with_name(f"{head}val{tail}")
            return sibling if sibling.is_file() else None
        return None
    candidates = _coco_candidates(path)
    chosen = [p for p in candidates if split in p.stem]
    if not chosen and split == "train":
        chosen = [p for p in candidates if "val" not in p.stem]
    if len(chosen) > 1:
        raise InputError(
            f"{path}: several COCO files for '{split}' ({', '.join(p.name for p in chosen)}); "
            "pass the file itself"
        )
    return chosen[0] if chosen else None


def _detect_format(path: Path) -> str:
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco"
        if path.suffix.lower() in (".yaml", ".yml"):
            return "yolo"
        raise InputError(
            f"{path}: detection data is a COCO .json file, a YOLO data.yaml or a folder"
        )
    coco = bool(_coco_candidates(path))
    yolo = any((path / n).is_file() for n in YOLO_YAML_NAMES) or (path / "labels").is_dir()
    if coco and yolo:
        raise InputError(
            f"{path}: holds both COCO ({_coco_candidates(path)[0].name}) and YOLO data; "
            "pass the .json file or the data.yaml itself"
        )
    if coco or yolo:
        return "coco" if coco else "yolo"
    raise InputError(
        f"{path}: no detection data found; looked for a COCO file ({', '.join(COCO_NAMES)}, "
        f"instances*.json) and a YOLO layout ({', '.join(YOLO_YAML_NAMES)}, or images/ and "
        "labels/ folders)"
    )


def read_detection_data(path: Path, split: str = "train") -> DetectionData:
    """Read ``path`` as COCO (a .json file, or a folder holding ``annotations.json`` or
    ``instances*.json``) or YOLO (a data.yaml, or a folder with one or with ``labels/``).

    ``split="val"`` reads the data set's own validation split: YOLO ``val:``, or for COCO the
    sibling file named with ``val`` in place of ``train`` (``instances_train.json`` →
    ``instances_val.json``). See :func:`has_val_split`.
    """
    path = Path(path)
    _check_split(split)
    if _detect_format(path) == "yolo":
        return read_yolo(path, split)
    file = _coco_file(path, split)
    if file is None:
        raise InputError(
            f"{path}: no COCO file for the '{split}' split (a val file is named like the "
            "train file with 'val' in place of 'train')"
        )
    return read_coco(file)


def has_val_split(path: Path) -> bool:
    """Whether the data set at ``path`` comes with its own validation split."""
    path = Path(path)
    if _detect_format(path) == "yolo":
        return bool(_yolo_layout(path).val)
    return _coco_file(path, "val") is not None


def split(
    data: DetectionData, val_fraction: float, seed: int
) -> tuple[list[Annotated], list[Annotated]]:
    """``(train, val)``: ``val_fraction`` of the images (at least one when above 0 and there
    are two or more) held out, chosen by ``seed``; both keep the data set's order."""
    if not 0.0 <= val_fraction < 1.0:
        raise ParameterError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = list(range(len(data.items)))
    random.Random(seed).shuffle(order)
    n_val = round(len(order) * val_fraction)
    if val_fraction > 0 and n_val == 0 and len(order) > 1:
        n_val = 1
    held_out = set(order[:n_val])
    return (
        [item for i, item in enumerate(data.items) if i not in held_out],
        [item for i, item in enumerate(data.items) if i in held_out],
    )


def read_train_val(
    path: Path, *, val_fraction: float, seed: int
) -> tuple[list[Annotated], list[Annotated], tuple[str, ...]]:
    """``(train, val, class_names)``: the data set's own validation split when it has one,
    else a seeded :func:`split` of its training items."""
    train = read_detection_data(path, "train")
    if not has_val_split(path):
        return (*split(train, val_fraction, seed), train.class_names)
    val = read_detection_data(path, "val")
    if val.class_names != train.class_names:
        raise InputError(
            f"{val.source}: class names {list(val.class_names)} differ from those of "
            f"{train.source} ({list(train.class_names)})"
        )
    return train.items, val.items, train.class_names
