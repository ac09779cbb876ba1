"""From a weight reference to a verified local file.

Order of search, first hit wins:

1. the vlm weights store (when a sha256 is known),
2. a local path as given,
3. the standard caches: Hugging Face's (``HF_HUB_CACHE``/``HF_HOME``) for hub files, torch
   hub's ``checkpoints`` folder (``TORCH_HOME``) for URLs, which timm and torchvision share,
4. a download into those caches, unless an offline switch is on or no network answers within
   :func:`~vlm_core.weights.download.probe_timeout` seconds.

Every file found is checked against the expected sha256 when one is known.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vlm_core.errors import did_you_mean
from vlm_core.weights.download import Prober, download_url, offline_reason
from vlm_core.weights.errors import ChecksumError, WeightsError
from vlm_core.weights.hashing import sha256_of
from vlm_core.weights.layout import trained_weights_file
from vlm_core.weights.refs import WeightsSource, normalize_sha256, parse_ref, source_of
from vlm_core.weights.store import find_in_store

if TYPE_CHECKING:  # the weights package never imports the task layer at run time
    from vlm_core.tasks import WeightsRef

log = logging.getLogger(__name__)

#: Files tried, in order, for a Hugging Face repo named without a file (timm's convention).
HF_DEFAULT_FILES: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")
#: The same for open_clip repos.
OPEN_CLIP_DEFAULT_FILES: tuple[str, ...] = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
)
_IMPORT_HINT = "copy the file to this machine and run `vlm weights import PATH`"


@dataclass(frozen=True)
class HubFile:
    """One file of a Hugging Face repo."""

    repo_id: str
    filename: str
    revision: str | None = None

    def __str__(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"hf-hub:{self.repo_id}/{self.filename}{rev}"


@dataclass(frozen=True)
class UrlFile:
    """A file behind a URL."""

    url: str

    @property
    def filename(self) -> str:
        return WeightsSource("url", self.url).filename

    def __str__(self) -> str:
        return self.url


Location = HubFile | UrlFile


def hf_cache_dir() -> Path:
    """Hugging Face's hub cache folder, read from the environment at each call."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def torch_hub_dir() -> Path:
    """torch hub's folder (``torch.hub.get_dir()``), computed without importing torch when it
    is not imported yet."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return Path(torch.hub.get_dir())
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or "~/.cache", "torch"
    )
    return Path(home).expanduser() / "hub"


def url_cache_path(url: str) -> Path:
    """Where a URL's file lives in the cache (torch hub's ``checkpoints`` folder)."""
    return torch_hub_dir() / "checkpoints" / UrlFile(url).filename


def _hf_endpoint() -> str:
    if os.environ.get("HF_ENDPOINT"):
        return os.environ["HF_ENDPOINT"]
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def _safetensors_first(filename: str) -> list[str]:
    """``filename`` preceded by its safetensors twin when it is a ``.bin`` (timm's rule)."""
    if filename == "pytorch_model.bin":
        return ["model.safetensors", filename]
    if filename == "open_clip_pytorch_model.bin":
        return ["open_clip_model.safetensors", filename]
    if filename.endswith(".bin"):
        return [filename[: -len(".bin")] + ".safetensors", filename]
    return [filename]


def locations(source: WeightsSource, *, plugin: str = "core") -> list[Location]:
    """Where a hub or URL reference can be fetched from, in order of preference.

    ``timm:``, ``open_clip:`` and ``torchvision:`` references are looked up in those
    libraries' own pretrained configs (each imported only here).

    Raises:
        WeightsError: the library is not installed, or it does not know the name.
    """
    if source.kind == "path":
        return []
    if source.kind == "url":
        return [UrlFile(source.target)]
    if source.kind == "hf-hub":
        names = [source.path_in_repo] if source.path_in_repo else list(HF_DEFAULT_FILES)
        return [HubFile(source.target, name, source.revision) for name in names]
    if source.kind == "timm":
        return _timm_locations(source.target, plugin)
    if source.kind == "open_clip":
        return _open_clip_locations(source.target, plugin)
    return _torchvision_locations(source.target, plugin)


def _timm_locations(name: str, plugin: str) -> list[Location]:
    try:
        import timm
        from timm.models import get_pretrained_cfg
    except ImportError:
        raise WeightsError(
            f"'timm:{name}' needs timm, which is not installed",
            plugin=plugin,
            hint="pip install timm, or name the file: hf-hub:org/repo/file or a local path",
        ) from None
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError as exc:  # timm's way of saying "unknown tag for a known architecture"
        cfg, problem = None, str(exc)
    else:
        problem = ""
    if cfg is None:
        problem = problem or f"timm has no pretrained weights named '{name}'"
        raise WeightsError(
            problem.rstrip(".") + did_you_mean(name, timm.list_pretrained()),
            plugin=plugin,
            hint="`python -c \"import timm; print(timm.list_pretrained('resnet*'))\"` lists names",
        )
    found: list[Location] = []
    if cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        names = (
            _safetensors_first(cfg.hf_hub_filename)
            if cfg.hf_hub_filename
            else list(HF_DEFAULT_FILES)
        )
        found += [HubFile(repo, n, revision or None) for n in names]
    if isinstance(cfg.url, str) and cfg.url:
        found.append(UrlFile(cfg.url))
    if not found:
        raise WeightsError(
            f"timm's pretrained config for '{name}' names no hub repo and no URL", plugin=plugin
        )
    return found


def _open_clip_locations(name: str, plugin: str) -> list[Location]:
    arch, _, tag = name.partition("/")
    try:
        import open_clip
    except ImportError:
        raise WeightsError(
            f"'open_clip:{name}' needs open_clip, which is not installed",
            plugin=plugin,
            hint="pip install open_clip_torch, or name the file: "
            "hf-hub:org/repo/open_clip_model.safetensors or a local path",
        ) from None
    cfg = dict(open_clip.get_pretrained_cfg(arch, tag) or {})
    if not cfg:
        known = [f"{a}/{t}" for a, t in open_clip.list_pretrained()]
        raise WeightsError(
            f"open_clip has no pretrained weights '{tag}' for '{arch}'" + did_you_mean(name, known),
            plugin=plugin,
            hint='`python -c "import open_clip; print(open_clip.list_pretrained())"` lists them',
        )
    found: list[Location] = []
    hub = str(cfg.get("hf_hub") or "").strip()
    if hub:  # "org/repo/" (default file) or "org/repo/file" (open_clip's convention)
        parts = [p for p in hub.split("/") if p]
        repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
        names = _safetensors_first(filename) if filename else list(OPEN_CLIP_DEFAULT_FILES)
        found += [HubFile(repo, n) for n in names]
    if cfg.get("url"):
        found.append(UrlFile(str(cfg["url"])))
    if not found:
        raise WeightsError(f"open_clip's config for '{name}' names no download", plugin=plugin)
    return found


def _torchvision_locations(name: str, plugin: str) -> list[Location]:
    try:
        from torchvision.models import get_weight
    except ImportError:
        raise WeightsError(
            f"'torchvision:{name}' needs torchvision, which is not installed",
            plugin=plugin,
            hint="pip install torchvision, or name the file: a URL or a local path",
        ) from None
    try:
        weights = get_weight(name)
    except (KeyError, ValueError, AttributeError) as exc:
        raise WeightsError(
            f"torchvision has no weights '{name}' ({exc})",
            plugin=plugin,
            hint="use an enum member such as ResNet50_Weights.IMAGENET1K_V2",
        ) from None
    return [UrlFile(str(weights.url))]


@dataclass
class _Request:
    """One resolution in progress: what is wanted, and what went wrong so far."""

    source: WeightsSource
    label: str
    sha256: str | None
    plugin: str
    mismatches: list[WeightsError] = field(default_factory=list)
    _locations: list[Location] | None = None

    @property
    def locations(self) -> list[Location]:
        if self._locations is None:
            self._locations = locations(self.source, plugin=self.plugin)
        return self._locations

    def error(self, problem: str, hint: str = "") -> WeightsError:
        return WeightsError(
            problem,
            plugin=self.plugin,
            filename=self.label,
            sha256=self.sha256,
            hint=hint,
            mention_sha=True,
        )

    def accept(self, path: Path) -> bool:
        """True when ``path`` has the expected sha256 (or none is pinned); a mismatch is
        remembered, so that it is reported if nothing else matches."""
        if self.sha256 is None:
            return True
        found = sha256_of(path)
        if found == self.sha256:
            return True
        self.mismatches.append(
            ChecksumError(
                f"sha256 mismatch: {path} has sha256 {found}",
                found=found,
                plugin=self.plugin,
                filename=self.label,
                sha256=self.sha256,
                hint="the file is corrupt or not the one the spec names; delete it and fetch "
                "again, or correct the sha256 in the spec",
            )
        )
        return False


def _request(ref: str | WeightsRef, plugin: str, sha256: str | None) -> _Request:
    if not isinstance(ref, str):  # a task's WeightsRef
        source = source_of(ref, plugin=plugin)
        label = Path(ref.filename).name if source.kind == "path" else ref.filename
        pinned = normalize_sha256(ref.sha256, plugin=plugin, filename=label)
    else:
        source = parse_ref(ref, plugin=plugin)
        label = source.filename
        pinned = None
    given = normalize_sha256(sha256, plugin=plugin, filename=label)
    if given and pinned and given != pinned:
        raise WeightsError(
            f"two different sha256 were given: {given} (argument) and {pinned} (spec)",
            plugin=plugin,
            filename=label,
            hint="pass only one",
        )
    return _Request(source, label or source.text, given or pinned, plugin)


def _cached(location: Location) -> Path | None:
    if isinstance(location, UrlFile):
        path = url_cache_path(location.url)
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(
        location.repo_id,
        location.filename,
        cache_dir=hf_cache_dir(),
        revision=location.revision,
    )
    return Path(hit) if isinstance(hit, str) and Path(hit).is_file() else None


def _find_local(req: _Request) -> Path | None:
    if req.sha256:
        stored = find_in_store(req.sha256, req.label)
        if stored is not None:
            return stored
    if req.source.kind == "path":
        path = Path(req.source.target)
        if path.is_dir():
            trained = trained_weights_file(path, plugin=req.plugin)
            if trained is None:
                raise req.error(
                    f"{path} is a folder, not a weights file or a `vlm train` output folder",
                    "name the file itself",
                )
            path = trained
        if path.is_file():
            if req.accept(path):
                return path
            raise req.mismatches[-1]
        return None
    for location in req.locations:
        cached = _cached(location)
        if cached is not None and req.accept(cached):
            log.debug("%s found in the cache at %s", location, cached)
            return cached
    return None


def locate(
    ref: str | WeightsRef, *, plugin: str = "core", sha256: str | None = None
) -> Path | None:
    """The local file for ``ref`` if this machine already has it, else None; never touches
    the network.

    Args:
        ref: a reference string (see :mod:`vlm_core.weights.refs`) or a task's weights.
        plugin: named in error messages.
        sha256: the expected sha256 (64 hex digits); when ``ref`` is a :class:`WeightsRef`
            with a sha256 of its own, the two must agree.

    Raises:
        WeightsError: the reference is malformed or unknown to its library, or the only files
            found have the wrong sha256.
    """
    req = _request(ref, plugin, sha256)
    found = _find_local(req)
    if found is None and req.mismatches:
        raise req.mismatches[0]
    return found


def resolve(ref: str | WeightsRef, *, plugin: str = "core", sha256: str | None = None) -> Path:
    """A verified local file for ``ref``, downloading it into the standard cache if allowed.

    Args:
        ref: a reference string (see :mod:`vlm_core.weights.refs`) or a task's weights.
        plugin: the plugin asking, named in every error message.
        sha256: the expected sha256 (64 hex digits); when ``ref`` is a :class:`WeightsRef`
            with a sha256 of its own, the two must agree. None with a string ``ref``: the file
            is not checked (and the store, which is keyed by sha256, is not consulted).

    Returns:
        The path of the file: in the weights store, the given local path, or in a cache.

    Raises:
        WeightsError: the file is missing and cannot be fetched (offline, no network, not on
            the hub), or it has the wrong sha256. The message names the plugin, the file, the
            expected sha256 and what to do. With an offline switch on, or no network, it is
            raised within about a second.
    """
    req = _request(ref, plugin, sha256)
    found = _find_local(req)
    if found is not None:
        return found
    if req.source.kind == "path":
        raise req.error(
            f"no such file: {req.source.target}",
            "check the path"
            + ("; or import the file: `vlm weights import PATH`" if req.sha256 else ""),
        )
    tried = ", ".join(map(str, req.locations))
    reason = offline_reason()
    if reason:
        if req.mismatches:
            raise req.mismatches[0]
        flag = reason.split("=", 1)[0]
        raise req.error(
            f"not in the vlm weights store or the local caches (looked for {tried}) and "
            f"downloads are off ({reason})",
            f"{_IMPORT_HINT}, or unset {flag}",
        )
    return _download(req)


def _download(req: _Request) -> Path:
    prober = Prober()
    problems: dict[str, list[str]] = {}  # reason -> locations, so each reason is said once
    unreachable = 0
    for location in req.locations:
        endpoint = _hf_endpoint() if isinstance(location, HubFile) else location.url
        why = prober.check(endpoint)
        if why:
            unreachable += 1
            problems.setdefault(why, []).append(str(location))
            continue
        try:
            path = _fetch(location, req)
        except ChecksumError as exc:
            req.mismatches.append(exc)
            continue
        except WeightsError as exc:
            problems.setdefault(exc.problem, []).append(str(location))
            continue
        if path is None:
            problems.setdefault("not in the repo", []).append(str(location))
        elif req.accept(path):
            return path
    if req.mismatches:
        raise req.mismatches[0]
    detail = "; ".join(f"{', '.join(where)}: {why}" for why, where in problems.items())
    if unreachable == len(req.locations):
        raise req.error(f"no network: {detail}", f"{_IMPORT_HINT}, or retry when online")
    raise req.error(f"could not fetch it: {detail}", _IMPORT_HINT)


def _fetch(location: Location, req: _Request) -> Path | None:
    """Download one location; None when the hub says the file is not in the repo."""
    if isinstance(location, UrlFile):
        return download_url(
            location.url,
            url_cache_path(location.url),
            sha256=req.sha256,
            plugin=req.plugin,
            filename=req.label,
        )
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        GatedRepoError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        path = hf_hub_download(
            location.repo_id,
            location.filename,
            revision=location.revision,
            cache_dir=hf_cache_dir(),
            library_name="vlm",
        )
    except RemoteEntryNotFoundError:
        return None
    except GatedRepoError:
        raise req.error(
            f"{location.repo_id} is gated", "accept its terms on the hub and `hf auth login`"
        ) from None
    except RevisionNotFoundError:
        raise req.error(f"revision '{location.revision}' of {location.repo_id} not found") from None
    except RepositoryNotFoundError:
        raise req.error(f"repo {location.repo_id} not found (or private)") from None
    except OSError as exc:
        raise req.error(f"download failed: {exc}") from None
    return Path(str(path))
