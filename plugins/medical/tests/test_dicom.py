"""DICOM input through the medical plugin's reader: pydicom's CT and MR test files, series
folders written from them, and the broken inputs a user will bring."""

from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import vlm_medical.dicom as dicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from vlm_core import hookimpl
from vlm_core.errors import InputError
from vlm_core.io import load_input, probe_input
from vlm_core.io.load import collect_inputs
from vlm_core.kinds import Kind
from vlm_core.runner import RunRequest, run_task
from vlm_core.runstore import RunStore
from vlm_core.tasks import TaskSpec
from vlm_core.types import Metrics, Volume

CT = Path(get_testdata_file("CT_small.dcm"))
MR = Path(get_testdata_file("MR_small.dcm"))
READERS = {"dicom": dicom.READER}
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def identifiers(path: Path = CT) -> list[str]:
    """Values that must never appear in an error, a log line or a volume's name."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return [str(ds.PatientName), str(ds.PatientID), str(ds.StudyDate)]


def ct_series(
    folder: Path,
    offsets: list[float],
    edit: Callable[[int, Any], None] | None = None,
    uid: str | None = None,
) -> list[Path]:
    """Slices derived from CT_small at z + offset (mm), one series, with file names out of
    slice order; pixel (0, 0) of slice k holds k so that tests can see the order. Like most CT
    series they have no SpacingBetweenSlices (CT_small's 5 mm would contradict the offsets)."""
    source = pydicom.dcmread(CT)
    x, y, z = (float(v) for v in source.ImagePositionPatient)
    uid = uid or generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, offset in enumerate(offsets):
        ds = copy.deepcopy(source)
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImagePositionPatient = [x, y, z + offset]
        ds.InstanceNumber = k + 1
        del ds.SpacingBetweenSlices
        pixels = source.pixel_array.copy()
        pixels[0, 0] = k
        ds.PixelData = pixels.tobytes()
        if edit is not None:
            edit(k, ds)
        path = folder / f"IM{(k * 7) % 11:04d}"  # no extension, as scanners write them
        ds.save_as(path)
        paths.append(path)
    return paths


def load_one(arg: Path) -> Volume:
    [probe] = collect_inputs([str(arg)], [Kind.VOLUME], readers=READERS)
    volume = load_input(probe, READERS)
    assert isinstance(volume, Volume)
    return volume


def refused(arg: Path, caplog: pytest.LogCaptureFixture) -> str:
    """The one-line error loading ``arg`` gives, in under 2 s, free of patient identifiers."""
    started = time.perf_counter()
    with caplog.at_level(logging.DEBUG), pytest.raises(InputError) as info:
        load_one(arg)
    elapsed = time.perf_counter() - started
    message = str(info.value)
    assert elapsed < 2.0, f"took {elapsed:.1f} s"  # the brief's bound for a broken input
    assert "\n" not in message
    for value in identifiers():
        assert value not in message and value not in caplog.text
    return message


def test_hook_register_readers_from_the_medical_module(vlm_registry):
    registry = vlm_registry({"medical": dicom})
    assert registry.plugins["medical"].readers == ["dicom"]
    reader = registry.readers["dicom"]
    assert reader.plugin == "medical" and reader.group == "vlm_medical.dicom:group"


def test_importing_the_reader_imports_no_decoding_library():
    code = (
        "import sys, vlm_medical.dicom; "
        "print([m for m in ('pydicom', 'numpy', 'torch', 'monai') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("path", [CT, MR], ids=["CT_small", "MR_small"])
def test_pydicom_test_files_load_with_their_geometry(path):
    ds = pydicom.dcmread(path)
    probe = probe_input(path, [Kind.VOLUME], readers=READERS)
    assert probe.shape == (ds.Columns, ds.Rows, 1)
    volume = load_input(probe, READERS)
    assert volume.name == path.stem and volume.array.shape == (ds.Columns, ds.Rows, 1)
    row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
    assert volume.spacing == pytest.approx((col_mm, row_mm, float(ds.SliceThickness)))
    cosines = np.array([float(v) for v in ds.ImageOrientationPatient])
    np.testing.assert_allclose(volume.affine[:3, 0], LPS_TO_RAS @ cosines[:3] * col_mm)
    np.testing.assert_allclose(volume.affine[:3, 1], LPS_TO_RAS @ cosines[3:] * row_mm)
    origin = np.array([float(v) for v in ds.ImagePositionPatient])
    np.testing.assert_allclose(volume.affine[:3, 3], LPS_TO_RAS @ origin)
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    np.testing.assert_array_equal(volume.array[:, :, 0], ds.pixel_array.T * slope + intercept)
    assert np.issubdtype(volume.array.dtype, np.integer)  # whole-number rescale stays integer


def test_a_series_folder_loads_as_one_volume_in_slice_order(tmp_path, caplog):
    folder = tmp_path / "study" / "series"
    offsets = [0.0, 5.0, 2.5, 7.5, 10.0]  # written out of order
    files = ct_series(folder, offsets)
    no_pixels = pydicom.dcmread(CT)
    del no_pixels.PixelData
    no_pixels.save_as(folder / "REPORT")  # a DICOM file that is not an image: skipped
    with caplog.at_level(logging.INFO):
        [probe] = collect_inputs([str(tmp_path / "study")], [Kind.VOLUME], readers=READERS)
    assert probe.path == folder and probe.shape == (128, 128, 5)
    assert probe.members == tuple(files[i] for i in np.argsort(offsets))
    volume = load_input(probe, READERS)
    assert volume.name == "series" and volume.array.shape == (128, 128, 5)
    assert volume.spacing == pytest.approx((0.661468, 0.661468, 2.5))
    assert (volume.array[0, 0, :] + 1024).tolist() == [0, 2, 1, 3, 4]  # k at offset order
    first = np.array([float(v) for v in pydicom.dcmread(files[0]).ImagePositionPatient])
    np.testing.assert_allclose(volume.affine[:3, 3], LPS_TO_RAS @ first)
    for value in identifiers():
        assert value not in caplog.text and value not in volume.name


def test_series_geometry_matches_monai(tmp_path):
    from monai.data import PydicomReader

    folder = tmp_path / "series"
    ct_series(folder, [0.0, 1.25, 2.5, 3.75])
    volume = load_one(folder)
    reader = PydicomReader()
    array, meta = reader.get_data(reader.read(str(folder)))
    np.testing.assert_allclose(volume.affine, np.asarray(meta["affine"]), atol=1e-5)
    np.testing.assert_array_equal(volume.array, np.asarray(array))


def test_two_series_in_one_folder_are_two_inputs(tmp_path):
    ct_series(tmp_path / "a", [0.0, 2.0, 4.0])
    ct_series(tmp_path / "b", [0.0, 3.0])
    probes = collect_inputs([str(tmp_path)], [Kind.VOLUME], readers=READERS)
    assert [(p.path.name, p.shape) for p in probes] == [("a", (128, 128, 3)), ("b", (128, 128, 2))]


def test_float_rescale_and_missing_orientation_fall_back_with_a_warning(tmp_path, caplog):
    def edit(k: int, ds: Any) -> None:
        del ds.ImageOrientationPatient, ds.ImagePositionPatient
        ds.SliceThickness = 3.0
        ds.RescaleSlope = 0.5

    ct_series(tmp_path / "s", [0.0, 1.0, 2.0], edit)
    with caplog.at_level(logging.INFO, logger="vlm.medical.dicom"):
        volume = load_one(tmp_path / "s")
    assert volume.warnings == (
        "no ImageOrientationPatient: axial slices assumed",
        "no slice positions along a known normal: slices in InstanceNumber order, 3 mm apart "
        "by SliceThickness",
        "no ImagePositionPatient: origin (0, 0, 0) assumed",
    )
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert logged == [f"{tmp_path / 's'}: {w}" for w in volume.warnings]
    assert volume.spacing == pytest.approx((0.661468, 0.661468, 3.0))
    assert volume.array.dtype == np.float32
    stored = pydicom.dcmread(CT).pixel_array.T.astype(np.float32)
    np.testing.assert_allclose(volume.array[1:, 1:, 2], stored[1:, 1:] * 0.5 - 1024)


def test_a_single_file_runs_through_a_volume_task_with_its_hash(vlm_registry, tmp_path):
    def count(inputs, params, ctx):
        return [{"voxels": Metrics({"n": float(v.array.size)})} for v in inputs]

    class Task:
        @hookimpl
        def register_tasks(self, register):
            register(
                TaskSpec(
                    id="vol.count",
                    title="Count",
                    description="Voxels.",
                    domain="d",
                    run=count,
                    inputs=(Kind.VOLUME,),
                    outputs=(Kind.METRICS,),
                )
            )

    registry = vlm_registry({"medical": dicom, "vol": Task()})
    ct_series(tmp_path / "series", [0.0, 2.0, 4.0])
    store = RunStore(tmp_path / "runs.sqlite")
    request = RunRequest("vol.count", [str(tmp_path / "series"), str(MR)], out_dir=tmp_path / "o")
    outcome = run_task(request, registry=registry, store=store)
    assert [s["outputs"]["voxels"]["values"]["n"] for s in outcome.summaries] == [49152, 4096]
    inputs = [r.provenance.inputs[0] for r in outcome.results]
    assert [i.path for i in inputs] == [str(tmp_path / "series"), str(MR)]
    written = json.loads((tmp_path / "o" / "series" / "result.json").read_text())
    assert written["provenance"]["inputs"][0]["sha256"] == inputs[0].sha256


# ---------------------------------------------------------------------------------------------
# Broken inputs: one-line InputError naming the file or folder and the problem


def test_truncated_dicom_is_refused_from_its_header(tmp_path, caplog):
    data = CT.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) // 2])
    message = refused(cut, caplog)
    assert message.startswith(f"{cut}: DICOM pixel data is truncated")
    cut.write_bytes(data[:1000])  # cut inside the header
    assert "has no pixel data" in refused(cut, caplog)


def test_pixel_data_shorter_than_the_image_is_refused_at_load(tmp_path, caplog):
    ds = pydicom.dcmread(CT)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]  # consistent element, too few bytes
    ds.save_as(tmp_path / "short.dcm")
    message = refused(tmp_path / "short.dcm", caplog)
    assert message.startswith(f"{tmp_path / 'short.dcm'}: cannot decode DICOM pixel data")


def test_dicom_without_pixel_data_is_refused(tmp_path, caplog):
    ds = pydicom.dcmread(CT)
    del ds.PixelData
    ds.save_as(tmp_path / "header-only.dcm")
    message = refused(tmp_path / "header-only.dcm", caplog)
    assert message.startswith(f"{tmp_path / 'header-only.dcm'}: DICOM file has no pixel data")


def test_a_series_with_a_missing_slice_is_refused(tmp_path, caplog):
    ct_series(tmp_path / "s", [0.0, 2.5, 5.0, 10.0, 12.5])
    message = refused(tmp_path / "s", caplog)
    assert message.startswith(f"{tmp_path / 's'}: DICOM series has uneven slice spacing")
    assert "10.000 mm" not in message and "5.000 mm between" in message
    assert message.endswith("2.500 mm elsewhere (a missing slice?)")


def test_a_series_with_a_duplicate_slice_is_refused(tmp_path, caplog):
    ct_series(tmp_path / "s", [0.0, 2.5, 2.5, 5.0])
    message = refused(tmp_path / "s", caplog)
    assert message.startswith(f"{tmp_path / 's'}: DICOM series has two slices at the same")


def test_a_series_with_a_mismatched_slice_size_is_refused(tmp_path, caplog):
    def crop(k: int, ds: Any) -> None:
        if k == 2:
            ds.PixelData = ds.pixel_array[:, :64].copy().tobytes()
            ds.Columns = 64

    ct_series(tmp_path / "s", [0.0, 2.5, 5.0], crop)
    message = refused(tmp_path / "s", caplog)
    assert message.startswith(f"{tmp_path / 's'}: DICOM series has slices of different sizes")
    assert "is 128x128" in message and "is 64x128" in message


def test_a_series_with_mixed_orientations_is_refused(tmp_path, caplog):
    def tilt(k: int, ds: Any) -> None:
        if k == 1:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]

    ct_series(tmp_path / "s", [0.0, 2.5, 5.0], tilt)
    message = refused(tmp_path / "s", caplog)
    assert "different orientations" in message


def test_the_voxel_cap_is_checked_from_headers(tmp_path, caplog, monkeypatch):
    ct_series(tmp_path / "s", [0.0, 2.5, 5.0])
    monkeypatch.setenv("VLM_MAX_VOLUME_VOXELS", "40000")
    with pytest.raises(InputError, match=r"49,152 voxels \(128, 128, 3\).*VLM_MAX_VOLUME_VOXELS"):
        dicom.probe(sorted((tmp_path / "s").iterdir()))
    with pytest.raises(InputError, match=r"no usable inputs.*VLM_MAX_VOLUME_VOXELS"):
        collect_inputs([str(tmp_path / "s")], [Kind.VOLUME], readers=READERS)


def test_a_multi_frame_dose_grid_loads_with_its_frame_offsets():
    path = Path(get_testdata_file("rtdose.dcm"))
    ds = pydicom.dcmread(path)
    volume = load_input(probe_input(path, [Kind.VOLUME], readers=READERS), READERS)
    assert volume.array.shape == (ds.Columns, ds.Rows, ds.NumberOfFrames)
    offsets = [float(v) for v in ds.GridFrameOffsetVector]
    pixel_mm = [float(v) for v in ds.PixelSpacing]
    assert volume.spacing == pytest.approx((pixel_mm[1], pixel_mm[0], offsets[1] - offsets[0]))
    gray = np.moveaxis(ds.pixel_array, 0, -1).swapaxes(0, 1) * float(ds.DoseGridScaling)
    np.testing.assert_allclose(volume.array, gray, rtol=1e-6)


@pytest.mark.parametrize("source", ["CT_small.dcm", "MR_small.dcm", "series"])
def test_dicom_runs_through_medical_segment_and_keeps_its_geometry(
    source: str, tmp_path: Path, vlm_home: Path
) -> None:
    """pydicom's CT and MR files and a series folder: segmented, mask in the input's grid,
    NIfTI written with the input's affine and spacing, no identifier in the outputs."""
    import nibabel as nib

    from vlm_core.plugins import load_registry

    if source == "series":
        arg = tmp_path / "series"
        ct_series(arg, [0.0, 2.5, 5.0, 7.5, 10.0, 12.5])
    else:
        arg = Path(get_testdata_file(source))
    expected = load_one(arg)
    out = tmp_path / "out"
    request = RunRequest("medical.segment", [str(arg)], {}, out_dir=out, device="cpu")
    outcome = run_task(request, registry=load_registry(), keep_results=True)
    (result,) = outcome.results
    mask = result.outputs["mask"]
    assert mask.labels.shape == expected.array.shape[:3]
    np.testing.assert_allclose(mask.affine, expected.affine)
    written = nib.load(next(out.rglob("mask.nii.gz")))
    np.testing.assert_allclose(written.affine, expected.affine, atol=1e-4)
    np.testing.assert_allclose(written.header.get_zooms()[:3], expected.spacing, atol=1e-4)
    text = " ".join(p.read_text(errors="ignore") for p in out.rglob("*.json"))
    for value in identifiers(CT if source != "MR_small.dcm" else MR):
        assert value not in text
