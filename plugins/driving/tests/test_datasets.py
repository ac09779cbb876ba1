"""The driving plugin's detection data: COCO and YOLO readers and writers on small real data
sets, the malformed inputs a user will bring, splits, and the augmentation / dataset."""

from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torchvision import tv_tensors
from vlm_driving.augment import AugmentConfig, DetectionDataset, collate, train_transform
from vlm_driving.datasets import (
    Annotated,
    DetectionData,
    has_val_split,
    read_coco,
    read_detection_data,
    read_train_val,
    read_yolo,
    split,
    write_coco,
    write_yolo,
)

from vlm_core.errors import InputError, ParameterError

CLASSES = ("car", "truck", "pedestrian")
SIZE = (48, 64)  # (height, width) of the test images
RED = (255, 0, 0)


def draw(path: Path, boxes: list[list[float]], size: tuple[int, int] = SIZE) -> Path:
    """A grey PNG with a red rectangle per box (x0 y0 x1 y1, pixels)."""
    image = Image.new("RGB", (size[1], size[0]), (100, 100, 100))
    pen = ImageDraw.Draw(image)
    for x0, y0, x1, y1 in boxes:
        pen.rectangle([x0, y0, x1 - 1, y1 - 1], fill=RED)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def scene(folder: Path, n: int = 4) -> list[Annotated]:
    """``n`` images with 0..2 boxes of various classes, one on the image's edge."""
    layouts = [
        ([[5.25, 6.5, 31.0, 41.75]], ("car",)),
        ([[0.0, 0.0, 10.5, 12.0], [40.0, 20.0, 64.0, 48.0]], ("truck", "pedestrian")),
        ([], ()),
        ([[12.0, 3.0, 50.0, 30.0]], ("pedestrian",)),
    ]
    items = []
    for k in range(n):
        boxes, labels = layouts[k % len(layouts)]
        image = draw(folder / f"frame_{k:03d}.png", boxes)
        items.append(Annotated(image, np.array(boxes, dtype=np.float32), labels, SIZE))
    return items


def assert_same(read: list[Annotated], written: list[Annotated]) -> None:
    assert [i.image.name for i in read] == [i.image.name for i in written]
    for got, want in zip(read, written, strict=True):
        assert got.labels == want.labels
        assert got.size == want.size
        assert got.xyxy.shape == want.xyxy.shape
        np.testing.assert_allclose(got.xyxy, want.xyxy, atol=1e-3)


# --- round trips -----------------------------------------------------------------------------


def test_coco_round_trip(tmp_path: Path) -> None:
    items = scene(tmp_path / "images")
    json_path = write_coco(items, CLASSES, tmp_path / "annotations.json")
    data = read_coco(json_path)
    assert data.format == "coco" and data.source == json_path
    assert data.class_names == CLASSES
    assert_same(data.items, items)
    assert_same(read_detection_data(tmp_path).items, items)
    assert json.loads(json_path.read_text())["images"][0]["file_name"] == "images/frame_000.png"


def test_yolo_round_trip(tmp_path: Path) -> None:
    items = scene(tmp_path / "src")
    data_yaml = write_yolo(items, CLASSES, tmp_path / "yolo")
    data = read_yolo(data_yaml)
    assert data.format == "yolo" and data.class_names == CLASSES
    assert_same(data.items, items)
    assert data.items[0].image == tmp_path / "yolo" / "images" / "frame_000.png"
    assert (tmp_path / "yolo" / "labels" / "frame_002.txt").read_text() == ""
    assert not has_val_split(tmp_path / "yolo")  # val: is the training folder
    assert_same(read_detection_data(tmp_path / "yolo").items, items)


def test_yolo_round_trip_with_val_split(tmp_path: Path) -> None:
    items = scene(tmp_path / "src", 6)
    write_yolo(items[:4], CLASSES, tmp_path / "yolo", val=items[4:])
    assert has_val_split(tmp_path / "yolo")
    assert_same(read_detection_data(tmp_path / "yolo", split="val").items, items[4:])
    train, val, names = read_train_val(tmp_path / "yolo", val_fraction=0.5, seed=0)
    assert_same(train, items[:4])
    assert_same(val, items[4:])
    assert names == CLASSES


def test_coco_finds_images_beside_the_json_or_in_images(tmp_path: Path) -> None:
    items = scene(tmp_path / "images", 2)
    doc = json.loads(write_coco(items, CLASSES, tmp_path / "labels.json").read_text())
    doc["images"][0]["file_name"] = "frame_000.png"  # resolves through images/
    (tmp_path / "labels.json").write_text(json.dumps(doc))
    assert [i.image for i in read_coco(tmp_path / "labels.json").items] == [i.image for i in items]


def test_coco_categories_order_by_id_and_crowds_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    items = scene(tmp_path / "images", 2)
    path = write_coco(items, CLASSES, tmp_path / "labels.json")
    doc = json.loads(path.read_text())
    doc["categories"] = [{"id": 7, "name": "bus"}, *doc["categories"]]
    doc["annotations"].append({**doc["annotations"][0], "id": 99, "iscrowd": 1})
    doc["annotations"][0]["bbox"] = [-0.5, 6.0, 64.4, 10.0]  # 0.5 px outside each side: clipped
    path.write_text(json.dumps(doc))
    with caplog.at_level(logging.INFO, logger="vlm_driving.datasets"):
        data = read_coco(path)
    assert data.class_names == (*CLASSES, "bus")
    assert [len(i.labels) for i in data.items] == [1, 2]  # the crowd box is gone
    np.testing.assert_allclose(data.items[0].xyxy, [[0.0, 6.0, 63.9, 16.0]], atol=1e-4)
    assert "skipped 1 crowd annotations" in caplog.text


# --- malformed COCO --------------------------------------------------------------------------

Edit = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        *keys, last = path.split(".")
        target: Any = doc
        for key in keys:
            target = target[int(key) if key.isdigit() else key]
        target[int(last) if last.isdigit() else last] = value

    return edit


def _drop(key: str) -> Edit:
    return lambda doc: doc.pop(key)


def _duplicate_image(doc: dict[str, Any]) -> None:
    doc["images"][2]["id"] = doc["images"][0]["id"]


COCO_CASES = {
    "missing key": (_drop("categories"), ["no top-level 'categories'"]),
    "wrong type": (_set("images", {"a": 1}), ["'images' is a dict, expected a list"]),
    "image missing": (
        _set("images.3.file_name", "frame_077.png"),
        ["images[3] 'frame_077.png': no such file in"],
    ),
    "unknown image": (
        _set("annotations.1.image_id", 42),
        ["annotations[1] (id 2): image_id 42 is not among the 4 images (1..4)"],
    ),
    "unknown category": (
        _set("annotations.2.category_id", 99),
        ["annotations[2] (id 3): category_id 99 is not among the categories (1..3)"],
    ),
    "bbox of 3": (
        _set("annotations.0.bbox", [1, 2, 3]),
        ["annotations[0] (id 1): bbox is [1, 2, 3]"],
    ),
    "bbox of text": (
        _set("annotations.0.bbox", [1, 2, "3", 4]),
        ["annotations[0] (id 1): bbox is", "expected 4 numbers"],
    ),
    "zero width": (_set("annotations.0.bbox.2", 0), ["annotations[0] (id 1)", "width 0"]),
    "negative height": (_set("annotations.3.bbox.3", -2), ["annotations[3] (id 4)", "height -2"]),
    "outside": (
        _set("annotations.0.bbox", [50, 6, 20, 10]),
        ["annotations[0] (id 1): bbox [50, 6, 20, 10] lies outside", "(64x48)"],
    ),
    "duplicate id": (_duplicate_image, ["images[2] 'images/frame_002.png': duplicate image id 1"]),
    "size mismatch": (
        _set("images.1.width", 100),
        ["images[1] 'images/frame_001.png'", "says 100x48", "the file is 64x48"],
    ),
    "not an object": (_set("annotations.1", 7), ["annotations[1]: is a int, expected an object"]),
}


@pytest.mark.parametrize("case", list(COCO_CASES))
def test_malformed_coco_names_the_file_and_entry(tmp_path: Path, case: str) -> None:
    edit, expected = COCO_CASES[case]
    path = write_coco(scene(tmp_path / "images"), CLASSES, tmp_path / "labels.json")
    doc = copy.deepcopy(json.loads(path.read_text()))
    edit(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError) as info:
        read_coco(path)
    message = str(info.value)
    assert "labels.json" in message and "\n" not in message
    for part in expected:
        assert part in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"images": [', "line 1 column 13: Expecting value); the file ends early"),
        ("images: []", "line 1 column 1: Expecting value)"),
    ],
)
def test_coco_that_is_not_json(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "labels.json").write_text(text)
    with pytest.raises(InputError, match=r"labels\.json: not valid JSON") as info:
        read_coco(tmp_path / "labels.json")
    assert expected in str(info.value)


# --- malformed YOLO --------------------------------------------------------------------------


def yolo_folder(root: Path, line: str = "") -> Path:
    """A flat YOLO layout with classes.txt; frame_001's label gets ``line`` as line 2."""
    write_yolo(scene(root / "src"), CLASSES, root / "yolo")
    (root / "yolo" / "data.yaml").unlink()
    (root / "yolo" / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    label = root / "yolo" / "labels" / "frame_001.txt"
    if line:
        label.write_text(label.read_text().splitlines()[0] + f"\n{line}\n")
    return root / "yolo"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("0 0.5 0.5 0.1", "expected 5 fields (class cx cy w h), found 4"),
        ("0 0.5 0.5 0.1 0.1 0.2 0.2", "found 7; segmentation polygons are not supported"),
        ("0 0.5 wide 0.1 0.1", "'wide' is not a number"),
        ("9 0.5 0.5 0.1 0.1", "class 9 is not among the 3 names of"),
        ("1.5 0.5 0.5 0.1 0.1", "class '1.5' is not an integer index"),
        ("0 1.2 0.5 0.2 0.2", "reaches outside the image"),
        ("0 0.5 0.5 0 0.1", "zero-size box (w 0, h 0.1)"),
    ],
)
def test_malformed_yolo_label_names_file_and_line(tmp_path: Path, line: str, expected: str) -> None:
    folder = yolo_folder(tmp_path, line)
    with pytest.raises(InputError) as info:
        read_detection_data(folder)
    message = str(info.value)
    assert "labels/frame_001.txt line 2: " in message
    assert expected in message
    if "names of" in expected:
        assert message.endswith("classes.txt")


def test_yolo_boxes_slightly_outside_are_clipped(tmp_path: Path) -> None:
    folder = yolo_folder(tmp_path, "2 0.5 0.5 1.01 0.5")
    box = read_yolo(folder).items[1].xyxy[-1]
    np.testing.assert_allclose(box, [0.0, 12.0, 64.0, 36.0], atol=1e-3)


def test_yolo_image_without_labels_is_empty_and_label_without_image_fails(
    tmp_path: Path,
) -> None:
    folder = yolo_folder(tmp_path)
    (folder / "labels" / "frame_000.txt").unlink()
    assert read_yolo(folder).items[0].labels == ()
    (folder / "labels" / "frame_999.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(InputError, match=r"frame_999\.txt: a label file without an image"):
        read_yolo(folder)


def test_yolo_data_yaml_names_mapping_and_errors(tmp_path: Path) -> None:
    write_yolo(scene(tmp_path / "src"), CLASSES, tmp_path / "yolo")
    data_yaml = tmp_path / "yolo" / "data.yaml"
    data_yaml.write_text("path: .\ntrain: images\nnames: {0: car, 1: truck, 2: pedestrian}\n")
    assert read_yolo(data_yaml).class_names == CLASSES
    for text, expected in [
        ("train: images\nnames: {0: car, 2: truck}\n", "expected a list of class names"),
        ("train: images\nnc: 2\nnames: [car, truck, pedestrian]\n", "nc is 2 but"),
        ("train: images\nnames: [car\n", "not valid YAML (line 3 column 1"),
        ("names: [car]\n", "no 'train'"),
        ("train: pictures\nnames: [car]\n", "train 'pictures' is no image folder"),
    ]:
        data_yaml.write_text(text)
        with pytest.raises(InputError, match=r"data\.yaml: ") as info:
            read_yolo(data_yaml)
        assert expected in str(info.value)


# --- format detection and splits -------------------------------------------------------------


def test_read_detection_data_says_what_it_looked_for(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        read_detection_data(tmp_path / "missing")
    with pytest.raises(InputError) as info:
        read_detection_data(tmp_path)
    assert "annotations.json, instances*.json" in str(info.value)
    assert "data.yaml" in str(info.value)
    with pytest.raises(ParameterError, match="unknown split 'test'"):
        read_detection_data(tmp_path, split="test")


def test_coco_val_split_from_sibling_file(tmp_path: Path) -> None:
    items = scene(tmp_path / "images", 4)
    write_coco(items[:3], CLASSES, tmp_path / "instances_train.json")
    assert not has_val_split(tmp_path)
    with pytest.raises(InputError, match="no COCO file for the 'val' split"):
        read_detection_data(tmp_path, split="val")
    write_coco(items[3:], CLASSES, tmp_path / "instances_val.json")
    assert has_val_split(tmp_path) and has_val_split(tmp_path / "instances_train.json")
    assert_same(read_detection_data(tmp_path).items, items[:3])
    assert_same(read_detection_data(tmp_path / "instances_train.json", "val").items, items[3:])


def test_folder_with_both_formats_asks_for_the_file(tmp_path: Path) -> None:
    items = scene(tmp_path / "src", 2)
    write_yolo(items, CLASSES, tmp_path)
    write_coco(items, CLASSES, tmp_path / "annotations.json")
    with pytest.raises(InputError, match="holds both COCO"):
        read_detection_data(tmp_path)
    assert read_detection_data(tmp_path / "annotations.json").format == "coco"
    assert read_detection_data(tmp_path / "data.yaml").format == "yolo"


def test_split_is_seeded_and_partitions(tmp_path: Path) -> None:
    items = [Annotated(tmp_path / f"{k}.png", np.zeros((0, 4)), (), SIZE) for k in range(20)]
    data = DetectionData(items, CLASSES, tmp_path, "coco")
    train, val = split(data, 0.25, seed=3)
    assert len(val) == 5 and len(train) == 15
    assert {id(i) for i in train} | {id(i) for i in val} == {id(i) for i in items}
    assert split(data, 0.25, seed=3) == (train, val)
    assert split(data, 0.25, seed=4)[1] != val
    assert len(split(data, 0.01, seed=0)[1]) == 1
    with pytest.raises(ParameterError, match="val_fraction"):
        split(data, 1.0, seed=0)


def test_datasets_module_does_not_import_torch() -> None:
    code = "import sys, vlm_driving.datasets; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- augmentation and the torch dataset ------------------------------------------------------

FLIP_ONLY = AugmentConfig(photometric_p=0.0, zoom_out_p=0.0, crop_p=0.0, flip_p=1.0)


def test_flip_mirrors_the_box_and_the_pixels(tmp_path: Path) -> None:
    box = [5.0, 6.0, 21.0, 41.0]
    image = draw(tmp_path / "one.png", [box])
    item = Annotated(image, np.array([box]), ("car",), SIZE)
    picture, target = DetectionDataset([item], CLASSES, SIZE, True, config=FLIP_ONLY)[0]
    torch.testing.assert_close(target["boxes"], torch.tensor([[64.0 - 21, 6.0, 64.0 - 5, 41.0]]))
    red = (picture[0] > 0.9) & (picture[1] < 0.1)
    cols = red.any(dim=0).nonzero().flatten()
    rows = red.any(dim=1).nonzero().flatten()
    assert (cols.min().item(), cols.max().item() + 1) == (64 - 21, 64 - 5)
    assert (rows.min().item(), rows.max().item() + 1) == (6, 41)


def test_training_boxes_stay_inside_the_image(tmp_path: Path) -> None:
    items = scene(tmp_path, 4)
    dataset = DetectionDataset(items, CLASSES, (40, 56), True)
    torch.manual_seed(0)
    seen = 0
    for _ in range(5):
        for i in range(len(dataset)):
            picture, target = dataset[i]
            boxes = target["boxes"]
            assert picture.shape == (3, 40, 56) and picture.dtype == torch.float32
            assert picture.min() >= 0.0 and picture.max() <= 1.0
            assert boxes.dtype == torch.float32 and boxes.shape == (len(target["labels"]), 4)
            assert (boxes >= 0).all() and (boxes[:, 0::2] <= 56).all()
            assert (boxes[:, 1::2] <= 40).all()
            assert ((boxes[:, 2:] - boxes[:, :2]) >= 2).all()
            seen += len(boxes)
    assert seen > 0


def test_eval_sample_labels_sizes_and_collate(tmp_path: Path) -> None:
    items = scene(tmp_path, 4)
    dataset = DetectionDataset(items, CLASSES, (24, 32), False)
    _, target = dataset[1]
    torch.testing.assert_close(target["labels"], torch.tensor([2, 3]))  # truck, pedestrian
    torch.testing.assert_close(
        target["boxes"], torch.tensor([[0.0, 0.0, 5.25, 6.0], [20.0, 10.0, 32.0, 24.0]])
    )
    assert target["image_id"].item() == 1 and target["orig_size"].tolist() == [48, 64]
    assert dataset[2][1]["boxes"].shape == (0, 4) and dataset[2][1]["labels"].shape == (0,)
    images, targets = collate([dataset[i] for i in range(4)])
    assert images.shape == (4, 3, 24, 32) and len(targets) == 4
    assert [t["image_id"].item() for t in targets] == [0, 1, 2, 3]


def test_train_transform_keeps_empty_targets() -> None:
    picture = Image.new("RGB", (64, 48))
    boxes = tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=SIZE)
    empty = {"boxes": boxes, "labels": torch.zeros(0, dtype=torch.int64)}
    image, target = train_transform((32, 32))(picture, empty)
    assert image.shape == (3, 32, 32) and target["boxes"].shape == (0, 4)


def test_undecodable_image_and_unknown_label_are_input_errors(tmp_path: Path) -> None:
    image = draw(tmp_path / "cut.png", [[5, 6, 20, 30]])
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])  # the header survives, the pixels do not
    item = Annotated(image, np.zeros((0, 4)), (), SIZE)
    with pytest.raises(InputError, match=r"cut\.png: cannot decode the image"):
        DetectionDataset([item], CLASSES, SIZE, False)[0]
    odd = Annotated(image, np.array([[1, 1, 5, 5]]), ("tram",), SIZE)
    with pytest.raises(InputError, match="label 'tram' is not among the classes"):
        DetectionDataset([odd], CLASSES, SIZE, False)
