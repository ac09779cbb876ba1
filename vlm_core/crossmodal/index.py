"""An embedding index for image-text retrieval, saved as a folder.

    index = EmbeddingIndex(enc.identity)
    index.add(["img-1", "img-2"], enc.encode_images(images), [{"path": "a.jpg"}, {"path": "b.jpg"}])
    hits = index.search(enc.encode_texts(["a red car"])[0], k=5)   # text -> images
    index.save("gallery.index")
    index = EmbeddingIndex.load("gallery.index", model=enc.identity)

Vectors are stored L2-normalised, so scores are cosine similarities; image and text embeddings
of one CLIP model share a space, so either kind of query finds either kind of item.

On disk a folder holds ``index.json`` (format, the model's identity, ids, metadata, and the
name, size and sha256 of the vectors file) and ``vectors-<sha256 prefix>.safetensors`` (one
float32 tensor ``vectors``, (N, D)). Both files are written atomically, vectors first, and the
manifest's rename is the commit: a crash leaves the previous index or the new one, never a mix.
Loading checks every byte against the manifest. This module imports neither torch nor open_clip.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlm_core.crossmodal.identity import ModelIdentity
from vlm_core.errors import InputError, UsageError
from vlm_core.fileio import atomic_write_bytes, atomic_write_text
from vlm_core.types import Embeddings

FORMAT = "vlm-embedding-index"
VERSION = 1
MANIFEST = "index.json"
_VECTORS = re.compile(r"^vectors-[0-9a-f]{16}\.safetensors$")


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: str
    score: float  # cosine similarity to the query, in [-1, 1]
    metadata: Mapping[str, Any] = field(default_factory=dict)


def as_matrix(vectors: Any, what: str = "vectors") -> np.ndarray:
    """A float32 (N, D) numpy array from a numpy array, a torch tensor (any device) or nested
    lists; a single vector becomes (1, D)."""
    if hasattr(vectors, "detach"):  # a torch tensor, without importing torch here
        vectors = vectors.detach().float().cpu().numpy()
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise UsageError(f"{what} must be (N, D) or (D,), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise UsageError(f"{what} contain NaN or infinite values")
    return array


def _unit(array: np.ndarray, what: str) -> np.ndarray:
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if (norms == 0).any():
        raise UsageError(f"{what} include a zero vector, which has no direction")
    return array / norms


class EmbeddingIndex:
    """Vectors with ids and metadata, searched by cosine similarity.

    Args:
        model: the identity of the model whose embeddings go in (``encoder.identity``); its
            ``dim`` is the index's width, and :meth:`load` can insist on it.
    """

    def __init__(self, model: ModelIdentity) -> None:
        self.model = model
        self._ids: list[str] = []
        self._positions: dict[str, int] = {}
        self._metadata: list[dict[str, Any]] = []
        self._blocks: list[np.ndarray] = []
        self._matrix: np.ndarray | None = np.zeros((0, model.dim), dtype=np.float32)
        self._matrix.flags.writeable = False

    @property
    def dim(self) -> int:
        return self.model.dim

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._ids)

    @property
    def vectors(self) -> np.ndarray:
        """The stored unit vectors, (N, D) float32 (read-only)."""
        if self._matrix is None:
            self._matrix = np.concatenate(self._blocks)
            self._matrix.flags.writeable = False
            self._blocks = [self._matrix]
        return self._matrix

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._positions

    def metadata(self, item_id: str) -> Mapping[str, Any]:
        try:
            return self._metadata[self._positions[item_id]]
        except KeyError:
            raise UsageError(f"no item '{item_id}' in the index") from None

    def embeddings(self) -> Embeddings:
        """The index's contents as the core's :class:`~vlm_core.types.Embeddings` output."""
        return Embeddings(self.vectors.copy(), self.ids, model=self.model.describe())

    def add(
        self,
        ids: Sequence[str],
        vectors: Any,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> None:
        """Add items.

        Args:
            ids: one unique, non-empty string per item (new to the index).
            vectors: (N, D) embeddings (numpy or torch; normalised here).
            metadata: one JSON-serialisable mapping (or None) per item, e.g. a file path or a
                caption.

        Raises:
            UsageError: counts differ, an id is empty or already present, the width is not
                the index's, a vector is zero or not finite, metadata is not JSON.
        """
        names = [ids] if isinstance(ids, str) else list(ids)
        if not names:
            return
        matrix = as_matrix(vectors)
        if matrix.shape[0] != len(names):
            raise UsageError(f"{len(names)} ids for {matrix.shape[0]} vectors")
        if matrix.shape[1] != self.dim:
            raise UsageError(
                f"dimension mismatch: the vectors have {matrix.shape[1]} dimensions, the index "
                f"({self.model.describe()}) {self.dim}"
            )
        extra = [None] * len(names) if metadata is None else list(metadata)
        if len(extra) != len(names):
            raise UsageError(f"{len(extra)} metadata entries for {len(names)} ids")
        seen: set[str] = set()
        for name in names:
            if not isinstance(name, str) or not name:
                raise UsageError(f"ids must be non-empty strings, got {name!r}")
            if name in self._positions or name in seen:
                raise UsageError(f"id '{name}' is already in the index")
            seen.add(name)
        records = []
        for name, entry in zip(names, extra, strict=True):
            record = dict(entry or {})
            try:
                json.dumps(record)
            except (TypeError, ValueError) as exc:
                raise UsageError(f"metadata of '{name}' is not JSON-serialisable: {exc}") from None
            records.append(record)
        self._blocks.append(_unit(matrix, "vectors"))
        self._matrix = None
        for name, record in zip(names, records, strict=True):
            self._positions[name] = len(self._ids)
            self._ids.append(name)
            self._metadata.append(record)

    def search(self, query: Any, k: int = 5) -> list[Hit]:
        """The ``k`` items most similar to one query vector (D,), best first."""
        queries = as_matrix(query, "the query")
        if queries.shape[0] != 1:
            raise UsageError(f"search takes one query vector, got {queries.shape[0]}; "
                             "use search_many")  # fmt: skip
        return self.search_many(queries, k)[0]

    def search_many(self, queries: Any, k: int = 5) -> list[list[Hit]]:
        """The ``k`` best items for each query of (Q, D), best first."""
        matrix = as_matrix(queries, "the queries")
        if matrix.shape[1] != self.dim:
            raise UsageError(
                f"dimension mismatch: the query has {matrix.shape[1]} dimensions, the index "
                f"({self.model.describe()}) {self.dim}"
            )
        if k < 1:
            raise UsageError(f"k must be at least 1, got {k}")
        if not self._ids:
            return [[] for _ in range(len(matrix))]
        scores = _unit(matrix, "the queries") @ self.vectors.T  # (Q, N)
        k = min(k, len(self._ids))
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        results = []
        for row, candidates in zip(scores, top, strict=True):
            best = candidates[np.argsort(-row[candidates], kind="stable")]
            results.append(
                [Hit(self._ids[i], float(row[i]), self._metadata[i]) for i in best.tolist()]
            )
        return results

    def save(self, folder: str | Path) -> Path:
        """Write the index into ``folder`` (created if needed; an index there is replaced)."""
        from safetensors.numpy import save

        root = Path(folder)
        if root.exists() and not root.is_dir():
            raise UsageError(f"cannot save an index to {root}: it is a file")
        data = save({"vectors": np.ascontiguousarray(self.vectors)})
        digest = hashlib.sha256(data).hexdigest()
        name = f"vectors-{digest[:16]}.safetensors"
        atomic_write_bytes(root / name, data)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "model": self.model.as_dict(),
            "count": len(self._ids),
            "vectors": {"file": name, "bytes": len(data), "sha256": digest},
            "ids": self._ids,
            "metadata": self._metadata,
        }
        atomic_write_text(root / MANIFEST, json.dumps(manifest, ensure_ascii=False))
        for old in root.glob("vectors-*.safetensors"):
            if old.name != name:
                old.unlink(missing_ok=True)
        return root

    @classmethod
    def load(cls, folder: str | Path, *, model: ModelIdentity | None = None) -> EmbeddingIndex:
        """Read an index written by :meth:`save`.

        Args:
            folder: the index folder.
            model: the identity of the model that will query it (``encoder.identity``); when
                given, an index built by another model (architecture, weights, seed or width)
                is refused.

        Raises:
            InputError: no index there, or a file is missing, truncated or corrupt.
            UsageError: the index was built by a different model than ``model``.
        """
        root = Path(folder)
        manifest, stored = _read_manifest(root)
        if model is not None:
            if model.dim != stored.dim:
                raise UsageError(
                    f"dimension mismatch: the index at {root} holds {stored.dim}-dimensional "
                    f"vectors of {stored.describe()}, the model gives {model.dim}"
                )
            if model != stored:
                raise UsageError(
                    f"the index at {root} was built by {stored.describe()}, not by "
                    f"{model.describe()}; rebuild it with this model or query it with that one"
                )
        vectors = _read_vectors(root, manifest, stored.dim)
        index = cls(stored)
        count = int(manifest["count"])
        index._ids = list(manifest["ids"])
        index._positions = {name: i for i, name in enumerate(index._ids)}
        index._metadata = [dict(m) for m in manifest["metadata"]]
        if len(index._positions) != count:
            raise InputError(f"{root / MANIFEST} is corrupt: its ids are not unique")
        vectors.flags.writeable = False
        index._blocks = [vectors]
        index._matrix = vectors
        return index


def _corrupt(path: Path, why: str) -> InputError:
    return InputError(f"{path} is corrupt: {why}; rebuild the index or restore it from a copy")


def _read_manifest(root: Path) -> tuple[dict[str, Any], ModelIdentity]:
    path = root / MANIFEST
    if not root.is_dir():
        raise InputError(f"no embedding index at {root}: not a folder")
    if not path.is_file():
        raise InputError(f"no embedding index at {root}: it has no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise _corrupt(path, "not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise _corrupt(path, f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(f"{path} is not a vlm embedding index manifest")
    if manifest.get("version") != VERSION:
        raise InputError(
            f"{path} has index format version {manifest.get('version')!r}; this vlm reads "
            f"version {VERSION}"
        )
    try:
        stored = ModelIdentity.from_dict(manifest.get("model"))
    except UsageError:
        raise _corrupt(path, "its model identity is malformed") from None
    count, ids, extra = manifest.get("count"), manifest.get("ids"), manifest.get("metadata")
    if not isinstance(count, int) or count < 0:
        raise _corrupt(path, "its item count is malformed")
    if not isinstance(ids, list) or len(ids) != count or not all(isinstance(i, str) for i in ids):
        raise _corrupt(path, f"it should list {count} string ids")
    if (not isinstance(extra, list) or len(extra) != count
            or not all(isinstance(m, dict) for m in extra)):  # fmt: skip
        raise _corrupt(path, f"it should hold {count} metadata mappings")
    entry = manifest.get("vectors")
    if (not isinstance(entry, dict) or not isinstance(entry.get("file"), str)
            or not _VECTORS.match(entry["file"]) or not isinstance(entry.get("bytes"), int)
            or not isinstance(entry.get("sha256"), str)):  # fmt: skip
        raise _corrupt(path, "its vectors entry is malformed")
    return manifest, stored


def _read_vectors(root: Path, manifest: dict[str, Any], dim: int) -> np.ndarray:
    from safetensors import SafetensorError
    from safetensors.numpy import load

    entry = manifest["vectors"]
    path = root / entry["file"]
    if not path.is_file():
        raise InputError(f"the index at {root} is incomplete: its vectors file {path.name} is "
                         "missing")  # fmt: skip
    size = path.stat().st_size
    if size < entry["bytes"]:
        raise InputError(
            f"{path} is truncated: {size} of {entry['bytes']} bytes; rebuild the index or "
            "restore it from a copy"
        )
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if size != entry["bytes"] or digest != entry["sha256"]:
        raise _corrupt(path, f"its sha256 is {digest}, {MANIFEST} says {entry['sha256']}")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError) as exc:
        raise _corrupt(path, f"not a safetensors file ({exc})") from None
    vectors = tensors.get("vectors")
    count = int(manifest["count"])
    if vectors is None or vectors.dtype != np.float32:
        raise _corrupt(path, "it holds no float32 tensor 'vectors'")
    if vectors.shape != (count, dim):
        raise InputError(
            f"dimension mismatch in {path}: vectors of shape {vectors.shape}, {MANIFEST} says "
            f"{count} x {dim}; rebuild the index"
        )
    return vectors
