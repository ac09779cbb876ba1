"""Bad requests to `vlm run`: one-line error, exit code 2, nothing written under --out."""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

import pytest
from conftest import REPO, one_line_error


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming width x height, with one pixel of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def bad_inputs(tmp_path: Path) -> dict[str, Path]:
    files = {}
    files["zip"] = tmp_path / "photo.png"
    with zipfile.ZipFile(files["zip"], "w") as zf:
        zf.writestr("inside.txt", "not an image")
    files["huge"] = tmp_path / "huge.png"
    files["huge"].write_bytes(png_claiming(100_000, 100_000))
    folder = tmp_path / "nothing-usable"
    (folder / "sub").mkdir(parents=True)
    (folder / "archive.png").write_bytes(files["zip"].read_bytes())
    (folder / "sub" / "data.bin").write_bytes(bytes(range(256)))
    files["folder"] = folder
    return files


CASES = {
    "missing file": (["good.invert", "{tmp}/missing.png"], "no such file"),
    "folder with no usable inputs": (["good.invert", "{folder}"], "has no usable inputs"),
    "unknown task": (
        ["good.invrt", "{sample}"],
        "unknown task 'good.invrt'; did you mean 'good.invert'?",
    ),
    "wrong type": (["good.invert", "{sample}", "-p", "gain=abc"], "parameter 'gain'"),
    "out of bounds": (["good.invert", "{sample}", "-p", "steps=11"], "less than or equal to 10"),
    "unknown key": (["good.invert", "{sample}", "-p", "gian=1"], "unknown parameter 'gian'"),
    "bad choice": (["good.invert", "{sample}", "-p", "mode=cmyk"], "'rgb' or 'gray'"),
    "png that is a zip": (["good.invert", "{zip}"], "content is a ZIP file"),
    "huge header": (["good.invert", "{huge}"], "100000"),
    "glob without matches": (["good.invert", "{tmp}/*.jpg"], "has no usable inputs"),
    "explainer for a task without one": (
        ["good.invert", "{sample}", "-p", "explainer=gradcam"],
        "task 'good.invert' cannot be explained",
    ),
    "unknown explainer": (
        ["good.invert", "{sample}", "-p", "explainer=shap"],
        "parameter 'explainer'",
    ),
    "explain score without explainer": (
        ["good.invert", "{sample}", "-p", "explain_score=true"],
        "need an explainer: -p explainer=METHOD",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_request_is_one_line_exit_2_and_writes_nothing(case, vlm, bad_inputs, tmp_path):
    args, expected = CASES[case]
    sample = vlm.paths[0] / "vlm_fixture_good" / "square.png"
    values = {
        "tmp": tmp_path,
        "sample": sample,
        "folder": bad_inputs["folder"],
        "zip": bad_inputs["zip"],
        "huge": bad_inputs["huge"],
    }
    out = tmp_path / "out"
    proc = vlm("run", *[a.format(**values) for a in args], "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert expected in one_line_error(proc)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if "staging" in p.name]


def test_corrupt_pixel_data_fails_the_whole_run_and_writes_nothing(vlm, tmp_path):
    """The header passes the probe, the data is cut: found at load time, still nothing written."""
    import numpy as np
    from PIL import Image as PILImage

    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a_good.png", "b_cut.png"):
        PILImage.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / name)
    cut = folder / "b_cut.png"
    cut.write_bytes(cut.read_bytes()[:2000])
    out = tmp_path / "out"
    proc = vlm("run", "good.invert", str(folder), "--out", str(out))
    assert proc.returncode == 2
    assert "b_cut.png: image data is truncated or corrupt" in one_line_error(proc)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "in"]  # no staging left


def test_image_over_the_configured_cap_names_the_limit(vlm, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(png_claiming(5000, 5000))
    proc = vlm(
        "run",
        "good.invert",
        str(big),
        "--out",
        str(tmp_path / "out"),
        VLM_MAX_IMAGE_PIXELS="1000000",
    )
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "5000x5000" in line and "VLM_MAX_IMAGE_PIXELS" in line
    assert not (tmp_path / "out").exists()


def test_rejected_runs_are_recorded(vlm, tmp_path):
    vlm("run", "good.invrt", "x.png")
    import json

    runs = json.loads(vlm("runs", "list", "--json").stdout)
    assert runs[0]["status"] == "rejected" and "unknown task" in runs[0]["error"]


def test_debug_shows_the_traceback(vlm):
    proc = vlm("--debug", "run", "good.invrt", "x.png")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "UnknownTaskError" in proc.stderr


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (["coco_weights={tmp}/coco.pth"], "coco_weights is given without coco_model"),
        (["coco_model=fcos_resnet50_fpn"], "coco_model needs coco_weights"),
        (
            ["coco_model=fcos_resnet50_fpn", "coco_weights=torchvision", "weights={tmp}/w.pt"],
            "weights and coco_model are two different detectors; give one of them",
        ),
    ],
)
def test_a_parameter_that_would_be_ignored_is_refused(params, expected, vlm, tmp_path):
    street = REPO / "plugins" / "driving" / "vlm_driving" / "samples" / "street.png"
    pairs = [x for p in params for x in ("-p", p.format(tmp=tmp_path))]
    out = tmp_path / "out"
    proc = vlm("run", "driving.detect", str(street), *pairs, "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    line = one_line_error(proc)
    assert line.startswith("error: bad parameters for task 'driving.detect': ")
    assert expected in line
    assert not out.exists()
