"""Images that have a name keep it in their files, summaries and `vlm run` lines, so a
generated gallery says which style and seed made each image (issue 27, item 8d)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vlm_core.export import export_results
from vlm_core.outputs.builtin import builtin_output_kinds
from vlm_core.types import Image, ImageSet, Provenance, Result


def _result(outputs: dict[str, object]) -> Result:
    prov = Provenance(run_id="r1", task="t.x", plugin="t", plugin_version="1", core_version="0",
                      weights_sha256={}, device="cpu", dtype="float32", seed=0, params={},
                      inputs=(), timings_ms={}, started_at="2026-01-01T00:00:00+00:00")  # fmt: skip
    return Result("t.x", outputs, prov, None)


def _tile(value: int, name: str = "") -> Image:
    return Image(np.full((4, 6, 3), value, np.uint8), name=name)


def test_named_images_keep_their_names(tmp_path: Path) -> None:
    gallery = ImageSet((_tile(0, "brush-seed3-00"), _tile(9, "circles-seed3-01"), _tile(5)),
                       ("brush, seed 3 #0", "circles, seed 3 #1", "plain"))  # fmt: skip
    strip = _tile(1, "brush-seed3-to-seed4")
    export_results([_result({"images": gallery, "strip": strip})], tmp_path)
    folder = tmp_path / "result"
    assert sorted(p.name for p in (folder / "images").iterdir()) == [
        "0000-brush-seed3-00.png",
        "0001-circles-seed3-01.png",
        "0002.png",  # an image without a name keeps the plain index
    ]
    outputs = json.loads((folder / "result.json").read_text())["outputs"]
    assert outputs["images"]["names"] == ["brush-seed3-00", "circles-seed3-01", ""]
    assert outputs["strip"]["name"] == "brush-seed3-to-seed4"
    kinds = builtin_output_kinds()
    assert kinds.line(outputs["strip"]) == "6x4 'brush-seed3-to-seed4'"
    assert kinds.line(outputs["images"]) == "3 images: brush, seed 3 #0; circles, seed 3 #1; plain"
    many = {"kind": "image_set", "count": 9, "labels": [f"s{i}" for i in range(9)]}
    assert kinds.line(many) == "9 images: s0; s1; s2; s3 and 5 more"
