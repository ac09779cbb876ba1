"""Where a MONAI bundle may come from, and reading its config without running any of it.

A MONAI bundle config is a program: ``$`` strings are Python expressions passed to ``eval``,
``_target_`` names any importable callable, ``%`` copies content from other files and
``$import x`` imports modules. Three modules decide what of it may happen:

* **trust** (here, :func:`check_trusted`): a bundle folder must lie under a trusted root (the
  plugin's bundled samples, MONAI's bundle cache that :func:`monai.bundle.download` fills from
  the model zoo, the folders in ``VLM_TRUSTED_BUNDLES`` or in ``trusted-bundles.txt`` in the
  vlm config folder) unless the operator passes ``trust=true`` for that run. Trust decides
  which bundles may be *built*, never what they may *do*;
* **reading** (here, :func:`read_bundle_config`): JSON/YAML with safe loaders, ``%`` macros
  expanded from files that must resolve inside the bundle folder (so that MONAI never opens
  another file), and caps on size and entries;
* **the allow-list** (:mod:`vlm_medical.bundle_check` with
  :mod:`vlm_medical.bundle_allowlist`), the same for every bundle, trusted or not; and
  :mod:`vlm_medical.bundle_code` for bundles that ship Python code (``trust_code``).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from vlm_core.errors import UsageError

MAX_CONFIG_BYTES = 8 * 1024**2
MAX_CONFIG_NODES = 200_000
MAX_MACRO_DEPTH = 8
TRUST_FILE = "trusted-bundles.txt"
TRUST_ENV = "VLM_TRUSTED_BUNDLES"


class BundleError(UsageError):
    """A bundle cannot be used: missing files, a config that fails, an unreachable zoo."""


class BundleRefused(BundleError):
    """A bundle is refused: untrusted location, or config or weights reaching unsafe code.

    Nothing from the bundle has been evaluated, instantiated or unpickled when it is raised.
    """


# ---------------------------------------------------------------------------------------------
# Trust


def trusted_roots() -> list[tuple[Path, str]]:
    """Folders whose bundles run without ``trust=true``, each with where it comes from."""
    import torch.hub

    from vlm_core.config import settings
    from vlm_core.tasks import package_file

    roots = [
        (package_file("vlm_medical", "samples"), "the plugin's bundled samples"),
        (Path(torch.hub.get_dir()) / "bundle", "the MONAI bundle cache"),
    ]
    for entry in os.environ.get(TRUST_ENV, "").split(os.pathsep):
        if entry.strip():
            roots.append((Path(entry.strip()).expanduser(), TRUST_ENV))
    listing = settings().config_dir / TRUST_FILE
    try:
        lines = listing.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = []
    except OSError as exc:
        raise BundleError(f"cannot read the trusted-bundle list {listing}: {exc}") from None
    for line in lines:
        entry = line.split("#", 1)[0].strip()
        if entry:
            roots.append((listing.parent / Path(entry).expanduser(), str(listing)))
    return [(root.resolve(), where) for root, where in roots]


def check_trusted(folder: Path, *, trust: bool, label: str) -> str:
    """Say why ``folder`` may run (``"trusted: ..."``) or raise :class:`BundleRefused`.

    The caller logs the reason once the bundle has passed its other checks, so that a refusal
    stays one line."""
    real = folder.resolve()
    for root, where in trusted_roots():
        if real == root or root in real.parents:
            return f"trusted: under {root} ({where})"
    if trust:
        return f"{real} is not under a trusted folder; trusted by the operator (trust=true)"
    raise BundleRefused(
        f"bundle '{label}' refused: {real} is not under a trusted bundle folder (the plugin's "
        f"samples, the MONAI bundle cache, {TRUST_ENV} or {TRUST_FILE} in the vlm config "
        f"folder); add its folder to {TRUST_ENV} or pass trust=true if you trust its source"
    )


def inside(path: Path, root: Path) -> bool:
    """True when ``path`` (symlinks followed) lies inside ``root``."""
    real, base = path.resolve(), root.resolve()
    return real == base or base in real.parents


# ---------------------------------------------------------------------------------------------
# Reading the config: safe loaders and macro expansion


def load_config_file(path: Path, root: Path, label: str) -> Any:
    """A JSON or YAML file of the bundle, read without constructing any Python object."""
    if not inside(path, root):
        raise BundleRefused(f"bundle '{label}' refused: {path} resolves outside the bundle folder")
    if not path.is_file():
        raise BundleError(f"bundle '{label}': no such config file {path}")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise BundleRefused(
            f"bundle '{label}' refused: {path.name} is larger than {MAX_CONFIG_BYTES} bytes"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BundleError(f"bundle '{label}': {path.name} is not UTF-8 text") from None
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except ValueError as exc:  # json.JSONDecodeError
        raise BundleError(f"bundle '{label}': {path.name} is not valid JSON ({exc})") from None
    except RecursionError:
        raise BundleRefused(
            f"bundle '{label}' refused: {path.name} nests too deeply to be checked"
        ) from None
    except Exception as exc:  # yaml.YAMLError and its constructor errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"bundle '{label}': {path.name} is not valid YAML ({first})") from None


def read_bundle_config(config: Path, metadata: Path | None, root: Path, label: str) -> dict:
    """The config as MONAI would see it (metadata under ``_meta_``), ``%`` macros expanded.

    Macros may only name ``.json``/``.yaml``/``.yml`` files inside ``root`` (relative paths are
    looked up from the bundle folder, then from its ``configs`` folder); they are expanded
    recursively, up to :data:`MAX_MACRO_DEPTH` levels.
    """
    try:
        return _read_bundle_config(config, metadata, root, label)
    except RecursionError:
        raise BundleRefused(
            f"bundle '{label}' refused: its config nests too deeply to be checked"
        ) from None


def _read_bundle_config(config: Path, metadata: Path | None, root: Path, label: str) -> dict:
    from monai.bundle import ConfigParser

    meta = load_config_file(metadata, root, label) if metadata is not None else {}
    content = load_config_file(config, root, label)
    if not isinstance(content, dict) or not isinstance(meta, dict):
        raise BundleError(f"bundle '{label}': {config.name} must hold a mapping at the top level")
    tree = {"_meta_": meta, **content}
    _count_nodes(tree, label)
    files: dict[Path, Any] = {}

    def source(path_text: str, key: str) -> Any:
        raw = Path(path_text)
        candidates = [raw] if raw.is_absolute() else [root / raw, config.parent / raw]
        path = next((p for p in candidates if p.is_file()), candidates[0])
        if not inside(path, root):
            raise BundleRefused(
                f"bundle '{label}' refused: config key '{key}' includes '{path_text}', which "
                "is outside the bundle folder"
            )
        real = path.resolve()
        if real not in files:
            files[real] = load_config_file(real, root, label)
        return files[real]

    budget = [MAX_CONFIG_NODES]

    def expand(value: Any, key: str, whole: Any, depth: int) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise BundleRefused(
                f"bundle '{label}' refused: its config has more than {MAX_CONFIG_NODES} entries "
                "once its '%' macros are expanded"
            )
        if isinstance(value, dict):
            return {k: expand(v, _join(key, k), whole, depth) for k, v in value.items()}
        if isinstance(value, list):
            return [expand(v, _join(key, i), whole, depth) for i, v in enumerate(value)]
        if not isinstance(value, str):
            return value
        try:
            value = ConfigParser.resolve_relative_ids(key, value)
        except ValueError as exc:
            raise BundleError(f"bundle '{label}': config key '{key}': {exc}") from None
        if not value.startswith("%"):
            return value
        if depth >= MAX_MACRO_DEPTH:
            raise BundleRefused(
                f"bundle '{label}' refused: config key '{key}' nests '%' macros more than "
                f"{MAX_MACRO_DEPTH} deep"
            )
        path_text, ids = ConfigParser.split_path_id(value[1:])
        origin = source(path_text, key) if path_text else whole
        included = copy.deepcopy(_lookup(origin, ids, key, label))
        return expand(included, key, origin, depth + 1)

    return expand(tree, "", tree, 0)


def _join(key: str, sub: Any) -> str:
    return f"{key}::{sub}" if key else str(sub)


def _lookup(config: Any, ids: str, key: str, label: str) -> Any:
    current = config
    for part in [p for p in ids.replace("#", "::").split("::") if p] if ids else []:
        try:
            current = current[int(part)] if isinstance(current, list) else current[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise BundleError(
                f"bundle '{label}': config key '{key}' includes '{ids}', which does not exist"
            ) from None
    return current


def _count_nodes(tree: Any, label: str) -> None:
    if sum(1 for _ in islice(_walk(tree), MAX_CONFIG_NODES + 1)) > MAX_CONFIG_NODES:
        raise BundleRefused(
            f"bundle '{label}' refused: its config has more than {MAX_CONFIG_NODES} entries"
        )


def _walk(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """Every (id, value) of a config tree, ids as MONAI writes them (``a::b::0``)."""
    yield key, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, _join(key, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, _join(key, i))


def config_key(tree: Any, key: str) -> Any:
    """The value at config id ``key`` (``a::b::0``) of ``tree``; KeyError if there is none."""
    current = tree
    for part in key.split("::") if key else []:
        try:
            current = current[int(part)] if isinstance(current, list) else current[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise KeyError(key) from None
    return current
