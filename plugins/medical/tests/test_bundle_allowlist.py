"""medical.bundle's allow-list: what real bundles need passes, the rest is refused or never built.

Real MONAI bundle layouts (a model-zoo config with its evaluator, handlers and run list, a
bundle with its own scripts/ package) built in the test; the attacks themselves are in
test_bundle_attacks.py.
"""

from __future__ import annotations

import builtins
import copy
import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from test_bundle import (
    AFFINE,
    NETWORK,
    _BundlePlugin,
    base_config,
    files_under,
    make_bundle,
    make_volume,
    run_bundle,
)
from vlm_medical import bundle_allowlist as allow
from vlm_medical.bundle_check import Namespace, check_config
from vlm_medical.bundle_safety import BundleRefused

ROOTS = ["network_def", "preprocessing", "inferer", "postprocessing"]

#: ``spleen_ct_segmentation``'s configs/inference.json from the MONAI model zoo, as published,
#: with a smaller UNet and window so that it runs in a test.
SPLEEN = {
    "imports": ["$import glob", "$import numpy", "$import os"],
    "bundle_root": ".",
    "image_key": "image",
    "output_dir": "$@bundle_root + '/eval'",
    "output_ext": ".nii.gz",
    "output_dtype": "$numpy.float32",
    "output_postfix": "trans",
    "separate_folder": True,
    "load_pretrain": True,
    "dataset_dir": "/workspace/data/Task09_Spleen",
    "datalist": "$list(sorted(glob.glob(@dataset_dir + '/imagesTs/*.nii.gz')))",
    "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    "network_def": dict(NETWORK),
    "network": "$@network_def.to(@device)",
    "preprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "LoadImaged", "keys": "@image_key"},
            {"_target_": "EnsureChannelFirstd", "keys": "@image_key"},
            {"_target_": "Orientationd", "keys": "@image_key", "axcodes": "RAS"},
            {
                "_target_": "Spacingd",
                "keys": "@image_key",
                "pixdim": [1.5, 1.5, 2.0],
                "mode": "bilinear",
            },
            {
                "_target_": "ScaleIntensityRanged",
                "keys": "@image_key",
                "a_min": 50,
                "a_max": 550,
                "b_min": 0,
                "b_max": 1,
                "clip": True,
            },
            {"_target_": "EnsureTyped", "keys": "@image_key"},
        ],
    },
    "dataset": {
        "_target_": "Dataset",
        "data": "$[{'image': i} for i in @datalist]",
        "transform": "@preprocessing",
    },
    "dataloader": {
        "_target_": "DataLoader",
        "dataset": "@dataset",
        "batch_size": 1,
        "shuffle": False,
        "num_workers": 4,
    },
    "inferer": {
        "_target_": "SlidingWindowInferer",
        "roi_size": [16, 16, 16],
        "sw_batch_size": 4,
        "overlap": 0.5,
    },
    "postprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {
                "_target_": "Invertd",
                "keys": "pred",
                "transform": "@preprocessing",
                "orig_keys": "@image_key",
                "nearest_interp": False,
                "to_tensor": True,
            },
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {
                "_target_": "SaveImaged",
                "keys": "pred",
                "output_dir": "@output_dir",
                "output_ext": "@output_ext",
                "output_dtype": "@output_dtype",
                "output_postfix": "@output_postfix",
                "separate_folder": "@separate_folder",
            },
        ],
    },
    "handlers": [{"_target_": "StatsHandler", "iteration_log": False}],
    "evaluator": {
        "_target_": "SupervisedEvaluator",
        "device": "@device",
        "val_data_loader": "@dataloader",
        "network": "@network",
        "inferer": "@inferer",
        "postprocessing": "@postprocessing",
        "val_handlers": "@handlers",
        "amp": True,
    },
    "checkpointloader": {
        "_target_": "CheckpointLoader",
        "load_path": "$@bundle_root + '/models/model.pt'",
        "load_dict": {"model": "@network"},
    },
    "initialize": [
        "$monai.utils.set_determinism(seed=123)",
        "$@checkpointloader(@evaluator) if @load_pretrain else None",
    ],
    "run": ["$@evaluator.run()"],
}


@pytest.fixture
def registry(vlm_registry: Any) -> Any:
    return vlm_registry({"medical": _BundlePlugin()})


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    return make_volume(tmp_path / "input.nii.gz")


# ---------------------------------------------------------------------------------------------
# Real bundles still run


def test_model_zoo_bundle_runs_with_trust_and_writes_nothing(registry, tmp_path, volume):
    bundle = make_bundle(tmp_path / "downloads" / "spleen_ct_segmentation", copy.deepcopy(SPLEEN))
    before = files_under(bundle)
    (result,) = run_bundle(registry, bundle, volume, tmp_path / "out", trust=True).results
    mask = result.outputs["mask"]
    assert mask.labels.shape == nib.load(str(volume)).shape  # Invertd restored the grid
    np.testing.assert_allclose(mask.affine, AFFINE)
    assert 0 < int(mask.labels.sum()) < mask.labels.size
    assert files_under(bundle) == before  # its SaveImaged was not built: no eval/ folder


def test_parts_the_task_does_not_build_never_run(registry, tmp_path, volume):
    marker = tmp_path / "pwned"
    config = copy.deepcopy(SPLEEN)
    config["run"] = [f"$__import__('os').system('touch {marker}')"]
    config["initialize"] = [{"_target_": "monai.utils.run_cmd", "cmd_list": ["touch", str(marker)]}]
    config["handlers"] = [{"_target_": "CheckpointSaver", "save_dir": str(tmp_path / "ckpt")}]
    bundle = make_bundle(tmp_path / "bundle", config)
    assert run_bundle(registry, bundle, volume, trust=True).results
    assert not marker.exists() and not (tmp_path / "ckpt").exists()


def test_zoo_idioms_of_published_configs_pass():
    config = {
        "patch_size": 256,
        "out_size": 164,
        "image_key": "$monai.utils.CommonKeys.IMAGE",
        "network_def": {
            "_target_": "SegResNet",
            "spatial_dims": 3,
            "init_filters": "$int(@patch_size / 32)",
            "dropout_prob": "$1.0 - float(@out_size) / float(@patch_size)",
        },
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "@image_key", "reader": "$monai.data.PILReader"},
                {"_target_": "Lambdad", "keys": "@image_key", "func": "$lambda x: x[1:]"},
                {
                    "_target_": "CastToTyped",
                    "keys": "@image_key",
                    "dtype": ["$np.uint8", "$numpy.float32", "$torch.float"],
                },
            ],
        },
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": "$((@patch_size - @out_size) // 2,) * 3",
        },
        "postprocessing": {
            "_target_": "Lambdad",
            "keys": "pred",
            "func": "$lambda x: torch.where(x[[2]] > 0, 4, torch.where(x[[0]] > 0, 1, 0))",
        },
    }
    checked = check_config(config, ROOTS, "zoo")
    assert checked.checked == 17 and checked.dropped == ()  # 7 components, 10 expressions


# ---------------------------------------------------------------------------------------------
# What expressions see at run time


def test_expressions_see_only_the_allowed_names_they_use():
    config = base_config(
        device="$torch.device('cpu')",
        inferer={
            "_target_": "SlidingWindowInferer",
            "roi_size": [16] * 3,
            "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        },
    )
    checked = check_config(config, ROOTS, "b")
    space = checked.globals["torch"]
    assert isinstance(space, Namespace)
    assert space.device is torch.device and space.cuda.is_available is torch.cuda.is_available
    for name in ("load", "save", "hub", "jit", "ops"):
        with pytest.raises(AttributeError, match="not on the bundle allow-list"):
            getattr(space, name)
    seen = checked.globals["__builtins__"]
    assert set(seen) == allow.BUILTINS
    assert not {"open", "__import__", "getattr", "eval", "exec", "compile"} & set(seen)
    for name in ("monai", "np", "numpy"):
        assert isinstance(checked.globals[name], Namespace)
        with pytest.raises(AttributeError):
            checked.globals[name].load  # noqa: B018


def test_every_target_is_replaced_by_the_allowed_object():
    checked = check_config(base_config(), ROOTS, "b")
    steps = checked.config["preprocessing"]["transforms"]
    assert isinstance(steps[0]["_target_"], allow.Checked)  # LoadImaged: arguments checked
    from monai.transforms import EnsureChannelFirstd

    assert steps[1]["_target_"] is EnsureChannelFirstd
    writer = checked.config["postprocessing"]["transforms"][1]
    assert writer["_disabled_"] is True and "output_dir" not in writer


def test_code_hidden_in_component_keywords_is_checked():
    # MONAI evaluates every '$' sub-item of a component, _desc_ and _requires_ included
    for extra in ("_desc_", "_requires_", "_disabled_"):
        network = {**NETWORK, extra: "$__import__('os').getcwd()"}
        with pytest.raises(BundleRefused, match=f"network_def::{extra}' uses the name"):
            check_config(base_config(network_def=network), ROOTS, "b")
    for setting, problem in (("_mode_", "_mode_ 'debug'"), ("_debug_", "_debug_")):
        network = {**NETWORK, setting: "debug" if setting == "_mode_" else True}
        with pytest.raises(BundleRefused, match=problem):
            check_config(base_config(network_def=network), ROOTS, "b")


def test_attributes_on_values_come_from_the_named_set():
    ok = base_config(network="$@network_def.to(@device).eval()", device="cpu")
    assert check_config(ok, ["network"], "b").checked == 2
    for attr in ("release", "read", "write", "format", "load_state_dict", "register_forward_hook"):
        bad = base_config(network=f"$@network_def.{attr}")
        with pytest.raises(BundleRefused, match=f"attribute '{attr}'"):
            check_config(bad, ["network"], "b")


# ---------------------------------------------------------------------------------------------
# Argument rules, statically and at run time


def test_loader_accepts_only_readers_that_cannot_unpickle():
    for reader in ("NibabelReader", "ITKReader", "monai.data.PILReader", ["PydicomReader"]):
        step = {"_target_": "LoadImaged", "keys": "image", "reader": reader}
        config = base_config(preprocessing={"_target_": "Compose", "transforms": [step]})
        assert check_config(config, ROOTS, "b").checked
    for reader in ("NumpyReader", "monai.data.NumpyReader", "some.module.Reader"):
        step = {"_target_": "LoadImaged", "keys": "image", "reader": reader}
        config = base_config(preprocessing={"_target_": "Compose", "transforms": [step]})
        with pytest.raises(BundleRefused, match="with the reader"):
            check_config(config, ROOTS, "b")


def test_reader_known_only_at_run_time_is_refused_before_the_loader_is_built(
    registry, tmp_path, volume
):
    step = {"_target_": "LoadImaged", "keys": "image", "reader": "@chosen_reader"}
    config = base_config(
        chosen_reader="NumpyReader",
        preprocessing={"_target_": "Compose", "transforms": [step]},
    )
    bundle = make_bundle(tmp_path / "bundle", config)
    with pytest.raises(BundleRefused) as refused:
        run_bundle(registry, bundle, volume, trust=True)
    message = str(refused.value)
    assert "\n" not in message
    assert "config key 'preprocessing::transforms::0'" in message and "'NumpyReader'" in message


def test_networks_never_fetch_their_own_weights():
    for network, problem in (
        ({"_target_": "DenseNet121", "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
          "pretrained": True}, "with pretrained=True"),
        ({"_target_": "EfficientNetBN", "model_name": "efficientnet-b0"},
         "leaving at its default pretrained=True"),
        ({"_target_": "HoVerNet", "pretrained_url": "https://example.org/w.pth"},
         "pretrained_url"),
    ):  # fmt: skip
        with pytest.raises(BundleRefused, match=problem):
            check_config(base_config(network_def=network), ROOTS, "b")
    expression = "$monai.networks.nets.DenseNet121(spatial_dims=3, in_channels=1, out_channels=2, pretrained=True)"  # noqa: E501
    with pytest.raises(BundleRefused, match="with pretrained=True"):
        check_config(base_config(network_def=expression), ROOTS, "b")
    off = {"_target_": "EfficientNetBN", "model_name": "efficientnet-b0", "pretrained": False}
    assert check_config(base_config(network_def=off), ROOTS, "b").checked


# ---------------------------------------------------------------------------------------------
# Bundles with their own Python code (trust_code)


def code_bundle(folder: Path, marker: Path, config: dict[str, Any]) -> Path:
    files = {
        "scripts/__init__.py": "import os\nimport pathlib\n\n"
        f"pathlib.Path({str(marker)!r}).touch()\n",
        "scripts/net.py": "from monai.networks.nets import UNet\n\n\nclass Net(UNet):\n"
        "    '''The bundle's own network (a UNet, so the demo weights fit).'''\n",
    }
    return make_bundle(folder, config, files=files)


def test_trust_code_runs_the_bundles_own_network(registry, tmp_path, volume, monkeypatch):
    marker = tmp_path / "bundle-code-ran"
    config = base_config(network_def={**NETWORK, "_target_": "scripts.net.Net"})
    bundle = code_bundle(tmp_path / "lab" / "custom", marker, config)
    monkeypatch.setenv("VLM_TRUSTED_BUNDLES", str(tmp_path / "lab"))  # trusted location...
    with pytest.raises(BundleRefused, match=r"ships Python code .*trust_code=true"):
        run_bundle(registry, bundle, volume)  # ...is not enough to run its code
    with pytest.raises(BundleRefused, match="ships Python code"):
        run_bundle(registry, bundle, volume, trust=True)
    assert not marker.exists()
    (result,) = run_bundle(registry, bundle, volume, trust_code=True).results
    assert marker.exists()  # the bundle's code ran, as trust_code says it does
    assert result.outputs["mask"].labels.shape == (12, 10, 8)


def test_trust_code_still_refuses_writers_and_outside_names(registry, tmp_path, volume):
    marker = tmp_path / "bundle-code-ran"
    writer = {"_target_": "SaveImage", "output_dir": str(tmp_path / "written")}
    step = {"_target_": "Lambdad", "keys": "pred", "func": writer}
    config = base_config(
        network_def={**NETWORK, "_target_": "scripts.net.Net"},
        postprocessing={"_target_": "Compose", "transforms": [step]},
    )
    bundle = code_bundle(tmp_path / "a", marker, config)
    with pytest.raises(BundleRefused, match="targets 'SaveImage'"):
        run_bundle(registry, bundle, volume, trust=True, trust_code=True)
    aliased = base_config(imports=["$import scripts"], network_def="$scripts.os.remove('x')")
    bundle = code_bundle(tmp_path / "b", marker, aliased)
    with pytest.raises(BundleRefused, match=r"names 'scripts\.os\.remove'"):
        run_bundle(registry, bundle, volume, trust=True, trust_code=True)
    assert not (tmp_path / "written").exists()


def test_code_cannot_stand_in_for_a_library(registry, tmp_path, volume):
    bundle = make_bundle(tmp_path / "bundle", base_config(), files={"numpy/__init__.py": ""})
    with pytest.raises(BundleRefused, match="package named 'numpy'"):
        run_bundle(registry, bundle, volume, trust=True, trust_code=True)


def test_pth_weights_are_not_code(registry, tmp_path, volume):
    bundle = make_bundle(tmp_path / "bundle", base_config(), weights="pt")
    (bundle / "models" / "model.pt").rename(bundle / "models" / "model.pth")
    assert run_bundle(registry, bundle, volume, trust=True).results


# ---------------------------------------------------------------------------------------------
# The list itself


def test_every_listed_name_exists_and_nothing_on_it_writes_or_unpickles():
    table = allow.entries()
    listed = (
        len(allow.NETWORKS) + 2 * len(allow.TRANSFORMS) + len(allow.TRANSFORMS_ONE_FORM)
        + len(allow.LOADERS) + len(allow.INFERERS) + len(allow.READERS)
        + len(allow.FUNCTIONS) + len(allow.BUILTINS)
    )  # fmt: skip
    assert len(table) == listed  # each name is one object (no alias listed twice)
    for item in table.values():
        name = item.name.rsplit(".", 1)[-1]
        assert not any(w in name for w in ("Save", "Write", "NumpyReader", "DataStats", "Zarr"))
        assert not item.name.startswith(("monai.handlers", "monai.bundle", "monai.apps"))
        assert item.obj is not torch.load and item.obj is not builtins.open
    for writer in allow.writer_steps():
        assert allow.entry(writer) is None
    assert not allow.METHODS & {"release", "write", "save", "load", "read", "format", "open"}


def test_refusal_names_the_first_offending_item_on_one_line():
    config = base_config(
        inferer={"_target_": "monai.data.CSVSaver", "output_dir": "/tmp"},
        postprocessing="$__import__('os')",
    )
    with pytest.raises(BundleRefused) as refused:
        check_config(config, ROOTS, "evil")
    message = str(refused.value)
    assert message.startswith("bundle 'evil' refused: config key '")
    assert message.endswith("which is not on the allow-list (see BUNDLE.md)")
    assert "\n" not in message


def test_demo_bundle_config_is_unchanged_by_checking():
    from vlm_medical.bundle import DEMO_BUNDLE

    text = (DEMO_BUNDLE / "configs" / "inference.json").read_text()
    tree = json.loads(text)
    check_config(tree, ROOTS, "bundle-demo")
    assert json.loads((DEMO_BUNDLE / "configs" / "inference.json").read_text()) == tree


def test_configs_too_deep_to_check_are_refused(tmp_path):
    from vlm_medical.bundle_safety import read_bundle_config

    for expression in ("$" + "-" * 100_000 + "1", "$(" + "lambda x: " * 2000 + "1)"):
        with pytest.raises(BundleRefused, match="'network_def' nests too deeply to be checked"):
            check_config(base_config(network_def=expression), ROOTS, "b")
    config = tmp_path / "configs" / "inference.json"
    config.parent.mkdir()
    for depth in (900, 5000):  # deeper than the checker can walk, deeper than json can read
        config.write_text('{"network_def": ' + "[" * depth + "]" * depth + "}")
        with pytest.raises(BundleRefused, match="nests too deeply to be checked"):
            check_config(read_bundle_config(config, None, tmp_path, "b"), ROOTS, "b")


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        (  # keyword arguments unpacked from a dict
            {"overlap": "$[monai.transforms.LoadImage(**{'allow_pickle': True}), 0.25][-1]"},
            "inferer::overlap",
        ),
        (  # the loader handed over uncalled (_mode_ callable), called by an expression
            {"loader": {"_target_": "LoadImaged", "_mode_": "callable"},
             "overlap": "$[@loader(keys='image', reader=['NumpyReader']), 0.25][-1]"},
            "loader",
        ),
        (  # the loader named by an expression in _target_
            {"sub": {"_target_": "$monai.transforms.LoadImaged", "keys": "image",
                     "reader": "NumpyReader"},
             "overlap": "$[@sub, 0.25][-1]"},
            "sub::_target_",
        ),
    ],
    ids=["unpacked-keywords", "callable-mode", "expression-target"],
)  # fmt: skip
def test_argument_rules_hold_for_calls_only_known_at_run_time(
    changes, key, registry, tmp_path, volume
):
    loose = {k: v for k, v in changes.items() if k != "overlap"}
    inferer = {"_target_": "SlidingWindowInferer", "roi_size": [16] * 3}
    config = base_config(**loose, inferer={**inferer, "overlap": changes["overlap"]})
    check_config(config, ROOTS, "b")  # nothing to see before it runs...
    bundle = make_bundle(tmp_path / "bundle", config)
    with pytest.raises(BundleRefused) as refused:  # ...but the call itself is checked
        run_bundle(registry, bundle, volume, trust=True)
    message = str(refused.value)
    assert "\n" not in message and f"config key '{key}' calls monai.transforms.LoadImage" in message


def test_local_names_cannot_be_dunders():
    for expression in ("$(lambda __builtins__: 1)(2)", "$[1 for __x in [1]]"):
        with pytest.raises(BundleRefused, match="binds the dunder name"):
            check_config(base_config(network_def=expression), ROOTS, "b")


def test_bundle_code_that_fails_to_import_is_the_bundles_error(registry, tmp_path, volume):
    from vlm_medical.bundle_safety import BundleError

    config = base_config(network_def={**NETWORK, "_target_": "scripts.net.Net"})
    files = {"scripts/__init__.py": "", "scripts/net.py": "import a_package_nobody_installed\n"}
    bundle = make_bundle(tmp_path / "bundle", config, files=files)
    with pytest.raises(BundleError, match=r"needs 'scripts\.net', and importing it failed") as e:
        run_bundle(registry, bundle, volume, trust=True, trust_code=True)
    assert "a_package_nobody_installed" in str(e.value) and "\n" not in str(e.value)
    assert registry.plugins["medical"].status == "healthy"
    missing = base_config(network_def={**NETWORK, "_target_": "monai.no_such_module.UNet"})
    with pytest.raises(BundleRefused, match=r"'monai\.no_such_module', which does not exist"):
        check_config(missing, ROOTS, "b")
