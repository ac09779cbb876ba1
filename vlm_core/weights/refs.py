"""Weight references: one parser for every way a task or a user can name weights.

Forms (the same in task specs, on the command line and in the Python API)::

    /abs/or/relative/path.safetensors          a local file
    file:///abs/path.safetensors               the same, as a URL
    https://host/path/file.pth                 a URL (cached in the torch hub folder)
    hf-hub:org/repo                            a Hugging Face repo, default weights file
    hf-hub:org/repo/path/in/repo.safetensors   one file of a repo
    hf-hub:org/repo/file.safetensors@v1.0      ... at a revision (branch, tag or commit)
    timm:resnet50.a1_in1k                      timm's pretrained weights for arch.tag
    open_clip:ViT-B-32/laion2b_s34b_b79k       open_clip's pretrained weights for ARCH/tag
    torchvision:ResNet50_Weights.IMAGENET1K_V2 a torchvision weights enum member

This module only parses; :mod:`vlm_core.weights.resolve` turns a parsed reference into a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal, cast
from urllib.parse import unquote, urlsplit

from vlm_core.errors import did_you_mean
from vlm_core.weights.errors import WeightsError

if TYPE_CHECKING:  # the weights package never imports the task layer at run time
    from vlm_core.tasks import WeightsRef

SourceKind = Literal["path", "url", "hf-hub", "timm", "open_clip", "torchvision"]

#: Prefixes of the hub forms, without the colon.
SCHEMES: tuple[str, ...] = ("hf-hub", "timm", "open_clip", "torchvision")

_SCHEME = re.compile(r"^([A-Za-z][\w+.-]*):")
_REPO_PART = re.compile(r"^[\w][\w.-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class WeightsSource:
    """A parsed weight reference.

    ``target`` is the local path, the URL, the Hugging Face repo id (``org/repo``), the timm
    ``arch.tag``, the open_clip ``ARCH/tag`` or the torchvision ``Enum.MEMBER``, by ``kind``.
    ``path_in_repo`` and ``revision`` are used by ``hf-hub`` only (None: the default file, the
    default branch).
    """

    kind: SourceKind
    target: str
    path_in_repo: str | None = None
    revision: str | None = None

    @property
    def text(self) -> str:
        """The canonical string form (parses back to an equal source)."""
        if self.kind in ("path", "url"):
            return self.target
        body = self.target
        if self.path_in_repo:
            body += "/" + self.path_in_repo
        if self.revision:
            body += "@" + self.revision
        return f"{self.kind}:{body}"

    @property
    def filename(self) -> str:
        """The file name the reference points at, as well as it is known before resolving."""
        if self.kind == "path":
            return Path(self.target).name
        if self.kind == "url":
            return PurePosixPath(unquote(urlsplit(self.target).path)).name or self.target
        if self.kind == "hf-hub" and self.path_in_repo:
            return PurePosixPath(self.path_in_repo).name
        return self.text

    def __str__(self) -> str:
        return self.text


def normalize_sha256(value: str | None, *, plugin: str = "core", filename: str = "") -> str | None:
    """Lower-case a sha256 and strip an optional ``sha256:`` prefix; None stays None.

    Raises:
        WeightsError: ``value`` is not 64 hex digits.
    """
    if value is None or not value.strip():
        return None
    text = value.strip().lower().removeprefix("sha256:")
    if not _SHA256.match(text):
        raise WeightsError(
            f"'{value}' is not a sha256 (64 hex digits)",
            plugin=plugin,
            filename=filename or None,
            hint="fix the sha256 in the task spec or on the command line",
        )
    return text


def parse_ref(text: str, *, plugin: str = "core") -> WeightsSource:
    """Parse one reference string (see the module docstring for the forms).

    Args:
        text: the reference.
        plugin: named in the error message when the reference cannot be parsed.

    Raises:
        WeightsError: an unknown ``scheme:`` prefix, a URL scheme other than http(s)/file, or a
            malformed hub reference.
    """
    raw = text.strip()
    if not raw:
        raise WeightsError("empty weights reference", plugin=plugin)
    if "://" in raw:
        return _parse_url(raw, plugin)
    match = _SCHEME.match(raw)
    if match and len(match.group(1)) > 1:
        scheme, body = match.group(1), raw[match.end() :]
        if scheme == "hf-hub":
            return _parse_hf(body, raw, plugin)
        if scheme in SCHEMES:
            return _parse_named(scheme, body, raw, plugin)
        if not Path(raw).expanduser().exists():
            raise WeightsError(
                f"unknown weights reference '{raw}': '{scheme}:' is not one of "
                + ", ".join(f"'{s}:'" for s in SCHEMES)
                + did_you_mean(scheme, SCHEMES),
                plugin=plugin,
                hint="use a local path, an https:// URL or one of those prefixes",
            )
    return WeightsSource("path", str(Path(raw).expanduser()))


def source_of(ref: WeightsRef, *, plugin: str = "core") -> WeightsSource:
    """The source of a task's :class:`~vlm_core.tasks.WeightsRef`.

    ``source=None`` means ``filename`` is a local path (files shipped with the plugin).
    ``source="hf-hub:org/repo"`` without a path in the repo takes ``filename`` as that path.
    Any other source string is parsed with :func:`parse_ref`.
    """
    if not ref.source:
        return WeightsSource("path", str(Path(ref.filename).expanduser()))
    source = parse_ref(ref.source, plugin=plugin)
    if source.kind == "hf-hub" and not source.path_in_repo and ref.filename:
        return WeightsSource("hf-hub", source.target, ref.filename, source.revision)
    return source


def _parse_url(raw: str, plugin: str) -> WeightsSource:
    parts = urlsplit(raw)
    if parts.scheme == "file":
        return WeightsSource("path", unquote(parts.path))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise WeightsError(
            f"unsupported weights URL '{raw}': only http://, https:// and file:// are supported",
            plugin=plugin,
            hint="download the file yourself and run `vlm weights import PATH`",
        )
    if not PurePosixPath(parts.path).name:
        raise WeightsError(
            f"weights URL '{raw}' does not end in a file name",
            plugin=plugin,
            hint="give the URL of the file itself",
        )
    return WeightsSource("url", raw)


def _parse_hf(body: str, raw: str, plugin: str) -> WeightsSource:
    revision = None
    if "@" in body:
        body, _, revision = body.rpartition("@")
        revision = revision.strip() or None
    parts = [p for p in body.strip("/").split("/") if p]
    if len(parts) < 2 or not all(_REPO_PART.match(p) for p in parts[:2]):
        raise WeightsError(
            f"'{raw}' is not of the form 'hf-hub:org/repo[/path/in/repo][@revision]'",
            plugin=plugin,
            hint="for example hf-hub:timm/resnet18.a1_in1k/model.safetensors",
        )
    if any(p in (".", "..") for p in parts[2:]):
        raise WeightsError(f"'{raw}': '.' and '..' are not allowed in a repo path", plugin=plugin)
    path_in_repo = "/".join(parts[2:]) or None
    return WeightsSource("hf-hub", "/".join(parts[:2]), path_in_repo, revision)


_NAMED_FORMS = {
    "timm": ("timm:arch.tag", "timm:resnet50.a1_in1k"),
    "open_clip": ("open_clip:ARCH/tag", "open_clip:ViT-B-32/laion2b_s34b_b79k"),
    "torchvision": ("torchvision:Enum.MEMBER", "torchvision:ResNet50_Weights.IMAGENET1K_V2"),
}


def _parse_named(scheme: str, body: str, raw: str, plugin: str) -> WeightsSource:
    body = body.strip()
    ok = {
        "timm": bool(re.match(r"^[\w-]+(\.[\w.-]+)?$", body)),
        "open_clip": bool(re.match(r"^[\w.-]+/[\w.-]+$", body)),
        "torchvision": bool(re.match(r"^\w+\.\w+$", body)),
    }[scheme]
    if not ok:
        form, example = _NAMED_FORMS[scheme]
        raise WeightsError(
            f"'{raw}' is not of the form '{form}'", plugin=plugin, hint=f"for example {example}"
        )
    return WeightsSource(cast(SourceKind, scheme), body)
