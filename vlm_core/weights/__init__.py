"""Weights: name them, find or fetch them, verify them, load them without running their code.

A reference is a local path, a URL, ``hf-hub:org/repo[/file][@revision]``, ``timm:arch.tag``,
``open_clip:ARCH/tag`` or ``torchvision:Enum.MEMBER`` (see :mod:`vlm_core.weights.refs`), or a
task's :class:`~vlm_core.tasks.WeightsRef`::

    from vlm_core.weights import load_state_dict, resolve

    path = resolve("timm:resnet18.a1_in1k", plugin="driving")
    state = load_state_dict(path)

A task's trained network is loaded through one path, :func:`load_model` (resolve, verify,
build from the plugin's :class:`ModelRecipe`, load, place, cache); see
:mod:`vlm_core.weights.model`.

Importing this package does not import torch (the loader imports it on first use).
"""

from vlm_core.weights.archive import default_max_bytes, safe_extract
from vlm_core.weights.download import OFFLINE_FLAGS, offline_reason
from vlm_core.weights.errors import (
    ChecksumError,
    WeightsError,
    WeightsRequestError,
    requested,
)
from vlm_core.weights.hashing import check_sha256, sha256_of
from vlm_core.weights.load import (
    allowed_globals,
    check_safetensors_header,
    load_into,
    load_state_dict,
)
from vlm_core.weights.model import LoadedModel, ModelRecipe, load_model
from vlm_core.weights.refs import WeightsSource, normalize_sha256, parse_ref, source_of
from vlm_core.weights.resolve import HubFile, UrlFile, locate, locations, resolve
from vlm_core.weights.store import StoreEntry, find_in_store, import_file, list_store, store_dir

__all__ = [
    "OFFLINE_FLAGS",
    "ChecksumError",
    "HubFile",
    "LoadedModel",
    "ModelRecipe",
    "StoreEntry",
    "UrlFile",
    "WeightsError",
    "WeightsRequestError",
    "WeightsSource",
    "allowed_globals",
    "check_safetensors_header",
    "check_sha256",
    "default_max_bytes",
    "find_in_store",
    "import_file",
    "list_store",
    "load_into",
    "load_model",
    "load_state_dict",
    "locate",
    "locations",
    "normalize_sha256",
    "offline_reason",
    "parse_ref",
    "requested",
    "resolve",
    "safe_extract",
    "sha256_of",
    "source_of",
    "store_dir",
]
