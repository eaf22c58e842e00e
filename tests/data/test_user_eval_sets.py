"""Eval sets from the user's own data: definitions, strict errors, streaming, metrics, and the bundled CLIP end to end."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from edgecompile.config.recipe import EvalSet
from edgecompile.data import user_eval_sets
from edgecompile.data.errors import DataError
from edgecompile.data.eval_metrics import (
    class_embeddings, normalize_vqa_answer, retrieval_recalls, token_f1, top_k_accuracy, vqa_accuracy, vqa_match,
)
from edgecompile.data.sources import eval_data
from edgecompile.data.user_eval_sets import load_user_eval_set
from edgecompile.errors import InputError
from edgecompile.validation.metric_names import known_metric
from edgecompile.world import generate


def _yaml(path: Path, body: str) -> Path:
    path.write_text(f"schema_version: 1\nname: {path.stem}\ndescription: test set\n{body}")
    return path


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 world eval scenes on disk: an ImageFolder tree, a CSV of labels, caption pairs and questions."""
    root = tmp_path_factory.mktemp("user-data")
    scenes = generate("eval", 24, seed=0, size=64)
    pairs, questions, refs, rows = [], [], [], ["file,label"]
    for i, s in enumerate(scenes):
        rel = f"images/{s.label.replace(' ', '_')}/{i:03d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        s.image.save(root / rel)
        rows.append(f"{rel},{s.label.replace(' ', '_')}")
        pairs.append({"image": rel, "caption": s.caption})
        q, a = s.qa[0]
        questions.append({"image": rel, "question": q, "answers": [a, a.upper()]})
        refs.append({"image": rel, "prompt": "describe the image", "reference": s.caption})
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    for name, lines in (("pairs", pairs), ("questions", questions), ("refs", refs)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


# --- metrics against hand-computed values ------------------------------------------------------
def test_top_k_accuracy_by_hand() -> None:
    classes = np.eye(6)
    # image 0: class 2 best, class 0 second; image 1: class 5 best; image 2: its class (0) ranks 6th of 6
    images = np.array([[0.5, 0, 0.9, 0, 0, 0], [0, 0, 0, 0, 0, 1.0], [0.0, 1, 1, 1, 1, 1]])
    labels = [0, 5, 0]
    assert top_k_accuracy(images, classes, labels, 1) == pytest.approx(1 / 3)  # only image 1
    assert top_k_accuracy(images, classes, labels, 2) == pytest.approx(2 / 3)  # image 0's class is second
    assert top_k_accuracy(images, classes, labels, 5) == pytest.approx(2 / 3)
    assert top_k_accuracy(images, classes, labels, 6) == pytest.approx(1.0)


def test_class_embeddings_average_unit_template_embeddings() -> None:
    texts = np.array([[2.0, 0], [0, 5.0], [0, 1.0], [0, 3.0]])  # class 0: two templates, class 1: two
    got = class_embeddings(texts, 2)
    np.testing.assert_allclose(got, [[2**-0.5, 2**-0.5], [0, 1]])


def test_retrieval_recalls_by_hand() -> None:
    images = np.eye(3)
    # texts 0, 1 describe image 0; text 2 image 1; text 3 image 2
    texts = np.array([[0.2, 1.0, 0], [1.0, 0.1, 0], [0, 0.3, 0.1], [0.9, 0, 0.5]])
    r = retrieval_recalls(images, texts, [0, 0, 1, 2], ks=(1, 2))
    # image->text: image 0's best text is 1 (own) -> rank 0; image 1's order 0, 2 -> rank 1;
    # image 2's order 3 -> rank 0.  text->image: text 0 -> [1, 0] rank 1; text 1 -> 0 rank 0;
    # text 2 -> [1, 2] rank 0; text 3 -> [0, 2] rank 1.
    assert r["retrieval.image_to_text.r1"] == pytest.approx(2 / 3)
    assert r["retrieval.image_to_text.r2"] == pytest.approx(1.0)
    assert r["retrieval.text_to_image.r1"] == pytest.approx(2 / 4)
    assert r["retrieval.text_to_image.r2"] == pytest.approx(1.0)


def test_vqa_normalisation_and_accuracy() -> None:
    assert normalize_vqa_answer("Two.") == "2"
    assert normalize_vqa_answer("The RED circle!") == "red circle"
    assert normalize_vqa_answer("dont know") == "don't know"
    assert normalize_vqa_answer("3.5") == "3.5" and normalize_vqa_answer("1,000") == "1000"
    assert vqa_match("two", ["2", "3"]) and vqa_match("yes it is", ["yes"]) and not vqa_match("yesterday", ["yes"])
    assert vqa_accuracy(["a circle", "blue", "four"], [["circle"], ["red", "green"], ["4"]]) == pytest.approx(2 / 3)


def test_token_f1_by_hand() -> None:
    # tokens (articles dropped): [red, circle, on, left] vs [red, circle, left, side]: 3 in common, P = R = 3/4
    assert token_f1("A red circle on the left.", "red circle, left side") == pytest.approx(0.75)
    assert token_f1("blue blue", "blue") == pytest.approx(2 * 0.5 * 1 / 1.5)  # clipped counts: P 1/2, R 1
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0 and token_f1("star", "circle") == 0.0


def test_new_metric_names_are_known_to_gates() -> None:
    for metric in ("accuracy.top5", "accuracy.top5.drop", "retrieval.image_to_text.r1", "retrieval.text_to_image.r10.reference"):
        assert known_metric(metric, "dual_encoder"), metric
    assert known_metric("caption.token_f1.drop", "generative") and known_metric("caption.rouge_l", "generative")
    assert not known_metric("retrieval.image_to_text.r3", None) and not known_metric("caption.token_f1", "dual_encoder")


# --- loading ---------------------------------------------------------------------------------------
def test_image_folder_classification(world_dir: Path) -> None:
    es = load_user_eval_set(_yaml(world_dir / "folder.yaml", "type: classification\npath: images\ntemplates: ['a photo of a {}', 'a {}']\n"))
    assert len(es.samples) == 24 and es.task == "classification" and es.templates_per_class == 2
    assert es.class_names == sorted(p.name for p in (world_dir / "images").iterdir())
    assert es.prompts[:2] == [f"a photo of a {es.class_names[0].replace('_', ' ')}", f"a {es.class_names[0].replace('_', ' ')}"]
    # classes interleaved: the first len(classes) samples cover every class
    assert {s.label for s in es.samples[: len(es.class_names)]} == set(es.class_names)
    assert len(es.limited(5)) == 5 and es.fingerprint() == load_user_eval_set(world_dir / "folder.yaml").fingerprint()


def test_labels_csv_with_explicit_classes_and_text(world_dir: Path) -> None:
    labels = sorted({line.split(",")[1] for line in (world_dir / "labels.csv").read_text().split()[1:]})
    classes = "[" + ", ".join(labels) + "]"
    es = load_user_eval_set(_yaml(world_dir / "csv.yaml", f"type: classification\nlabels: labels.csv\nclasses: {classes}\nclass_text: {{{labels[0]}: thing}}\n"))
    assert es.class_names == labels and es.prompts[0] == "a photo of a thing." and len(es) == 24


def test_retrieval_vqa_captioning_sets(world_dir: Path) -> None:
    r = load_user_eval_set(_yaml(world_dir / "ret.yaml", "type: retrieval\ncaptions: pairs.jsonl\n"))
    assert len(r.samples) == 24 and len(r.prompts) == 24 and r.caption_image == list(range(24))
    assert len(r.limited(10).prompts) == 10
    v = load_user_eval_set(_yaml(world_dir / "vqa.yaml", "type: vqa\nquestions: questions.jsonl\n"))
    assert v.samples[0].answers[0] == v.samples[0].answer and v.samples[0].question
    c = load_user_eval_set(_yaml(world_dir / "cap.yaml", "type: captioning\nreferences: refs.jsonl\n"))
    assert c.samples[3].reference and c.samples[3].question == "describe the image" and c.samples[3].answer is None


def test_samples_open_their_image_only_when_read(world_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    real_open = Image.open
    monkeypatch.setattr(user_eval_sets.Image, "open", lambda p, *a, **k: opened.append(str(p)) or real_open(p, *a, **k))
    es = load_user_eval_set(_yaml(world_dir / "lazy.yaml", "type: classification\nlabels: labels.csv\n"))
    labels = [s.label for s in es.samples]  # ground truth needs no pixels
    assert opened == [] and len(labels) == 24
    image = es.samples[7].image
    assert image.mode == "RGB" and opened == [str(es.samples[7].path)]
    assert es.samples[7].image is not image  # not cached: memory stays constant over a long set


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("type: classification\npath: images\ncolour: red\n", r"strict\.yaml:6: colour: unknown field"),
        ("type: classification\npath: images\ntemplates: ['a photo']\n", r"strict\.yaml:6: templates: .*exactly one '\{\}'"),
        ("type: classification\npath: images\nlabels: labels.csv\n", r"strict\.yaml:6: path/labels: give exactly one of 'path'"),
        ("type: segmentation\npath: images\n", r"strict\.yaml:4: type: .*classification"),
        ("type: retrieval\ncaptions: nowhere.jsonl\n", r"strict\.yaml:5: captions: .*nowhere\.jsonl not found"),
        ("type: classification\npath: nowhere\n", r"strict\.yaml:5: path: expected a folder"),
        ("type: classification\nlabels: labels.csv\nclasses: [a, b]\n", r"labels\.csv:2: label: .* not one of the classes listed at .*strict\.yaml:6"),
    ],
)
def test_definition_errors_name_file_line_and_field(world_dir: Path, body: str, expected: str) -> None:
    with pytest.raises(DataError, match=expected):
        load_user_eval_set(_yaml(world_dir / "strict.yaml", body))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("not json", r"bad\.jsonl:2: invalid JSON"),
        ('{"image": "images/x.png", "question": "q", "answers": ["a"]}', r"bad\.jsonl:2: image: image .*x\.png not found"),
        ('{"image": "labels.csv", "question": "q", "answers": ["a"]}', r"bad\.jsonl:2: image: 'labels\.csv' is not an image"),
        ('{"image": "IMG", "question": "q", "answer": "a"}', r"bad\.jsonl:2: answers: required field is missing"),
        ('{"image": "IMG", "question": "q", "answers": []}', r"bad\.jsonl:2: answers: "),
        ('{"image": "IMG", "question": 3, "answers": ["a"]}', r"bad\.jsonl:2: question: "),
    ],
)
def test_jsonl_errors_name_file_and_line(world_dir: Path, line: str, expected: str) -> None:
    good = (world_dir / "questions.jsonl").read_text().splitlines()[0]
    image = json.loads(good)["image"]
    (world_dir / "bad.jsonl").write_text(good + "\n" + line.replace("IMG", image) + "\n")
    with pytest.raises(DataError, match=expected):
        load_user_eval_set(_yaml(world_dir / "badq.yaml", "type: vqa\nquestions: bad.jsonl\n"))


def test_csv_header_and_unreadable_image(world_dir: Path) -> None:
    (world_dir / "bad.csv").write_text("path,class\nx.png,a\n")
    with pytest.raises(DataError, match=r"bad\.csv:1: header: expected the columns 'file,label'"):
        load_user_eval_set(_yaml(world_dir / "badcsv.yaml", "type: classification\nlabels: bad.csv\n"))
    (world_dir / "broken.png").write_bytes(b"not a png")
    (world_dir / "broken.csv").write_text("file,label\nbroken.png,a\n" + (world_dir / "labels.csv").read_text().split("\n", 1)[1])
    es = load_user_eval_set(_yaml(world_dir / "broken.yaml", "type: classification\nlabels: broken.csv\n"))
    with pytest.raises(InputError, match=r"broken\.csv:2: image: cannot read .*broken\.png"):
        es.samples[0].image


# --- eval_data: names, auto, families ------------------------------------------------------------
def test_eval_data_resolves_names_beside_the_recipe(world_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "recipes").mkdir()
    (tmp_path / "eval_sets").mkdir()
    _yaml(tmp_path / "eval_sets" / "mine.yaml", f"type: retrieval\ncaptions: {world_dir / 'pairs.jsonl'}\n")
    es = eval_data("mine", 8, "dual_encoder", bundled=False, near=tmp_path / "recipes" / "r.yaml")
    assert len(es.samples) == 8 and len(es.prompts) == 8
    with pytest.raises(InputError, match=r"r\.yaml: eval\.set: unknown eval set 'yours'; expected one of mine"):
        eval_data("yours", 8, "dual_encoder", near=tmp_path / "recipes" / "r.yaml")
    with pytest.raises(InputError, match=r"mine\.yaml: type: a retrieval eval set measures dual encoder models; this model is generative"):
        eval_data("mine", 8, "generative", near=tmp_path / "recipes" / "r.yaml")
    with pytest.raises(InputError, match=r"strict\.yaml:6: colour: unknown field"):
        eval_data(str(_yaml(tmp_path / "strict.yaml", "type: vqa\nquestions: q.jsonl\ncolour: red\n")), 8, "generative")
    with pytest.raises(InputError, match=r"notype\.yaml: type: required field is missing"):
        eval_data(str(_yaml(tmp_path / "notype.yaml", "questions: q.jsonl\n")), 8, "generative")


def test_auto_is_the_world_only_for_bundled_models() -> None:
    assert len(eval_data("auto", 4, "dual_encoder").samples) == 4  # bundled (the default): the shapes world
    for family in ("dual_encoder", "generative"):
        with pytest.raises(InputError, match=r"eval\.set: 'auto' .* Name an eval set of your own data .* or 'synthetic'"):
            eval_data("auto", 4, family, bundled=False)
    # explicit names keep working for any model
    assert len(eval_data("zero-shot", 4, bundled=False).samples) == 4
    assert len(eval_data("vqa", 4, "generative", bundled=False).samples) == 4
    assert len(eval_data("synthetic", 4, bundled=False).samples) == 4


def test_is_bundled() -> None:
    from edgecompile.models.resolve import is_bundled
    from edgecompile.zoo.registry import model_path

    assert is_bundled(model_path("shapes-clip")) and is_bundled(model_path("shapes-llava"))
    assert not is_bundled(Path("/tmp/some-clip"))


def test_recipe_eval_set_accepts_names_and_paths() -> None:
    for value in ("auto", "zero-shot", "vqa", "synthetic", "my-pets", "eval_sets/pets.yaml", "../data/pets.yml"):
        assert EvalSet(set=value).set == value
    with pytest.raises(ValueError, match="the name of an eval set in eval_sets/"):
        EvalSet(set="my pets")


# --- adapters ------------------------------------------------------------------------------------
def test_generative_evaluate_scores_vqa_and_captions(world_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The generative adapter on user samples, with generation stubbed: any-answer VQA match and token F1."""
    from edgecompile.models import generative

    replies = iter(["Two.", "no", "a red circle on the left", "blue"])
    monkeypatch.setattr(generative, "generate", lambda *a, **k: SimpleNamespace(tokens=[1, 2], first_logits=np.zeros(3, np.float32), time_to_first_token_s=0.01, decode_tokens_per_s=50.0))
    adapter = generative.GenerativeAdapter()
    monkeypatch.setattr(adapter, "generation_spec", lambda config: None)
    monkeypatch.setattr(adapter, "encode", lambda loaded, image, question: (image.size, question))
    loaded = SimpleNamespace(processor=SimpleNamespace(decode=lambda tokens, skip_special_tokens: next(replies)), config=None)
    path = next((world_dir / "images").rglob("*.png"))
    S = user_eval_sets.LazySample
    vqa = SimpleNamespace(samples=[S(path, question="how many?", answer="2", answers=("2", "two")), S(path, question="is it?", answer="yes", answers=("yes",))])
    metrics, _ = adapter.evaluate(loaded, None, vqa)
    assert metrics["accuracy"] == pytest.approx(0.5)
    caps = SimpleNamespace(samples=[S(path, question="describe", reference="red circle, left side"), S(path, question="describe", reference="blue")])
    metrics, _ = adapter.evaluate(loaded, None, caps)
    assert metrics["caption.token_f1"] == pytest.approx((0.75 + 1.0) / 2) and "accuracy" not in metrics


@pytest.fixture(scope="module")
def shapes_clip():  # noqa: ANN201 - (adapter, loaded, torch runner)
    import torch

    from edgecompile.models.registry import adapter_for
    from edgecompile.zoo.registry import model_path

    adapter = adapter_for(model_path("shapes-clip"))
    loaded = adapter.load(model_path("shapes-clip"))
    specs = {c.name: c for c in adapter.components(loaded)}

    def run(component: str, feeds: dict) -> dict:
        spec = specs[component]
        with torch.no_grad():
            out = spec.module(*[torch.from_numpy(feeds[n]) for n in spec.input_names])
        return {n: o.numpy() for n, o in zip(spec.output_names, out if isinstance(out, tuple | list) else (out,), strict=True)}

    return adapter, loaded, run


def test_bundled_clip_scores_the_same_through_a_folder_of_world_images(shapes_clip, tmp_path: Path) -> None:  # noqa: ANN001
    """200 world eval scenes written to disk as a labelled folder give the built-in world set's accuracy."""
    adapter, loaded, run = shapes_clip
    world = eval_data("zero-shot", 200, "dual_encoder")
    for i, s in enumerate(world.samples):
        folder = tmp_path / "images" / s.label
        folder.mkdir(parents=True, exist_ok=True)
        s.image.save(folder / f"{i:04d}.png")
    # the world's own prompt ("a photo of a red circle"), so the text side is identical too
    es = eval_data(str(_yaml(tmp_path / "world-folder.yaml", "type: classification\npath: images\ntemplates: ['a photo of a {}']\n")), 200, "dual_encoder", bundled=False)
    assert set(es.class_names) == set(world.class_names) and len(es.samples) == 200
    expected, _ = adapter.evaluate(loaded, run, world)
    got, _ = adapter.evaluate(loaded, run, es)
    assert got["accuracy"] == pytest.approx(expected["accuracy"]) and got["accuracy.top5"] == pytest.approx(expected["accuracy.top5"])
    assert expected["accuracy"] > 0.8  # the model card says 0.861 on 1000 scenes


def test_dual_encoder_evaluate_averages_templates_per_class(world_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two classes, two templates each: class 0 = mean([1,0],[0,1]) ~ [.71,.71], class 1 = [0,1]."""
    from edgecompile.models.dual_encoder import ClipAdapter

    adapter = ClipAdapter()
    monkeypatch.setattr(adapter, "_pixels", lambda loaded, images: np.zeros((len(images), 1), np.float32))
    monkeypatch.setattr(adapter, "_text_feeds", lambda loaded, texts: {"n": np.zeros(len(texts))})
    outputs = {"vision_encoder": {"image_embeds": np.array([[1.0, 0.2], [0.1, 1.0]], np.float32)},
               "text_encoder": {"text_embeds": np.array([[1.0, 0], [0, 1], [0, 1], [0, 2]], np.float32)}}
    path = next((world_dir / "images").rglob("*.png"))
    S = user_eval_sets.LazySample
    data = SimpleNamespace(samples=[S(path, label="a"), S(path, label="a")], prompts=["a0", "a1", "b0", "b1"], class_names=["a", "b"])
    metrics, out = adapter.evaluate(None, lambda component, feeds: outputs[component], data)
    # image 0: 0.85 / |A| vs 0.2 / |A| -> class a (right); image 1: 0.78 vs 1.0 -> class b (wrong)
    assert metrics == {"accuracy": 0.5} and out["text_encoder/text_embeds"].shape == (4, 2)


@pytest.mark.slow
def test_build_gates_read_a_user_eval_set(shapes_clip, tmp_path: Path) -> None:  # noqa: ANN001 - shares the world images' idea, not the model
    """`edgecompile build` on the bundled CLIP with a folder eval set: the report's accuracy and top-5 are the set's."""
    from click.testing import CliRunner

    from edgecompile.cli.main import main

    for i, s in enumerate(eval_data("zero-shot", 48, "dual_encoder").samples):
        (tmp_path / "images" / s.label).mkdir(parents=True, exist_ok=True)
        s.image.save(tmp_path / "images" / s.label / f"{i:03d}.png")
    es = _yaml(tmp_path / "shapes-folder.yaml", "type: classification\npath: images\ntemplates: ['a photo of a {}']\n")
    (tmp_path / "recipes").mkdir()
    recipe = tmp_path / "recipes" / "mine.yaml"
    recipe.write_text(f"""schema_version: 1
name: mine
target: x86-cpu
calibration: {{method: minmax, set: balanced, samples: 8}}
eval: {{set: {es}, samples: 48, latency_runs: 3, warmup_runs: 0}}
comparison: {{layer_attribution: false}}
gates:
  - {{name: accuracy drop, metric: accuracy.drop, max: 0.1}}
  - {{name: top-5 drop, metric: accuracy.top5.drop, max: 0.1}}
budget_gates: false
""")
    result = CliRunner().invoke(main, ["build", "--recipe", str(recipe), "--model", "shapes-clip", "--out", str(tmp_path / "build")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "build" / "report.json").read_text())["metrics"]
    adapter, loaded, run = shapes_clip
    expected, _ = adapter.evaluate(loaded, run, eval_data("zero-shot", 48, "dual_encoder"))
    assert metrics["accuracy.reference"] == pytest.approx(expected["accuracy"])
    assert {"accuracy.top5", "accuracy.top5.reference", "accuracy.top5.drop"} <= set(metrics)
