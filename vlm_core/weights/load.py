"""Loading a state dict without ever running code from the file.

``.safetensors`` files are read with safetensors (no code, just a JSON header and raw
tensors). Pickle-based checkpoints (``.pt``, ``.pth``, ``.bin``, ``.ckpt``) are read only with
``torch.load(weights_only=True)``, whose unpickler builds tensors, containers and primitive
values and refuses every other global, plus the short allow-list in :func:`allowed_globals`.
There is no fallback: a checkpoint that needs anything else is refused with a message saying
how to convert it on a trusted machine.

torch is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlm_core.weights.errors import WeightsError
from vlm_core.weights.hashing import check_sha256
from vlm_core.weights.refs import normalize_sha256

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES: tuple[str, ...] = (".safetensors",)
#: The largest safetensors header vlm parses, in bytes (8 MiB). An entry takes about 100 bytes
#: (name, dtype, shape, offsets), so this is some 80,000 tensors; a single checkpoint file
#: holds a few thousand at most (one shard of a 70B model: under 1,000 in about 100 KB).
#: safetensors itself parses up to 100 MB, which costs tens of seconds and gigabytes.
MAX_SAFETENSORS_HEADER = 8 * 1024**2
#: A header over this size (1 MiB: ~10,000 tensors) must not be larger than the tensor data it
#: describes: a real checkpoint's entries describe far more bytes than they take.
SAFETENSORS_HEADER_FLOOR = 1024**2
PICKLE_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".bin", ".ckpt")
#: Keys under which training scripts nest the state dict, tried in this order.
WRAPPER_KEYS: tuple[str, ...] = ("state_dict", "model_state_dict", "model", "module")

_CONVERT_HINT = (
    "if you trust its source, convert it once on a trusted machine: load it there with "
    "torch.load(..., weights_only=False) and save its state dict with "
    "safetensors.torch.save_file, then use the .safetensors file"
)


def allowed_globals() -> list[Any]:
    """Globals beyond torch's own ``weights_only`` set that a checkpoint may reference.

    Each only stores data when unpickled: ``argparse.Namespace`` (the training arguments that
    timm and fairseq checkpoints carry) and numpy scalars and dtypes (metrics logged as numpy
    values), under both the numpy 1 and numpy 2 module names.
    """
    import argparse

    allowed: list[Any] = [argparse.Namespace]
    try:
        import numpy as np
    except ImportError:
        return allowed
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    allowed += [
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
    ]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25
    names = [
        f"{kind}DType"
        for kind in ("Float64", "Float32", "Float16", "Int64", "Int32", "Int8", "UInt8", "Bool")
    ]
    allowed += [getattr(dtypes, n) for n in names if hasattr(dtypes, n)]
    return allowed


def load_state_dict(
    path: Path, *, sha256: str | None = None, plugin: str = "core"
) -> dict[str, torch.Tensor]:
    """Load a state dict (parameter name to CPU tensor) from a weights file.

    Args:
        path: a ``.safetensors`` file, or a ``.pt``/``.pth``/``.bin``/``.ckpt`` checkpoint.
        sha256: the expected sha256 of the file (64 hex digits); checked before reading.
            None skips the check.
        plugin: named in error messages.

    Returns:
        The tensors, on the CPU. A checkpoint that nests them under ``state_dict``,
        ``model_state_dict``, ``model`` or ``module`` is unwrapped (only when that entry holds
        tensors), and a ``module.`` prefix left by DistributedDataParallel on every key is
        removed.

    Raises:
        WeightsError: the file is missing, has the wrong sha256, is corrupt, has an unsupported
            suffix, needs a global outside the allow-list (never unpickled), or holds no
            state dict.
    """
    path = Path(path)
    expected = normalize_sha256(sha256, plugin=plugin, filename=path.name)
    if not path.is_file():
        raise WeightsError(
            f"no such file: {path}", plugin=plugin, filename=path.name, sha256=expected
        )
    suffix = path.suffix.lower()
    if suffix not in SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES:
        raise WeightsError(
            f"unsupported weights format '{suffix or path.name}': vlm loads "
            + ", ".join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES),
            plugin=plugin,
            filename=path.name,
            hint="convert it to .safetensors",
        )
    check_sha256(path, expected, plugin=plugin)
    if suffix in SAFETENSORS_SUFFIXES:
        loaded: Any = _load_safetensors(path, plugin)
    else:
        loaded = _load_pickle(path, plugin)
    return _as_state_dict(loaded, path, plugin)


def check_safetensors_header(path: Path, *, plugin: str = "core") -> None:
    """Refuse a ``.safetensors`` file from its first bytes, before its header is parsed: the
    8-byte header length must fit in the file, be at most :data:`MAX_SAFETENSORS_HEADER`, not
    exceed the tensor data once over :data:`SAFETENSORS_HEADER_FLOOR`, and the header must
    open with ``{``.

    Raises:
        WeightsError: naming the file and which of these it breaks.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(9)
    length = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    data = size - 8 - length
    if length < 0:
        problem = f"it is {size} bytes, too short for a header"
    elif data < 0:
        problem = (
            f"its header length field says {length} bytes but only {size - 8} follow "
            "(truncated, or not a safetensors file)"
        )
    elif length > MAX_SAFETENSORS_HEADER:
        problem = (
            f"its header is {length} bytes, over the {MAX_SAFETENSORS_HEADER} bytes vlm parses "
            "(about 80,000 tensors)"
        )
    elif length > SAFETENSORS_HEADER_FLOOR and length > data:
        problem = (
            f"its header of {length} bytes describes only {data} bytes of tensor data "
            "(not a model's weights)"
        )
    elif head[8:9] != b"{":
        problem = "its header is not a JSON object"
    else:
        return
    raise WeightsError(
        f"{path} is not a valid safetensors file: {problem}",
        plugin=plugin,
        filename=path.name,
        hint="the file is truncated, corrupt or not weights; fetch or import it again",
    )


def _load_safetensors(path: Path, plugin: str) -> dict[str, torch.Tensor]:
    check_safetensors_header(path, plugin=plugin)  # before torch is even imported
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(
            f"{path} is not a valid safetensors file ({exc})",
            plugin=plugin,
            filename=path.name,
            hint="the file is truncated or corrupt; delete it and fetch or import it again",
        ) from None


def _load_pickle(path: Path, plugin: str) -> Any:
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(allowed_globals()):
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"refused to unpickle {path}: {_refusal_reason(str(exc))}; vlm loads pickles only "
            "with torch.load(weights_only=True) and never falls back to unsafe loading",
            plugin=plugin,
            filename=path.name,
            hint=_CONVERT_HINT,
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        if "TorchScript" in str(exc):
            raise WeightsError(
                f"refused to load {path}: it is a TorchScript archive (a program, not just "
                "weights), which vlm never loads",
                plugin=plugin,
                filename=path.name,
                hint=_CONVERT_HINT.replace("torch.load(..., weights_only=False)", "torch.jit.load"),
            ) from None
        first = str(exc).strip().splitlines()
        raise WeightsError(
            f"{path} is not a readable PyTorch checkpoint ({first[0] if first else exc!r})",
            plugin=plugin,
            filename=path.name,
            hint="the file is truncated or corrupt; delete it and fetch or import it again",
        ) from None


def _refusal_reason(message: str) -> str:
    """The part of torch's weights-only refusal that says what the file asked for."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message) or re.search(
        r"unsupported GLOBAL ([\w.]+)",
        message,  # torch >= 2.10: "... whose module X is blocked"
    )
    if found:
        return f"it needs '{found.group(1)}', which is not on the allow-list of safe globals"
    found = re.search(r"WeightsUnpickler error:\s*(.+)", message)
    detail = found.group(1).strip() if found else "a construct the safe unpickler refuses"
    return f"the safe unpickler stopped at: {detail[:200]}"


def _holds_tensors(value: Any, depth: int = 2) -> bool:
    """True when ``value`` is a mapping with a tensor in it, at most ``depth`` levels down."""
    import torch

    if not isinstance(value, Mapping):
        return False
    return any(
        isinstance(v, torch.Tensor) or (depth > 0 and _holds_tensors(v, depth - 1))
        for v in value.values()
    )


def _as_state_dict(loaded: Any, path: Path, plugin: str) -> dict[str, torch.Tensor]:
    import torch

    current = loaded
    for _ in range(3):  # {"model": {"state_dict": {...}}} at most
        if not isinstance(current, Mapping):
            break
        if all(isinstance(v, torch.Tensor) for v in current.values()) and current:
            break
        inner = next((current[k] for k in WRAPPER_KEYS if _holds_tensors(current.get(k))), None)
        if inner is None:
            break
        current = inner
    if not isinstance(current, Mapping) or not current:
        kind = type(loaded).__name__
        raise WeightsError(
            f"{path} holds a {kind}, not a state dict of tensors",
            plugin=plugin,
            filename=path.name,
            hint="save `model.state_dict()` (best as .safetensors)",
        )
    bad = [str(k) for k, v in current.items() if not isinstance(v, torch.Tensor)]
    if bad:
        keys = ", ".join(repr(k) for k in sorted(current, key=str)[:8])
        raise WeightsError(
            f"{path} holds no plain state dict: entries {bad[:5]} are not tensors "
            f"(top-level keys: {keys})",
            plugin=plugin,
            filename=path.name,
            hint="save `model.state_dict()` (best as .safetensors)",
        )
    state = {str(k): v for k, v in current.items()}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    log.debug("loaded %d tensors from %s", len(state), path)
    return state


def load_into(
    module: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    plugin: str = "core",
    source: Path | str | None = None,
) -> None:
    """``module.load_state_dict(state)`` (strict), with weights made for another network
    reported as a :class:`WeightsError` naming ``source`` and the first mismatch.

    Inside :func:`vlm_core.weights.requested` that error is the request's (exit 2).
    """
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)
        if len(detail) > 200:
            detail = detail[:197] + "..."
        name = Path(source).name if source else None
        raise WeightsError(
            f"{source or 'the weights'} do not fit the {type(module).__name__} network: {detail}",
            plugin=plugin,
            filename=name,
            hint="give weights trained for this task and architecture",
        ) from None
