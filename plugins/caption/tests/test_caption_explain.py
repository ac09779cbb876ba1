"""caption.describe explained: the number is the captioner's own log-probability of its caption
(or of one word of it), and the map lies over the photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from vlm_caption.explain_target import describe_target
from vlm_caption.model import load_captioner
from vlm_caption.params import DescribeParams

from vlm_core.errors import UsageError
from vlm_core.plugins import load_registry
from vlm_core.runner import RunRequest, run_task
from vlm_core.tasks import RunContext
from vlm_core.types import Caption, Image

SAMPLE = Path(__file__).parents[1] / "vlm_caption" / "samples" / "teapot-crack.png"


@pytest.fixture(scope="module")
def photo() -> Image:
    from PIL import Image as PILImage

    return Image(pixels=np.asarray(PILImage.open(SAMPLE).convert("RGB")), name="teapot")


@pytest.mark.slow  # 10 s: the captioner's teacher-forced scoring beside the target's
def test_the_explained_number_is_the_captioners_log_probability(photo):
    caption = Caption("a white teapot with a crack on it")
    ctx = RunContext(task="caption.describe", plugin="caption", requested_device="cpu")
    target = describe_target(photo, {"caption": caption}, DescribeParams(), ctx)
    model = load_captioner("", device="cpu").captioner
    words = model.vocab.encode(caption.text)
    with torch.no_grad():
        whole = float(target.forward(target.inputs)[0])
    assert whole == pytest.approx(float(model.score(target.inputs, [words])[0]), abs=1e-4)
    one = describe_target(photo, {"caption": caption}, DescribeParams(explain="crack"), ctx)
    with torch.no_grad():
        assert whole < float(one.forward(one.inputs)[0]) < 0  # one word's share of the sum
    assert one.extra is not None and one.extra["words"] == ["crack"]
    with pytest.raises(UsageError, match="not a word of the caption"):
        describe_target(photo, {"caption": caption}, DescribeParams(explain="kettle"), ctx)


def test_a_run_explains_a_word_over_the_photo(vlm_home):
    request = RunRequest(
        "caption.describe",
        [str(SAMPLE)],
        params={"explainer": "gradcam", "explain": "teapot"},
    )
    (result,) = run_task(request, registry=load_registry()).results
    attribution = result.outputs["attribution"]
    assert attribution.heat.shape == result.input.pixels.shape[:2]
    assert "'teapot'" in attribution.target and attribution.method == "gradcam"
    assert np.isfinite(attribution.values).all() and attribution.heat.max() == pytest.approx(1.0)
