"""The caption plugin: the product-photo generator, the knowledge base and the reading of
messages, the reply decisions, the bundled captioner's acceptance figures, the three tasks
through the runner and the CLI, open_clip instead of the captioner, training and bad inputs."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import numpy as np
import pytest
from vlm_caption import answer as answer_mod
from vlm_caption.cases import answerable_cases
from vlm_caption.evaluation import caption_scores, read_caption, support_scores
from vlm_caption.knowledge import load_knowledge_base, read_message
from vlm_caption.model import UNSURE, Attribute, Recognition, load_captioner
from vlm_caption.products import (
    DEFECTS,
    PRODUCTS,
    UNKNOWN_OBJECTS,
    answers,
    captions,
    render_photo,
    write_dataset,
)

from vlm_core.crossmodal import read_captions
from vlm_core.errors import InputError, VLMError
from vlm_core.plugins import load_registry
from vlm_core.runner import RunRequest, run_task
from vlm_core.types import Caption, ImageSet, Reply

VLM = [sys.executable, "-m", "vlm_core.cli"]
SAMPLES = Path(__file__).resolve().parents[1] / "vlm_caption" / "samples"

# the acceptance lines of issue 6 (figures measured on the bundled captioner are in
# weights/captioner/TRAINING.md): BLEU-4 >= 0.5, CIDEr >= 1.0 and product, colour and defect
# accuracy of the captions >= 0.90 (measured 0.867, 5.01, 1.0, 1.0, 0.907); the 50 answerable
# cases answered right >= 0.90 (measured 0.96, one wrong reply: a vague message on a dent read
# as a stain; 0.913 and 1 wrong reply on the 300 cases of seeds 2-7).
MIN_BLEU4, MIN_CIDER, MIN_ATTRIBUTE_ACC, MIN_RIGHT_REPLIES = 0.5, 1.0, 0.90, 0.90
# NOT an acceptance line: the question answering's accuracy (measured 0.997, 1.0, 0.903), a
# floor that catches a regression
MIN_QA_ACC = 0.85


@pytest.fixture(autouse=True)
def _private_home(vlm_home: Path) -> Path:
    """A private VLM_HOME (the vlm pytest plugin's): runs, indexes and the run store stay out
    of the user's own. (A fixture here, not a conftest.py: tests/ imports its conftest by that
    module name.)"""
    return vlm_home


def run(task: str, inputs: list[Path] | None = None, **params: object):  # type: ignore[no-untyped-def]
    request = RunRequest(task, [str(p) for p in inputs or []], dict(params), device="cpu")
    return run_task(request, registry=load_registry(), keep_results=True)


# --- the generator ----------------------------------------------------------------------------


def test_photos_are_reproducible_and_show_what_they_say() -> None:
    a, b = render_photo(96, 5), render_photo(96, 5)
    assert a.pixels.shape == (96, 96, 3) and a.pixels.dtype == np.uint8
    assert np.array_equal(a.pixels, b.pixels) and (a.product, a.colour) == (b.product, b.colour)
    assert not np.array_equal(a.pixels, render_photo(96, 6).pixels)
    for product in PRODUCTS:
        for defect in DEFECTS:
            photo = render_photo(64, 1, product=product, defect=defect)
            intact = render_photo(64, 1, product=product, defect="none")
            # the same scene and product: a defect changes pixels on the product only
            assert (defect == "none") == np.array_equal(photo.pixels, intact.pixels), defect
            refs = captions(photo)
            assert len(refs) == 5 and all(product in r and photo.colour in r for r in refs)
            assert all(read_caption(r)["defect"] == defect for r in refs)
    for obj in UNKNOWN_OBJECTS:
        photo = render_photo(64, 2, product=obj)
        assert photo.label == "unknown" and answers(photo)["product"] == "unknown"
        assert all(read_caption(r)["product"] == "unknown" for r in captions(photo))
    with pytest.raises(ValueError, match="unknown product 'cup'"):
        render_photo(64, 0, product="cup")


def test_every_damaged_photo_shows_its_damage(monkeypatch: pytest.MonkeyPatch) -> None:
    """A crack, stain or dent that would land where the photo does not show it (a cap, an
    inside, a spot of its own colour) is drawn again elsewhere: in the final pixels, each
    damaged photo differs from the same photo drawn without the damage (the same random draws)
    on at least 0.3% of its pixels by more than 20 levels."""
    import vlm_caption.products as products

    real = products._with_defect
    damaged = {seed: render_photo(96, 40_000 + seed, defect=DEFECTS[1 + seed % 3])
               for seed in range(60)}  # fmt: skip

    def without(c, defect, base, product_rgb, body):  # type: ignore[no-untyped-def]
        real(c, defect, base, product_rgb, body)  # the same draws, nothing drawn
        return product_rgb

    monkeypatch.setattr(products, "_with_defect", without)
    shares = []
    for seed, photo in damaged.items():
        clean = render_photo(96, 40_000 + seed, defect=photo.defect)
        assert clean.product == photo.product and clean.colour == photo.colour
        changed = np.abs(photo.pixels.astype(int) - clean.pixels.astype(int)).max(-1) > 20
        shares.append(changed.mean())
    assert min(shares) >= 0.003, sorted(shares)[:5]


def test_the_generator_command_writes_a_data_set_and_explains_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vlm_caption.products import main

    with pytest.raises(SystemExit) as exit_help:
        main(["--help"])
    assert exit_help.value.code == 0 and "OUT" in capsys.readouterr().out.upper()
    assert not Path("--help").exists()
    with pytest.raises(SystemExit) as exit_bad:
        main([str(tmp_path / "none"), "0"])
    assert exit_bad.value.code == 2 and not (tmp_path / "none").exists()
    main([str(tmp_path / "three"), "3", "32", "5"])
    assert sorted(p.name for p in (tmp_path / "three").iterdir()) == [
        "00000.png", "00001.png", "00002.png", "attributes.csv", "captions.csv"
    ]  # fmt: skip


def test_the_data_set_is_a_caption_and_qa_csv_the_core_reads(tmp_path: Path) -> None:
    target = write_dataset(tmp_path / "data", 12, size=48, seed=3)
    items = read_captions(target)
    caption_items = [i for i in items if i.question is None]
    qa_items = [i for i in items if i.question is not None]
    assert len(caption_items) == 12 and all(len(i.captions) == 5 for i in caption_items)
    assert len(qa_items) == 36  # three questions per photo
    rows = (tmp_path / "data" / "attributes.csv").read_text().splitlines()
    assert rows[0] == "image,product,colour,defect" and len(rows) == 13


# --- the knowledge base and the message -------------------------------------------------------


def test_the_bundled_knowledge_base_is_valid_and_readable() -> None:
    kb = load_knowledge_base()
    assert set(kb.products) == set(PRODUCTS)
    assert kb.problems["crack"].policy == "replacement"
    assert kb.seen_problems == ("crack", "stain", "dent", "missing part")


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda t: t.replace("policy: replacement", "policy: free_lunch"),
         r"problems.crack.policy: unknown policy 'free_lunch'"),
        (lambda t: t.replace("arrived with a crack. {policy}", "arrived. {refund}"),
         r"problems.crack.reply: unknown field\(s\) refund"),
        (lambda t: t.replace("colours: [", "colours: 3 #"), r"colours: "),
        (lambda t: t.replace("  mug: {synonyms", "  mug {synonyms"), r"not valid YAML \(line"),
        (lambda t: t + "\nextra_section: 1\n", r"extra_section: Extra inputs are not permitted"),
        (lambda t: "- just\n- a list\n", r"the top level must be a mapping"),
    ],
)  # fmt: skip
def test_a_broken_knowledge_base_is_one_line_naming_the_entry(tmp_path, edit, error) -> None:
    bundled = Path(load_knowledge_base.__globals__["default_path"]()).read_text()
    path = tmp_path / "kb.yaml"
    path.write_text(edit(bundled))
    with pytest.raises(InputError, match=error) as caught:
        load_knowledge_base(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_missing_and_oversized_knowledge_bases_are_refused(tmp_path) -> None:
    with pytest.raises(InputError, match="cannot read it"):
        load_knowledge_base(tmp_path / "nope.yaml")
    big = tmp_path / "big.yaml"
    big.write_text("#" * (1 << 20) + "\n")
    with pytest.raises(InputError, match="more than the 1 MiB cap"):
        load_knowledge_base(big)


def test_messages_are_read_in_the_knowledge_base_terms() -> None:
    kb = load_knowledge_base()
    m = read_message("Hi! My new coffee cup arrived CRACKED and stained.", kb)
    assert m.products == ("mug",) and set(m.problems) == {"crack", "stain"}
    m = read_message("I ordered a blue water bottle but this one is red", kb)
    assert (m.ordered_colour, m.ordered_product) == ("blue", "bottle")
    assert m.colours == ("blue", "red")
    m = read_message("the lid is missing", kb)
    assert m.problems == ("missing part",) and m.ordered_product is None
    assert read_message("", kb).problems == ()


# --- the decisions, on given recognitions --------------------------------------------------


def seen(product: dict[str, float], colour: str, problem: dict[str, float],
         part: str | None = None) -> Recognition:  # fmt: skip
    def attr(probs: dict[str, float]) -> Attribute:
        best = max(probs, key=lambda k: probs[k])
        return Attribute(best, probs[best], probs)

    return Recognition(attr(product), attr({colour: 0.95, "red": 0.05}), attr(problem), part)


def decide(recognition: Recognition, message: str, min_confidence: float = 0.6):  # type: ignore[no-untyped-def]
    kb = load_knowledge_base()
    return answer_mod.decide(recognition, read_message(message, kb), kb, min_confidence)


def test_a_seen_problem_gets_its_policy_and_a_reply_naming_what_was_seen() -> None:
    d = decide(seen({"mug": 0.9, "bowl": 0.1}, "green", {"crack": 0.8, "nothing": 0.2}),
               "my cup arrived broken")  # fmt: skip
    assert (d.action, d.problem, d.policy) == ("reply", "crack", "replacement")
    assert "green mug" in d.text and "free replacement" in d.text
    d = decide(seen({"vase": 0.95, "mug": 0.05}, "blue", {"missing part": 0.9, "nothing": 0.1},
                    "neck"), "help please")  # fmt: skip
    assert (d.problem, d.policy) == ("missing part", "send_part") and "without its neck" in d.text


def test_unknown_or_unsure_products_get_a_question_never_a_guess() -> None:
    d = decide(seen({"unknown": 0.8, "mug": 0.2}, "green", {"crack": 0.9, "nothing": 0.1}),
               "it is cracked")  # fmt: skip
    assert (d.action, d.reason) == ("clarify", "unknown_product") and d.problem is None
    d = decide(seen({"mug": 0.5, "bowl": 0.45, "unknown": 0.05}, "red", {"crack": 0.9,
                    "nothing": 0.1}), "cracked")  # fmt: skip
    assert (d.action, d.reason) == ("clarify", "unsure_product") and "mug or bowl" in d.text


def test_the_message_decides_between_close_problems_and_conflicts_are_asked() -> None:
    close = {"dent": 0.4, "stain": 0.35, "nothing": 0.25}
    assert decide(seen({"box": 0.9}, "red", close), "it came with a dent").problem == "dent"
    assert decide(seen({"box": 0.9}, "red", close), "hello").reason == "unsure_problem"
    d = decide(seen({"box": 0.9}, "red", {"nothing": 0.95, "crack": 0.05}), "it is cracked")
    assert (d.action, d.reason) == ("clarify", "not_seen") and "a crack" in d.text
    d = decide(seen({"box": 0.9}, "red", {"stain": 0.9, "dent": 0.1}), "it is dented")
    assert (d.action, d.reason) == ("clarify", "not_seen")
    assert decide(seen({"box": 0.9}, "red", {"nothing": 0.9}), "hi").reason == "no_problem"


def test_a_wrong_item_is_the_ordered_product_or_colour_against_the_photo() -> None:
    intact = {"nothing": 0.9, "crack": 0.1}
    d = decide(seen({"mug": 0.9}, "green", intact), "I ordered a teapot but got this")
    assert (d.problem, d.policy) == ("wrong item", "exchange") and "instead of the teapot" in d.text
    d = decide(seen({"mug": 0.9}, "green", intact), "i bought a blue mug and got this one")
    assert d.problem == "wrong item" and "blue mug" in d.text and "green mug" in d.text
    d = decide(seen({"mug": 0.9}, "green", {"crack": 0.9}), "the green mug I ordered is cracked")
    assert d.problem == "crack"


# --- the bundled captioner: acceptance ------------------------------------------------------


@pytest.fixture(scope="module")
def loaded():  # type: ignore[no-untyped-def]
    return load_captioner()


# slow (300 held-out photos with beam search, ~25 s): the default tier keeps the bundled
# captioner's answers to held-out support cases (below) and its samples (conformance)
@pytest.mark.slow
def test_the_bundled_captioner_meets_the_caption_and_attribute_targets(loaded) -> None:
    scores = caption_scores(loaded, load_knowledge_base(), n=300, seed=1, beam=3)
    print(json.dumps({k: v for k, v in scores.items() if k != "examples"}))
    assert scores["bleu4"] >= MIN_BLEU4 and scores["cider"] >= MIN_CIDER
    for key in ("product", "colour", "defect"):
        assert scores[f"caption_{key}_acc"] >= MIN_ATTRIBUTE_ACC, key
        assert scores[f"qa_{key}_acc"] >= MIN_QA_ACC, key


def test_answers_name_the_right_problem_and_unclear_cases_are_asked(loaded) -> None:
    scores = support_scores(loaded, load_knowledge_base(), seed=1)
    print(json.dumps({k: {m: v for m, v in s.items() if m != "failures"}
                      for k, s in scores.items()}))  # fmt: skip
    assert scores["answerable"]["cases"] == 50
    assert scores["answerable"]["right_reply_rate"] >= MIN_RIGHT_REPLIES
    assert scores["answerable"]["wrong_replies"] <= 1  # see MIN_RIGHT_REPLIES
    # unknown products and unclear photos: a question, or (a blurred photo) the right reply
    assert scores["unknown_product"]["clarify_rate"] >= 0.9
    assert scores["unknown_product"]["wrong_replies"] == 0
    assert scores["unclear"]["wrong_replies"] == 0


def test_answerable_cases_are_held_out_and_varied() -> None:
    cases = answerable_cases(50, seed=1)
    assert len({c.message for c in cases}) > 30
    assert {c.problem for c in cases} == {"crack", "stain", "dent", "missing part", "wrong item"}
    assert min(c.photo.seed for c in cases) >= 16_000  # not a training photo (seed 0: 0..15999)


# --- the tasks ------------------------------------------------------------------------------


def test_describe_captions_and_tags_the_samples() -> None:
    outcome = run("caption.describe", [SAMPLES / "teapot-crack.png", SAMPLES / "mug-red.png"])
    first, second = (r.outputs["caption"] for r in outcome.results)
    # generated photos like the training ones: judged familiar, captions not marked
    assert all(r.ood is not None and not r.ood["flagged"] for r in outcome.results)
    assert isinstance(first, Caption) and "teapot" in first.text and "crack" in first.text
    assert "red mug" in second.text
    assert first.tags["teapot"] > 0.5 and len(first.tags) == 5
    tagged = run("caption.describe", [SAMPLES / "mug-red.png"], tags="a red mug, a blue bottle")
    tags = tagged.results[0].outputs["caption"].tags
    assert tags["a red mug"] > tags["a blue bottle"]


def test_answer_replies_to_the_sample_with_evidence() -> None:
    outcome = run("caption.answer", [SAMPLES / "teapot-crack.png"],
                  message="Hi, my teapot arrived today and it is cracked.")  # fmt: skip
    reply = outcome.results[0].outputs["reply"]
    assert isinstance(reply, Reply) and not reply.clarifying_question
    assert "teapot" in reply.text and "replacement" in reply.text
    assert reply.evidence["policy"] == "replacement" and reply.evidence["product"].startswith(
        "teapot"
    )
    lamp = run("caption.answer", [SAMPLES / "lamp-green.png"], message="it is broken")
    assert lamp.results[0].outputs["reply"].clarifying_question


def test_skimage_photographs_get_captions_without_error(tmp_path) -> None:
    from PIL import Image as PIL
    from skimage import data

    paths = []
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        paths.append(tmp_path / f"{name}.png")
        PIL.fromarray(getattr(data, name)()).save(paths[-1])
    outcome = run("caption.describe", paths)
    # they look unlike the generated photos it learned: each caption is marked as a guess
    assert all(r.ood is not None and r.ood["flagged"] for r in outcome.results)
    texts = [r.outputs["caption"].text for r in outcome.results]
    assert all(t.startswith(UNSURE) for t in texts)
    guesses = [t.removeprefix(UNSURE) for t in texts]
    assert len(guesses) == 4 and all(len(t.split()) >= 2 for t in guesses)
    # what the offline model can say: catalogue words only (docs/caption.md shows them)
    vocab = set(load_captioner().captioner.vocab.tokens)
    assert all(set(t.split()) <= vocab for t in guesses)


def test_search_finds_a_text_and_an_image_and_keeps_its_index(tmp_path, vlm_home) -> None:
    folder = tmp_path / "catalogue"
    shutil.copytree(SAMPLES, folder)
    hits = run("caption.search", folder=str(folder), query="a red mug", k=3)
    found = hits.results[0].outputs["results"]
    assert isinstance(found, ImageSet) and found.labels[0].startswith("mug-red.png")
    indexes = list((vlm_home).rglob("catalogue.json"))
    assert len(indexes) == 1
    stamp = indexes[0].stat().st_mtime_ns
    same = run("caption.search", folder=str(folder), image=str(folder / "bottle-blue.png"), k=2)
    assert same.results[0].outputs["results"].labels[0].startswith("bottle-blue.png (1.000)")
    assert indexes[0].stat().st_mtime_ns == stamp  # the index was reused
    shutil.copy(SAMPLES / "mug-red.png", folder / "mug-red-2.png")
    again = run("caption.search", folder=str(folder), query="a red mug", k=2)
    labels = again.results[0].outputs["results"].labels
    assert {label.split(" ")[0] for label in labels} == {"mug-red.png", "mug-red-2.png"}
    assert indexes[0].stat().st_mtime_ns != stamp  # rebuilt: a file was added


def test_text_search_reads_the_kept_image_tokens_not_the_images(tmp_path, vlm_home, monkeypatch):
    """The captioner index keeps its image tokens (float16): a text query decodes no image, and
    ranks as decoding every image again does; without the tokens (a catalogue over the cap) it
    falls back to decoding them."""
    import vlm_caption.search as search_module

    folder = tmp_path / "catalogue"
    shutil.copytree(SAMPLES, folder)
    run("caption.search", folder=str(folder), query="a red mug", k=3)  # builds the index
    (tokens,) = list(vlm_home.rglob(search_module.TOKENS))
    count = len(list(folder.glob("*.png")))
    assert np.load(tokens, mmap_mode="r").shape[0] == count
    loads: list[Path] = []
    real_load = search_module._load
    monkeypatch.setattr(search_module, "_load", lambda p: loads.append(p) or real_load(p))

    def ranked() -> list[tuple[str, float]]:
        out = run("caption.search", folder=str(folder), query="a blue bottle", k=count)
        labels = out.results[0].outputs["results"].labels
        return [(a, float(b.strip("()"))) for a, b in (label.split(" ") for label in labels)]

    cached = ranked()
    assert len(loads) == count  # only the k results shown, none for the scoring
    tokens.unlink()
    loads.clear()
    decoded = ranked()
    assert len(loads) == 2 * count  # every image scored, then the results shown
    assert [name for name, _ in cached][:3] == [name for name, _ in decoded][:3]
    for (_, a), (_, b) in zip(sorted(cached), sorted(decoded), strict=True):
        assert abs(a - b) < 0.05  # per-word log-likelihoods; float16 tokens
    monkeypatch.setattr(search_module, "MAX_TOKEN_BYTES", 1)
    (folder / "mug-red.png").touch()  # rebuild, now without keeping the tokens
    run("caption.search", folder=str(folder), query="a red mug", k=1)
    assert not list(vlm_home.rglob(search_module.TOKENS))


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """A local open_clip weights file (the tiny test architecture, random weights)."""
    from safetensors.torch import save_file

    from vlm_core.crossmodal import TEST_ARCH, load_clip

    encoder = load_clip(TEST_ARCH, None, seed=3)
    path = tmp_path_factory.mktemp("clip") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in encoder.model.state_dict().items()}, path)
    return path


def test_open_clip_tags_and_searches_from_a_local_file(clip_file, tmp_path) -> None:
    from vlm_core.crossmodal import TEST_ARCH

    clip = {"clip_model": TEST_ARCH, "clip_weights": str(clip_file)}
    tagged = run("caption.describe", [SAMPLES / "mug-red.png"], tags="a cat, a mug, a rocket",
                 top_k=3, **clip)  # fmt: skip
    tags = tagged.results[0].outputs["caption"].tags
    assert set(tags) == {"a cat", "a mug", "a rocket"} and abs(sum(tags.values()) - 1) < 1e-3
    assert tagged.results[0].provenance.weights_sha256["open_clip"]
    folder = tmp_path / "catalogue"
    shutil.copytree(SAMPLES, folder)
    same = run("caption.search", folder=str(folder), image=str(folder / "vase-purple-crack.png"),
               k=1, **clip)  # fmt: skip
    assert same.results[0].outputs["results"].labels[0].startswith("vase-purple-crack.png")
    words = run("caption.search", folder=str(folder), query="a zebra", k=2, **clip)
    assert len(words.results[0].outputs["results"].images) == 2


# --- bad inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "params", "error"),
    [
        ("caption.search", {"folder": "/nope", "query": "a mug"},
         "catalogue folder /nope does not exist"),
        ("caption.search", {"folder": str(SAMPLES)}, "give caption.search one query"),
        ("caption.search", {"folder": str(SAMPLES), "query": "a zebra"},
         "does not know the word\\(s\\) zebra"),
        ("caption.search", {"folder": str(SAMPLES), "image": "/nope.png"},
         "query image /nope.png does not exist"),
    ],
)  # fmt: skip
def test_bad_search_requests_are_one_line(task, params, error) -> None:
    with pytest.raises(VLMError, match=error) as caught:
        run(task, **params)
    assert "\n" not in str(caught.value)


def test_bad_describe_and_answer_requests_are_one_line(tmp_path) -> None:
    image = [SAMPLES / "mug-red.png"]
    with pytest.raises(VLMError, match="does not know the word\\(s\\) zebra"):
        run("caption.describe", image, tags="a zebra, a mug")
    with pytest.raises(VLMError, match="at least two comma-separated tags"):
        run("caption.describe", image, tags="a mug")
    with pytest.raises(VLMError, match="clip_model needs clip_weights"):
        run("caption.describe", image, clip_model="ViT-B-32")
    for task, extra in (("caption.describe", {}), ("caption.search", {"query": "a mug"})):
        # an open_clip file without its architecture would be ignored: refused instead
        with pytest.raises(VLMError, match="clip_weights is given without clip_model"):
            run(task, [] if extra else image, clip_weights=str(tmp_path / "clip.pt"), **extra)
    with pytest.raises(VLMError, match=r"nope\.safetensors"):
        run("caption.answer", image, weights=str(tmp_path / "nope.safetensors"))
    bad = tmp_path / "kb.yaml"
    bad.write_text("products: {}\n")
    with pytest.raises(VLMError, match=r"kb\.yaml: products: "):
        run("caption.answer", image, message="hi", knowledge_base=str(bad))


def test_cli_train_and_eval_run_on_generated_data(
    tmp_path, vlm_cli: Callable[..., CompletedProcess[str]]
) -> None:
    write_dataset(tmp_path / "data", 24, size=64, seed=5)
    out = tmp_path / "run"
    done = vlm_cli(
        "train", "caption.describe", "--data", str(tmp_path / "data"), "--steps", "6",
        "--batch-size", "8", "--out", str(out), "--param", "image_size=64",
        "--param", "width=32", "--param", "val_fraction=0.25", "--set", "val_every=6",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("val_cider" in x for x in lines)
    described = vlm_cli(
        "run", "caption.describe", str(SAMPLES / "mug-red.png"), "--param",
        f"weights={out}", "--param", "beam=1",
    )  # fmt: skip
    assert described.returncode == 0, described.stderr[-2000:]
    evaluated = vlm_cli(
        "eval", "caption.describe", "--data", str(tmp_path / "data"),
        "--param", "val_fraction=0.25",
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "val_cider" in evaluated.stdout


def test_the_clarifying_questions_read_as_english() -> None:
    """Every clarifying question of the bundled knowledge base, filled as `caption.answer`
    fills it ({told} is "a crack", "a missing lid"), reads without doubled articles."""
    from vlm_caption.answer import _fill, _told

    kb = load_knowledge_base()
    for key in ("unknown_product", "unsure_product", "unsure_problem", "not_seen", "no_problem"):
        for problem in kb.seen_problems:
            text = _fill(getattr(kb.clarify, key), product="teapot", colour="black",
                         told=_told(problem, kb, "teapot"), candidates="mug or vase")  # fmt: skip
            lowered = f" {text.lower()} "
            for doubled in (" the a ", " the an ", " a a ", " a an "):
                assert doubled not in lowered, (key, text)
