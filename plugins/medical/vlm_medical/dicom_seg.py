"""DICOM SEG output of ``medical.segment`` (highdicom, the ``dicom-seg`` extra).

A SEG is written only when the operator asks for it (``dicom_seg=true``) and only for DICOM
input: it is a DICOM object that a PACS or viewer (OHIF, 3D Slicer) shows over the series it
was made from, so it has to point back at that series.

**What it carries from the source, and what it does not.** The plugin's rule is that no
patient data leaves the input: DICOM tags are not copied into outputs beyond geometry. A SEG
is built here from a *whitelist* of the source's attributes, not from the source itself:

- geometry: rows, columns, pixel spacing, orientation, positions, slice thickness, and the
  functional groups of a multi-frame file (where its per-frame geometry lives);
- references: the Study, Series, SOP Instance, SOP Class and Frame of Reference UIDs, which
  a viewer needs to place the SEG over its series. They identify images, not people, and are
  kept out of logs, errors and provenance as before;
- the modality and the pixel format.

Everything else is left out. The patient and study attributes that DICOM requires in the SEG
(PatientName, PatientID, PatientBirthDate, PatientSex, AccessionNumber, StudyID, StudyDate,
StudyTime, ReferringPhysicianName) are present and empty. A site that needs the SEG to carry
the patient's name must add it inside its own PACS workflow, where that data already lives.

Importing this module imports neither pydicom nor highdicom.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlm_core.errors import InputError, ParameterError

if TYPE_CHECKING:
    import numpy as np

    from vlm_core.types import File, Volume

MEDIA_TYPE = "application/dicom"
SUFFIX = ".seg.dcm"
INSTALL_HINT = "pip install 'vlm-medical[dicom-seg]'"

#: Source attributes a SEG is built from: geometry, references and the pixel format.
KEPT = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "Modality",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PixelSpacing",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "SliceThickness",
    "SpacingBetweenSlices",
    "GridFrameOffsetVector",
    "FrameIncrementPointer",
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
)

#: Patient and study attributes DICOM requires in a SEG (type 2): present, always empty.
EMPTIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)

#: Class names with a SNOMED CT code: name → (category, type), each (value, meaning).
CODED = {
    "lesion": (("49755003", "Morphologically Altered Structure"), ("52988006", "Lesion")),
    "tumor": (("49755003", "Morphologically Altered Structure"), ("108369006", "Neoplasm")),
    "tumour": (("49755003", "Morphologically Altered Structure"), ("108369006", "Neoplasm")),
}
#: Other classes: SNOMED's "Anatomical structure" category and a code of this local scheme
#: ("99" designators are private by the standard) whose meaning is the class name.
LOCAL_SCHEME = "99VLM"
UNCODED_CATEGORY = ("91723000", "Anatomical Structure")


def available() -> bool:
    """Whether highdicom can be imported."""
    try:
        import highdicom  # noqa: F401
    except ImportError:
        return False
    return True


def require() -> None:
    """Raise a one-line :class:`ParameterError` when highdicom is missing."""
    if not available():
        raise ParameterError(
            f"dicom_seg=true needs highdicom, which is not installed: {INSTALL_HINT}"
        )


def source_slices(volume: Volume) -> list[tuple[Path, int]]:
    """(file, frame) of each slice k of ``volume``, in volume order, from its DICOM source.

    ``volume.source`` is the file, or the folder of the series (a folder may hold several
    series: the one with this volume's shape and affine is chosen). A non-DICOM input, or two
    series in one folder with the same geometry, is a one-line :class:`InputError`.
    """
    import numpy as np

    from vlm_medical import dicom

    source = volume.source
    if source is None:
        raise InputError(f"{volume.name or 'input'}: dicom_seg=true needs DICOM input")
    source = Path(source)
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    candidates = [
        list(layout.slices)
        for layout in dicom.layouts([f for f in files if _is_dicom(f)])
        if layout.shape[:3] == volume.array.shape[:3]
        and np.allclose(np.array(layout.affine), volume.affine, atol=1e-3)
    ]
    if not candidates:
        raise InputError(f"{source}: dicom_seg=true needs DICOM input, and this is not DICOM")
    if len(candidates) > 1:
        raise InputError(
            f"{source}: {len(candidates)} DICOM series here share this volume's geometry; put "
            "the series in a folder of its own to write a DICOM SEG"
        )
    return candidates[0]


def _is_dicom(path: Path) -> bool:
    """Whether the core's content sniffer calls ``path`` DICOM (as it did when loading it)."""
    from vlm_core.io.sniff import sniff_format

    try:
        return sniff_format(path) == "dicom"
    except OSError:
        return False


def _reference(path: Path) -> Any:
    """The whitelisted copy of one source file's header (never its pixel data)."""
    import pydicom
    from pydicom.dataset import Dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings may quote header values
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    kept = Dataset()
    for keyword in KEPT:
        if keyword in ds:
            setattr(kept, keyword, copy.deepcopy(ds[keyword].value))
    for keyword in EMPTIED:
        setattr(kept, keyword, "")
    missing = [
        k for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID") if k not in kept
    ]
    if missing:
        raise InputError(f"{path}: DICOM header has no {missing[0]}; a SEG cannot refer to it")
    kept.file_meta = pydicom.dataset.FileMetaDataset()
    kept.file_meta.TransferSyntaxUID = ds.file_meta.TransferSyntaxUID
    return kept


def _description(number: int, name: str, algorithm: str, version: str) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    category, kind = CODED.get(name.lower(), (None, None))
    if category is None or kind is None:
        category_code = hd.sr.CodedConcept(UNCODED_CATEGORY[0], "SCT", UNCODED_CATEGORY[1])
        type_code = hd.sr.CodedConcept(f"C{number}", LOCAL_SCHEME, name[:64] or f"class {number}")
    else:
        category_code = hd.sr.CodedConcept(category[0], "SCT", category[1])
        type_code = hd.sr.CodedConcept(kind[0], "SCT", kind[1])
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=name[:64] or f"class {number}",
        segmented_property_category=category_code,
        segmented_property_type=type_code,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm, version=version, family=codes.cid7162.ArtificialIntelligence
        ),
    )


def dicom_seg(
    volume: Volume,
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    algorithm: str,
    version: str,
    software_version: str,
    slices: Sequence[tuple[Path, int]] | None = None,
) -> File:
    """A binary DICOM SEG of the label map ``labels`` (i, j, k) of ``volume``.

    One segment per class after the background (index 0), each with its own frames; empty
    frames are left out. The SEG's frames refer to the source slices by SOP Instance UID.
    ``slices`` is :func:`source_slices` of ``volume`` when the caller has it already.
    """
    import highdicom as hd
    import numpy as np

    from vlm_core.types import File

    require()
    slices = list(slices) if slices is not None else source_slices(volume)
    paths = list(dict.fromkeys(path for path, _ in slices))
    references = {path: _reference(path) for path in paths}
    columns, rows = labels.shape[:2]
    if len(paths) == 1 and len(slices) > 1:  # one multi-frame file: frames in file order
        frames = np.zeros((len(slices), rows, columns), np.uint8)
        for k, (_, frame) in enumerate(slices):
            frames[frame] = labels[:, :, k].T
    else:
        frames = np.ascontiguousarray(np.transpose(labels, (2, 1, 0)), dtype=np.uint8)
    present = len(class_names) - 1
    if present < 1:
        raise ParameterError("dicom_seg=true needs a model with at least one foreground class")
    descriptions = [
        _description(n, class_names[n], algorithm, version) for n in range(1, present + 1)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = hd.seg.Segmentation(
            source_images=[references[p] for p in paths],
            pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=9001,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="vlm",
            manufacturer_model_name=algorithm[:64],
            software_versions=software_version[:64],
            device_serial_number="none",
            series_description="vlm medical.segment (research use only)",
            content_label="VLM_SEGMENT",
            content_description="Research use only: not a medical device, not for diagnosis",
        )
    import io

    buffer = io.BytesIO()
    seg.save_as(buffer)
    return File(
        data=buffer.getvalue(),
        suffix=SUFFIX,
        media_type=MEDIA_TYPE,
        description=f"DICOM SEG ({present} segment{'s' if present != 1 else ''}, "
        f"{len(slices)} source slices; research use only)",
    )
