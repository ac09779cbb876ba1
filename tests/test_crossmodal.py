"""vlm_core.crossmodal: open_clip encoders, zero-shot labels, the retrieval index.

Every test runs the real open_clip on the tiny registered architecture ``vlm-test-clip``; the
zero-shot and retrieval tests use a copy of it trained here, with open_clip's contrastive loss,
to tell solid colours apart from their names. The only thing mocked is the network (the hub
download in the hub-reference test); sockets are disabled in every test.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vlm_core.crossmodal import (
    TEST_ARCH,
    EmbeddingIndex,
    ModelIdentity,
    cached_clip,
    load_clip,
    register_model_configs,
    zero_shot,
    zero_shot_classifier,
)
from vlm_core.errors import InputError, UsageError
from vlm_core.types import Image
from vlm_core.weights import OFFLINE_FLAGS, WeightsError, sha256_of
from vlm_core.weights import download as download_mod

COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0),
           "yellow": (1.0, 1.0, 0.0)}  # fmt: skip
TEMPLATES = ("a {} image", "a photo of something {}")


def _no_network(*args: object, **kwargs: object) -> None:
    raise OSError("network disabled in tests")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A private VLM_HOME and caches, no offline flags, and no network at all."""
    monkeypatch.setenv("VLM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    for name in (*OFFLINE_FLAGS, "HF_ENDPOINT", "VLM_PROBE_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)


def colour_images(n_per_colour: int, seed: int) -> tuple[list[Image], list[str]]:
    """Solid images of each colour, each a random shade (channels jittered by up to 0.3)
    with pixel noise, of random sizes; and their colour names."""
    rng = np.random.default_rng(seed)
    images, names = [], []
    for _ in range(n_per_colour):
        for name, rgb in COLOURS.items():
            h, w = rng.integers(24, 64, size=2)
            shade = np.clip(np.array(rgb) * rng.uniform(0.7, 1.0) + rng.uniform(0, 0.3, 3), 0, 1)
            pixels = np.clip(shade + rng.normal(0, 0.05, (h, w, 3)), 0, 1)
            images.append(Image((pixels * 255).astype(np.uint8), name=f"{name}-{len(images)}"))
            names.append(name)
    return images, names


@pytest.fixture(scope="module")
def trained_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """vlm-test-clip trained briefly with open_clip's ClipLoss on coloured images paired with
    captions naming the colour; saved as a safetensors state dict."""
    import open_clip

    register_model_configs()
    torch.manual_seed(0)
    model, preprocess, _ = open_clip.create_model_and_transforms(TEST_ARCH, pretrained=None)
    tokenizer = open_clip.get_tokenizer(TEST_ARCH)
    images, names = colour_images(16, seed=1)
    pixels = torch.stack([preprocess(_pil(im)) for im in images])  # train transform
    by_colour = {c: [i for i, n in enumerate(names) if n == c] for c in COLOURS}
    loss_fn = open_clip.loss.ClipLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for step in range(80):
        picks = [idx[int(torch.randint(len(idx), (1,), generator=generator))]
                 for idx in by_colour.values()]  # fmt: skip
        template = TEMPLATES[step % len(TEMPLATES)]
        tokens = tokenizer([template.format(c) for c in COLOURS])
        image_features, text_features, scale = model(pixels[picks], tokens)
        loss = loss_fn(image_features, text_features, scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1, f"the tiny CLIP did not learn the colours (loss {loss.item():.3f})"
    path = tmp_path_factory.mktemp("clip") / "colours.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


def _pil(image: Image) -> object:
    from PIL import Image as PIL

    return PIL.fromarray(image.to_rgb_uint8())


def test_embeddings_are_unit_length_and_do_not_depend_on_the_batch_size() -> None:
    enc = load_clip(TEST_ARCH)
    images, _ = colour_images(2, seed=3)
    images.append(Image(np.linspace(0, 1, 40 * 30).reshape(40, 30)))  # grayscale float
    images.append(Image(np.full((20, 20, 4), 200, np.uint8)))  # RGBA
    whole = enc.encode_images(images, batch_size=64)
    assert whole.shape == (len(images), enc.dim) and whole.dtype == torch.float32
    assert torch.allclose(whole.norm(dim=1), torch.ones(len(images)), atol=1e-5)
    for batch_size in (1, 3):
        assert torch.allclose(enc.encode_images(images, batch_size=batch_size), whole, atol=1e-5)
    # a batch preprocessed beforehand gives the same embeddings
    assert torch.allclose(enc.encode_images(enc.pixels(images), batch_size=4), whole, atol=1e-5)

    texts = ["a red image", "a blue image", "something else entirely", ""]
    together = enc.encode_texts(texts)
    assert together.shape == (4, enc.dim)
    assert torch.allclose(together.norm(dim=1), torch.ones(4), atol=1e-5)
    one_by_one = torch.cat([enc.encode_texts([t]) for t in texts])
    assert torch.allclose(one_by_one, together, atol=1e-5)
    assert not torch.allclose(together[0], together[1], atol=1e-3)  # texts differ
    assert enc.encode_images([]).shape == (0, enc.dim)


def test_bad_inputs_are_refused_with_one_line() -> None:
    enc = load_clip(TEST_ARCH)
    with pytest.raises(UsageError, match=r"must be \(N, 3, 32, 32\), got \(2, 3, 64, 64\)"):
        enc.encode_images(torch.zeros(2, 3, 64, 64))
    with pytest.raises(UsageError, match="image 1 is a str"):
        enc.encode_images([Image(np.zeros((8, 8), np.uint8)), "cat.jpg"])  # type: ignore[list-item]
    with pytest.raises(UsageError, match="batch_size must be at least 1"):
        enc.encode_texts(["a"], batch_size=0)
    with pytest.raises(UsageError, match=r"unknown open_clip architecture 'ViT-B-33'; did you "
                       r"mean 'ViT-B-32'\?"):  # fmt: skip
        load_clip("ViT-B-33")
    with pytest.raises(UsageError, match="unknown precision 'int8'"):
        load_clip(TEST_ARCH, precision="int8")


def test_random_initialisation_is_seeded_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = load_clip(TEST_ARCH, seed=7)
    assert torch.equal(torch.rand(3), expected)
    b = load_clip(TEST_ARCH, seed=7)
    c = load_clip(TEST_ARCH, seed=8)
    texts = ["a red image"]
    assert torch.equal(a.encode_texts(texts), b.encode_texts(texts))
    assert not torch.allclose(a.encode_texts(texts), c.encode_texts(texts))
    assert a.identity == ModelIdentity(TEST_ARCH, None, 32, 7) != c.identity


def test_contrastive_training_makes_zero_shot_classify_held_out_colours(trained_weights) -> None:
    held_out, truth = colour_images(6, seed=99)  # other shades, sizes and noise
    labels = list(COLOURS)
    untrained = zero_shot(load_clip(TEST_ARCH), held_out, labels, TEMPLATES)
    accuracy = np.mean([p == t for p, t in zip(untrained.predicted(), truth, strict=True)])
    assert accuracy < 0.6  # random weights do not know the colours ...

    enc = load_clip(TEST_ARCH, str(trained_weights))
    assert enc.weights_sha256 == sha256_of(trained_weights)
    assert enc.identity.seed is None
    result = zero_shot(enc, held_out, labels, TEMPLATES)
    assert result.labels == tuple(labels) and result.probs.shape == (len(held_out), 4)
    assert torch.allclose(result.probs.sum(dim=1), torch.ones(len(held_out)), atol=1e-5)
    assert result.predicted() == truth  # ... the trained ones get every image right
    best = result.top(2)[0]
    assert best[0][0] == truth[0] and best[0][1] > best[1][1]


def test_class_embeddings_average_the_normalised_template_embeddings(trained_weights) -> None:
    enc = load_clip(TEST_ARCH, str(trained_weights))
    clf = zero_shot_classifier(enc, ["red", "blue"], [*TEMPLATES, lambda c: f"{c}!"],
                               batch_size=1)  # fmt: skip
    for row, label in zip(clf.weights, clf.labels, strict=True):
        per_template = enc.encode_texts([f"a {label} image", f"a photo of something {label}",
                                         f"{label}!"])  # fmt: skip
        mean = per_template.mean(dim=0)
        assert torch.allclose(row, mean / mean.norm(), atol=1e-5)
    embeddings = enc.encode_images(colour_images(1, seed=5)[0])
    logits = enc.logit_scale * embeddings @ clf.weights.T
    assert torch.allclose(clf.probabilities(embeddings).probs, logits.softmax(dim=1), atol=1e-5)


def test_zero_shot_refuses_bad_labels_and_templates() -> None:
    enc = load_clip(TEST_ARCH)
    with pytest.raises(UsageError, match=r"template 'a photo' must contain '\{\}' once"):
        zero_shot_classifier(enc, ["red"], ["a photo"])
    with pytest.raises(UsageError, match=r"template '\{\} and \{\}' must contain"):
        zero_shot_classifier(enc, ["red"], ["{} and {}"])
    with pytest.raises(UsageError, match="label 'red' is given twice"):
        zero_shot_classifier(enc, ["red", "blue", "red"])
    with pytest.raises(UsageError, match="labels must be a non-empty sequence"):
        zero_shot_classifier(enc, "red")


def test_retrieval_finds_the_matching_items(trained_weights, tmp_path) -> None:
    enc = load_clip(TEST_ARCH, str(trained_weights))
    images, names = colour_images(3, seed=42)
    index = EmbeddingIndex(enc.identity)
    index.add([im.name for im in images], enc.encode_images(images),
              [{"colour": n} for n in names])  # fmt: skip
    for colour in COLOURS:  # text -> images: the three images of that colour come first
        hits = index.search(enc.encode_texts([f"a {colour} image"])[0], k=3)
        assert [h.metadata["colour"] for h in hits] == [colour] * 3
        assert hits[0].score >= hits[1].score >= hits[2].score
    query = enc.encode_images([images[5]])[0]  # image -> image: itself first
    (hit,) = index.search(query, k=1)
    assert hit.id == images[5].name and hit.score == pytest.approx(1.0, abs=1e-5)
    # the other way: images -> captions
    captions = EmbeddingIndex(enc.identity)
    captions.add(list(COLOURS), enc.encode_texts([f"a {c} image" for c in COLOURS]))
    found = captions.search_many(enc.encode_images(images), k=1)
    assert [hits[0].id for hits in found] == names


def _index(dim: int = 4, n: int = 5) -> EmbeddingIndex:
    index = EmbeddingIndex(ModelIdentity("vlm-test-clip", "ab" * 32, dim))
    vectors = np.random.default_rng(0).normal(size=(n, dim))
    index.add([f"item-{i}" for i in range(n)], vectors, [{"i": i, "path": f"{i}.png"}
                                                         for i in range(n)])  # fmt: skip
    return index


def test_the_index_round_trips_through_a_folder(tmp_path) -> None:
    index = _index()
    folder = index.save(tmp_path / "idx")
    loaded = EmbeddingIndex.load(folder, model=index.model)
    assert loaded.ids == index.ids and loaded.model == index.model
    assert np.array_equal(loaded.vectors, index.vectors)
    assert loaded.metadata("item-3") == {"i": 3, "path": "3.png"}
    query = np.random.default_rng(1).normal(size=4)
    assert loaded.search(query, k=3) == index.search(query, k=3)
    assert loaded.vectors.dtype == np.float32 and not loaded.vectors.flags.writeable
    # saving again replaces the index; only one vectors file is left
    index.add(["item-9"], np.ones((1, 4)))
    index.save(folder)
    assert len(list(folder.glob("vectors-*.safetensors"))) == 1
    assert len(EmbeddingIndex.load(folder)) == 6
    manifest = json.loads((folder / "index.json").read_text())
    assert manifest["model"] == index.model.as_dict() and manifest["count"] == 6


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


def test_the_index_refuses_truncated_and_corrupt_files(tmp_path) -> None:
    folder = _index().save(tmp_path / "idx")
    (vectors,) = folder.glob("vectors-*.safetensors")
    good = vectors.read_bytes()

    vectors.write_bytes(good[: len(good) // 2])
    with pytest.raises(InputError, match="is truncated") as info:
        EmbeddingIndex.load(folder)
    _one_line(info.value)

    flipped = bytearray(good)
    flipped[-3] ^= 0xFF  # a vector's byte: the file still parses
    vectors.write_bytes(bytes(flipped))
    with pytest.raises(InputError, match="is corrupt: its sha256 is") as info:
        EmbeddingIndex.load(folder)
    _one_line(info.value)

    vectors.unlink()
    with pytest.raises(InputError, match=r"incomplete: its vectors file .* is missing"):
        EmbeddingIndex.load(folder)
    vectors.write_bytes(good)
    EmbeddingIndex.load(folder)  # restored

    manifest = folder / "index.json"
    text = manifest.read_text()
    manifest.write_text(text[:-20])
    with pytest.raises(InputError, match=r"index\.json is corrupt: not valid JSON") as info:
        EmbeddingIndex.load(folder)
    _one_line(info.value)
    data = json.loads(text)
    data["vectors"]["file"] = "../../etc/passwd"
    manifest.write_text(json.dumps(data))
    with pytest.raises(InputError, match="its vectors entry is malformed"):
        EmbeddingIndex.load(folder)
    with pytest.raises(InputError, match=r"no embedding index at .*: it has no index\.json"):
        EmbeddingIndex.load(tmp_path)


def test_the_index_refuses_another_model_and_other_dimensions(tmp_path) -> None:
    index = _index(dim=4)
    folder = index.save(tmp_path / "idx")
    other_weights = ModelIdentity("vlm-test-clip", "cd" * 32, 4)
    built_by = r"was built by vlm-test-clip \(weights ababab.*, dim 4\), not by vlm-test-clip"
    with pytest.raises(UsageError, match=built_by + r" \(weights cdcdcd") as info:
        EmbeddingIndex.load(folder, model=other_weights)
    _one_line(info.value)
    with pytest.raises(UsageError, match=r"dimension mismatch: the index at .* holds "
                       r"4-dimensional vectors .*, the model gives 32"):  # fmt: skip
        EmbeddingIndex.load(folder, model=ModelIdentity("vlm-test-clip", "ab" * 32, 32))
    with pytest.raises(UsageError, match="dimension mismatch: the query has 3 dimensions"):
        index.search(np.ones(3))
    with pytest.raises(UsageError, match="dimension mismatch: the vectors have 5 dimensions"):
        index.add(["x"], np.ones((1, 5)))
    with pytest.raises(UsageError, match="id 'item-1' is already in the index"):
        index.add(["item-1"], np.ones((1, 4)))
    with pytest.raises(UsageError, match="zero vector"):
        index.add(["z"], np.zeros((1, 4)))
    with pytest.raises(UsageError, match="metadata of 'm' is not JSON-serialisable"):
        index.add(["m"], np.ones((1, 4)), [{"when": object()}])
    # a manifest that disagrees with its vectors file is refused too
    data = json.loads((folder / "index.json").read_text())
    data["model"]["dim"] = 8
    (folder / "index.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"dimension mismatch in .*: vectors of shape \(5, 4\)"):
        EmbeddingIndex.load(folder)


def test_a_hub_reference_resolves_through_the_weights_engine(
    trained_weights, tmp_path, monkeypatch
) -> None:
    import huggingface_hub

    requested: list[tuple[str, str]] = []

    def fake_download(repo_id: str, filename: str, **kwargs: object) -> str:
        requested.append((repo_id, filename))
        target = tmp_path / "downloads" / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(trained_weights, target)
        return str(target)

    monkeypatch.setattr(download_mod, "unreachable_reason", lambda url, timeout: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    enc = load_clip(TEST_ARCH, "hf-hub:org/tiny-clip")  # a bare repo: open_clip's file name
    assert requested == [("org/tiny-clip", "open_clip_model.safetensors")]
    assert enc.weights_sha256 == sha256_of(trained_weights)
    local = load_clip(TEST_ARCH, str(trained_weights))
    texts = ["a green image"]
    assert torch.equal(enc.encode_texts(texts), local.encode_texts(texts))
    load_clip(TEST_ARCH, "hf-hub:org/tiny-clip/sub/w.safetensors@v1", sha256=enc.weights_sha256)
    assert requested[-1] == ("org/tiny-clip", "sub/w.safetensors")
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        load_clip(TEST_ARCH, "hf-hub:org/other/w.safetensors", sha256="0" * 64)


def test_a_pretrained_tag_missing_offline_is_one_clear_line(monkeypatch) -> None:
    monkeypatch.setenv("VLM_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(WeightsError) as info:
        load_clip("ViT-B-32", "laion2b_s34b_b79k")
    assert time.monotonic() - start < 5
    message = _one_line(info.value)
    assert "open_clip:ViT-B-32/laion2b_s34b_b79k" in message
    assert "downloads are off (VLM_OFFLINE=1)" in message
    assert "vlm weights fetch open_clip:ViT-B-32/laion2b_s34b_b79k" in message
    monkeypatch.delenv("VLM_OFFLINE")  # no switch, but no network either: also fast
    with pytest.raises(WeightsError, match="no network") as info:
        load_clip("ViT-B-32", "laion2b_s34b_b79k")
    _one_line(info.value)
    with pytest.raises(UsageError, match=r"neither a file nor an open_clip pretrained tag of "
                       r"'ViT-B-32'; did you mean 'laion2b_s34b_b79k'\?"):  # fmt: skip
        load_clip("ViT-B-32", "laion2b_s34b_b79")
    with pytest.raises(WeightsError, match="no such file"):
        load_clip(TEST_ARCH, "missing/weights.safetensors")


def test_weights_files_load_safely_and_must_fit(trained_weights, tmp_path) -> None:
    from safetensors.torch import load_file

    state = load_file(trained_weights)
    pickled = tmp_path / "colours.pt"
    torch.save({"state_dict": state}, pickled)  # a training checkpoint, read weights-only
    texts = ["a blue image"]
    expected = load_clip(TEST_ARCH, str(trained_weights)).encode_texts(texts)
    assert torch.equal(load_clip(TEST_ARCH, str(pickled)).encode_texts(texts), expected)

    partial = tmp_path / "partial.safetensors"
    save_file({k: v for k, v in state.items() if k != "text_projection"}, partial)
    with pytest.raises(WeightsError, match=r"do not fit open_clip 'vlm-test-clip': keys 1 missing "
                       r"\(text_projection\)") as info:  # fmt: skip
        load_clip(TEST_ARCH, str(partial))
    _one_line(info.value)
    with pytest.raises(WeightsError, match="do not fit open_clip 'ViT-B-32': ") as info:
        load_clip("ViT-B-32", str(trained_weights))
    _one_line(info.value)


def test_cached_clip_shares_one_encoder() -> None:
    a, release_a = cached_clip(TEST_ARCH, seed=3)
    b, release_b = cached_clip(TEST_ARCH, seed=3)
    c, release_c = cached_clip(TEST_ARCH, seed=4)
    try:
        assert a is b and a is not c
    finally:
        release_a(), release_b(), release_c()


def test_importing_the_package_does_not_import_torch_or_open_clip() -> None:
    code = (
        "import sys, vlm_core.crossmodal as c; from vlm_core.crossmodal import index;"
        "assert 'torch' not in sys.modules and 'open_clip' not in sys.modules, 'imported';"
        "c.EmbeddingIndex; c.ModelIdentity; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
