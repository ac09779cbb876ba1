"""`vlm run driving.fuse` from the command line: the shipped KITTI sample gives distances that
match its ground truth, and malformed sweeps and calibrations exit 2 with one line."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou
from vlm_driving.kitti import read_bin

from vlm_core.tasks import package_file

SAMPLE = package_file("vlm_driving", "samples", "kitti")
Cli = Callable[..., subprocess.CompletedProcess[str]]


def test_the_sample_folder_gives_distances_that_match_its_ground_truth(
    vlm_cli: Cli, tmp_path: Path
) -> None:
    done = vlm_cli("run", "driving.fuse", SAMPLE, "--out", tmp_path / "out", "--no-preview")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("with distances, nearest") == 3, done.stdout
    record = json.loads((SAMPLE / "distances.json").read_text())
    truth = {entry["frame"]: entry["objects"] for entry in record["frames"]}
    errors = []
    for frame in ("000000", "000001", "000002"):
        found = json.loads((tmp_path / "out" / frame / "objects.json").read_text())
        [objects] = [f["objects"] for f in found["per_frame"]]
        measured = [obj for obj in objects if obj["distance_m"] is not None]
        listed = truth[frame]
        overlap = box_iou(
            torch.tensor([obj["box"] for obj in measured], dtype=torch.float64).reshape(-1, 4),
            torch.tensor([t["box"] for t in listed], dtype=torch.float64).reshape(-1, 4),
        )
        for obj, row in zip(measured, overlap, strict=True):  # the truth it overlaps most
            best = int(row.argmax())
            if row[best] >= 0.5 and listed[best]["distance"] <= 40:
                errors.append(abs(obj["distance_m"] - listed[best]["distance"]))
        assert (tmp_path / "out" / frame / "objects.kitti" / f"{frame}.txt").is_file()
        assert (tmp_path / "out" / frame / "objects_bev.png").is_file()
    assert len(errors) >= 8 and float(np.median(errors)) < 0.5, errors


def _frame(tmp_path: Path) -> Path:
    """A copy of the sample's first frame, side by side: NAME.bin, NAME.png, NAME.txt."""
    for folder, suffix in (("velodyne", ".bin"), ("image_2", ".png"), ("calib", ".txt")):
        shutil.copy(SAMPLE / folder / f"000000{suffix}", tmp_path / f"frame{suffix}")
    return tmp_path / "frame.bin"


def _nan(path: Path) -> None:
    points = read_bin(path)
    points[7, 2] = np.nan
    points.astype("<f4").tofile(path)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def _singular(path: Path) -> None:
    calib = path.with_suffix(".txt")
    lines = calib.read_text().splitlines()
    fixed = ["R0_rect: " + " ".join(["0"] * 9) if ln.startswith("R0_rect") else ln for ln in lines]
    calib.write_text("\n".join(fixed) + "\n")


def _no_image(path: Path) -> None:
    path.with_suffix(".png").unlink()


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (_nan, "1 of 35,101 points"),
        (_truncate, "1,000 bytes is not a whole number of 16-byte KITTI points"),
        (_singular, "calibration does not invert"),
        (_no_image, "no camera image for"),
    ],
)
def test_a_malformed_frame_exits_2_with_one_line(
    vlm_cli: Cli, tmp_path: Path, spoil: Callable[[Path], None], message: str
) -> None:
    sweep = _frame(tmp_path)
    spoil(sweep)
    done = vlm_cli("run", "driving.fuse", sweep, "--out", tmp_path / "out")
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "out").exists()
