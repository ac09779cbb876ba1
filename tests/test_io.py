"""Safe loading: formats by content, caps from headers, Pillow's guard kept on."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image as PILImage

from vlm_core.config import settings
from vlm_core.errors import InputError
from vlm_core.io import load_input, probe_input, sniff_format
from vlm_core.io.load import collect_inputs
from vlm_core.kinds import Kind
from vlm_core.types import Image, Text, Volume

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"


def save(pixels: np.ndarray, path: Path, fmt: str) -> Path:
    PILImage.fromarray(pixels).save(path, format=fmt)
    return path


@pytest.mark.parametrize(
    "fmt,name",
    [("PNG", "png"), ("JPEG", "jpeg"), ("TIFF", "tiff"), ("BMP", "bmp"), ("WEBP", "webp")],
)
def test_formats_are_detected_by_content_not_extension(tmp_path, fmt, name):
    path = save(np.full((4, 5, 3), 120, np.uint8), tmp_path / "misleading.gif", fmt)
    assert sniff_format(path) == name
    image = load_input(probe_input(path, [Kind.IMAGE]))
    assert isinstance(image, Image) and image.pixels.shape == (4, 5, 3)


def test_gif_is_outside_the_allow_list(tmp_path):
    path = save(np.zeros((4, 4), np.uint8), tmp_path / "a.png", "GIF")
    with pytest.raises(InputError, match="content is a GIF file"):
        probe_input(path, [Kind.IMAGE])


def test_real_photographs_from_scikit_image_load():
    import skimage.data as skimage_data

    root = Path(skimage_data.__file__).parent
    for name, shape in (
        ("astronaut.png", (512, 512, 3)),
        ("rocket.jpg", (427, 640, 3)),
        ("camera.png", (512, 512)),
    ):
        image = load_input(probe_input(root / name, [Kind.IMAGE]))
        assert image.pixels.shape == shape, name


def test_truncated_png_fails_at_load_with_a_clear_message(tmp_path):
    rng = np.random.default_rng(0)
    path = save(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), tmp_path / "t.png", "PNG")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    probe = probe_input(path, [Kind.IMAGE])  # the header is intact
    with pytest.raises(InputError, match="truncated or corrupt"):
        load_input(probe)


def test_decompression_bomb_guard_stays_on():
    import vlm_core.io.load  # noqa: F401

    assert PILImage.MAX_IMAGE_PIXELS is not None and PILImage.MAX_IMAGE_PIXELS > 0


def test_sixteen_bit_and_palette_images_keep_their_meaning(tmp_path):
    gray16 = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000
    image = load_input(probe_input(save(gray16, tmp_path / "g.png", "PNG"), [Kind.IMAGE]))
    assert image.pixels.dtype == np.uint16 and image.pixels.max() == 55000
    pal = PILImage.fromarray(np.full((3, 3, 3), (10, 200, 30), np.uint8)).convert(
        "P", palette=PILImage.Palette.ADAPTIVE
    )
    pal.save(tmp_path / "p.png")
    image = load_input(probe_input(tmp_path / "p.png", [Kind.IMAGE]))
    assert image.pixels.shape == (3, 3, 3) and tuple(image.pixels[0, 0]) == (10, 200, 30)


def test_exif_orientation_is_applied(tmp_path):
    im = PILImage.fromarray(np.zeros((2, 6, 3), np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    im.save(tmp_path / "o.jpg", exif=exif)
    assert load_input(probe_input(tmp_path / "o.jpg", [Kind.IMAGE])).pixels.shape[:2] == (6, 2)


def test_nifti_loads_with_its_affine_and_spacing(tmp_path):
    affine = np.diag([0.5, 0.7, 2.0, 1.0])
    affine[:3, 3] = (10, -20, 5)
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), affine), path)
    assert sniff_format(path) == "nifti-gz"
    volume = load_input(probe_input(path, [Kind.VOLUME]))
    assert isinstance(volume, Volume) and volume.name == "v"
    np.testing.assert_allclose(volume.affine, affine)
    assert volume.spacing == pytest.approx((0.5, 0.7, 2.0))


def test_real_nifti_from_nibabel_loads():
    data = NIBABEL_DATA / "anatomical.nii"
    volume = load_input(probe_input(data, [Kind.VOLUME]))
    assert volume.array.shape == (33, 41, 25)


def test_nifti_header_over_the_voxel_cap_is_refused_before_reading(tmp_path, monkeypatch):
    header = nib.Nifti1Header()
    header.set_data_shape((4000, 4000, 4000))
    header.set_data_dtype(np.float32)
    path = tmp_path / "huge.nii"
    path.write_bytes(header.binaryblock + b"\x00" * 4 + b"\x00" * 64)  # no voxel data at all
    with pytest.raises(InputError, match="VLM_MAX_VOLUME_VOXELS"):
        probe_input(path, [Kind.VOLUME])
    monkeypatch.setenv("VLM_MAX_VOLUME_VOXELS", str(10**12))
    with pytest.raises(InputError, match="truncated"):
        probe_input(path, [Kind.VOLUME], settings())


@pytest.mark.parametrize("suffix,fmt", [(".nii", "nifti"), (".nii.gz", "nifti-gz")])
def test_nifti2_loads_with_its_shape_and_affine(tmp_path, suffix, fmt):
    """NIfTI-2's header is 540 bytes: the sniff reads past 512 (of a gzip: decompressed)."""
    affine = np.array([[0, -0.8, 0, 40], [0.6, 0, 0, -12], [0, 0, 2.5, 7], [0, 0, 0, 1]])
    data = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    path = tmp_path / f"v2{suffix}"
    nib.save(nib.Nifti2Image(data, affine), path)
    assert sniff_format(path) == fmt
    probe = probe_input(path, [Kind.VOLUME])
    assert probe.format == fmt and probe.shape == (5, 6, 7)
    volume = load_input(probe)
    assert isinstance(volume, Volume) and volume.name == "v2"
    np.testing.assert_array_equal(volume.array, data)
    np.testing.assert_allclose(volume.affine, affine)
    assert volume.spacing == pytest.approx((0.6, 0.8, 2.5))


def test_nibabels_own_nifti2_example_loads():
    path = NIBABEL_DATA / "example_nifti2.nii.gz"
    assert sniff_format(path) == "nifti-gz"
    volume = load_input(probe_input(path, [Kind.VOLUME]))
    reference = nib.load(path)
    assert isinstance(reference, nib.Nifti2Image)
    assert volume.array.shape == reference.shape == (32, 20, 12, 2)
    np.testing.assert_allclose(volume.affine, reference.affine)
    np.testing.assert_array_equal(volume.array, np.asanyarray(reference.dataobj))


def test_a_cifti_matrix_in_a_nifti2_file_is_not_a_volume():
    path = NIBABEL_DATA / "row_major.dconn.nii"  # a CIFTI-2 connectivity matrix
    assert sniff_format(path) == "nifti"
    with pytest.raises(InputError, match=r"6 dimensions \(1, 1, 1, 1, 10, 10\); a volume"):
        probe_input(path, [Kind.VOLUME])


def test_a_nifti_signature_needs_its_header_size(tmp_path):
    header = bytearray(nib.Nifti2Header().binaryblock + b"\x00" * 4)
    path = tmp_path / "x.nii"
    path.write_bytes(bytes(header))
    assert sniff_format(path) == "nifti"
    header[:4] = b"\x00\x00\x00\x00"  # magic at offset 4 but no sizeof_hdr of 540
    path.write_bytes(bytes(header))
    assert sniff_format(path) == "unknown"


@pytest.mark.parametrize(
    "pixdim,shown", [((0.0, 0.7, 2.0), "0, 0.7, 2"), ((1.0, float("nan"), 2.0), "1, nan, 2")]
)
def test_nifti_without_a_voxel_size_is_refused_not_taken_as_1mm(tmp_path, pixdim, shown):
    """nibabel reads a zero pixdim as 1 mm (with a log line); measurements must not."""
    header = nib.Nifti1Header()
    header.set_data_shape((4, 4, 4))
    header.set_data_dtype(np.int16)
    header["pixdim"][1:4] = pixdim  # no sform, no qform: the affine comes from pixdim
    path = tmp_path / "p.nii"
    path.write_bytes(header.binaryblock + b"\x00" * 4 + np.zeros(64, np.int16).tobytes())
    with pytest.raises(InputError) as info:
        probe_input(path, [Kind.VOLUME])
    assert str(info.value) == (
        f"{path}: NIfTI voxel size (pixdim) is {shown}: the size of a voxel in mm is unknown"
    )
    header.set_sform(np.diag([0.0, 1.0, 1.0, 1.0]), code=1)  # an sform with a zero column
    path.write_bytes(header.binaryblock + b"\x00" * 4 + np.zeros(64, np.int16).tobytes())
    with pytest.raises(InputError, match="NIfTI affine gives no voxel size"):
        probe_input(path, [Kind.VOLUME])


def test_corrupt_gzip_nifti_is_refused(tmp_path):
    path = tmp_path / "bad.nii.gz"
    path.write_bytes(gzip.compress(b"x" * 400)[:30])
    with pytest.raises(InputError):
        probe_input(path, [Kind.VOLUME])


def test_kind_mismatch_names_what_the_task_takes(tmp_path):
    (tmp_path / "m.txt").write_text("hello")
    with pytest.raises(InputError, match="is a text, but this task takes image"):
        probe_input(tmp_path / "m.txt", [Kind.IMAGE])
    text = load_input(probe_input(tmp_path / "m.txt", [Kind.TEXT]))
    assert isinstance(text, Text) and text.text == "hello"


def test_empty_and_oversized_files_are_refused(tmp_path, monkeypatch):
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        probe_input(tmp_path / "e.png")
    buf = io.BytesIO()
    PILImage.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="PNG")
    (tmp_path / "s.png").write_bytes(buf.getvalue())
    monkeypatch.setenv("VLM_MAX_INPUT_BYTES", "10")
    with pytest.raises(InputError, match="VLM_MAX_INPUT_BYTES"):
        probe_input(tmp_path / "s.png", s=settings())


def test_folders_skip_unusable_and_hidden_files(tmp_path):
    save(np.zeros((3, 3), np.uint8), tmp_path / "a.png", "PNG")
    (tmp_path / ".hidden").mkdir()
    save(np.zeros((3, 3), np.uint8), tmp_path / ".hidden" / "b.png", "PNG")
    (tmp_path / "c.png").write_bytes(b"PK\x03\x04junk")
    probes = collect_inputs([str(tmp_path)], [Kind.IMAGE])
    assert [p.path.name for p in probes] == ["a.png"]
    with pytest.raises(InputError, match="content is a ZIP"):
        collect_inputs([str(tmp_path / "c.png")], [Kind.IMAGE])


def test_an_unreadable_format_is_named_with_the_readable_ones(tmp_path):
    """The refusal names the file, what its content is and the formats that are readable for
    the kinds the task takes; no reader of any kind: says so."""
    path = save(np.zeros((4, 4), np.uint8), tmp_path / "a.png", "GIF")
    with pytest.raises(InputError) as info:
        probe_input(path, [Kind.IMAGE])
    assert str(info.value) == (
        f"{path}: content is a GIF file, not one of the readable formats "
        "(bmp, jpeg, png, tiff, webp)"
    )
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 64)
    with pytest.raises(InputError) as info:
        probe_input(clip, [Kind.VIDEO])  # no plugin registered an mp4 reader
    assert (
        str(info.value)
        == f"{clip}: content is an MP4 file, and no format of video inputs is readable"
    )
