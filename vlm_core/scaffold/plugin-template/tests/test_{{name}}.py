import numpy as np
from vlm_core.tasks import RunContext
from vlm_core.types import Image

from vlm_{{name}}.plugin import ThresholdParams
from vlm_{{name}}.threshold import run


def test_threshold_separates_a_bright_square():
    pixels = np.zeros((20, 20), np.uint8)
    pixels[5:15, 5:15] = 200
    ctx = RunContext("{{name}}.threshold", "{{name}}")
    (result,) = run([Image(pixels=pixels)], ThresholdParams(), ctx)
    assert int(result["mask"].labels.sum()) == 100
    assert result["stats"].values["foreground_fraction"] == 0.25


def test_plugin_is_conformant(vlm_conformance):
    vlm_conformance("{{name}}")
