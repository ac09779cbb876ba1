"""The captioner of vlm_core.crossmodal: vocabulary, data readers, the model and its decoding,
training through the core trainer, and the caption metrics.

Models are tiny (timm's registered ``test_vit`` / ``test_resnet`` towers on 32-pixel images, a
two-block decoder of width 32-64) and random or trained here in a few dozen steps. The CIDEr-D
expectations are worked out by hand in the comments from the paper's formula with the COCO
evaluation's conventions, not by running the implementation.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image as PIL

from vlm_core.crossmodal import (
    CaptionDataset,
    Captioner,
    CaptionerArch,
    CaptionItem,
    CaptionMetrics,
    CIDErD,
    Decoded,
    Vocab,
    captioner_setup,
    cider_d,
    collate_captions,
    read_caption_csv,
    read_captions,
    read_coco_captions,
    split_items,
)
from vlm_core.errors import InputError, UsageError
from vlm_core.training import TrainConfig, Trainer
from vlm_core.weights.errors import WeightsError
from vlm_core.weights.trained import load_trained

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}
TINY = {"backbone": "test_vit", "backbone_options": {"img_size": 32}, "image_size": 32,
        "width": 32, "depth": 2, "heads": 4, "max_positions": 14, "dropout": 0.0}  # fmt: skip


def write_image(path: Path, rgb: tuple[int, int, int] = (200, 30, 30)) -> Path:
    PIL.new("RGB", (40, 32), rgb).save(path)
    return path


# -- vocabulary ---------------------------------------------------------------------------------


def test_vocab_round_trip_through_json() -> None:
    vocab = Vocab.build(["A red square.", "a blue square, on the left", "What colour is it?"])
    assert vocab.tokens[:5] == ("<pad>", "<bos>", "<eos>", "<unk>", "<sep>")
    assert vocab.tokens[5:8] == ("a", "square", ",")  # most frequent first, ties alphabetical
    again = Vocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert again == vocab
    ids = again.encode("A blue square, on the left.")
    assert again.decode(ids) == "a blue square, on the left."
    assert again.decode([vocab.bos, *ids[:2], vocab.eos, *ids]) == "a blue"
    assert again.encode("a purple square") == [vocab.id("a"), vocab.unk, vocab.id("square")]
    seq, prefix = vocab.sequence("red", "what colour is it?", max_positions=16)
    assert (
        seq[0] == vocab.bos
        and seq[prefix - 1] == vocab.sep
        and seq[prefix:]
        == [
            vocab.id("red"),
            vocab.eos,
        ]
    )
    assert len(vocab.sequence("a " * 40, None, max_positions=16)[0]) == 16
    assert len(Vocab.build(["a a b c"], min_count=2)) == 6
    assert len(Vocab.build(["a a b b c d"], max_size=7)) == 7
    with pytest.raises(UsageError, match="special tokens"):
        Vocab.from_dict({"tokens": ["a", "b"]})


# -- data readers -------------------------------------------------------------------------------


def coco_file(root: Path, **changes: object) -> Path:
    (root / "img").mkdir(exist_ok=True)
    write_image(root / "img" / "one.png")
    write_image(root / "img" / "two.png", (30, 30, 200))
    data: dict[str, object] = {
        "images": [{"id": 1, "file_name": "img/one.png"}, {"id": 2, "file_name": "img/two.png"}],
        "annotations": [
            {"image_id": 1, "caption": "A red  square."},
            {"image_id": 2, "caption": "a blue square"},
            {"image_id": 1, "caption": "something red"},
        ],
    }
    data.update(changes)
    path = root / "captions.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_reader_accepts_a_good_file(tmp_path: Path) -> None:
    items = read_captions(coco_file(tmp_path))
    assert [(i.image.name, i.captions, i.question) for i in items] == [
        ("one.png", ("A red square.", "something red"), None),
        ("two.png", ("a blue square",), None),
    ]
    assert items[0].image == (tmp_path / "img" / "one.png").resolve()


@pytest.mark.parametrize(
    ("changes", "entry"),
    [
        ({"images": [{"id": 1, "file_name": "img/one.png"}, {"id": 2, "file_name": "nope.png"}]},
         "images[1] (id 2): image file 'nope.png' not found"),
        ({"annotations": [{"image_id": 1, "caption": "x"}, {"image_id": 7, "caption": "y"}]},
         "annotations[1]: image_id 7 is not in 'images'"),
        ({"annotations": [{"image_id": 1, "caption": "x"}, {"image_id": 2, "caption": "  "}]},
         "annotations[1] (image_id 2): empty caption"),
        ({"images": [{"id": 1, "file_name": "img/one.png"}, {"file_name": "img/two.png"}]},
         "images[1] has no 'id'"),
        ({"annotations": None}, "needs 'images' and 'annotations'"),
    ],
)  # fmt: skip
def test_coco_reader_refuses_bad_entries(tmp_path: Path, changes: dict, entry: str) -> None:
    path = coco_file(tmp_path, **changes)
    with pytest.raises(InputError) as err:
        read_coco_captions(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    if "needs" in entry:
        assert "'images' and 'annotations' lists" in message
    else:
        assert entry in message


def test_coco_reader_refuses_bad_json_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [}')
    with pytest.raises(InputError, match=r"bad\.json: not valid JSON \(line 1 column 13"):
        read_captions(bad)
    with pytest.raises(InputError, match=r"missing\.json: no such COCO captions file"):
        read_captions(tmp_path / "missing.json")
    with pytest.raises(InputError, match=r"\.txt: caption data is a COCO captions \.json or a"):
        read_captions(tmp_path / "captions.txt")


def test_csv_reader_accepts_captions_and_questions(tmp_path: Path) -> None:
    write_image(tmp_path / "red.png")
    write_image(tmp_path / "blue.png", (30, 30, 200))
    path = tmp_path / "data.csv"
    path.write_text(
        "image,caption,question,answer\n"
        'red.png,"a red square, small",,\n'
        "red.png,,what colour is it?,red\n"
        "blue.png,a blue square,what colour is it?,blue\n"
        "\n"
        "red.png,a square,what colour is it?,crimson\n"
    )
    items = read_caption_csv(path)
    assert [(i.image.name, i.question, i.captions) for i in items] == [
        ("red.png", None, ("a red square, small", "a square")),
        ("red.png", "what colour is it?", ("red", "crimson")),
        ("blue.png", None, ("a blue square",)),
        ("blue.png", "what colour is it?", ("blue",)),
    ]
    plain = tmp_path / "plain.csv"
    plain.write_text("image,caption\nblue.png,a blue square\n")
    assert read_captions(plain)[0].captions == ("a blue square",)


@pytest.mark.parametrize(
    ("text", "entry"),
    [
        ("image,text\nred.png,a\n", "missing column(s) caption in the header (image,text)"),
        ("file,caption\nred.png,a\n", "missing column(s) image"),
        ("image,caption,question\nred.png,a,b\n", "missing column(s) answer"),
        ("image,caption\nred.png,a\ngone.png,b\n",
         "line 3: image file 'gone.png' not found"),
        ("image,caption\nred.png,a\nred.png, \n", "line 3: empty caption"),
        ("image,question,answer\nred.png,what?,\n", "line 2: question without an answer"),
        ("image,caption\nred.png,a,b\n", "line 2: 3 field(s), the header has 2"),
        ('image,caption\n"red.png"x,a\n', "not a valid CSV (line 2:"),
        ("", "empty file"),
        ("image,caption\n", "no rows after the header"),
    ],
)  # fmt: skip
def test_csv_reader_refuses_bad_entries(tmp_path: Path, text: str, entry: str) -> None:
    write_image(tmp_path / "red.png")
    path = tmp_path / "data.csv"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        read_caption_csv(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert entry in message


def test_dataset_and_collate_pad_a_batch(tmp_path: Path) -> None:
    items = read_captions(coco_file(tmp_path))
    items.append(CaptionItem(items[1].image, ("blue",), "what colour is it?"))
    vocab = Vocab.build(t for item in items for t in item.texts())
    model = Captioner(TINY, vocab)
    train = CaptionDataset(items, vocab, model.transform, max_positions=14)
    val = CaptionDataset(items, vocab, model.transform, max_positions=14, per_caption=False)
    assert (len(train), len(val)) == (4, 3)
    batch = collate_captions([train[i] for i in range(len(train))])
    assert batch["images"].shape == (4, 3, 32, 32)
    assert batch["prefix_len"].tolist() == [1, 1, 1, 7]  # <bos> what colour is it ? <sep>
    lengths = [
        len(vocab.encode(c)) + 2 for c in ("A red square.", "something red", "a blue square")
    ]
    assert batch["tokens"].shape == (4, 9)  # the question's prefix, "blue", <eos>
    assert [int((row != vocab.pad).sum()) for row in batch["tokens"]] == [*lengths, 9]
    assert batch["references"][0] == ["A red square.", "something red"]
    assert batch["questions"] == [None, None, None, "what colour is it?"]
    train_items, val_items = split_items(items, 0.5, seed=1)
    assert {i.image for i in train_items}.isdisjoint({i.image for i in val_items})
    assert len(train_items) + len(val_items) == len(items) and val_items


# -- the model ----------------------------------------------------------------------------------


def random_model(seed: int, **arch: object) -> Captioner:
    torch.manual_seed(seed)
    vocab = Vocab.build(["a b c d e f g h i j k", "what is it ?"])
    return Captioner({**TINY, **arch}, vocab)


QUESTIONS = [None, "what is it?", None, "what?"]


def test_architecture_is_data_and_refuses_unknown_fields() -> None:
    arch = CaptionerArch.from_dict(json.loads(json.dumps(CaptionerArch(**TINY).to_dict())))
    assert arch == CaptionerArch(**TINY)
    with pytest.raises(UsageError, match=r"unknown captioner architecture field 'widht'.*'width'"):
        CaptionerArch.from_dict({"widht": 64})
    with pytest.raises(UsageError, match="multiple of heads"):
        CaptionerArch.from_dict({"width": 30, "heads": 4})


def test_cached_decoding_matches_the_full_forward_pass() -> None:
    """Greedy decoding (KV cache, left-padded prefixes) scores its sequences as the
    teacher-forced forward pass does, and each image's result is the same alone or batched."""
    model = random_model(0)
    images = torch.randn(4, 3, 32, 32)
    out = model.greedy(images, QUESTIONS)
    eos = model.vocab.eos
    sequences = [ids + [eos] * end for ids, end in zip(out.ids, out.finished, strict=True)]
    torch.testing.assert_close(
        model.score(images, sequences, QUESTIONS), torch.tensor(out.log_probs, dtype=torch.float64)
    )
    for i in range(4):
        alone = model.greedy(images[i : i + 1], QUESTIONS[i : i + 1])
        assert alone.ids[0] == out.ids[i]
    short = model.greedy(images, QUESTIONS, max_len=3)
    assert all(len(ids) <= 3 - end for ids, end in zip(short.ids, short.finished, strict=True))
    assert [ids[: len(s)] for ids, s in zip(out.ids, short.ids, strict=True)] == short.ids


def test_scoring_candidates_equals_scoring_each_sequence_alone() -> None:
    """score_candidates encodes each image once and scores every candidate after the same
    question; each entry is what score() gives that (image, sequence) pair."""
    model = random_model(0)
    images = torch.randn(3, 3, 32, 32)
    vocab = model.vocab
    candidates = [[vocab.id("red"), vocab.eos], [vocab.id("a"), vocab.id("red"), vocab.eos], [5]]
    for question in ("what colour is it?", None):
        got = model.score_candidates(images, candidates, question)
        assert got.shape == (3, 3) and got.dtype == torch.float64
        for i in range(3):
            for j, seq in enumerate(candidates):
                alone = model.score(images[i : i + 1], [seq], [question])
                torch.testing.assert_close(got[i, j], alone[0])
    with pytest.raises(UsageError, match="non-empty candidate"):
        model.score_candidates(images, [[]])
    with torch.inference_mode():
        memory = model.encode_images(images)
    for question in ("what colour is it?", None):  # kept memory tokens instead of images
        kept = model.score_candidates(None, candidates, question, memory=memory)
        torch.testing.assert_close(kept, model.score_candidates(images, candidates, question))
    with pytest.raises(UsageError, match="either images or their memory"):
        model.score_candidates(images, candidates, memory=memory)
    with pytest.raises(UsageError, match="memory must be"):
        model.score_candidates(None, candidates, memory=memory[..., :3])


def test_a_run_ships_as_float32_safetensors_with_its_sidecar(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from vlm_core.weights.trained import ship_trained

    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000002"
    checkpoint.mkdir(parents=True)
    save_file({"g.w": torch.ones(2, dtype=torch.bfloat16), "d.w": torch.ones(3),
               "n": torch.arange(3)}, str(checkpoint / "model.safetensors"))  # fmt: skip
    (checkpoint / "model.json").write_text(json.dumps({"task": "t", "card": {"a": 1}}))
    (tmp_path / "run" / "checkpoints.json").write_text(
        json.dumps({"best": "step-00000002", "last": "step-00000002"})
    )
    model, n = ship_trained(tmp_path / "run", tmp_path / "pkg", keep=lambda k: k != "d.w")
    assert n == 2
    shipped = load_trained(str(model))
    assert set(shipped.state_dict) == {"g.w", "n"}
    assert shipped.state_dict["g.w"].dtype == torch.float32
    assert shipped.state_dict["n"].dtype == torch.int64
    assert shipped.card == {"a": 1} and shipped.sidecar["shipped_from"].endswith("step-00000002")
    with pytest.raises(WeightsError, match="neither a training nor a checkpoint folder"):
        ship_trained(tmp_path / "pkg" / "nothing", tmp_path / "x")


def test_a_resnet_tower_captions_too() -> None:
    model = random_model(0, backbone="resnet10t", backbone_options={})
    out = model.beam_search([PIL.new("RGB", (50, 30), (10, 200, 10))], beam=2, max_len=4)
    assert len(out.ids[0]) <= 4 and isinstance(out.texts[0], str)


def test_a_beam_of_one_is_greedy_decoding() -> None:
    images = torch.randn(8, 3, 32, 32)
    questions = QUESTIONS * 2
    for seed in (0, 1):
        model = random_model(seed)
        greedy = model.greedy(images, questions)
        one = model.beam_search(images, questions, beam=1, length_penalty=0.7)
        assert one.ids == greedy.ids and one.texts == greedy.texts
        assert one.finished == greedy.finished and one.log_probs == greedy.log_probs


def test_an_exhaustive_beam_finds_the_best_sequence() -> None:
    """With max_len 3 and a beam as wide as every two-token prefix, beam search must return the
    best of all sequences of up to three tokens — found here by scoring each of them with the
    teacher-forced forward pass — by log-probability (length_penalty 0) and by log-probability
    per token (1); greedy's and a 3-wide beam's sequences can be no likelier."""
    torch.manual_seed(3)
    vocab = Vocab.build(["a b c d e f"])
    model = Captioner(TINY, vocab)
    images = torch.randn(4, 3, 32, 32)
    banned = (vocab.pad, vocab.bos, vocab.sep, vocab.eos)
    words, eos = [i for i in range(len(vocab)) if i not in banned], vocab.eos
    candidates = [[eos]] + [[x, eos] for x in words]
    candidates += [[x, y, eos] for x in words for y in words]
    candidates += [[x, y, z] for x in words for y in words for z in words]  # cut at max_len
    lengths = torch.tensor([len(c) for c in candidates], dtype=torch.float64)
    scores = [
        model.score(images[i : i + 1].expand(len(candidates), -1, -1, -1), candidates)
        for i in range(len(images))
    ]

    def rank(log_probs: list[float], out: Decoded, penalty: float) -> list[float]:
        sizes = [len(ids) + end for ids, end in zip(out.ids, out.finished, strict=True)]
        return [lp / n**penalty for lp, n in zip(log_probs, sizes, strict=True)]

    for penalty in (0.0, 1.0):
        best = [float((s / lengths**penalty).max()) for s in scores]
        wide = model.beam_search(images, beam=len(words) ** 2, max_len=3, length_penalty=penalty)
        assert rank(wide.log_probs, wide, penalty) == pytest.approx(best, abs=1e-5)
        for found in (model.greedy(images, max_len=3), model.beam_search(
            images, beam=3, max_len=3, length_penalty=penalty)):  # fmt: skip
            ranks = rank(found.log_probs, found, penalty)
            assert all(r <= b + 1e-5 for r, b in zip(ranks, best, strict=True))
    # by log-probability the end token alone is the best here, which greedy decoding misses
    wide = model.beam_search(images, beam=len(words) ** 2, max_len=3, length_penalty=0.0)
    greedy = model.greedy(images, max_len=3)
    assert any(w > g + 1.0 for w, g in zip(wide.log_probs, greedy.log_probs, strict=True))


def test_captioner_learns_captions_and_answers_through_the_trainer(tmp_path: Path) -> None:
    """Three solid colours, each with a caption and a question: the core trainer fits them, the
    validation metrics and greedy decoding reproduce every text, the card rebuilds the model."""
    items = []
    for name, rgb in COLOURS.items():
        image = write_image(tmp_path / f"{name}.png", rgb)
        items.append(CaptionItem(image, (f"a {name} square",)))
        items.append(CaptionItem(image, (name,), "what colour is it?"))
    vocab = Vocab.build(t for item in items for t in item.texts())
    torch.manual_seed(0)
    model = Captioner({**TINY, "width": 64, "max_positions": 16}, vocab)
    images = [PIL.open(item.image) for item in items]
    questions = [item.question for item in items]
    expected = [item.captions[0] for item in items]
    assert model.greedy(images, questions).texts != expected  # untrained

    setup = captioner_setup(model, items, items)
    config = TrainConfig(max_steps=30, batch_size=6, lr=3e-3, weight_decay=0.0, tensorboard=False)
    result = Trainer(setup, config, tmp_path / "run").fit()
    assert result.status == "completed" and result.best is not None
    metrics = result.best["metrics"]
    # every text exact: BLEU-1..3 and ROUGE-L are 1 (no caption has four words, so BLEU-4 is
    # 0); CIDEr-D is 7.5 for a three-word caption (orders 1-3 of 4 match) and 2.5 for a
    # one-word answer, 5.0 on average
    assert metrics["val_bleu1"] == metrics["val_bleu3"] == metrics["val_rougeL"] == 1.0
    assert metrics["val_cider"] == pytest.approx(5.0)
    greedy = model.greedy(images, questions)
    assert greedy.texts == expected
    beam = model.beam_search(images, questions, beam=3, length_penalty=0.0)
    assert beam.texts == expected
    # float32: the two decoders sum the same tokens' log-probabilities in different batch
    # layouts, so an equal text may score a few 1e-7 apart
    assert all(b >= g - 1e-6 for b, g in zip(beam.log_probs, greedy.log_probs, strict=True))

    trained = load_trained(str(tmp_path / "run"))
    rebuilt = Captioner.from_card(json.loads(json.dumps(trained.card)))
    rebuilt.load_state_dict(trained.state_dict)
    assert rebuilt.greedy(images, questions).texts == expected


# -- metrics ------------------------------------------------------------------------------------


def test_metrics_of_identical_and_unrelated_captions() -> None:
    refs = ["a man rides a red bike down the road", "two dogs play with a ball on the grass"]
    same = CaptionMetrics()
    same.update([r.upper() + "." for r in refs], [[r] for r in refs])  # case, punctuation
    values = {k: float(v) for k, v in same.compute().items()}
    assert values == pytest.approx(
        {"bleu1": 1, "bleu2": 1, "bleu3": 1, "bleu4": 1, "rougeL": 1, "cider": 10.0}
    )
    other = CaptionMetrics()
    other.update(["green trees under blue sky", "an old clock tower at night"], [[r] for r in refs])
    values = {k: float(v) for k, v in other.compute().items()}
    assert all(v < 1e-6 for v in values.values()), values


def test_rouge_l_is_the_lcs_f_measure() -> None:
    # LCS("the cat sat on the mat", "the cat is on the mat") = "the cat on the mat": 5 words;
    # precision 5/6, recall 5/6, F 5/6. The second reference shares nothing; the best counts.
    metrics = CaptionMetrics()
    metrics.update(["The cat sat on the mat"], [["the cat is on the mat", "a dog"]])
    assert float(metrics.compute()["rougeL"]) == pytest.approx(5 / 6, abs=1e-6)


def test_cider_d_on_worked_examples() -> None:
    # (1) N = 2 images, every n-gram in one image's references only: idf = log 2 for all
    # (n-grams absent from the references count df = 1 too), so the weights cancel.
    # image 1 vs "red square": 1-grams cos 1, 2-grams cos 1 -> [1, 1, 0, 0]
    #          vs "red box":    1-grams l^2 / (l*sqrt2)^2 = 1/2, 2-grams 0 -> [1/2, 0, 0, 0]
    #   10 * mean over n of the sum (2.5 / 4) / 2 references = 3.125
    # image 2 "blue circle" vs "green circle": 1-grams 1/2 -> 10 * 0.5 / 4 = 1.25
    scores = cider_d(["red square", "blue circle"], [["red square", "red box"], ["green circle"]])
    assert scores == pytest.approx([3.125, 1.25])

    # (2) "a" is in both images' references: idf log(2/2) = 0. Image 1 equals its reference
    # (orders 1-3 have non-zero weights: cos 1; no 4-gram): 10 * 3/4 = 7.5. Image 2, "a blue
    # circle" vs "a big blue circle": 1-grams {blue, circle} . {big, blue, circle} = 2 l^2 over
    # sqrt2 l * sqrt3 l; 2-grams {a blue, blue circle} . {a big, big blue, blue circle}
    # = 1 / sqrt6; 3-grams 0; lengths (bigram counts) 2 and 3 -> penalty exp(-1 / 72).
    scores = cider_d(["a red square", "a blue circle"], [["a red square"], ["a big blue circle"]])
    image_2 = 10 * math.exp(-1 / 72) * (2 / math.sqrt(6) + 1 / math.sqrt(6)) / 4
    assert scores == pytest.approx([7.5, image_2])

    # (3) clipping: "red red" vs "red square": the candidate's red weighs 2 l, clipped to the
    # reference's l: l * l / (2 l * sqrt2 l) = 1 / (2 sqrt2); bigrams differ -> 10 / (8 sqrt2)
    scores = cider_d(["red red", "blue"], [["red square"], ["blue"]])
    assert scores == pytest.approx([10 / (8 * math.sqrt(2)), 2.5])

    # (4) one image alone: idf = log 1 - log 1 = 0 everywhere, so CIDEr-D is 0 (as in COCO)
    assert cider_d(["a red square"], [["a red square"]]) == [0.0]


def test_cider_metric_accumulates_batches_and_merges_processes() -> None:
    preds = ["a red square", "a blue circle", "red red", "blue"]
    refs = [["a red square"], ["a big blue circle"], ["red square"], ["blue"]]
    expected = sum(cider_d(preds, refs)) / 4
    whole = CIDErD()
    whole.update(preds[:1], refs[:1])
    whole.update(preds[1:], refs[1:])
    assert float(whole.compute()) == pytest.approx(expected)
    first, second = CIDErD(), CIDErD()  # two processes' shares, merged as a sync merges them
    first.update(preds[:2], refs[:2])
    second.update(preds[2:], refs[2:])
    first.merge_state(second)
    assert float(first.compute()) == pytest.approx(expected)
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert float(CIDErD().compute()) == 0.0
    with pytest.raises(UsageError, match="one list of references per prediction"):
        whole.update(["a"], [])


def test_vocab_and_package_import_no_torch() -> None:
    code = (
        "import sys, vlm_core.crossmodal as c; v = c.Vocab.build(['a b']); c.normalise_caption;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
