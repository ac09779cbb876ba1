"""KITTI formats and the LiDAR scene readers: files written by the reference libraries (numpy's
``tofile`` as KITTI's devkit, pypcd4, laspy) read back equal, KITTI-layout folders load as
scenes through the core, and malformed clouds and calibrations are refused on one line."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from vlm_driving import kitti

from vlm_core.errors import InputError
from vlm_core.io.readers import InputReader

# KITTI-like calibration values (the 2011_09_26 rig, as KITTI's object calib files hold them).
P2 = np.array(
    [
        [7.215377e02, 0.0, 6.095593e02, 4.485728e01],
        [0.0, 7.215377e02, 1.728540e02, 2.163791e-01],
        [0.0, 0.0, 1.0, 2.745884e-03],
    ]
)
R0_RECT = np.array(
    [
        [9.999239e-01, 9.837760e-03, -7.445048e-03],
        [-9.869795e-03, 9.999421e-01, -4.278459e-03],
        [7.402527e-03, 4.351614e-03, 9.999631e-01],
    ]
)
TR_VELO_TO_CAM = np.array(
    [
        [7.533745e-03, -9.999714e-01, -6.166020e-04, -4.069766e-03],
        [1.480249e-02, 7.280733e-04, -9.998902e-01, -7.631618e-02],
        [9.998621e-01, 7.523790e-03, 1.480755e-02, -2.717806e-01],
    ]
)
TR_IMU_TO_VELO = np.array(
    [
        [9.999976e-01, 7.553071e-04, -2.035826e-03, -8.086759e-01],
        [-7.854027e-04, 9.998898e-01, -1.482298e-02, 3.195559e-01],
        [2.024406e-03, 1.482454e-02, 9.998881e-01, -7.997231e-01],
    ]
)


def calibration() -> kitti.Calibration:
    return kitti.Calibration(
        P0=P2 - np.array([[0, 0, 0, 44.0], [0, 0, 0, 0], [0, 0, 0, 0]]),
        P1=P2 - np.array([[0, 0, 0, 430.0], [0, 0, 0, 0], [0, 0, 0, 0]]),
        P2=P2,
        P3=P2 - np.array([[0, 0, 0, 380.0], [0, 0, 0, 0], [0, 0, 0, 0]]),
        R0_rect=R0_RECT,
        Tr_velo_to_cam=TR_VELO_TO_CAM,
        Tr_imu_to_velo=TR_IMU_TO_VELO,
    )


def _row(matrix: np.ndarray, fmt: str = "{:.12e}") -> str:
    return " ".join(fmt.format(v) for v in matrix.ravel())


def _one_line(exc: pytest.ExceptionInfo[InputError], *words: str) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, message
    return message


# ---------------------------------------------------------------------------------------------
# calibration


def test_calibration_round_trip_in_kitti_object_layout(tmp_path: Path) -> None:
    calib = calibration()
    path = tmp_path / "000000.txt"
    kitti.write_calib(path, calib)
    lines = path.read_text().splitlines()
    # KITTI's own object calib files: these keys in this order, %.12e values
    assert [line.split(":")[0] for line in lines] == [
        "P0",
        "P1",
        "P2",
        "P3",
        "R0_rect",
        "Tr_velo_to_cam",
        "Tr_imu_to_velo",
    ]
    assert lines[2] == "P2: " + _row(P2)
    back = kitti.read_calib(path)
    for key, matrix in calib.matrices().items():  # %.12e: 13 significant digits
        np.testing.assert_allclose(getattr(back, key), matrix, rtol=1e-12, err_msg=key)


def test_devkit_layouts_give_the_same_chain(tmp_path: Path) -> None:
    """The object layout (``R0_rect:``) and the tracking layout (``R_rect``, ``Tr_velo_cam``
    without colons, shorter numbers) read as the same calibration, and the chain
    P2 · R0_rect · Tr_velo_to_cam projects a point as the devkit's formula does."""
    obj = tmp_path / "object.txt"
    obj.write_text(
        f"P0: {_row(P2)}\nP1: {_row(P2)}\nP2: {_row(P2)}\nP3: {_row(P2)}\n"
        f"R0_rect: {_row(R0_RECT)}\nTr_velo_to_cam: {_row(TR_VELO_TO_CAM)}\n"
        f"Tr_imu_to_velo: {_row(TR_IMU_TO_VELO)}\n\n"
    )
    tracking = tmp_path / "0001.txt"
    short = "{:e}"
    tracking.write_text(
        f"P0: {_row(P2, short)}\nP1: {_row(P2, short)}\nP2: {_row(P2, short)}\n"
        f"P3: {_row(P2, short)}\nR_rect {_row(R0_RECT, short)}\n"
        f"Tr_velo_cam {_row(TR_VELO_TO_CAM, short)}\nTr_imu_velo {_row(TR_IMU_TO_VELO, short)}\n"
    )
    a, b = kitti.read_calib(obj), kitti.read_calib(tracking)
    np.testing.assert_allclose(a.lidar_to_camera, b.lidar_to_camera, atol=1e-9)
    np.testing.assert_allclose(a.projection, P2)
    # the devkit: x_img = P2 · R0_rect · Tr_velo_to_cam · x_velo (each padded to 4x4)
    velo = np.array([20.0, 1.5, -1.0, 1.0])
    r0 = np.eye(4)
    r0[:3, :3] = R0_RECT
    tr = np.eye(4)
    tr[:3, :4] = TR_VELO_TO_CAM
    expected = P2 @ r0 @ tr @ velo
    got = a.projection @ a.lidar_to_camera @ velo
    np.testing.assert_allclose(got[:2] / got[2], expected[:2] / expected[2])
    # 20 m ahead and 1.5 m left of the LiDAR: ~20 m deep, ~54 px left of the centre (609.6)
    assert 540 < got[0] / got[2] < 570 and 19 < got[2] < 21


def test_calibration_from_scene_matrices() -> None:
    calib = calibration()
    again = kitti.Calibration.from_matrices(calib.projection, calib.lidar_to_camera)
    np.testing.assert_allclose(again.lidar_to_camera, calib.lidar_to_camera)
    np.testing.assert_array_equal(again.R0_rect, np.eye(3))
    again.check("scene")


def test_nuscenes_export_calibration_is_accepted(tmp_path: Path) -> None:
    """nuScenes' export_kitti.py writes P0, P1, P3 and Tr_imu_to_velo as zeros (one camera, no
    IMU): only the matrices a scene uses are checked; unknown keys are ignored."""
    zeros = np.zeros((3, 4))
    path = tmp_path / "nuscenes.txt"
    path.write_text(
        f"P0: {_row(zeros)}\nP1: {_row(zeros)}\nP2: {_row(P2)}\nP3: {_row(zeros)}\n"
        f"R0_rect: {_row(np.eye(3))}\nTr_velo_to_cam: {_row(TR_VELO_TO_CAM)}\n"
        f"Tr_imu_to_velo: {_row(zeros)}\ncalib_time: 09-Jan-2012 13:57:47\n"
    )
    calib = kitti.read_calib(path)
    np.testing.assert_array_equal(calib.P0, zeros)
    np.testing.assert_allclose(calib.lidar_to_camera[:3], TR_VELO_TO_CAM)


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda m: m["R0_rect"].__setitem__(slice(None), 0.0), ("R0_rect", "singular")),
        (lambda m: m["R0_rect"].__imul__(1.5), ("R0_rect", "not a rotation")),
        (lambda m: m["Tr_velo_to_cam"].__setitem__((0, 0), 0.3), ("Tr_velo_to_cam", "orthonormal")),
        (lambda m: m["P2"].__setitem__((1, 1), np.nan), ("P2", "NaN or infinite")),
        (lambda m: m["P2"].__setitem__((slice(None), slice(0, 3)), 0.0), ("does not invert",)),
    ],
    ids=["singular-R0", "scaled-R0", "skewed-Tr", "nan-P2", "singular-P2"],
)
def test_unusable_calibrations_are_refused(
    tmp_path: Path, edit: Callable[[dict[str, np.ndarray]], object], words: tuple[str, ...]
) -> None:
    matrices = {k: v.copy() for k, v in calibration().matrices().items()}
    edit(matrices)
    path = tmp_path / "bad.txt"
    kitti.write_calib(path, kitti.Calibration(**matrices))
    with pytest.raises(InputError) as exc:
        kitti.read_calib(path)
    _one_line(exc, str(path), *words)
    assert kitti.read_calib(path, check=False) is not None  # parsed, only refused by the check


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Lorem ipsum dolor sit amet\nconsectetur adipiscing\n", ("not a KITTI calibration",)),
        (f"P2: {_row(P2)}\nR0_rect: {_row(R0_RECT)}\n", ("Tr_velo_to_cam (or Tr_velo_cam)",)),
        (
            f"P2: {_row(P2)}\nR0_rect: 1 0 0 0 1 0 0 0\nTr_velo_to_cam: {_row(TR_VELO_TO_CAM)}\n",
            ("R0_rect has 8 values", "expected 9"),
        ),
        (
            f"P2: {_row(P2)}\nR0_rect: 1 0 0 0 1 0 0 0 one\nTr_velo_to_cam: {_row(TR_VELO_TO_CAM)}",
            ("R0_rect", "'one' is not a number"),
        ),
        (f"P2: {_row(P2)}\nP2: {_row(P2)}\n", ("P2 appears twice",)),
    ],
    ids=["garbage", "missing-key", "short-row", "not-a-number", "duplicate"],
)
def test_malformed_calibration_files(tmp_path: Path, text: str, words: tuple[str, ...]) -> None:
    path = tmp_path / "calib.txt"
    path.write_text(text)
    with pytest.raises(InputError) as exc:
        kitti.read_calib(path)
    _one_line(exc, str(path), *words)


def test_calibration_size_cap_and_binary(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text("# " + "x" * 70_000 + "\n")
    with pytest.raises(InputError) as exc:
        kitti.read_calib(big)
    _one_line(exc, "70,003 bytes")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(InputError) as exc:
        kitti.read_calib(binary)
    _one_line(exc, "not a text file")


# ---------------------------------------------------------------------------------------------
# Velodyne .bin


def test_bin_written_as_the_devkit_reads_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(8_400_000)
    points = rng.uniform(-50, 50, (1000, 4)).astype(np.float32)
    path = tmp_path / "000000.bin"
    points.tofile(path)  # KITTI's own layout: raw float32, no header
    np.testing.assert_array_equal(kitti.read_bin(path), points)
    mine = tmp_path / "mine.bin"
    kitti.write_bin(mine, points)
    # the devkit's / pykitti's reader
    np.testing.assert_array_equal(np.fromfile(mine, dtype=np.float32).reshape(-1, 4), points)
    assert mine.read_bytes() == path.read_bytes()


def test_bin_of_a_wrong_length_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "000000.bin"
    path.write_bytes(np.zeros((10, 4), np.float32).tobytes() + b"\x00" * 6)
    with pytest.raises(InputError) as exc:
        kitti.read_bin(path)
    _one_line(exc, str(path), "166 bytes is not a whole number of 16-byte KITTI points")


# ---------------------------------------------------------------------------------------------
# labels


def test_labels_round_trip_and_class_names(tmp_path: Path) -> None:
    truth = [
        kitti.KittiObject(
            type="Car",
            truncated=0.0,
            occluded=0,
            alpha=-1.58,
            bbox=(587.01, 173.33, 614.12, 200.12),
            dimensions=(1.65, 1.67, 3.64),
            location=(-0.65, 1.71, 46.7),
            rotation_y=-1.59,
        ),
        kitti.KittiObject(type="DontCare", bbox=(1.0, 2.0, 30.0, 40.0)),
    ]
    path = tmp_path / "000000.txt"
    kitti.write_labels(path, truth)
    # a line of KITTI's own label_2/000000.txt layout, byte for byte
    assert path.read_text().splitlines()[0] == (
        "Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59"
    )
    assert kitti.read_labels(path) == truth
    assert truth[0].distance == pytest.approx(np.linalg.norm([-0.65, 1.71, 46.7]))
    assert truth[1].distance is None

    results = [
        kitti.KittiObject(type=kitti.to_kitti_type(c), bbox=(0, 0, 10, 10), score=0.5)
        for c in ("car", "bicycle", "traffic light", "bus")
    ]
    kitti.write_labels(path, results)
    back = kitti.read_labels(path)
    assert [o.type for o in back] == ["Car", "Cyclist", "Traffic_light", "Bus"]
    assert [kitti.from_kitti_type(o.type) for o in back] == [
        "car",
        "bicycle",
        "traffic light",
        "bus",
    ]
    assert all(
        o.score == 0.5 and len(line.split()) == 16
        for o, line in zip(back, path.read_text().splitlines(), strict=True)
    )
    assert kitti.from_kitti_type("Van") == "car"
    assert kitti.from_kitti_type("DontCare") is None


def test_every_plugin_class_has_a_kitti_name_and_back() -> None:
    from vlm_driving.classes import CLASSES

    for name in CLASSES:
        kitti_type = kitti.to_kitti_type(name)
        assert " " not in kitti_type
        assert kitti.from_kitti_type(kitti_type) == name


def test_malformed_label_line(tmp_path: Path) -> None:
    path = tmp_path / "000000.txt"
    path.write_text("Car 0.00 0 -1.58 587.01 173.33\n")
    with pytest.raises(InputError) as exc:
        kitti.read_labels(path)
    _one_line(exc, f"{path} line 1", "6 fields")


# ---------------------------------------------------------------------------------------------
# point clouds: files written by the reference libraries


def sweep(n: int = 600, seed: int = 8_400_001) -> np.ndarray:
    """(n, 4) float32 points ahead of a LiDAR: x 4..40 m, y ±6 m, z -1.7..1.5 m, reflectance
    0..1 (seeds 8_400_000+, the lidar test range)."""
    rng = np.random.default_rng(seed)
    return np.c_[
        rng.uniform(4, 40, n),
        rng.uniform(-6, 6, n),
        rng.uniform(-1.7, 1.5, n),
        rng.uniform(0, 1, n),
    ].astype(np.float32)


def write_pcd(path: Path, points: np.ndarray, encoding: str = "binary") -> Path:
    """``points`` saved by pypcd4 in ``encoding``. pypcd4 falls back to ``binary`` when LZF
    cannot shrink the data (random floats), so a test of ``binary_compressed`` passes points
    with a sensor's resolution (:func:`quantised`); checked here."""
    from pypcd4 import Encoding, PointCloud

    PointCloud.from_xyzi_points(points).save(path, encoding=Encoding(encoding))
    assert f"\nDATA {encoding}\n".encode() in path.read_bytes()[:400], "pypcd4 changed encoding"
    return path


def quantised(points: np.ndarray) -> np.ndarray:
    """``points`` at a centimetre (and 1/100 reflectance) resolution, as a sensor gives them."""
    return np.round(points, 2).astype(np.float32)


def write_las(path: Path, points: np.ndarray) -> Path:
    """``points`` as LAS (LAZ by the suffix) with laspy: millimetre scale, intensity * 65535."""
    import laspy

    las = laspy.create(point_format=3, file_version="1.2")
    las.header.scales = np.array([0.001, 0.001, 0.001])
    las.header.offsets = np.zeros(3)
    las.x, las.y, las.z = points[:, 0], points[:, 1], points[:, 2]
    las.intensity = np.round(points[:, 3] * 65535).astype(np.uint16)
    las.write(path)
    return path


@pytest.mark.parametrize("encoding", ["ascii", "binary", "binary_compressed"])
def test_pcd_written_by_pypcd4_reads_back_equal(tmp_path: Path, encoding: str) -> None:
    from vlm_driving.pointclouds import cloud_header, read_cloud

    from vlm_core.io import sniff_format

    points = quantised(sweep())
    path = write_pcd(tmp_path / "sweep.pcd", points, encoding)
    assert sniff_format(path) == "pcd"
    assert cloud_header(path, "pcd") == len(points)
    got = read_cloud(path, "pcd")
    assert got.dtype == np.float32 and got.shape == points.shape
    if encoding == "ascii":  # pypcd4 writes 10 decimals
        np.testing.assert_allclose(got, points, rtol=0, atol=1e-10)
    else:
        np.testing.assert_array_equal(got, points)


def test_pcd_without_intensity_and_with_other_fields(tmp_path: Path) -> None:
    from pypcd4 import PointCloud
    from vlm_driving.pointclouds import read_cloud

    points = sweep(50)
    xyz = tmp_path / "xyz.pcd"
    PointCloud.from_xyz_points(points[:, :3]).save(xyz)
    got = read_cloud(xyz, "pcd")
    np.testing.assert_array_equal(got[:, :3], points[:, :3])
    assert not got[:, 3].any()
    # rgb and ring are ignored; float64 coordinates are read as float32
    ring = np.arange(50, dtype=np.uint16)
    cloud = PointCloud.from_points(
        [points[:, 0].astype(np.float64), points[:, 1], points[:, 2], points[:, 3], ring],
        ("x", "y", "z", "intensity", "ring"),
        (np.float64, np.float32, np.float32, np.float32, np.uint16),
    )
    other = tmp_path / "other.pcd"
    cloud.save(other)
    np.testing.assert_array_equal(read_cloud(other, "pcd"), points)


@pytest.mark.parametrize("suffix", ["las", "laz"])
def test_las_and_laz_written_by_laspy_read_back_equal(tmp_path: Path, suffix: str) -> None:
    from vlm_driving.pointclouds import cloud_header, read_cloud

    from vlm_core.io import sniff_format

    points = sweep()
    path = write_las(tmp_path / f"sweep.{suffix}", points)
    assert sniff_format(path) == suffix
    assert cloud_header(path, suffix) == len(points)
    got = read_cloud(path, suffix)
    np.testing.assert_allclose(got[:, :3], points[:, :3], atol=0.0006)  # millimetre scale
    np.testing.assert_allclose(got[:, 3], points[:, 3], atol=1 / 65535)


def test_kitti_bin_through_the_cloud_reader(tmp_path: Path) -> None:
    from vlm_driving.pointclouds import cloud_header, read_cloud

    from vlm_core.io import sniff_format

    points = sweep()
    path = tmp_path / "000000.bin"
    points.tofile(path)
    assert sniff_format(path) == "kitti-bin"
    assert cloud_header(path, "kitti-bin") == len(points)
    np.testing.assert_array_equal(read_cloud(path, "kitti-bin"), points)


# ---------------------------------------------------------------------------------------------
# malformed clouds


def _refused(path: Path, fmt: str, *words: str, header: bool = True) -> None:
    """``path`` is refused with one line naming it: by the header check when ``header``, else
    only when its points are read."""
    from vlm_driving.pointclouds import cloud_header, read_cloud

    if not header:
        cloud_header(path, fmt)
    with pytest.raises(InputError) as exc:
        (cloud_header if header else read_cloud)(path, fmt)
    _one_line(exc, str(path), *words)
    with pytest.raises(InputError) as exc:
        read_cloud(path, fmt)
    _one_line(exc, str(path), *words)


def test_nan_points_are_refused_not_dropped(tmp_path: Path) -> None:
    points = sweep(1000)
    points[[100, 200, 300], 1] = [np.nan, np.inf, -np.inf]
    binary = tmp_path / "000000.bin"
    points.tofile(binary)
    _refused(binary, "kitti-bin", "3 of 1,000 points are NaN or infinite", header=False)
    for encoding in ("ascii", "binary"):
        pcd = write_pcd(tmp_path / f"{encoding}.pcd", points, encoding)
        _refused(pcd, "pcd", "3 of 1,000 points are NaN or infinite", header=False)


def test_absurd_point_counts_are_refused_from_the_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    points = sweep(1000)
    # a header claiming 9 M points over 1,000 points of data: refused before any is read
    path = write_pcd(tmp_path / "big.pcd", points)
    data = path.read_bytes().replace(b"POINTS 1000\n", b"POINTS 9000000\n")
    path.write_bytes(data.replace(b"WIDTH 1000\n", b"WIDTH 9000000\n"))
    _refused(path, "pcd", "header claims 9,000,000 points, over the limit of 5,000,000")
    # a field of ten million values a point (40 GB to decode from a 200-byte file), and one of
    # 1,000 doubles a point for 1 M points (8 GB)
    huge = tmp_path / "huge.pcd"
    header = (
        "VERSION 0.7\nFIELDS x y z descriptor\nSIZE 4 4 4 {size}\nTYPE F F F F\n"
        "COUNT 1 1 1 {count}\nWIDTH {n}\nHEIGHT 1\nPOINTS {n}\nDATA binary_compressed\n"
    )
    block = struct.pack("<II", 10, 4_000_000_000) + b"0123456789"
    huge.write_bytes(header.format(size=4, count=10_000_000, n=1000).encode() + block)
    _refused(huge, "pcd", "10,000,003 values each (COUNT), over the 1,024")
    huge.write_bytes(header.format(size=8, count=1000, n=1_000_000).encode() + block)
    _refused(huge, "pcd", "1,000,000 points of 8,012 bytes", "over the 640,000,000 allowed")
    monkeypatch.setenv("VLM_MAX_CLOUD_POINTS", "500")
    for fmt, written in [
        ("pcd", write_pcd(tmp_path / "a.pcd", points)),
        ("las", write_las(tmp_path / "a.las", points)),
        ("kitti-bin", tmp_path / "a.bin"),
    ]:
        points.tofile(tmp_path / "a.bin")
        _refused(
            written, fmt, "header claims 1,000 points, over the limit of 500 (VLM_MAX_CLOUD_POINTS)"
        )


def test_truncated_clouds_are_refused(tmp_path: Path) -> None:
    points = sweep(1000)
    binary = write_pcd(tmp_path / "binary.pcd", points, "binary")
    binary.write_bytes(binary.read_bytes()[:-1600])  # 100 points short, cut on a point boundary
    _refused(binary, "pcd", "PCD data is truncated: 14,400 bytes", "16,000")
    compressed = write_pcd(tmp_path / "compressed.pcd", quantised(points), "binary_compressed")
    compressed.write_bytes(compressed.read_bytes()[:-100])
    _refused(compressed, "pcd", "PCD data is truncated")
    ascii_pcd = write_pcd(tmp_path / "ascii.pcd", points, "ascii")
    ascii_pcd.write_text("".join(ascii_pcd.read_text().splitlines(keepends=True)[:-10]))
    _refused(ascii_pcd, "pcd", "990 of the 1,000 points", header=False)
    las = write_las(tmp_path / "cut.las", points)
    las.write_bytes(las.read_bytes()[: -20 * 34])  # 20 records of point format 3 short
    _refused(las, "las", "980 of the 1,000 point records")
    laz = write_las(tmp_path / "cut.laz", points)
    laz.write_bytes(laz.read_bytes()[: laz.stat().st_size // 2])
    _refused(laz, "laz", "LAZ data is truncated or corrupt: its chunk table offset")


def test_laz_with_a_corrupt_chunk_table_never_reaches_lazrs(tmp_path: Path) -> None:
    """laz-rs sizes its chunk table from the count stored in the file and aborts the process
    when the allocation fails (a fuzzed LAZ asked for 9.6 GB), so the header check refuses a
    count the points cannot fill, and a table offset outside the file. A small wrong count
    here: were the check gone, this test would fail, not abort."""
    laz = write_las(tmp_path / "chunks.laz", sweep())
    data = bytearray(laz.read_bytes())
    start = struct.unpack_from("<I", data, 96)[0]  # the header's offset to the point data
    table = struct.unpack_from("<q", data, start)[0]
    assert struct.unpack_from("<II", data, table) == (0, 1)  # version 0, one chunk
    struct.pack_into("<I", data, table + 4, 1000)
    laz.write_bytes(bytes(data))
    _refused(laz, "laz", "chunk table version 0 with 1,000 chunks, for 600 points")
    struct.pack_into("<q", data, start, len(data) + 100)
    laz.write_bytes(bytes(data))
    _refused(laz, "laz", "chunk table offset")


def test_clouds_without_coordinates_or_points(tmp_path: Path) -> None:
    from pypcd4 import PointCloud

    nox = tmp_path / "nox.pcd"
    PointCloud.from_points(
        sweep(10)[:, 1:], ("y", "z", "intensity"), (np.float32, np.float32, np.float32)
    ).save(nox)
    _refused(nox, "pcd", "PCD has no x field (fields: y z intensity)")
    empty = tmp_path / "empty.pcd"
    PointCloud.from_xyzi_points(np.zeros((0, 4), np.float32)).save(empty)
    _refused(empty, "pcd", "holds no points")
    garbage = tmp_path / "garbage.pcd"
    garbage.write_text("VERSION 0.7\nFIELDS x y z\nSIZE 4 4\nTYPE F F F\nDATA binary\n")
    _refused(garbage, "pcd", "PCD header is not valid")
    las = tmp_path / "garbage.las"
    las.write_bytes(b"LASF" + b"\x00" * 300)
    _refused(las, "las", "not a readable LAS/LAZ file")


# ---------------------------------------------------------------------------------------------
# scenes: a sweep with its camera image and calibration, through the core

#: A small camera (96x48) looking along the LiDAR's x axis: KITTI's rig, scaled down.
SMALL_P2 = np.array([[60.0, 0.0, 48.0, 0.0], [0.0, 60.0, 24.0, 0.0], [0.0, 0.0, 1.0, 0.0]])


def _readers() -> dict[str, InputReader]:
    """The readers the plugin registers (plugin.py), built here so the test needs no registry."""
    from vlm_driving.pointclouds import CLOUD_FORMATS

    return {
        fmt: InputReader(
            format=fmt,
            probe="vlm_driving.scene_reader:probe",
            load="vlm_driving.scene_reader:load",
            group="vlm_driving.scene_reader:group",
            plugin="driving",
        )
        for fmt in CLOUD_FORMATS
    }


def write_png(path: Path, width: int = 96, height: int = 48, seed: int = 0) -> Path:
    from PIL import Image as PILImage

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def kitti_frame(
    root: Path,
    name: str,
    layout: str = "object",
    fmt: str = "kitti-bin",
    points: np.ndarray | None = None,
    calib: kitti.Calibration | None = None,
    image_size: tuple[int, int] = (96, 48),
) -> dict[str, Path]:
    """Write one frame's sweep, camera image and calibration under ``root`` in ``layout``
    (``object``: velodyne/, image_2/, calib/; ``tracking``: ``name`` is ``SSSS/NNNNNN``;
    ``flat``: NAME.ext, NAME.png, NAME.txt side by side). Returns the three paths."""
    points = sweep(seed=8_400_010 + len(name)) if points is None else points
    calib = calib or kitti.Calibration(P2=SMALL_P2, R0_rect=R0_RECT, Tr_velo_to_cam=TR_VELO_TO_CAM)
    suffix = {"kitti-bin": ".bin", "pcd": ".pcd", "las": ".las", "laz": ".laz"}[fmt]
    if layout == "object":
        cloud, image = root / "velodyne" / f"{name}{suffix}", root / "image_2" / f"{name}.png"
        calib_path = root / "calib" / f"{name}.txt"
    elif layout == "tracking":
        sequence, frame = name.split("/")
        cloud = root / "velodyne" / sequence / f"{frame}{suffix}"
        image = root / "image_02" / sequence / f"{frame}.png"
        calib_path = root / "calib" / f"{sequence}.txt"
    else:
        cloud, image, calib_path = (root / f"{name}{s}" for s in (suffix, ".png", ".txt"))
    cloud.parent.mkdir(parents=True, exist_ok=True)
    calib_path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "kitti-bin":
        points.tofile(cloud)
    elif fmt == "pcd":
        write_pcd(cloud, points)
    else:
        write_las(cloud, points)
    write_png(image, *image_size)
    kitti.write_calib(calib_path, calib)
    return {"cloud": cloud, "image": image, "calib": calib_path}


def test_kitti_object_folder_loads_as_one_scene_per_frame(tmp_path: Path) -> None:
    from vlm_core.io.load import collect_inputs, load_input
    from vlm_core.kinds import Kind
    from vlm_core.types import Scene

    readers = _readers()
    frames = [kitti_frame(tmp_path / "training", f"00000{i}") for i in range(2)]
    (tmp_path / "training" / "label_2").mkdir()
    kitti.write_labels(tmp_path / "training" / "label_2" / "000000.txt", [])
    probes = collect_inputs([str(tmp_path)], [Kind.SCENE], readers=readers)
    assert [p.path for p in probes] == [f["cloud"] for f in frames]
    assert probes[0].format == "kitti-bin" and probes[0].shape == (1, 600)
    scene = load_input(probes[0], readers=readers)
    assert isinstance(scene, Scene)
    assert scene.frame_ids == ("000000",) and scene.name == "000000"
    assert scene.source == frames[0]["cloud"] and scene.fps == 10 and not scene.warnings
    np.testing.assert_array_equal(scene.clouds[0], kitti.read_bin(frames[0]["cloud"]))
    assert (scene.images[0].width, scene.images[0].height) == (96, 48)
    calib = kitti.read_calib(frames[0]["calib"])
    np.testing.assert_allclose(scene.projection, SMALL_P2)
    np.testing.assert_allclose(scene.lidar_to_camera, calib.lidar_to_camera)
    # the points ahead land on the image: the chain is the devkit's
    indices, uvz = scene.project(0)
    assert len(indices) > 100
    assert ((uvz[:, 2] > 3) & (uvz[:, 2] < 41)).all()


def test_kitti_tracking_sequence_is_one_scene(tmp_path: Path) -> None:
    from vlm_core.io.load import collect_inputs, load_input
    from vlm_core.kinds import Kind

    readers = _readers()
    root = tmp_path / "tracking" / "training"
    counts = {"000010": 500, "000002": 700, "000001": 600}  # written out of order
    for frame, n in counts.items():
        kitti_frame(root, f"0001/{frame}", "tracking", points=sweep(n, seed=8_400_020 + n))
    kitti_frame(root, "0002/000000", "tracking")
    probes = collect_inputs([str(tmp_path)], [Kind.SCENE], readers=readers)
    # the core names a group of several files by their folder, of one file by the file
    assert [(p.path.name, p.shape) for p in probes] == [
        ("0001", (3, 700)),
        ("000000.bin", (1, 600)),
    ]
    scene = load_input(probes[0], readers=readers)
    assert scene.frame_ids == ("000001", "000002", "000010") and scene.name == "0001"
    assert [len(c) for c in scene.clouds] == [600, 700, 500] and scene.fps == 10
    assert scene.source == root / "velodyne" / "0001"
    assert load_input(probes[1], readers=readers).name == "0002"


def test_a_sequence_with_two_image_sizes_is_refused(tmp_path: Path) -> None:
    from vlm_core.io.load import collect_inputs
    from vlm_core.kinds import Kind

    kitti_frame(tmp_path, "0000/000000", "tracking")
    kitti_frame(tmp_path, "0000/000001", "tracking", image_size=(100, 48))
    with pytest.raises(InputError) as exc:  # the sweeps only: the core names the first refusal
        collect_inputs([f"{tmp_path}/velodyne/**/*.bin"], [Kind.SCENE], readers=_readers())
    _one_line(exc, "000001.png: image is 100x48, but frame 000000's is 96x48")


@pytest.mark.parametrize("fmt", ["pcd", "las", "laz"])
def test_flat_upload_of_a_frame(tmp_path: Path, fmt: str) -> None:
    """A dashboard upload: NAME.pcd (or .las/.laz), NAME.png and NAME.txt in one folder; a
    folder of frames sharing one calib.txt reads too."""
    from vlm_core.io import load_input, probe_input
    from vlm_core.kinds import Kind

    readers = _readers()
    files = kitti_frame(tmp_path, "frame", "flat", fmt=fmt)
    probe = probe_input(files["cloud"], [Kind.SCENE], readers=readers)
    assert probe.format == fmt and probe.shape == (1, 600)
    scene = load_input(probe, readers=readers)
    np.testing.assert_allclose(scene.clouds[0], sweep(seed=8_400_015), atol=0.001)
    assert scene.name == "frame" and scene.frame_ids == ("frame",)
    files["calib"].rename(tmp_path / "calib.txt")
    scene = load_input(probe_input(files["cloud"], [Kind.SCENE], readers=readers), readers=readers)
    np.testing.assert_allclose(scene.projection, SMALL_P2)


def test_missing_companions_are_named(tmp_path: Path) -> None:
    from vlm_core.io.load import collect_inputs, probe_input
    from vlm_core.kinds import Kind

    readers = _readers()
    files = kitti_frame(tmp_path, "000003")
    files["image"].unlink()
    with pytest.raises(InputError) as exc:
        probe_input(files["cloud"], [Kind.SCENE], readers=readers)
    _one_line(exc, f"no camera image for {files['cloud']}: looked for image_2/000003.png")
    with pytest.raises(InputError) as exc:  # a glob of nothing usable says why
        collect_inputs([f"{tmp_path}/velodyne/*"], [Kind.SCENE], readers=readers)
    _one_line(exc, "no usable inputs", "no camera image for")
    write_png(files["image"])
    files["calib"].unlink()
    with pytest.raises(InputError) as exc:
        probe_input(files["cloud"], [Kind.SCENE], readers=readers)
    _one_line(exc, f"no calibration for {files['cloud']}: looked for calib/000003.txt")
    flat = kitti_frame(tmp_path / "flat", "frame", "flat")
    flat["calib"].unlink()
    with pytest.raises(InputError) as exc:
        probe_input(flat["cloud"], [Kind.SCENE], readers=readers)
    _one_line(exc, "looked for frame.txt or calib.txt")


def test_bad_calibration_or_image_refuses_the_scene(tmp_path: Path) -> None:
    from vlm_core.io import probe_input
    from vlm_core.kinds import Kind

    readers = _readers()
    singular = kitti.Calibration(
        P2=SMALL_P2, R0_rect=np.zeros((3, 3)), Tr_velo_to_cam=TR_VELO_TO_CAM
    )
    files = kitti_frame(tmp_path, "000000", calib=singular)
    with pytest.raises(InputError) as exc:
        probe_input(files["cloud"], [Kind.SCENE], readers=readers)
    _one_line(exc, str(files["calib"]), "R0_rect is singular")
    files["calib"].write_text("calibrated by hand, trust me\n")
    with pytest.raises(InputError) as exc:
        probe_input(files["cloud"], [Kind.SCENE], readers=readers)
    _one_line(exc, "not a KITTI calibration file")
    kitti.write_calib(files["calib"], calibration())
    files["image"].write_bytes(b"not a picture at all")
    with pytest.raises(InputError) as exc:
        probe_input(files["cloud"], [Kind.SCENE], readers=readers)
    _one_line(exc, str(files["image"]))


def test_malformed_sweeps_through_the_core(tmp_path: Path) -> None:
    """A wrong length is refused by the probe, NaNs when the scene loads: one line each."""
    from vlm_core.io import load_input, probe_input
    from vlm_core.kinds import Kind

    readers = _readers()
    files = kitti_frame(tmp_path, "000000")
    files["cloud"].write_bytes(files["cloud"].read_bytes()[:-6])
    with pytest.raises(InputError) as exc:
        probe_input(files["cloud"], [Kind.SCENE], readers=readers)
    _one_line(exc, "9,594 bytes is not a whole number of 16-byte KITTI points")
    points = sweep()
    points[50, 0] = np.nan
    points.tofile(files["cloud"])
    probe = probe_input(files["cloud"], [Kind.SCENE], readers=readers)
    with pytest.raises(InputError) as exc:
        load_input(probe, readers=readers)
    _one_line(exc, "1 of 600 points is NaN or infinite")


def test_a_principal_point_off_the_image_is_a_warning(tmp_path: Path) -> None:
    from vlm_core.io import load_input, probe_input
    from vlm_core.kinds import Kind

    readers = _readers()
    files = kitti_frame(tmp_path, "000000", calib=calibration())  # KITTI's 1242x375 camera
    scene = load_input(probe_input(files["cloud"], [Kind.SCENE], readers=readers), readers=readers)
    assert (
        scene.warnings and "principal point (610, 173) lies outside the 96x48" in scene.warnings[0]
    )


def test_group_orders_sequences_and_keeps_other_sweeps_alone() -> None:
    from vlm_driving.scene_reader import group

    files = [
        Path("t/velodyne/0003/000010.bin"),
        Path("o/velodyne/000001.bin"),
        Path("t/velodyne/0003/000002.bin"),
        Path("flat/a.pcd"),
        Path("t/velodyne/0004/000000.bin"),
    ]
    assert group(files) == [
        (Path("t/velodyne/0003/000002.bin"), Path("t/velodyne/0003/000010.bin")),
        (Path("o/velodyne/000001.bin"),),
        (Path("flat/a.pcd"),),
        (Path("t/velodyne/0004/000000.bin"),),
    ]
