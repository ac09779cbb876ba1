"""DICOM geometry: a pixel spacing, slice spacing, orientation or position that a header gets
wrong is refused in one line naming the file and the value as written, or, for the slice
spacing of a series with good slice positions, measured from the positions and said in the
result's warnings. No measurement in mm or mL rests on a silent 1 mm.

Broken values are written raw, as a broken scanner writes them, not through pydicom's checks.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import vlm_medical.dicom as dicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from test_dicom import CT, ct_series, load_one, refused

from vlm_core import hookimpl
from vlm_core.kinds import Kind
from vlm_core.runner import RunRequest, run_task
from vlm_core.runstore import RunStore
from vlm_core.tasks import TaskSpec
from vlm_core.types import Metrics

PIXEL_MM = 0.661468  # CT_small's PixelSpacing, both ways


def put(ds: Any, keyword: str, raw: bytes | None) -> None:
    """Write ``raw`` as the value of ``keyword`` byte for byte (None: remove it)."""
    tag = Tag(keyword)
    if raw is None:
        if tag in ds:
            del ds[tag]
        return
    ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(raw), raw, 0, False, True)


def one_file(tmp_path: Path, **raws: bytes | None) -> Path:
    """CT_small with the given attributes written raw."""
    ds = pydicom.dcmread(CT)
    for keyword, raw in raws.items():
        put(ds, keyword, raw)
    path = tmp_path / "slice.dcm"
    ds.save_as(path)
    return path


def series(tmp_path: Path, offsets: list[float], **raws: bytes | None) -> Path:
    """A CT series at ``offsets`` (mm) with the given attributes written raw in every slice."""

    def edit(k: int, ds: Any) -> None:
        for keyword, raw in raws.items():
            put(ds, keyword, raw)

    ct_series(tmp_path / "s", offsets, edit)
    return tmp_path / "s"


# ---------------------------------------------------------------------------------------------
# In-plane spacing: no fallback but ImagerPixelSpacing


@pytest.mark.parametrize(
    "raw",
    [b"abc\\abc", b"0\\0", b"-1\\-1", b"0.5\\0", b"nan\\nan", b"inf\\0.5", b"0.5"],
    ids=["abc", "zero", "negative", "one-zero", "nan", "inf", "one-value"],
)
def test_a_bad_pixel_spacing_is_refused_naming_the_file_and_the_value(tmp_path, caplog, raw):
    path = one_file(tmp_path, PixelSpacing=raw)
    written = raw.decode()
    assert refused(path, caplog) == (
        f"{path}: DICOM PixelSpacing is '{written}', not two positive numbers (mm)"
    )


def test_a_missing_pixel_spacing_is_refused_for_a_file_and_a_series(tmp_path, caplog):
    path = one_file(tmp_path, PixelSpacing=None)
    assert refused(path, caplog) == (
        f"{path}: DICOM has no PixelSpacing (nor ImagerPixelSpacing): the size of its pixels "
        "in mm is unknown"
    )
    folder = series(tmp_path, [0.0, 2.5, 5.0], PixelSpacing=None)
    assert refused(folder, caplog).startswith(f"{folder}: DICOM has no PixelSpacing")


def test_one_bad_slice_refuses_its_series_naming_the_slice(tmp_path, caplog):
    def edit(k: int, ds: Any) -> None:
        if k == 1:
            put(ds, "PixelSpacing", b"abc\\abc")

    paths = ct_series(tmp_path / "s", [0.0, 2.5, 5.0], edit)
    message = refused(tmp_path / "s", caplog)
    assert message == f"{paths[1]}: DICOM PixelSpacing is 'abc\\abc', not two positive numbers (mm)"


def test_imager_pixel_spacing_stands_in_with_a_warning(tmp_path):
    path = one_file(tmp_path, PixelSpacing=None, ImagerPixelSpacing=b"0.2\\0.3")
    volume = load_one(path)
    assert volume.spacing == pytest.approx((0.3, 0.2, 5.0))  # (columns, rows, thickness)
    assert volume.warnings == (
        "no PixelSpacing: pixel size from ImagerPixelSpacing, at the detector (not corrected "
        "for magnification)",
    )


# ---------------------------------------------------------------------------------------------
# Slice spacing: the slice positions when there are some


@pytest.mark.parametrize("raw", [b"abc", b"0", b"-1", b"nan"])
def test_a_bad_slice_thickness_is_measured_from_the_positions_with_a_warning(tmp_path, caplog, raw):
    folder = series(tmp_path, [0.0, 2.5, 5.0, 7.5], SliceThickness=raw)
    with caplog.at_level(logging.WARNING, logger="vlm.medical.dicom"):
        volume = load_one(folder)
    assert volume.spacing == pytest.approx((PIXEL_MM, PIXEL_MM, 2.5))
    warning = (
        f"SliceThickness is '{raw.decode()}', not a positive number (mm): slice spacing "
        "2.500 mm measured from the slice positions"
    )
    assert volume.warnings == (warning,)
    assert [r.getMessage() for r in caplog.records] == [f"{folder}: {warning}"]


def test_spacing_between_slices_that_contradicts_the_positions_is_a_warning(tmp_path):
    volume = load_one(series(tmp_path, [0.0, 2.5, 5.0], SpacingBetweenSlices=b"5.0"))
    assert volume.spacing == pytest.approx((PIXEL_MM, PIXEL_MM, 2.5))
    assert volume.warnings == (
        "SpacingBetweenSlices is '5.0' but the slice positions lie 2.500 mm apart: the "
        "positions are used",
    )


def test_a_consistent_series_has_no_warnings(tmp_path):
    volume = load_one(series(tmp_path, [0.0, 2.5, 5.0], SpacingBetweenSlices=b"2.5"))
    assert volume.spacing == pytest.approx((PIXEL_MM, PIXEL_MM, 2.5))
    assert volume.warnings == ()


@pytest.mark.parametrize("raw", [b"abc", b"0", b"-1"])
def test_a_single_slice_with_a_bad_thickness_is_refused(tmp_path, caplog, raw):
    path = one_file(tmp_path, SliceThickness=raw, SpacingBetweenSlices=None)
    assert refused(path, caplog) == (
        f"{path}: DICOM SliceThickness is '{raw.decode()}', not a positive number (mm), and a "
        "single slice has no other measure of its thickness"
    )


def test_a_single_slice_without_a_thickness_is_1mm_with_a_warning(tmp_path):
    volume = load_one(one_file(tmp_path, SliceThickness=None, SpacingBetweenSlices=None))
    assert volume.spacing == pytest.approx((PIXEL_MM, PIXEL_MM, 1.0))
    assert volume.warnings == (
        "no SliceThickness: the slice is taken as 1 mm thick (volumes scale with it)",
    )


def test_a_series_without_positions_needs_a_valid_slice_spacing(tmp_path, caplog):
    volume = load_one(series(tmp_path / "a", [0.0, 1.0, 2.0], ImagePositionPatient=None))
    assert volume.spacing == pytest.approx((PIXEL_MM, PIXEL_MM, 5.0))  # CT_small's thickness
    assert "slices in InstanceNumber order, 5 mm apart by SliceThickness" in volume.warnings[0]
    folder = series(tmp_path / "b", [0.0, 1.0], ImagePositionPatient=None, SliceThickness=b"-1")
    assert refused(folder, caplog) == (
        f"{folder}: DICOM SliceThickness is '-1', not a positive number (mm), and there are no "
        "slice positions to measure the slice spacing from"
    )
    folder = series(tmp_path / "c", [0.0, 1.0], ImagePositionPatient=None, SliceThickness=None)
    assert refused(folder, caplog) == (
        f"{folder}: DICOM has 2 slices and neither their positions (ImagePositionPatient with "
        "ImageOrientationPatient) nor SpacingBetweenSlices or SliceThickness: the spacing "
        "between slices is unknown"
    )


# ---------------------------------------------------------------------------------------------
# Orientation and positions


@pytest.mark.parametrize(
    "raw,expected",
    [
        (b"abc", "six direction cosines"),
        (b"1\\0\\0\\0\\1", "six direction cosines"),
        (b"nan\\0\\0\\0\\1\\0", "six direction cosines"),
        (b"2\\0\\0\\0\\1\\0", "two orthogonal unit vectors"),
        (b"1\\0\\0\\1\\0\\0", "two orthogonal unit vectors"),
    ],
    ids=["abc", "five-values", "nan", "not-unit", "parallel"],
)
def test_an_orientation_that_is_not_two_orthogonal_unit_vectors_is_refused(
    tmp_path, caplog, raw, expected
):
    path = one_file(tmp_path, ImageOrientationPatient=raw)
    assert refused(path, caplog) == (
        f"{path}: DICOM ImageOrientationPatient is '{raw.decode()}', not {expected}"
    )


def test_a_bad_position_is_refused(tmp_path, caplog):
    path = one_file(tmp_path, ImagePositionPatient=b"abc\\1\\2")
    assert refused(path, caplog) == (
        f"{path}: DICOM ImagePositionPatient is 'abc\\1\\2', not three numbers (mm)"
    )


def test_slices_with_and_without_positions_are_refused(tmp_path, caplog):
    def edit(k: int, ds: Any) -> None:
        if k == 2:
            del ds.ImagePositionPatient

    paths = ct_series(tmp_path / "s", [0.0, 2.5, 5.0], edit)
    assert refused(tmp_path / "s", caplog) == (
        f"{tmp_path / 's'}: DICOM series has slices with and without ImagePositionPatient "
        f"({paths[2].name} has none)"
    )


def test_slices_shifted_in_plane_are_refused(tmp_path, caplog):
    def shift(k: int, ds: Any) -> None:
        if k == 1:
            x, y, z = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x + 3.0, y, z]  # 3 mm: over 4 pixels sideways

    paths = ct_series(tmp_path / "s", [0.0, 2.5, 5.0], shift)
    message = refused(tmp_path / "s", caplog)
    assert message == (
        f"{tmp_path / 's'}: DICOM series slices are not stacked in line: {paths[1].name} lies "
        "3.000 mm in plane off the line through the first and last slice"
    )


def test_gantry_tilt_is_a_straight_stack_and_loads(tmp_path):
    def tilt(k: int, ds: Any) -> None:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.5 * k, z]  # every slice 0.5 mm further: a tilt

    ct_series(tmp_path / "s", [0.0, 2.5, 5.0, 7.5], tilt)
    volume = load_one(tmp_path / "s")
    np.testing.assert_allclose(volume.affine[:3, 2], [0.0, -0.5, 2.5], atol=1e-6)  # RAS


# ---------------------------------------------------------------------------------------------
# The warnings reach the result


def test_the_warnings_reach_result_json_and_the_mm_rest_on_the_positions(vlm_registry, tmp_path):
    def voxel(inputs, params, ctx):  # what a measuring task reads from the volume
        return [{"voxel": Metrics({"ml": float(np.prod(v.spacing)) / 1000.0})} for v in inputs]

    class Task:
        @hookimpl
        def register_tasks(self, register):
            register(
                TaskSpec(
                    id="vol.voxel", title="Voxel", description="Voxel size.", domain="d",
                    run=voxel, inputs=(Kind.VOLUME,), outputs=(Kind.METRICS,),
                )
            )  # fmt: skip

    registry = vlm_registry({"medical": dicom, "vol": Task()})
    folder = series(tmp_path, [0.0, 2.5, 5.0], SliceThickness=b"abc")
    request = RunRequest("vol.voxel", [str(folder)], out_dir=tmp_path / "out")
    outcome = run_task(request, registry=registry, store=RunStore(tmp_path / "runs.sqlite"))
    written = json.loads((tmp_path / "out" / "s" / "result.json").read_text())
    assert written["warnings"] == [
        "SliceThickness is 'abc', not a positive number (mm): slice spacing 2.500 mm measured "
        "from the slice positions"
    ]
    assert outcome.summaries[0]["warnings"] == written["warnings"]
    ml = written["outputs"]["voxel"]["values"]["ml"]
    assert ml == pytest.approx(PIXEL_MM * PIXEL_MM * 2.5 / 1000.0)


def test_the_cli_refuses_a_bad_pixel_spacing_in_one_line_and_exit_2(tmp_path):
    path = one_file(tmp_path, PixelSpacing=b"-1\\-1")
    vlm = Path(sys.executable).with_name("vlm")
    proc = subprocess.run(
        [str(vlm), "run", "medical.segment", str(path), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {path}: DICOM PixelSpacing is '-1\\-1', not two positive numbers (mm)"
    ]
    assert not (tmp_path / "out").exists()
