"""The task ``medical.bundle``: run a MONAI bundle's inference config on a volume, safely.

A bundle is a folder with ``configs/inference.json`` (or ``.yaml``), ``configs/metadata.json``
and ``models/model.safetensors`` (or ``model.pt``), or a MONAI model-zoo bundle by name, which
:func:`monai.bundle.download` fetches into MONAI's bundle cache when the machine is online.

Order of work, so that nothing from an unsafe bundle ever runs:

1. find the folder (download a zoo bundle when online; fail at once when offline);
2. refuse it unless it lies under a trusted root or the operator passed ``trust=true``
   (:mod:`vlm_medical.bundle_safety`), and refuse it if it ships Python code unless the
   operator passed ``trust_code=true`` (:mod:`vlm_medical.bundle_code`);
3. read its config with safe loaders, expanding ``%`` macros from files inside the bundle only;
4. check what building ``network_def``, ``preprocessing``, ``inferer`` and ``postprocessing``
   would run against the allow-list, the same for every bundle however trusted
   (:mod:`vlm_medical.bundle_check`); the rest of the config is dropped unread;
5. load the weights with the core's safe loader (safetensors, or ``torch.load`` with
   ``weights_only=True``), never with the bundle's own ``CheckpointLoader``;
6. only then build those four pieces with MONAI's :class:`~monai.bundle.ConfigParser` from
   the checked config (allowed objects in place of names, expressions seeing only allowed
   names) and run the volume through them.

The output keeps the input's grid and affine; nothing of the bundle's metadata reaches the
outputs except the class names of its ``channel_def``, cleaned to plain words.

This module is imported when the plugin lists its tasks, so torch and MONAI are imported
inside the functions only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from vlm_core.kinds import Kind
from vlm_core.tasks import RunContext, Sample, TaskParams, TaskSpec, package_file

if TYPE_CHECKING:
    import numpy as np

    from vlm_core.types import Output, Volume
    from vlm_medical.bundle_check import CheckedConfig

DEMO_BUNDLE = package_file("vlm_medical", "samples", "bundle-demo")
DEMO_INPUT = package_file("vlm_medical", "samples", "bundle-demo-input.nii.gz")
#: A MONAI model-zoo bundle name, optionally with a version: ``spleen_ct_segmentation@0.5.4``.
ZOO_NAME = re.compile(r"^(?P<name>[A-Za-z][\w-]*)(?:@(?P<version>[\w.+-]+))?$")
#: Hosts each download source needs (probed before downloading, within VLM_PROBE_TIMEOUT).
ZOO_HOSTS: dict[str, tuple[str, ...]] = {
    "monaihosting": ("https://huggingface.co", "https://api.ngc.nvidia.com"),
    "github": ("https://github.com",),
    "ngc": ("https://api.ngc.nvidia.com",),
}
CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
WEIGHT_NAMES = ("model.safetensors", "model.pt", "model.pth")
#: The config keys the task builds (the network under the first of its two names).
NETWORK_KEYS = ("network_def", "network")
PIPELINE_KEYS = ("preprocessing", "inferer", "postprocessing")


class BundleParams(TaskParams):
    bundle: str = Field(
        str(DEMO_BUNDLE),
        min_length=1,
        max_length=4096,
        description="A bundle folder (holding configs/ and models/), or a MONAI model-zoo bundle "
        "name such as 'spleen_ct_segmentation' (optionally NAME@VERSION), taken from MONAI's "
        "bundle cache or downloaded into it when online.",
    )
    trust: bool = Field(
        False,
        description="Run a bundle from a folder outside the trusted roots (the plugin's "
        "samples, MONAI's bundle cache, VLM_TRUSTED_BUNDLES, trusted-bundles.txt). It widens "
        "where a bundle may come from, not what it may do: its config must still pass the "
        "allow-list, and its Python code (if any) still needs trust_code.",
    )
    trust_code: bool = Field(
        False,
        description="RUNS THE BUNDLE'S OWN PYTHON CODE (its scripts/ package, custom "
        "networks and transforms) with your rights, unchecked: the bundle's packages become "
        "importable and its config may name what they define. Only for bundles whose code "
        "you have read or whose source you trust. Without it a bundle that ships code is "
        "refused; trust=true never runs bundle code.",
    )
    config: str = Field(
        "inference",
        min_length=1,
        max_length=128,
        pattern=r"^[\w.-]+$",
        description="Config file under configs/, without or with its suffix (.json/.yaml/.yml).",
    )
    weights: str = Field(
        "",
        max_length=255,
        pattern=r"^[\w.-]*$",
        description="Weights file under models/; empty: model.safetensors, else model.pt.",
    )
    input_key: str = Field(
        "image", min_length=1, max_length=64, pattern=r"^\w+$", description="Data key of the image."
    )
    output_key: str = Field(
        "pred", min_length=1, max_length=64, pattern=r"^\w+$", description="Data key of the result."
    )
    output: Literal["mask", "volume"] = Field(
        "mask",
        description="mask: a label map (argmax over channels, or a single channel thresholded "
        "unless it already holds labels); volume: the bundle's output as a float volume.",
    )
    threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="Level for a single-channel probability output."
    )
    source: Literal["monaihosting", "github", "ngc"] = Field(
        "monaihosting", description="Where a zoo bundle named by 'bundle' is downloaded from."
    )


def spec() -> TaskSpec:
    """The spec of ``medical.bundle`` (cheap: no torch, no MONAI)."""
    return TaskSpec(
        id="medical.bundle",
        title="MONAI bundle inference",
        description=(
            "Runs the inference config of a MONAI bundle (a local folder, or a model-zoo bundle "
            "by name when online) on a volume and returns its label map on the input's grid, "
            "with per-class volumes. Bundles outside trusted folders are refused unless "
            "trusted, configs reaching unsafe code are refused before anything runs, and "
            "weights load without unpickling code. Research use only: not a medical device."
        ),
        domain="medical",
        run="vlm_medical.bundle:run",
        params=BundleParams,
        inputs=(Kind.VOLUME,),
        outputs=(Kind.MASK, Kind.VOLUME, Kind.METRICS),
        samples=(
            Sample(
                "bundle-demo",
                (DEMO_INPUT,),
                description="A 48x48x32 synthetic volume of bright spheres, segmented by the "
                "bundled demo bundle (a tiny MONAI UNet).",
            ),
        ),
        memory_mb=1024,
        notice="Research use only: not a medical device, not for diagnosis.",
    )


# ---------------------------------------------------------------------------------------------
# Finding the bundle


@dataclass(frozen=True)
class BundleFiles:
    """The files of a bundle that a run reads."""

    folder: Path
    label: str  # how messages name the bundle
    config: Path
    metadata: Path | None
    weights: Path


def locate_bundle(params: BundleParams) -> tuple[Path, str]:
    """The bundle folder ``params.bundle`` names, and its label for messages."""
    from vlm_medical.bundle_safety import BundleError

    raw = params.bundle.strip()
    path = Path(raw).expanduser()
    if path.is_dir():
        return path, path.resolve().name
    if path.exists():
        raise BundleError(f"bundle '{raw}' is a file; give the bundle folder (it holds configs/)")
    match = ZOO_NAME.match(raw)
    if match is None:
        raise BundleError(
            f"no bundle folder '{raw}', and it is not a MONAI model-zoo name (NAME[@VERSION])"
        )
    return zoo_bundle(match["name"], match["version"], params.source), match["name"]


def zoo_cache() -> Path:
    """MONAI's standard bundle cache: ``<torch hub dir>/bundle`` (follows ``TORCH_HOME``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "bundle"


def zoo_bundle(name: str, version: str | None, source: str) -> Path:
    """A model-zoo bundle from MONAI's bundle cache, downloaded there first when missing.

    Offline (``VLM_OFFLINE=1`` or another switch of :data:`vlm_core.weights.OFFLINE_FLAGS`) or
    with the zoo's hosts unreachable, this fails at once with what to do instead.
    """
    from vlm_core.errors import describe_exception
    from vlm_core.weights import offline_reason
    from vlm_core.weights.download import Prober
    from vlm_medical.bundle_safety import BundleError

    cache = zoo_cache()
    folder = cache / name
    if (folder / "configs").is_dir() and version in (None, _declared_version(folder)):
        return folder
    wanted = f"{name}@{version}" if version else name
    fetch = f"`python -m monai.bundle download --name {name} --bundle_dir {cache}`"
    reason = offline_reason()
    if reason:
        raise BundleError(
            f"MONAI model-zoo bundle '{wanted}' is not in the bundle cache {cache} and "
            f"downloading is off ({reason}); run {fetch} on a machine with a network and copy "
            f"the folder here, or unset {reason.split('=')[0]}"
        )
    prober = Prober()
    problems = [p for p in (prober.check(url) for url in ZOO_HOSTS[source]) if p]
    if len(problems) == len(ZOO_HOSTS[source]):
        raise BundleError(
            f"MONAI model-zoo bundle '{wanted}' is not in the bundle cache {cache} and the "
            f"'{source}' zoo cannot be reached ({problems[0]}); run {fetch} where it can, and "
            "copy the folder here"
        )
    from monai.bundle import download

    try:
        download(name=name, version=version, bundle_dir=cache, source=source, progress=False)
    except Exception as exc:  # network, HTTP and archive errors of several libraries
        raise BundleError(
            f"downloading MONAI model-zoo bundle '{wanted}' failed: {describe_exception(exc)}"
        ) from None
    if not (folder / "configs").is_dir():
        raise BundleError(f"downloaded bundle '{wanted}' but {folder} holds no configs/ folder")
    return folder


def _declared_version(folder: Path) -> str | None:
    import json

    try:
        meta = json.loads((folder / "configs" / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return str(meta.get("version")) if isinstance(meta, dict) else None


def bundle_files(folder: Path, label: str, params: BundleParams) -> BundleFiles:
    """The config, metadata and weights files of the bundle in ``folder``."""
    from vlm_medical.bundle_safety import BundleError, BundleRefused, inside

    configs, models = folder / "configs", folder / "models"
    if not configs.is_dir():
        raise BundleError(
            f"bundle '{label}': {folder} has no configs/ folder (a MONAI bundle holds "
            "configs/inference.json and models/)"
        )
    stem = params.config
    names = (
        [stem] if stem.lower().endswith(CONFIG_SUFFIXES) else [stem + s for s in CONFIG_SUFFIXES]
    )
    config = next((configs / n for n in names if (configs / n).is_file()), None)
    if config is None:
        raise BundleError(f"bundle '{label}': no configs/{' or '.join(names)} in {folder}")
    metadata = configs / "metadata.json"
    candidates = [models / params.weights] if params.weights else [models / n for n in WEIGHT_NAMES]
    weights = next((p for p in candidates if p.is_file()), None)
    if weights is None and (models / "model.ts").is_file() and not params.weights:
        raise BundleRefused(
            f"bundle '{label}' refused: its only weights are models/model.ts, a TorchScript "
            "program, which vlm never loads; export the state dict to models/model.safetensors "
            "on a trusted machine"
        )
    if weights is None:
        looked = ", ".join(p.name for p in candidates)
        raise BundleError(f"bundle '{label}': no weights in {models} (looked for {looked})")
    for path in (config, metadata, weights):
        if path.exists() and not inside(path, folder):
            raise BundleRefused(f"bundle '{label}' refused: {path} resolves outside the bundle")
    return BundleFiles(folder, label, config, metadata if metadata.is_file() else None, weights)


# ---------------------------------------------------------------------------------------------
# Building the pipeline


@dataclass
class PreparedBundle:
    """A bundle's network and transforms, built once and kept in the core's model cache."""

    network: Any  # torch.nn.Module, on the run's device, in eval mode
    preprocessing: Any  # callable on {input_key: path}
    inferer: Any  # monai.inferers.Inferer
    postprocessing: Any | None
    channel_defs: Mapping[str, Mapping[str, str]]  # output key -> {"0": "background", ...}
    device: str

    def parameters(self) -> Any:  # the model cache sizes entries by these
        return self.network.parameters()

    def buffers(self) -> Any:
        return self.network.buffers()


def prepare(
    files: BundleFiles, checked: CheckedConfig, device: str, input_key: str
) -> PreparedBundle:
    """Load the weights safely, then build the checked config's pieces (see the module doc)."""
    from vlm_core.weights import WeightsError, load_state_dict
    from vlm_medical.bundle_safety import BundleError, BundleRefused

    try:
        state = load_state_dict(files.weights, plugin="medical")
    except WeightsError as exc:
        kind = BundleRefused if "refused" in exc.problem else BundleError
        raise kind(f"bundle '{files.label}' weights: {exc}") from None
    return _build_pipeline(files, checked, state, device, input_key)


def _build_pipeline(
    files: BundleFiles, checked: CheckedConfig, state: dict, device: str, input_key: str
) -> PreparedBundle:
    import torch
    from monai.bundle import ConfigParser
    from monai.inferers import SimpleInferer

    from vlm_core.weights import WeightsError, load_into
    from vlm_medical.bundle_safety import BundleError

    label = files.label
    parser = ConfigParser(config=checked.config, globals=checked.globals)
    key = next((k for k in NETWORK_KEYS if k in checked.config), None)
    if key is None:
        raise BundleError(
            f"bundle '{label}': its config defines neither 'network_def' nor 'network'"
        )
    network = _build(parser, key, label)
    if not isinstance(network, torch.nn.Module):
        raise BundleError(f"bundle '{label}': '{key}' is a {type(network).__name__}, not a network")
    try:  # strictly, through the core's one way of fitting weights to a network
        load_into(network, state, plugin="medical", source=files.weights)
    except WeightsError as exc:
        raise BundleError(f"bundle '{label}' ('{key}'): {exc.problem}") from None
    config = checked.config
    pre = _build(parser, "preprocessing", label) if "preprocessing" in config else None
    inferer = _build(parser, "inferer", label) if "inferer" in config else SimpleInferer()
    post = _build(parser, "postprocessing", label) if "postprocessing" in config else None
    network = network.to(device).eval()
    pre = pre if pre is not None else _default_preprocessing(input_key)
    defs = _channel_defs(config)
    return PreparedBundle(network, pre, inferer, post, defs, device)


def _default_preprocessing(key: str) -> Any:
    """Load, channel first, float: for a bundle without a ``preprocessing``."""
    import torch
    from monai.transforms import Compose, EnsureChannelFirstd, EnsureTyped, LoadImaged

    return Compose([
        LoadImaged(keys=key, image_only=True),
        EnsureChannelFirstd(keys=key),
        EnsureTyped(keys=key, dtype=torch.float32),
    ])  # fmt: skip


def _channel_defs(tree: dict) -> dict[str, Mapping[str, Any]]:
    """Output key -> ``channel_def`` from the metadata's ``network_data_format``."""
    meta = tree.get("_meta_")
    formats = meta.get("network_data_format") if isinstance(meta, dict) else None
    outputs = formats.get("outputs") if isinstance(formats, dict) else None
    if not isinstance(outputs, dict):
        return {}
    return {
        str(k): v["channel_def"]
        for k, v in outputs.items()
        if isinstance(v, dict) and isinstance(v.get("channel_def"), dict)
    }


def _build(parser: Any, key: str, label: str) -> Any:
    from vlm_medical.bundle_safety import BundleError

    try:
        return parser.get_parsed_content(key)
    except BundleError:
        raise
    except Exception as exc:  # whatever the bundle's own config raises
        cause = _innermost(exc)
        if isinstance(cause, BundleError):  # an argument rule refused a call (MONAI wraps it)
            raise cause from None
        raise BundleError(
            f"bundle '{label}': building '{key}' failed: {_root_cause(exc)}"
        ) from None


def _innermost(exc: BaseException) -> BaseException:
    seen = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    return seen


def _root_cause(exc: BaseException) -> str:
    from vlm_core.errors import describe_exception

    return describe_exception(_innermost(exc))


# ---------------------------------------------------------------------------------------------
# Running


def run(inputs: Sequence[Volume], params: BundleParams, ctx: RunContext) -> list[dict[str, Output]]:
    """Run the bundle ``params.bundle`` on each volume (see the module docstring)."""
    import hashlib
    import json

    from vlm_medical._quiet import quiet_monai

    quiet_monai()

    import torch

    from vlm_core.runtime import CacheKey, model_cache
    from vlm_core.weights import sha256_of
    from vlm_medical.bundle_check import check_config
    from vlm_medical.bundle_code import bundle_importable, check_code
    from vlm_medical.bundle_safety import BundleError, check_trusted, read_bundle_config

    folder, label = locate_bundle(params)
    why = check_trusted(folder, trust=params.trust, label=label)
    files = bundle_files(folder, label, params)
    packages = check_code(folder, trust_code=params.trust_code, label=label)
    tree = read_bundle_config(files.config, files.metadata, folder, label)
    digest = hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()
    device = ctx.device
    # the task's own settings: where the bundle is, which device runs it
    tree = {**tree, "bundle_root": str(folder.resolve()), "device": torch.device(device)}
    net_key = next((k for k in NETWORK_KEYS if k in tree), None)
    if net_key is None:
        raise BundleError(
            f"bundle '{label}': its config defines neither 'network_def' nor 'network'"
        )
    roots = [net_key, *(k for k in PIPELINE_KEYS if k in tree)]
    with bundle_importable(folder, packages):
        checked = check_config(tree, roots, label, packages)
        log = ctx.logger.warning if "trust=true" in why else ctx.logger.info
        log(
            "bundle '%s' (%s): %d config items checked against the allow-list%s%s",
            label,
            why,
            checked.checked,
            f"; result writers not built: {', '.join(checked.dropped)}" if checked.dropped else "",
            f"; its code is trusted ({', '.join(sorted(packages))})" if packages else "",
        )
        sha = sha256_of(files.weights)
        ctx.record_weights(f"bundle:{label}/{files.weights.name}", sha)
        name = f"{folder.resolve()}/configs/{files.config.name}#{digest[:16]}:{params.input_key}"
        key = CacheKey(
            model=f"medical.bundle:{name}",
            weights_sha256=sha,
            device=device,
            dtype="float32",
        )
        results = []
        build = partial(prepare, files, checked, device, params.input_key)
        with model_cache().lease(key, build) as ready:
            for i, volume in enumerate(inputs):
                results.append(infer(ready, volume, params, label))
                ctx.report((i + 1) / len(inputs), f"bundle '{label}': {i + 1} of {len(inputs)}")
    return results


def infer(ready: PreparedBundle, volume: Volume, params: BundleParams, label: str) -> dict:
    """One volume through the prepared bundle, as a mask (or volume) plus metrics."""
    import tempfile

    import numpy as np
    import torch
    from monai.data import decollate_batch, list_data_collate

    from vlm_core.export.volumes import write_nifti

    key, out_key = params.input_key, params.output_key
    with tempfile.TemporaryDirectory(prefix="vlm-bundle-input-") as tmp:
        # a fresh NIfTI of only the voxels and the affine: no header text reaches the bundle
        path = write_nifti(np.asarray(volume.array), volume.affine, Path(tmp) / "image.nii.gz")
        data = _apply(ready.preprocessing, {key: str(path)}, "preprocessing", label)
        if key not in data:
            raise _missing(label, "preprocessing", key, data)
        with _blame(label, "inference"), torch.no_grad():
            batch = list_data_collate([data])
            image = batch[key].to(ready.device)
            image = image if image.is_floating_point() else image.float()
            prediction = ready.inferer(image, ready.network)
            if not isinstance(prediction, torch.Tensor):
                raise _error(label, f"its network returned {type(prediction).__name__}")
            batch[out_key] = prediction
            item = decollate_batch(batch, detach=True)[0]
        if ready.postprocessing is not None:
            item = _apply(ready.postprocessing, item, "postprocessing", label)
    if out_key not in item:
        raise _missing(label, "postprocessing", out_key, item)
    array = _on_input_grid(item[out_key], volume, label, out_key)
    if params.output == "volume":
        return _volume_outputs(array, volume)
    names = ready.channel_defs.get(out_key, {})
    return _mask_outputs(array, volume, names, params.threshold, label)


@contextmanager
def _blame(label: str, stage: str) -> Iterator[None]:
    """Report what the bundle's own code raises as the bundle's fault (a user error), not as a
    crash of the plugin."""
    from vlm_medical.bundle_safety import BundleError

    try:
        yield
    except BundleError:
        raise
    except Exception as exc:  # whatever the bundle's transforms and network raise
        raise _error(label, f"its {stage} failed on this volume: {_root_cause(exc)}") from None


def _apply(transform: Any, data: Any, stage: str, label: str) -> dict:
    """``transform(data)``, which must give one data dictionary."""
    with _blame(label, stage):
        out = transform(data)
    if isinstance(out, list | tuple) and len(out) == 1:
        out = out[0]
    if not isinstance(out, dict):
        raise _error(label, f"its {stage} gave {type(out).__name__}, not one data dictionary")
    return out


def _error(label: str, problem: str) -> Exception:
    from vlm_medical.bundle_safety import BundleError

    return BundleError(f"bundle '{label}': {problem}")


def _missing(label: str, stage: str, key: str, data: Mapping) -> Exception:
    keys = ", ".join(sorted(map(str, data))[:8])
    return _error(
        label, f"after its {stage} there is no '{key}' (found {keys}); set input_key/output_key"
    )


def _on_input_grid(result: Any, volume: Volume, label: str, key: str) -> np.ndarray:
    """``result`` as a (C, i, j, k) array, checked to lie on the input's voxel grid."""
    import numpy as np
    import torch

    affine = getattr(result, "affine", None)
    if isinstance(result, torch.Tensor):
        plain = result.as_tensor() if hasattr(result, "as_tensor") else result  # drop MetaTensor
        array = plain.detach().cpu().numpy()
    else:
        array = np.asarray(result)
    if array.ndim == 3:
        array = array[None]
    spatial = tuple(volume.array.shape[:3])
    if array.ndim != 4 or tuple(array.shape[1:]) != spatial:
        raise _error(
            label,
            f"its output '{key}' has shape {tuple(array.shape)}, not (channels, *{spatial}) of "
            "the input; its postprocessing must restore the input grid (MONAI Invertd)",
        )
    if affine is not None:
        found = np.asarray(affine.detach().cpu() if hasattr(affine, "detach") else affine)
        if found.shape == (4, 4) and not np.allclose(found, volume.affine, rtol=1e-4, atol=1e-3):
            raise _error(
                label,
                f"its output '{key}' lies on another grid than the input (its affine differs); "
                "its postprocessing must restore the input grid (MONAI Invertd)",
            )
    return array


def _mask_outputs(
    array: np.ndarray, volume: Volume, channel_def: Mapping[str, str], threshold: float, label: str
) -> dict:
    import numpy as np

    from vlm_core.types import Mask, Metrics

    if array.shape[0] > 1:
        labels = np.argmax(array, axis=0)
    else:
        x = array[0]
        integral = x.dtype == bool or np.issubdtype(x.dtype, np.integer)
        if integral or (
            np.all(np.isfinite(x)) and np.all(x == np.round(x)) and x.min(initial=0) >= 0
        ):
            labels = np.round(x).astype(np.int64)
        else:
            labels = x > threshold
    labels = np.asarray(labels, dtype=np.int64)
    top = int(labels.max(initial=0))
    if labels.min(initial=0) < 0 or top >= 65536:
        raise _error(label, f"its output holds labels outside 0..65535 (up to {top})")
    names = class_names(channel_def, top)
    labels = labels.astype(np.uint8 if len(names) <= 256 else np.int32)
    voxel_ml = abs(float(np.linalg.det(volume.affine[:3, :3]))) / 1000.0
    counts = np.bincount(labels.ravel(), minlength=len(names))
    per_class = {
        names[v]: {"voxels": float(counts[v]), "volume_ml": float(counts[v]) * voxel_ml}
        for v in range(1, len(names))
    }
    foreground = float(counts[1:].sum())
    values = {
        "foreground_voxels": foreground,
        "foreground_ml": foreground * voxel_ml,
        "foreground_fraction": foreground / max(labels.size, 1),
    }
    mask = Mask(labels, class_names=names, affine=np.array(volume.affine, dtype=np.float64))
    return {"mask": mask, "stats": Metrics(values, per_class)}


def _volume_outputs(array: np.ndarray, volume: Volume) -> dict:
    import numpy as np

    from vlm_core.types import Metrics, Volume

    data = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    data = np.ascontiguousarray(data, dtype=np.float32)
    out = Volume(array=data, affine=np.array(volume.affine, dtype=np.float64), name=volume.name)
    stats = {"min": float(data.min()), "max": float(data.max()), "mean": float(data.mean())}
    return {"volume": out, "stats": Metrics(stats)}


def class_names(channel_def: Mapping[str, Any], top: int) -> tuple[str, ...]:
    """Names for labels 0..max(top, defined), from a bundle's ``channel_def``, reduced to plain
    words (letters, digits, spaces and ``_-.,()+/``, 48 characters) so that no free text of
    the bundle reaches an output."""
    defined = {int(k): v for k, v in channel_def.items() if str(k).isdigit() and int(k) < 1024}
    size = max([top, *defined]) + 1
    names = ["background"] + [f"class {i}" for i in range(1, size)]
    for index, raw in defined.items():
        clean = re.sub(r"[^\w .,()+/-]", "", str(raw)).strip()[:48]
        if clean and clean not in names:
            names[index] = clean
    return tuple(names)
