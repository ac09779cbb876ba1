"""What a MONAI bundle's config may build and call: a named allow-list.

A bundle config names Python objects in two ways: ``_target_`` (a class or function MONAI
calls with the component's arguments) and ``$`` expressions (Python that MONAI evaluates).
Both may only reach the objects listed here, compared by identity after resolving the name
the way MONAI does, so an alias (``torch.os.system``) is the object it names:

* **networks** from ``monai.networks.nets``, **transforms** from ``monai.transforms`` that
  compute on data in memory, **inferers** from ``monai.inferers``, the image **readers** that
  cannot unpickle, and a few **functions and constants** of torch, NumPy, ``os.path``,
  ``math``, ``copy`` and ``functools`` that MONAI's own zoo configs use;
* the **builtins** in :data:`BUILTINS`, which are also all the builtins a ``$`` expression
  sees at run time;
* **attribute names** on values (references, call results, lambda arguments): only those in
  :data:`METHODS`, such as ``to`` and ``eval`` (``$@network_def.to(@device)``).

Nothing is allowed by package: a transform that writes files (``SaveImage``), reads pickles
(``NumpyReader``), logs to files (``DataStats``) or looks callables up by name (``TorchVision``)
is simply not listed. Two entries carry argument rules, checked on the config before anything
runs and again on every call (:class:`Checked`): the image loaders accept only the readers in
:data:`READERS` and the arguments in :data:`LOADER_ARGS` (so never ``allow_pickle``), and a
network never fetches its own weights (``pretrained``/``pretrained_url`` stay off).

:data:`WRITER_STEPS` are MONAI's result writers; they are not on the list, but a zoo config
ends its ``postprocessing`` with one, so :mod:`vlm_medical.bundle_check` leaves such a step
out of the pipeline (unbuilt) instead of refusing the bundle. Anywhere else they are refused.

Imported when a bundle is checked (it imports torch and MONAI), never when tasks are listed.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


#: MONAI networks (``monai.networks.nets``).
NETWORKS = _words("""
    AHNet AttentionUnet AutoEncoder AutoencoderKL BasicUNet BasicUNetPlusPlus Classifier Critic
    DenseNet DenseNet121 DenseNet169 DenseNet201 DenseNet264 DiNTS DiffusionModelUNet
    Discriminator DynUNet EfficientNetBN FlexibleUNet FullyConnectedNet Generator GlobalNet
    HighResNet HoVerNet LocalNet MedNeXt MedNeXtS MedNeXtB MedNeXtM MedNeXtL RegUNet Regressor
    ResNet resnet10 resnet18 resnet34 resnet50 resnet101 resnet152 resnet200 SegResNet
    SegResNetDS SegResNetDS2 SegResNetVAE SENet154 SEResNet50 SEResNet101 SEResNet152
    SEResNext50 SEResNext101 SwinUNETR TopologyInstance UNet UNETR VarAutoEncoder
    VarFullyConnectedNet ViT ViTAutoEnc VISTA3D vista3d132 VNet VoxelMorph VoxelMorphUNet VQVAE
""")
#: Transforms (``monai.transforms``) with an array and a dictionary form (``Spacing``,
#: ``Spacingd``); each works on the data it is given and touches no file.
TRANSFORMS = _words("""
    Activations AddCoordinateChannels AddExtremePointsChannel Affine AsChannelLast AsDiscrete
    BorderPad CastToType CenterScaleCrop CenterSpatialCrop ClassesToIndices
    ClipIntensityPercentiles ConvertToMultiChannelBasedOnBratsClasses CropForeground
    DistanceTransformEDT DivisiblePad EnsureChannelFirst EnsureType FgBgToIndices FillHoles Flip
    ForegroundMask GaussianSharpen GaussianSmooth HistogramNormalize Identity ImageFilter Invert
    KeepLargestConnectedComponent LabelFilter LabelToContour LabelToMask Lambda MapLabelValue
    MaskIntensity MeanEnsemble MedianSmooth NormalizeIntensity Orientation ProbNMS RandAffine
    RandFlip RandRotate RandRotate90 RandZoom RemoveRepeatedChannel RemoveSmallObjects
    RepeatChannel ResampleToMatch Resize ResizeWithPadOrCrop Rotate Rotate90 SavitzkyGolaySmooth
    ScaleIntensity ScaleIntensityRange ScaleIntensityRangePercentiles ShiftIntensity
    SobelGradients Spacing SpatialCrop SpatialPad SpatialResample SplitDim SqueezeDim
    StdShiftIntensity ThresholdIntensity ToDevice ToNumpy ToTensor Transpose VoteEnsemble Zoom
""")
#: Transforms with one form only: the compositions and dictionary-only helpers.
TRANSFORMS_ONE_FORM = _words("""
    Compose OneOf RandomOrder SomeOf ConcatItemsd CopyItemsd DeleteItemsd FlattenSubKeysd
    FromMetaTensord ScaleIntensityFixedMean SelectItemsd ToMetaTensord
""")
#: The image loaders; their arguments are checked (:func:`loader_rule`).
LOADERS = _words("LoadImage LoadImaged")
#: Inferers (``monai.inferers``): how a network is applied, not what it computes.
INFERERS = _words("SimpleInferer SlidingWindowInferer SlidingWindowInfererAdapt SliceInferer")
#: Image readers (``monai.data``) that parse image formats and never unpickle.
READERS = _words("ITKReader NibabelReader PILReader PydicomReader")
#: Functions and constants of other modules, by dotted name.
FUNCTIONS = _words("""
    torch.device torch.cuda.is_available torch.cuda.device_count torch.tensor torch.as_tensor
    torch.from_numpy torch.zeros torch.ones torch.zeros_like torch.ones_like torch.full
    torch.arange torch.linspace torch.cat torch.stack torch.where torch.nan_to_num torch.clamp
    torch.argmax torch.softmax torch.sigmoid torch.nn.Identity torch.nn.Sequential
    torch.nn.Softmax torch.nn.Sigmoid torch.nn.ReLU
    numpy.array numpy.asarray numpy.arange numpy.linspace numpy.zeros numpy.ones numpy.where
    numpy.clip numpy.argmax numpy.stack numpy.concatenate
    monai.utils.ensure_tuple monai.utils.ensure_tuple_rep monai.networks.one_hot
    os.path.join os.path.basename os.path.dirname os.path.splitext os.path.normpath
    math.ceil math.floor math.sqrt math.log math.log2 math.exp math.prod
    copy.copy copy.deepcopy functools.partial
""")
#: Builtins a config may call or name (also the whole ``__builtins__`` of its expressions).
BUILTINS = frozenset(
    _words("""
    abs all any bool dict divmod enumerate filter float frozenset int isinstance len list map
    max min pow range reversed round set slice sorted str sum tuple zip
""")
)
#: Attribute names a ``$`` expression may use on values: references, call results, arguments.
METHODS = frozenset(
    _words("""
    to cpu cuda eval train float half double bfloat16 int long bool forward parameters
    shape dtype device ndim size numel squeeze unsqueeze permute transpose reshape view flatten
    clone detach contiguous astype item tolist numpy as_tensor affine meta T
    sum mean max min argmax argmin softmax sigmoid clamp clip abs round exp log sqrt
    keys values items index count lower upper strip split startswith endswith
    convert set_timesteps
""")
)
#: Modules a ``$import`` may bring in (with their submodules for the first three).
IMPORT_ROOTS = frozenset({"monai", "torch", "numpy"})
IMPORT_STDLIB = frozenset({"os", "os.path", "math", "copy", "functools"})
#: MONAI's result writers: left out unbuilt as a step of a pipeline, refused anywhere else.
WRITER_STEPS = _words("SaveImage SaveImaged SaveClassificationd")
#: Arguments a loader accepts: its own, and reader settings that only change how a format
#: is parsed (so never NumpyReader's ``allow_pickle``, which the loader would pass on).
LOADER_ARGS = frozenset(
    _words("""
    keys reader dtype meta_keys meta_key_postfix overwriting image_only ensure_channel_first
    simple_keys prune_meta_pattern prune_meta_sep allow_missing_keys expanduser
    channel_dim as_closest_canonical squeeze_non_spatial_dims reverse_indexing series_name
    series_meta affine_lps_to_ras converter
""")
)
#: Network arguments that make it download weights when set.
FETCH_ARGS = ("pretrained", "pretrained_url")

#: An argument whose value is not known before the config runs.
UNKNOWN: Any = type("Unknown", (), {"__repr__": lambda self: "<unknown>"})()
#: A rule: the problem with a call's arguments (names as the callee sees them), or None.
Rule = Callable[[Mapping[str, Any]], "str | None"]


@dataclass(frozen=True)
class Entry:
    """One allowed object."""

    obj: Any
    name: str  # the public dotted name it is listed under
    rule: Rule | None = None


class Checked:
    """An allowed callable with an argument rule, checked again on every call.

    It stands in for the callable wherever a bundle can reach it (``_target_`` and ``$``
    names), so arguments that only exist at run time (``"reader": "@my_reader"``) are checked
    too. A call that breaks the rule raises :class:`~vlm_medical.bundle_safety.BundleRefused`
    before the callable runs.
    """

    __slots__ = ("entry", "where")

    def __init__(self, entry: Entry, where: str) -> None:
        self.entry = entry
        self.where = where  # "bundle 'x' refused: config key 'k'"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from vlm_medical.bundle_safety import BundleRefused

        rule = self.entry.rule
        problem = rule(bound_arguments(self.entry.obj, args, kwargs)) if rule else None
        if problem:
            raise BundleRefused(f"{self.where} calls {self.entry.name} {problem} (see BUNDLE.md)")
        return self.entry.obj(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Checked({self.entry.name})"

    def __deepcopy__(self, memo: dict) -> Checked:
        return self


def bound_arguments(obj: Any, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` and ``kwargs`` by the parameter names of ``obj``; extra keyword arguments
    (``**kwargs``) are flattened in, extra positional ones appear under ``"*args"``."""
    try:
        signature = inspect.signature(obj)
        bound = signature.bind_partial(*args, **kwargs)
    except (TypeError, ValueError):
        return {**{f"#{i}": a for i, a in enumerate(args)}, **kwargs}
    found: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            found.update(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                found["*args"] = value
        else:
            found[name] = value
    return found


# ---------------------------------------------------------------------------------------------
# Rules


def loader_rule(arguments: Mapping[str, Any]) -> str | None:
    """LoadImage(d): only the readers in :data:`READERS`, only the arguments in
    :data:`LOADER_ARGS` (MONAI passes the others to every reader, NumpyReader included)."""
    for name in arguments:
        if name not in LOADER_ARGS:
            return (
                f"with '{name}', which is not an allowed loader argument (only reader "
                "settings that cannot unpickle are)"
            )
    reader = arguments.get("reader")
    for one in reader if isinstance(reader, list | tuple) else [reader]:
        if not _allowed_reader(one):
            shown = one if isinstance(one, str) else getattr(one, "__name__", type(one).__name__)
            return (
                f"with the reader '{shown}'; only {', '.join(READERS)} are allowed (they "
                "cannot unpickle)"
            )
    return None


def _allowed_reader(reader: Any) -> bool:
    if reader is None or reader is UNKNOWN:
        return True
    classes = reader_classes()
    if isinstance(reader, str):
        return reader in READERS or reader in {f"monai.data.{n}" for n in READERS}
    if isinstance(reader, type):
        return reader in classes
    return type(reader) in classes


def fetch_rule(obj: Any, name: str) -> Rule | None:
    """A network with a ``pretrained``-like argument: it must be off, given or by default."""
    try:
        parameters = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return None
    defaults = {p: parameters[p].default for p in FETCH_ARGS if p in parameters}
    if not defaults:
        return None

    def rule(arguments: Mapping[str, Any]) -> str | None:
        for arg, default in defaults.items():
            value = arguments.get(arg, default)
            if value is not UNKNOWN and value not in (False, None, "", 0):
                how = "with" if arg in arguments else "leaving at its default"
                return (
                    f"{how} {arg}={value!r}, which makes it fetch weights by itself; set it "
                    "to false (the bundle's models/ file is loaded instead)"
                )
        return None

    return rule


# ---------------------------------------------------------------------------------------------
# The table


@cache
def entries() -> dict[int, Entry]:
    """Every allowed object, by ``id()`` (the objects are module-level, so ids are stable)."""
    import monai.data
    import monai.inferers
    import monai.networks.nets
    import monai.transforms

    table: dict[int, Entry] = {}

    def add(module: ModuleType, names: Iterable[str], rule: Rule | None = None) -> None:
        for name in names:
            obj = getattr(module, name)
            dotted = f"{module.__name__}.{name}"
            table[id(obj)] = Entry(obj, dotted, rule or fetch_rule(obj, dotted))

    add(monai.networks.nets, NETWORKS)
    add(monai.transforms, TRANSFORMS)
    add(monai.transforms, [f"{n}d" for n in TRANSFORMS])
    add(monai.transforms, TRANSFORMS_ONE_FORM)
    add(monai.transforms, LOADERS, loader_rule)
    add(monai.inferers, INFERERS)
    add(monai.data, READERS)
    for dotted in FUNCTIONS:
        module, _, name = dotted.rpartition(".")
        add(importlib.import_module(module), [name])
    add(builtins, sorted(BUILTINS))
    return table


@cache
def short_names() -> dict[str, Any]:
    """``_target_`` names without a module, as MONAI's component table has them (``UNet``,
    ``Unet``, ``LoadImaged``, ``LoadImageD``), for the allowed objects and the writers."""
    import monai.data
    import monai.inferers
    import monai.networks.nets
    import monai.transforms

    wanted = {id(o) for o in writer_steps()} | set(entries())
    names: dict[str, Any] = {}
    for module in (monai.networks.nets, monai.transforms, monai.inferers, monai.data):
        for name, obj in vars(module).items():
            if not name.startswith("_") and id(obj) in wanted:
                names.setdefault(name, obj)
    for name in BUILTINS:
        names[name] = getattr(builtins, name)
    return names


@cache
def writer_steps() -> tuple[Any, ...]:
    import monai.transforms

    return tuple(getattr(monai.transforms, n) for n in WRITER_STEPS)


@cache
def reader_classes() -> tuple[type, ...]:
    import monai.data

    return tuple(getattr(monai.data, n) for n in READERS)


def entry(obj: Any) -> Entry | None:
    """The allow-list entry of ``obj``, if it is on the list."""
    found = entries().get(id(obj))
    return found if found is not None and found.obj is obj else None


def is_inert(obj: Any) -> bool:
    """Plain data that can be named freely: numbers, text, dtypes, devices, NumPy scalar types
    (``torch.float32``, ``np.pi``, ``monai.utils.CommonKeys.IMAGE``)."""
    import numpy
    import torch

    if obj is None or isinstance(obj, bool | int | float | complex | str | bytes):
        return True
    if isinstance(obj, torch.dtype | torch.device | numpy.dtype):
        return True
    return isinstance(obj, type) and issubclass(obj, numpy.generic)
