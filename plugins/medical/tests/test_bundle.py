"""medical.bundle: MONAI bundles run through the runner, and unsafe bundles are refused.

Every bundle here is made in the test (a tiny MONAI UNet and its weights); nothing touches
the network. Each malicious payload is first shown to work against plain MONAI (it creates a
marker file), then shown to be refused by medical.bundle with one line and no marker.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.networks.nets import UNet
from safetensors.torch import save_file
from vlm_medical.bundle import DEMO_BUNDLE, DEMO_INPUT, spec
from vlm_medical.bundle_check import check_config
from vlm_medical.bundle_safety import BundleError, BundleRefused

from vlm_core import hookimpl
from vlm_core.errors import UsageError
from vlm_core.runner import RunRequest, run_task
from vlm_core.runstore import RunStore
from vlm_core.tasks import param_problems, validate_spec
from vlm_core.testing.conformance import heavy_imports_of

AFFINE = np.array(
    [[0.0, -1.2, 0.0, 30.0], [0.9, 0.0, 0.0, -20.0], [0.0, 0.0, 2.5, 5.0], [0.0, 0.0, 0.0, 1.0]]
)
NETWORK = {
    "_target_": "UNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "channels": [4, 8],
    "strides": [2],
    "num_res_units": 0,
}
METADATA = {
    "version": "0.1.0",
    "name": "test bundle",
    "authors": "DOE^JOHN (patient 123-45-6789)",
    "data_source": "PatientName=DOE^JOHN PatientID=123-45-6789",
    "network_data_format": {
        "inputs": {"image": {"num_channels": 1}},
        "outputs": {"pred": {"num_channels": 2, "channel_def": {"0": "background", "1": "cube"}}},
    },
}


class _BundlePlugin:
    """The task under test, registered in-process under the plugin name 'medical'."""

    @hookimpl
    def register_tasks(self, register: Any) -> None:
        register(spec())


def base_config(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "patient": "DOE^JOHN",
        "network_def": dict(NETWORK),
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image", "image_only": True},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "ScaleIntensityd", "keys": "image"},
            ],
        },
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16]},
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                {
                    "_target_": "SaveImaged",
                    "keys": "pred",
                    "output_dir": "@output_dir",
                    "separate_folder": False,
                },
            ],
        },
    }
    config.update(changes)
    return config


def network_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    args = {k: v for k, v in NETWORK.items() if k != "_target_"}
    net = UNet(**args)
    with torch.no_grad():  # make "bright" mean "foreground", so the mask is not empty
        net.model[-1].conv.bias.copy_(torch.tensor([0.0, -0.2]))
    return {k: v.contiguous() for k, v in net.state_dict().items()}


def make_bundle(
    folder: Path,
    config: dict[str, Any],
    *,
    weights: str = "safetensors",
    files: dict[str, Any] | None = None,
) -> Path:
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "configs" / "inference.json").write_text(json.dumps(config, indent=2))
    (folder / "configs" / "metadata.json").write_text(json.dumps(METADATA))
    if weights == "safetensors":
        save_file(network_state(), folder / "models" / "model.safetensors")
    elif weights == "pt":
        torch.save(network_state(), folder / "models" / "model.pt")
    for name, content in (files or {}).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return folder


def make_volume(path: Path, *, shape: tuple[int, int, int] = (12, 10, 8)) -> Path:
    rng = np.random.default_rng(0)
    array = rng.normal(100.0, 10.0, shape).astype(np.float32)
    array[3:9, 2:7, 2:6] += 400.0
    image = nib.Nifti1Image(array, AFFINE)
    image.header["descrip"] = b"DOE^JOHN 123-45-6789"
    nib.save(image, path)
    return path


@pytest.fixture
def registry(vlm_registry: Any) -> Any:
    return vlm_registry({"medical": _BundlePlugin()})


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    return make_volume(tmp_path / "input.nii.gz")


def run_bundle(registry: Any, bundle: Path | str, volume: Path, out: Path | None = None, **params):
    request = RunRequest(
        "medical.bundle", [str(volume)], {"bundle": str(bundle), **params}, out_dir=out
    )
    store = RunStore(Path(os.environ["VLM_HOME"]) / "runs.sqlite")
    return run_task(request, registry=registry, store=store)


def files_under(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*")}


# ---------------------------------------------------------------------------------------------
# The spec and the bundled sample


def test_spec_is_valid_documented_and_light():
    task = spec()
    assert task.id == "medical.bundle" and task.run == "vlm_medical.bundle:run"
    assert validate_spec(task, "medical") == []
    assert param_problems(task.params) == []
    assert heavy_imports_of("vlm_medical.bundle") == []


def test_bundled_demo_sample_segments_spheres(registry, tmp_path):
    outcome = run_bundle(registry, DEMO_BUNDLE, DEMO_INPUT, tmp_path / "out")
    (result,) = outcome.results
    mask, stats = result.outputs["mask"], result.outputs["stats"]
    source = nib.load(str(DEMO_INPUT))
    assert mask.labels.shape == source.shape
    assert mask.class_names == ("background", "sphere")
    np.testing.assert_allclose(mask.affine, source.affine)
    assert 0.002 < stats.values["foreground_fraction"] < 0.2  # a few spheres, not everything
    assert result.provenance.weights_sha256  # the sha256 of models/model.safetensors
    assert not (DEMO_BUNDLE / "eval").exists()  # its SaveImaged was dropped, not run
    # a bundle the user brings has no familiarity model: its results say so, ood = null
    assert result.ood is None
    (written,) = (tmp_path / "out").rglob("result.json")
    assert json.loads(written.read_text())["ood"] is None


# ---------------------------------------------------------------------------------------------
# Running bundles


def test_bundle_runs_and_mask_keeps_the_input_affine(registry, tmp_path, volume, monkeypatch):
    bundle = make_bundle(tmp_path / "bundle", base_config())
    before = files_under(bundle)
    monkeypatch.setenv("VLM_TRUSTED_BUNDLES", str(tmp_path))
    outcome = run_bundle(registry, bundle, volume, tmp_path / "out")
    (result,) = outcome.results
    mask = result.outputs["mask"]
    assert mask.labels.shape == (12, 10, 8)
    np.testing.assert_allclose(mask.affine, AFFINE)
    assert mask.class_names == ("background", "cube")
    assert 0 < int(mask.labels.sum()) < mask.labels.size
    per_class = result.outputs["stats"].per_class["cube"]
    voxel_ml = abs(np.linalg.det(AFFINE[:3, :3])) / 1000
    assert per_class["volume_ml"] == pytest.approx(per_class["voxels"] * voxel_ml)
    exported = next(p for p in outcome.files if p.name.endswith(".nii.gz"))
    np.testing.assert_allclose(nib.load(str(exported)).affine, AFFINE, atol=1e-5)
    assert files_under(bundle) == before  # SaveImaged wrote nothing, not even output_dir


def test_outputs_carry_nothing_identifying_from_bundle_or_input(registry, tmp_path, volume):
    bundle = make_bundle(tmp_path / "bundle", base_config())
    out = tmp_path / "out"
    run_bundle(registry, bundle, volume, out, trust=True)
    written = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    import gzip

    written += b"".join(gzip.decompress(p.read_bytes()) for p in out.rglob("*.nii.gz"))
    for text in (b"DOE", b"123-45-6789", b"PatientName"):
        assert text not in written


def test_pt_weights_holding_a_plain_state_dict_load(registry, tmp_path, volume):
    bundle = make_bundle(tmp_path / "bundle", base_config(), weights="pt")
    (result,) = run_bundle(registry, bundle, volume, trust=True).results
    assert result.outputs["mask"].labels.shape == (12, 10, 8)


def test_yaml_config_and_volume_output(registry, tmp_path, volume):
    import yaml

    bundle = make_bundle(tmp_path / "bundle", {})
    (bundle / "configs" / "inference.json").unlink()
    config = base_config(
        postprocessing={"_target_": "Activationsd", "keys": "pred", "softmax": True}
    )
    (bundle / "configs" / "inference.yaml").write_text(yaml.safe_dump(config))
    (result,) = run_bundle(registry, bundle, volume, trust=True, output="volume").results
    probabilities = result.outputs["volume"]
    assert probabilities.array.shape == (12, 10, 8, 2)
    np.testing.assert_allclose(probabilities.array.sum(axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probabilities.affine, AFFINE)


def test_zoo_style_config_with_resampling_and_invertd(registry, tmp_path, volume):
    config = base_config(
        imports=["$import glob", "$import os"],
        initialize=["$setattr(torch.backends.cudnn, 'benchmark', False)"],
        device="$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        network="$@network_def.to(@device)",
        datalist="$list(sorted(glob.glob(os.path.join(@bundle_root, '*.nii.gz'))))",
    )
    config["preprocessing"]["transforms"][2:2] = [
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
        {"_target_": "Spacingd", "keys": "image", "pixdim": [1.5, 1.5, 1.5]},
    ]
    config["postprocessing"]["transforms"].insert(
        0,
        {
            "_target_": "Invertd",
            "keys": "pred",
            "transform": "@preprocessing",
            "orig_keys": "image",
            "nearest_interp": False,
        },
    )
    bundle = make_bundle(tmp_path / "bundle", config)
    (result,) = run_bundle(registry, bundle, volume, trust=True).results
    mask = result.outputs["mask"]
    assert mask.labels.shape == (12, 10, 8)
    np.testing.assert_allclose(mask.affine, AFFINE)
    # without Invertd the prediction stays on the resampled grid: refused, not mislabelled
    del config["postprocessing"]["transforms"][0]
    other = make_bundle(tmp_path / "no-invert", config)
    with pytest.raises(BundleError, match="must restore the input grid"):
        run_bundle(registry, other, volume, trust=True)


# ---------------------------------------------------------------------------------------------
# Trust


def test_untrusted_location_is_refused_unless_trusted(registry, tmp_path, volume, vlm_home):
    bundle = make_bundle(tmp_path / "bundles" / "mine", base_config())
    with pytest.raises(BundleRefused, match="not under a trusted bundle folder") as refused:
        run_bundle(registry, bundle, volume)
    assert "\n" not in str(refused.value)
    assert registry.plugins["medical"].status == "healthy"  # the user's error, no quarantine
    assert run_bundle(registry, bundle, volume, trust=True).results
    (vlm_home / "trusted-bundles.txt").write_text(f"# lab bundles\n{tmp_path / 'bundles'}\n")
    assert run_bundle(registry, bundle, volume).results


def test_trust_follows_the_real_path_not_a_symlink(registry, tmp_path, volume, monkeypatch):
    real = make_bundle(tmp_path / "elsewhere" / "bundle", base_config())
    (tmp_path / "trusted").mkdir()
    (tmp_path / "trusted" / "link").symlink_to(real, target_is_directory=True)
    monkeypatch.setenv("VLM_TRUSTED_BUNDLES", str(tmp_path / "trusted"))
    with pytest.raises(BundleRefused, match="not under a trusted bundle folder"):
        run_bundle(registry, tmp_path / "trusted" / "link", volume)


def test_zoo_bundle_by_name_from_the_monai_cache(registry, tmp_path, volume, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("VLM_OFFLINE", "1")
    make_bundle(tmp_path / "torch" / "hub" / "bundle" / "tiny_zoo_bundle", base_config())
    (result,) = run_bundle(registry, "tiny_zoo_bundle", volume).results  # no trust needed
    assert result.outputs["mask"].labels.shape == (12, 10, 8)


def test_zoo_bundle_download_fails_fast_when_offline(registry, tmp_path, volume, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("VLM_OFFLINE", "1")
    for name in ("spleen_ct_segmentation", "spleen_ct_segmentation@0.5.4"):
        with pytest.raises(BundleError, match=r"downloading is off \(VLM_OFFLINE=1\)") as off:
            run_bundle(registry, name, volume)
        assert "\n" not in str(off.value) and "monai.bundle download" in str(off.value)
    assert not (tmp_path / "torch" / "hub" / "bundle" / "spleen_ct_segmentation").exists()


# ---------------------------------------------------------------------------------------------
# Malicious configs and weights


class _Touch:
    """Pickles as a call of os.system: unpickling it runs ``touch marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_pickled_weights_that_run_code_are_refused(registry, tmp_path, volume):
    marker = tmp_path / "pwned"
    bundle = make_bundle(tmp_path / "bundle", base_config(), weights="none")
    state = network_state()
    state["payload"] = _Touch(marker)
    torch.save(state, bundle / "models" / "model.pt")
    with pytest.raises(BundleRefused, match="refused to unpickle") as refused:
        run_bundle(registry, bundle, volume, trust=True)
    assert "\n" not in str(refused.value) and "model.pt" in str(refused.value)
    assert not marker.exists()
    torch.load(bundle / "models" / "model.pt", weights_only=False)  # plain torch would run it
    assert marker.exists()


def test_torchscript_only_bundle_is_refused(registry, tmp_path, volume):
    bundle = make_bundle(tmp_path / "bundle", base_config(), weights="none")
    args = {k: v for k, v in NETWORK.items() if k != "_target_"}
    torch.jit.save(torch.jit.script(UNet(**args)), bundle / "models" / "model.ts")
    with pytest.raises(BundleRefused, match="TorchScript program"):
        run_bundle(registry, bundle, volume, trust=True)


def test_weights_symlinked_outside_the_bundle_are_refused(registry, tmp_path, volume):
    bundle = make_bundle(tmp_path / "bundle", base_config(), weights="none")
    save_file(network_state(), tmp_path / "elsewhere.safetensors")
    (bundle / "models" / "model.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    with pytest.raises(BundleRefused, match="outside the bundle"):
        run_bundle(registry, bundle, volume, trust=True)


def test_config_that_fails_is_the_users_error_not_a_plugin_crash(registry, tmp_path, volume):
    bundle = make_bundle(tmp_path / "bundle", base_config(network_def={**NETWORK, "strides": []}))
    with pytest.raises(BundleError, match="building 'network_def' failed") as failed:
        run_bundle(registry, bundle, volume, trust=True)
    assert "\n" not in str(failed.value)
    assert registry.plugins["medical"].status == "healthy"


def test_allow_list_accepts_the_monai_zoo_idioms():
    zoo = {
        "imports": ["$import glob", "$import os", "$from monai.transforms import Compose"],
        "bundle_root": "/bundles/spleen",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "image_key": "$monai.utils.CommonKeys.IMAGE",
        "network_def": dict(NETWORK),
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "@image_key", "reader": "NibabelReader"},
                {"_target_": "EnsureChannelFirstd", "keys": "@image_key"},
                {"_target_": "Spacingd", "keys": "@image_key", "pixdim": "$[1.5] * 3"},
                {"_target_": "EnsureTyped", "keys": "@image_key", "dtype": "$torch.float32"},
            ],
        },
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": [96, 96, 96],
            "overlap": "$1.0 - float(@patch) / float(@patch * 2)",
            "device": "@device",
        },
        "patch": 64,
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {
                    "_target_": "Lambdad",
                    "keys": "pred",
                    "func": "$lambda x: torch.where(x[[1]] > 0.5, 1, 0).float()",
                },
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir"},
            ],
        },
        "output_dir": "$os.path.join(@bundle_root, 'eval')",
        # never built, so never checked: the zoo's evaluator, handlers and run list
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]"},
        "datalist": "$list(sorted(glob.glob(@bundle_root + '/imagesTs/*.nii.gz')))",
        "checkpointloader": {
            "_target_": "CheckpointLoader",
            "load_path": "$os.path.join(@bundle_root, 'models', 'model.pt')",
            "load_dict": {"model": "@network"},
        },
        "evaluator": {"_target_": "SupervisedEvaluator", "network": "@network"},
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@evaluator.run()"],
        "_meta_": METADATA,
    }
    roots = ["network_def", "preprocessing", "inferer", "postprocessing"]
    checked = check_config(zoo, roots, "zoo")
    # 11 components and 6 expressions (@device included); the writer step is left out unbuilt
    assert checked.checked == 17
    assert checked.dropped == ("postprocessing::transforms::3",)
    assert checked.config["run"] == [None] and checked.config["evaluator"] is None
    assert checked.config["imports"] == [None, None, None]
    assert set(checked.globals) == {"monai", "torch", "np", "numpy", "__builtins__"}


def test_refusals_are_usage_errors():
    assert issubclass(BundleRefused, BundleError) and issubclass(BundleError, UsageError)


def test_demo_bundle_is_intact():
    # the demo must stay a real bundle: config, metadata, small safetensors weights
    assert (DEMO_BUNDLE / "configs" / "inference.json").is_file()
    assert (DEMO_BUNDLE / "configs" / "metadata.json").is_file()
    weights = DEMO_BUNDLE / "models" / "model.safetensors"
    assert 0 < weights.stat().st_size < 64 * 1024


def test_bundle_task_passes_the_conformance_check(vlm_registry):
    from vlm_core.testing.conformance import check_plugin

    plugin = _BundlePlugin()
    plugin.__name__ = "vlm_medical.bundle"  # the module the check imports in a fresh process
    report = check_plugin("medical", registry=vlm_registry({"medical": plugin}))
    assert report.ok, report.problems
    names = {c.name for c in report.checks}
    assert {"medical.bundle: sample 'bundle-demo' runs", "no heavy imports on import"} <= names
