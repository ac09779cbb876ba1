"""DICOM SEG output of medical.segment (highdicom): the SEG decodes to the run's mask, refers to
its source series, and carries no patient data; wrong requests fail on one line, writing
nothing."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from vlm_core.plugins import load_registry
from vlm_core.runner import RunRequest, run_task
from vlm_core.types import File

CT = Path(get_testdata_file("CT_small.dcm"))
SAMPLE = Path(__file__).parents[1] / "vlm_medical" / "samples" / "synthetic-lesions.nii.gz"
VLM = [sys.executable, "-m", "vlm_core.cli"]

#: Patient and study data written into the source series; none may reach any output.
SECRETS = {
    "PatientName": "Doe^Jane^Secret",
    "PatientID": "PID-7731-SECRET",
    "PatientBirthDate": "19610423",
    "AccessionNumber": "ACC99812",
    "StudyID": "STUDY4471",
    "StudyDate": "20240229",
    "ReferringPhysicianName": "Referrer^Harold",
    "InstitutionName": "Saint Example Hospital",
    "OtherPatientIDs": "OTHER-5521",
    "PatientAddress": "12 Example Road",
}


def lesion_series(
    folder: Path, study: str | None = None, prefix: str = "IM"
) -> tuple[list[Path], str]:
    """The plugin's synthetic-lesion sample (48³, 1 mm) as an axial CT series with patient data
    in every header, slices written in shuffled file order. Returns (paths, SeriesInstanceUID)."""
    array = np.asarray(nib.load(SAMPLE).get_fdata(), dtype=np.float32)  # (i, j, k)
    template = pydicom.dcmread(CT)
    series, study = generate_uid(), study or generate_uid()
    frame_of_reference = generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(array.shape[2]):
        ds = copy.deepcopy(template)
        for keyword, value in SECRETS.items():
            setattr(ds, keyword, value)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.FrameOfReferenceUID = frame_of_reference
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.Rows, ds.Columns = array.shape[1], array.shape[0]
        ds.PixelSpacing, ds.SliceThickness, ds.SpacingBetweenSlices = [1.0, 1.0], 1.0, 1.0
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.ImagePositionPatient = [0.0, 0.0, float(k)]
        ds.InstanceNumber = k + 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = np.round(array[:, :, k].T).astype(np.int16).tobytes()
        path = folder / f"{prefix}{(k * 17) % 53:04d}"
        ds.save_as(path)
        paths.append(path)
    return paths, series


def segment(arg: Path, out: Path | None, **params: object):  # type: ignore[no-untyped-def]
    request = RunRequest("medical.segment", [str(arg)], dict(params), out_dir=out, device="cpu")
    (result,) = run_task(request, registry=load_registry(), keep_results=True).results
    return result


def z_order(paths: list[Path]) -> dict[str, int]:
    """SOPInstanceUID → slice index k, from the headers' positions (independent of the plugin)."""
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    ranked = sorted(headers, key=lambda ds: float(ds.ImagePositionPatient[2]))
    return {str(ds.SOPInstanceUID): k for k, ds in enumerate(ranked)}


def all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_the_seg_decodes_to_the_mask_and_refers_to_its_series(tmp_path: Path, vlm_home: Path):
    paths, series = lesion_series(tmp_path / "series")
    out = tmp_path / "out"
    result = segment(tmp_path / "series", out, dicom_seg=True)
    labels = result.outputs["mask"].labels
    assert labels.shape == (48, 48, 48) and labels.any(), "the sample's lesions are found"
    seg_file = result.outputs["dicom_seg"]
    assert isinstance(seg_file, File) and seg_file.media_type == "application/dicom"
    written = out / "series" / "dicom_seg.seg.dcm"
    assert written.read_bytes() == seg_file.data

    seg = hd.seg.segread(written)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    assert [d.SegmentLabel for d in seg.SegmentSequence] == ["lesion"]
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "52988006"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series
    source = pydicom.dcmread(paths[0], stop_before_pixels=True)
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    order = z_order(paths)
    uids = list(order)
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=[1], skip_overlap_checks=True
    )  # (slices, rows, columns, segments)
    expected = np.stack([labels[:, :, order[uid]].T == 1 for uid in uids])
    np.testing.assert_array_equal(frames[..., 0].astype(bool), expected)


def test_no_patient_or_study_data_reaches_the_seg_or_any_output(tmp_path: Path, vlm_home: Path):
    lesion_series(tmp_path / "series")
    out = tmp_path / "out"
    segment(tmp_path / "series", out, dicom_seg=True)
    seg = pydicom.dcmread(out / "series" / "dicom_seg.seg.dcm")
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyID"):
        assert str(seg.get(keyword, "")) == "", keyword
    assert "InstitutionName" not in seg and "OtherPatientIDs" not in seg
    everything = all_bytes(out) + all_bytes(vlm_home)
    for keyword, value in SECRETS.items():
        assert value.encode() not in everything, keyword


def test_a_multi_frame_enhanced_ct_gets_its_frames_back_in_file_order(
    tmp_path: Path, vlm_home: Path
):
    """A legacy-converted enhanced CT (one file, 48 frames, written in shuffled slice order):
    each SEG frame refers to the source frame it segments."""
    paths, _ = lesion_series(tmp_path / "series")
    datasets = [pydicom.dcmread(p) for p in paths]  # file-name order: not slice order
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        datasets, series_instance_uid=generate_uid(), series_number=2,
        sop_instance_uid=generate_uid(), instance_number=1,
    )  # fmt: skip
    (tmp_path / "mf").mkdir()
    enhanced.save_as(tmp_path / "mf" / "enhanced.dcm")
    out = tmp_path / "out"
    result = segment(tmp_path / "mf" / "enhanced.dcm", out, dicom_seg=True)
    labels = result.outputs["mask"].labels
    assert labels.any()
    seg = hd.seg.segread(out / "enhanced" / "dicom_seg.seg.dcm")
    source = pydicom.dcmread(tmp_path / "mf" / "enhanced.dcm", stop_before_pixels=True)
    z = [
        float(item.PlanePositionSequence[0].ImagePositionPatient[2])
        for item in source.PerFrameFunctionalGroupsSequence
    ]
    rank = {frame: k for k, frame in enumerate(np.argsort(z))}
    numbers = list(range(1, len(z) + 1))
    frames = seg.get_pixels_by_source_frame(
        source_sop_instance_uid=source.SOPInstanceUID, source_frame_numbers=numbers,
        segment_numbers=[1], skip_overlap_checks=True, assert_missing_frames_are_empty=True,
    )  # fmt: skip
    expected = np.stack([labels[:, :, rank[n - 1]].T == 1 for n in numbers])
    np.testing.assert_array_equal(frames[..., 0].astype(bool), expected)


@pytest.mark.parametrize("case", ["nifti", "two-series", "no-highdicom"])
def test_a_seg_that_cannot_be_made_is_one_line_and_writes_nothing(
    case: str, tmp_path: Path, vlm_home: Path
):
    if case == "nifti":
        arg, expected = SAMPLE, "needs DICOM input"
    elif case == "two-series":
        study = generate_uid()
        lesion_series(tmp_path / "two", study, prefix="A")  # an echo and its twin, say
        lesion_series(tmp_path / "two", study, prefix="B")
        arg, expected = tmp_path / "two", "2 DICOM series here share this volume's geometry"
    else:
        lesion_series(tmp_path / "series")
        arg, expected = tmp_path / "series", "needs highdicom"
    out = tmp_path / "out"
    code = (
        "import sys, runpy; sys.modules['highdicom'] = None; "
        "sys.argv = ['vlm'] + sys.argv[1:]; runpy.run_module('vlm_core.cli', run_name='__main__')"
        if case == "no-highdicom"
        else None
    )
    command = [sys.executable, "-c", code] if code else VLM
    proc = subprocess.run(
        [*command, "run", "medical.segment", str(arg), "--param", "dicom_seg=true",
         "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert not out.exists()
