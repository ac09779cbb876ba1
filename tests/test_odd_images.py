"""Valid images of odd sizes through every image task of the built-in plugins, by the real `vlm`
command run in-process: each ends in a result (exit 0) or one line (exit 2), never a crash
(exit 1), and no plugin is quarantined afterwards (issue 19, section 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import builtin_plugins, cli, plugin_statuses
from PIL import Image as PILImage

from vlm_core.kinds import Kind

#: (width, height): a wide strip, a tall one, a single pixel and the widest PNG row of one pixel
ODD_SIZES = [(4000, 3), (3, 4000), (1, 1), (65535, 1)]


def image_tasks() -> list[str]:
    from vlm_core.plugins import get_registry

    return sorted(t.id for t in get_registry().tasks.values() if Kind.IMAGE in t.inputs)


@pytest.fixture
def builtins(vlm_home: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The built-in plugins' image tasks, in a private VLM_HOME, without any other plugin."""
    from vlm_core.plugins import get_registry

    monkeypatch.setenv("VLM_PLUGINS", ",".join(sorted(builtin_plugins())))
    get_registry(reload=True)
    tasks = image_tasks()
    # a registry that lost a plugin would pass vacuously
    assert {t.split(".")[0] for t in tasks} == builtin_plugins(), tasks
    return tasks


def write_png(folder: Path, width: int, height: int) -> Path:
    path = folder / f"odd-{width}x{height}.png"
    ramp = (np.arange(width * height, dtype=np.int64) % 251).astype(np.uint8)
    PILImage.fromarray(ramp.reshape(height, width)).save(path)
    return path


@pytest.mark.parametrize(("width", "height"), ODD_SIZES, ids=lambda v: str(v))
def test_an_odd_image_through_every_image_task_is_a_result_or_one_line(
    width: int, height: int, builtins: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    image = write_png(tmp_path, width, height)
    outcomes = {}
    for task in builtins:
        code, out, err = cli(["run", task, str(image)], capsys)
        outcomes[task] = (code, out, err)
        assert code in (0, 2), f"{task} on {width}x{height}: exit {code}\n{err}"
        if code == 2:
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), (task, err)
            assert f"{width}x{height}" in lines[0] and task in lines[0], lines[0]
        else:
            assert "1 result(s)" in out, (task, out)
    statuses = plugin_statuses(capsys)
    assert {n: p["status"] for n, p in statuses.items()} == {
        n: "healthy" for n in builtin_plugins()
    }
    assert all(p["quarantine"] is None for p in statuses.values())


def test_the_issue_examples_are_refused_in_one_line(
    builtins: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    wide = write_png(tmp_path, 4000, 3)
    code, _, err = cli(["run", "driving.detect", str(wide)], capsys)
    assert code == 2
    assert err == (
        f"error: {wide}: image 4000x3 is thinner than driving.detect accepts (min side 32 px)\n"
    )
    # the style image is checked like the inputs
    content = write_png(tmp_path, 48, 32)
    code, _, err = cli(
        ["run", "art.style_transfer", str(content), "-p", f"style={wide}", "-p", "steps=1"],
        capsys,
    )
    assert code == 2
    assert err.strip() == (
        f"error: style image {wide}: image 4000x3 is thinner than art.style_transfer accepts "
        "(min side 16 px)"
    )
    # a parameter that crashed the detector is bounded
    code, _, err = cli(["run", "driving.detect", str(content), "-p", "input_size=1"], capsys)
    assert code == 2 and "input_size must be 0 (the weights' own) or at least 64" in err
    assert err.count("\n") == 1
    # inside a folder, an image the task does not accept is skipped like a file of another kind
    folder = tmp_path / "folder"
    folder.mkdir()
    write_png(folder, 4000, 3)
    code, _, err = cli(["run", "driving.detect", str(folder)], capsys)
    assert code == 2 and "has no usable inputs" in err and "thinner than" in err
    statuses = plugin_statuses(capsys)
    assert all(p["status"] == "healthy" for p in statuses.values())


@pytest.mark.slow
def test_the_most_elongated_image_each_task_accepts_runs(
    builtins: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The edge of every task's declared sizes runs with the real model (with the parameters
    of the task's first sample, which keep it quick): inside the limits, the task pads or
    resizes rather than crashes."""
    from vlm_core.plugins import get_registry

    for task in builtins:
        spec = get_registry().task(task)
        limits = spec.image_limits
        short = max(limits.min_side, 1)
        long = int(short * (limits.max_aspect or 4))
        if limits.max_side is not None:
            long = min(long, limits.max_side)
        params = [f"{k}={v}" for k, v in (spec.samples[0].params if spec.samples else {}).items()]
        for width, height in ((long, short), (short, long)):
            image = write_png(tmp_path, width, height)
            argv = ["run", task, str(image)] + [a for p in params for a in ("-p", p)]
            code, out, err = cli(argv, capsys)
            assert code == 0, f"{task} on {width}x{height}: exit {code}\n{err}"
            assert "1 result(s)" in out
    assert all(p["status"] == "healthy" for p in plugin_statuses(capsys).values())


def test_limits_apply_to_video_frames_and_are_validated_with_the_spec(tmp_path: Path) -> None:
    from vlm_core.errors import InputError
    from vlm_core.io.limits import check_image_size
    from vlm_core.io.load import Probe
    from vlm_core.tasks import ImageLimits, TaskSpec, validate_spec

    limits = ImageLimits(min_side=32, max_side=1000, max_aspect=8)
    video = Probe(tmp_path / "drive.mp4", "mp4", Kind.VIDEO, (48, 3, 4000, 3), 1000)
    with pytest.raises(InputError) as info:
        check_image_size(video, limits, "x.detect")
    assert str(info.value) == (
        f"{tmp_path / 'drive.mp4'}: video frames 4000x3 are thinner than x.detect accepts "
        "(min side 32 px)"
    )
    assert limits.problem(1200, 200, "x.t") == (
        "image 1200x200 is larger than x.t accepts (max side 1000 px)"
    )
    assert limits.problem(900, 100, "x.t") == (
        "image 900x100 is more elongated than x.t accepts (aspect ratio 9:1, at most 8:1)"
    )
    assert limits.problem(800, 100, "x.t") is None and ImageLimits().problem(65535, 1, "x") is None
    volume = Probe(tmp_path / "ct.nii.gz", "nifti-gz", Kind.VOLUME, (3, 4000, 1), 1000)
    check_image_size(volume, limits, "x.t")  # volumes have no image limits
    spec = TaskSpec(
        id="x.t", title="T", description="D", domain="d", run=lambda i, p, c: [],
        outputs=(Kind.METRICS,), image_limits=ImageLimits(min_side=64, max_side=32, max_aspect=0.5),
    )  # fmt: skip
    assert validate_spec(spec, "x") == [
        "task 'x.t': image_limits.max_side (32) is below min_side (64)",
        "task 'x.t': image_limits.max_aspect must be at least 1, got 0.5",
    ]
