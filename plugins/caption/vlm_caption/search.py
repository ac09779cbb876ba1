"""`caption.search`: catalogue images for a text, or similar images for an image.

The catalogue is a folder of images (sub-folders included). Its index — an
:class:`~vlm_core.crossmodal.EmbeddingIndex` on disk, one per folder and model — is built on
first use and rebuilt when the folder's files change (names, sizes, modification times).

Two engines:

- **captioner** (default; offline): images compare by the cosine of the captioner's mean-pooled
  image tokens; a text ranks the images by how likely the captioner is to say it of each one
  (log-likelihood per word, the full teacher-forced pass), so a query may use only words the
  captioner knows. The image tokens are kept beside the index (``tokens.npy``, float16) for
  catalogues up to :data:`MAX_TOKEN_BYTES`, so a text query runs only the text decoder; a
  larger catalogue decodes its images again for each text query;
- **clip** (``clip_model`` + ``clip_weights``): open_clip image and text embeddings, cosine
  similarity, any vocabulary.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlm_caption.model import Loaded, load_captioner, score_texts
from vlm_caption.params import SearchParams
from vlm_core.config import settings
from vlm_core.crossmodal import EmbeddingIndex, ModelIdentity
from vlm_core.errors import InputError, UsageError
from vlm_core.io import load_input, probe_input
from vlm_core.io.load import collect_inputs
from vlm_core.kinds import Kind
from vlm_core.tasks import RunContext
from vlm_core.types import Image, ImageSet
from vlm_core.weights import requested

BATCH = 64
MAX_IMAGES = 20_000
#: the largest image-token cache kept beside a captioner index (about 4,000 images of
#: the bundled captioner's 16x16 tokens)
MAX_TOKEN_BYTES = 256 * 2**20
TOKENS = "tokens.npy"


def catalogue(folder: str) -> list[Path]:
    """The image files of a catalogue folder, sorted."""
    if not folder:
        raise UsageError("caption.search needs folder: the catalogue's folder of images")
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise InputError(f"catalogue folder {root} does not exist or is not a folder")
    probes = collect_inputs([str(root)], [Kind.IMAGE])
    files = sorted(p.path for p in probes if p.kind is Kind.IMAGE)
    if len(files) > MAX_IMAGES:
        raise InputError(
            f"{root} holds {len(files)} images; the search indexes at most {MAX_IMAGES}"
        )
    return files


def fingerprint(root: Path, files: Sequence[Path]) -> str:
    """What changes when a file of the catalogue is added, removed, replaced or touched."""
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def index_folder(params: SearchParams, engine: str, root: Path) -> Path:
    if params.index:
        return Path(params.index).expanduser()
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return settings().data_dir / "indexes" / key / engine


class _Engine:
    name: str
    identity: ModelIdentity

    def embed_images(self, images: Sequence[Image]) -> torch.Tensor:
        raise NotImplementedError

    def text_scores(self, query: str, index: EmbeddingIndex, root: Path, where: Path) -> np.ndarray:
        raise NotImplementedError

    def start_build(self, count: int) -> None:
        """An index of ``count`` images is about to be built (``embed_images`` in order)."""

    def finish_build(self, where: Path) -> None:
        """The index was built and is about to be saved in ``where``."""


class _CaptionerEngine(_Engine):
    name = "captioner"

    def __init__(self, loaded: Loaded) -> None:
        self.loaded = loaded
        width = loaded.captioner.arch.width
        self.identity = ModelIdentity(f"vlm-captioner:{loaded.captioner.arch.backbone}",
                                      loaded.sha256, width)  # fmt: skip
        self._tokens: list[np.ndarray] | None = None

    def start_build(self, count: int) -> None:
        self._tokens = []

    def embed_images(self, images: Sequence[Image]) -> torch.Tensor:
        model = self.loaded.captioner
        with torch.inference_mode():
            pixels = model.pixels(list(images)).to(model.device)
            tokens = model.encode_images(pixels)
        if self._tokens is not None:
            self._tokens.append(tokens.to(torch.float16).cpu().numpy())
            if sum(t.nbytes for t in self._tokens) > MAX_TOKEN_BYTES:
                self._tokens = None  # too large to keep: text queries decode the images
        return tokens.mean(dim=1).float().cpu()

    def finish_build(self, where: Path) -> None:
        tokens, self._tokens = self._tokens, None
        (where / TOKENS).unlink(missing_ok=True)
        if not tokens:
            return
        where.mkdir(parents=True, exist_ok=True)
        tmp = where / f".{TOKENS}.tmp"
        with open(tmp, "wb") as fh:
            np.save(fh, np.concatenate(tokens), allow_pickle=False)
        tmp.replace(where / TOKENS)

    def _cached_tokens(self, where: Path, count: int) -> np.ndarray | None:
        """The image tokens saved with the index, when they are there and fit it."""
        try:
            tokens = np.load(where / TOKENS, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            return None
        width = self.loaded.captioner.arch.width
        if tokens.ndim != 3 or tokens.shape[0] != count or tokens.shape[2] != width:
            return None
        return tokens

    def text_scores(self, query: str, index: EmbeddingIndex, root: Path, where: Path) -> np.ndarray:
        known, missing = self.loaded.known_words(query)
        if not known:
            raise InputError(
                f"the captioner does not know the word(s) {', '.join(missing)} of the query; "
                "use words of its captions, or search with an open_clip model (clip_model)"
            )
        model, vocab = self.loaded.captioner, self.loaded.captioner.vocab
        sequence = [[*vocab.encode(query), vocab.eos]]
        ids = list(index.ids)
        cached = self._cached_tokens(where, len(ids))
        scores = []
        for start in range(0, len(ids), BATCH):
            if cached is not None:
                memory = torch.from_numpy(np.array(cached[start : start + BATCH]))
                with torch.inference_mode():
                    scores.append(model.score_candidates(None, sequence, memory=memory)[:, 0])
            else:
                images = [_load(root / i) for i in ids[start : start + BATCH]]
                pixels = model.pixels(images)
                scores.append(score_texts(self.loaded, pixels, [query], None)[:, 0])
        logp = torch.cat(scores).numpy()
        return logp / (len(query.split()) + 1)


class _ClipEngine(_Engine):
    name = "clip"

    def __init__(self, params: SearchParams, device: str) -> None:
        from vlm_core.crossmodal import load_clip

        with requested("clip_weights", params.clip_weights):
            self.encoder = load_clip(params.clip_model, params.clip_weights, device=device,
                                     plugin="caption")  # fmt: skip
        self.identity = self.encoder.identity

    def embed_images(self, images: Sequence[Image]) -> torch.Tensor:
        return self.encoder.encode_images(list(images))

    def text_scores(self, query: str, index: EmbeddingIndex, root: Path, where: Path) -> np.ndarray:
        vector = self.encoder.encode_texts([query])[0].numpy()
        return index.vectors @ vector


def _load(path: Path) -> Image:
    loaded = load_input(probe_input(path, [Kind.IMAGE]))
    assert isinstance(loaded, Image)
    return loaded


def build_index(
    engine: _Engine, root: Path, files: Sequence[Path], ctx: RunContext | None
) -> EmbeddingIndex:
    index = EmbeddingIndex(engine.identity)
    engine.start_build(len(files))
    for start in range(0, len(files), BATCH):
        batch = files[start : start + BATCH]
        vectors = engine.embed_images([_load(p) for p in batch])
        ids = [str(p.relative_to(root)) for p in batch]
        index.add(ids, vectors, [{"file": i} for i in ids])
        if ctx is not None:
            ctx.report((start + len(batch)) / len(files), f"indexed {start + len(batch)} images")
    return index


def open_index(
    engine: _Engine, params: SearchParams, ctx: RunContext | None = None
) -> tuple[EmbeddingIndex, Path, Path]:
    """The catalogue's index, (re)built when missing, stale or of another model; with the
    catalogue's folder and the index's."""
    root = Path(params.folder).expanduser()
    files = catalogue(params.folder)
    where = index_folder(params, engine.name, root)
    stamp = fingerprint(root, files)
    marker = where / "catalogue.json"
    try:
        recorded = json.loads(marker.read_text())
        if recorded.get("fingerprint") == stamp:
            return EmbeddingIndex.load(where, model=engine.identity), root, where
    except (OSError, ValueError, InputError, UsageError):
        pass  # missing, damaged, stale or another model's: rebuild
    marker.unlink(missing_ok=True)  # the marker goes last: no half-written index is reused
    index = build_index(engine, root, files, ctx)
    engine.finish_build(where)
    index.save(where)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps({"folder": str(root.resolve()), "fingerprint": stamp,
                               "images": len(files)}))  # fmt: skip
    tmp.replace(marker)
    return index, root, where


def search(
    engine: _Engine, params: SearchParams, ctx: RunContext | None = None
) -> list[tuple[str, float]]:
    """``(file relative to the folder, score)`` of the best ``k`` catalogue images."""
    if bool(params.query.strip()) == bool(params.image):
        raise UsageError("give caption.search one query: a text (query) or an image file (image)")
    index, root, where = open_index(engine, params, ctx)
    if params.image:
        path = Path(params.image).expanduser()
        if not path.is_file():
            raise InputError(f"query image {path} does not exist")
        vector = engine.embed_images([_load(path)])
        return [(hit.id, hit.score) for hit in index.search(vector, k=params.k)]
    scores = engine.text_scores(params.query.strip(), index, root, where)
    order = np.argsort(-scores, kind="stable")[: params.k]
    return [(index.ids[i], float(scores[i])) for i in order]


def run(inputs: Sequence[Any], params: SearchParams, ctx: RunContext) -> list[dict[str, Any]]:
    engine: _Engine
    if params.clip_model:
        engine = _ClipEngine(params, ctx.device)
    else:
        loaded = load_captioner(params.weights, ctx=ctx)
        engine = _CaptionerEngine(loaded)
    hits = search(engine, params, ctx)
    root = Path(params.folder).expanduser()
    images = []
    for name, _ in hits:
        image = _load(root / name)
        images.append(Image(image.pixels, name=name, source=root / name))
    labels = tuple(f"{name} ({score:.3f})" for name, score in hits)
    return [{"results": ImageSet(tuple(images), labels=labels)}]
