"""One rule for weights a request names: when they cannot be used (missing, not a weights file,
refused, made for another network) the request is wrong, exit 2, in every plugin; the plugin's
own weights failing stay the plugin's fault, exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import REPO, one_line_error
from torch import nn

from vlm_core.errors import ParameterError, UsageError, VLMError
from vlm_core.weights import WeightsError, WeightsRequestError, load_into, requested

PLUGINS = REPO / "plugins"
STREET = PLUGINS / "driving" / "vlm_driving" / "samples" / "street.png"
TEAPOT = PLUGINS / "caption" / "vlm_caption" / "samples" / "teapot-crack.png"
CONTENT = PLUGINS / "art" / "vlm_art" / "samples" / "content.png"
LESION = PLUGINS / "medical" / "vlm_medical" / "samples" / "synthetic-lesion-32.nii.gz"
LESIONS = PLUGINS / "medical" / "vlm_medical" / "samples" / "synthetic-lesions.nii.gz"

COCO = {"coco_model": "fasterrcnn_mobilenet_v3_large_fpn"}
#: (task, weights parameter, inputs, other parameters the parameter needs)
CASES = [
    pytest.param(task, param, inputs, extra, id=f"{task}:{param}")
    for task, param, inputs, extra in [
        ("art.generate", "weights", [], {}),
        ("art.style_transfer", "backbone_weights", [CONTENT], {"size": 64, "steps": 1}),
        ("caption.answer", "weights", [TEAPOT], {"message": "hi"}),
        ("caption.describe", "weights", [TEAPOT], {}),
        ("caption.describe", "clip_weights", [TEAPOT], {"clip_model": "ViT-B-32"}),
        ("caption.search", "weights", [], {"folder": str(TEAPOT.parent), "query": "a mug"}),
        ("driving.detect", "weights", [STREET], {}),
        ("driving.detect", "coco_weights", [STREET], COCO),
        ("medical.classify", "weights", [LESION], {}),
        ("medical.segment", "weights", [LESIONS], {}),
    ]
]


def test_requested_blames_the_request_only_for_a_value_it_gave():
    cause = WeightsError("no such file: /x.pt", plugin="art", filename="x.pt")
    with pytest.raises(WeightsRequestError) as info, requested("weights", "/x.pt"):
        raise cause
    assert info.value.exit_code == 2 and isinstance(info.value, ParameterError)
    assert str(info.value) == "weights='/x.pt': plugin 'art': weights 'x.pt': no such file: /x.pt"
    assert info.value.__cause__ is cause
    with pytest.raises(WeightsError) as info, requested("weights", ""):  # the plugin's own
        raise cause
    assert info.value is cause and info.value.exit_code == 1
    with pytest.raises(ValueError), requested("weights", "/x.pt"):  # other errors pass
        raise ValueError("not a weights problem")


def test_weights_for_another_network_are_a_weights_error():
    state = nn.Linear(3, 2).state_dict()
    with pytest.raises(WeightsError, match=r"do not fit the Linear network: size mismatch"):
        load_into(nn.Linear(4, 2), state, plugin="art", source=Path("w.safetensors"))
    with pytest.raises(WeightsError, match="Missing key"), requested("weights", "w"):
        load_into(nn.Sequential(nn.Linear(3, 2)), state)
    load_into(nn.Linear(3, 2), {k: torch.zeros_like(v) for k, v in state.items()})


@pytest.fixture(scope="module")
def garbage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("w") / "garbage.safetensors"
    path.write_bytes(bytes(range(256)) * 16)
    return path


@pytest.mark.parametrize("bad", ["missing", "garbage"])
@pytest.mark.parametrize(("task", "param", "inputs", "extra"), CASES)
def test_a_bad_weights_parameter_is_a_bad_request_in_every_plugin(
    vlm_registry, tmp_path, garbage, bad, task, param, inputs, extra
):
    """Through the runner, in process (the run fails before any model runs)."""
    from vlm_core.runner import RunRequest, run_task
    from vlm_core.runstore import RunStore

    registry = vlm_registry(entry_points=True)
    value = str(tmp_path / "nowhere" / "w.safetensors") if bad == "missing" else str(garbage)
    request = RunRequest(task, inputs, params={**extra, param: value}, out_dir=tmp_path / "out")
    with pytest.raises(VLMError) as info:
        run_task(request, registry=registry, store=RunStore(tmp_path / "runs.sqlite"))
    message = str(info.value)
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2, message
    assert message.startswith(f"{param}={value!r}: ") and "\n" not in message
    assert ("no such file" if bad == "missing" else "not a valid safetensors file") in message
    plugin = task.split(".")[0]
    assert registry.plugins[plugin].status == "healthy"
    assert not (tmp_path / "out").exists()


def test_the_cli_exits_2_with_one_line_for_a_bad_weights_path(vlm_bare, garbage):
    proc = vlm_bare("run", "art.generate", "-p", f"weights={garbage}", "-p", "count=1")
    assert proc.returncode == 2, proc.stderr
    line = one_line_error(proc)
    assert f"weights='{garbage}'" in line and "not a valid safetensors file" in line


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["missing", "garbage"])
@pytest.mark.parametrize(("task", "param", "inputs", "extra"), CASES)
def test_every_plugin_exits_2_from_the_cli(vlm_bare, tmp_path, garbage, bad, task, param, inputs,
                                           extra):  # fmt: skip
    value = str(tmp_path / "nowhere.safetensors") if bad == "missing" else str(garbage)
    options = [a for k, v in {**extra, param: value}.items() for a in ("-p", f"{k}={v}")]
    proc = vlm_bare("run", task, *map(str, inputs), *options, "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    assert f"{param}={value!r}" in one_line_error(proc)
