"""Text alignment of the animal-pairs demo: the pair scores on hand-made predictions, the shipped
classifier on real composed pairs (aligned, swapped, held out), the pairs features' FID and the
`pair_alignment` metric, the command lines on an inference npz; and the CLIP score formula and a
tiny local CLIP through it."""

import json

import numpy as np
import pytest
import torch

from evaluations import evaluator
from evaluations.clip_score import ClipEmbedder, clip_score
from evaluations.domain_classifier import DomainFeatures
from evaluations.evaluate import compute_metrics
from evaluations.image_io import ImageSource, load_npz
from evaluations.pair_alignment import (
    SHIPPED_CLASSIFIER,
    PairFeatures,
    alignment_report,
    pair_scores,
    read_halves,
    split_halves,
)
from evaluations.text_alignment import main
from speed.data import ANIMAL_CLASSES, AnimalPairs, load_animal_mnist_arrays
from speed.data.animal_pairs import compose_pair, pair_captions
from speed.errors import DataError


def test_pair_scores_on_hand_made_predictions():
    pairs = np.array([[0, 1], [2, 3], [4, 5], [6, 7]])
    left, right = np.array([0, 3, 4, 9]), np.array([1, 2, 9, 7])
    scores = pair_scores(left, right, pairs)
    assert scores == {
        "left_accuracy": 0.5, "right_accuracy": 0.5, "pair_accuracy": 0.25, "swapped": 0.25,
    }  # fmt: skip
    with pytest.raises(DataError, match="pairs"):
        pair_scores(left, right, pairs[:3])


@pytest.fixture(scope="module")
def real_pairs():
    """200 composed real pairs as the inference npz stores them (uint8 RGB NHWC), their first
    captions, and the captions with the two animals swapped."""
    data = AnimalPairs(num_pairs=200, seed=3)
    x = torch.stack([data[i][0] for i in range(len(data))])
    images = ((x + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1)
    names = [(ANIMAL_CLASSES[a], ANIMAL_CLASSES[b]) for a, b in data.pairs.tolist()]
    captions = [pair_captions(a, b)[1] for a, b in names]  # "a zebra right of a cat" form
    swapped = [pair_captions(b, a)[0] for a, b in names]
    return images.expand(-1, -1, -1, 3).numpy(), captions, swapped


@pytest.fixture(scope="module")
def classifier():
    return PairFeatures(SHIPPED_CLASSIFIER)


def test_pair_features_are_the_domain_classifier_on_each_half(real_pairs, classifier):
    images = real_pairs[0][:6]
    out = classifier.activations(torch.from_numpy(images))
    domain = DomainFeatures(SHIPPED_CLASSIFIER)
    left, right = split_halves(images)
    assert left.shape == (6, 3, 28, 28) and out["features"].shape == (6, 2 * domain.num_features)
    torch.testing.assert_close(out["logits"][:, :10], domain.activations(left)["logits"])
    torch.testing.assert_close(out["features"][:, 256:], domain.activations(right)["features"])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1  # float NCHW too
    torch.testing.assert_close(classifier.activations(x)["logits"], out["logits"])


def test_real_pairs_are_aligned_and_swapped_halves_are_not(real_pairs, classifier):
    images, captions, swapped = real_pairs
    left, right = read_halves(images, classifier)
    report = alignment_report(left, right, captions)
    assert report["all"]["pair_accuracy"] > 0.85 and report["all"]["count"] == 200
    assert "held_out" not in report  # the training set has none of them
    flipped = alignment_report(left, right, swapped)
    assert flipped["all"]["pair_accuracy"] < 0.05 and flipped["all"]["swapped"] > 0.85


def test_the_pair_alignment_metric_equals_the_report(real_pairs, classifier):
    images, captions, swapped = real_pairs
    prompts = captions[:100] + ["a cat left of a zebra"] * 100  # the second half held out
    reference = ImageSource("real", images)
    result = compute_metrics(reference, ImageSource("samples", images, prompts=prompts),
                             classifier, ("fid", "pair_alignment"), progress=False)  # fmt: skip
    left, right = read_halves(images, classifier)
    report = alignment_report(left, right, prompts)
    assert result["fid"]["value"] == pytest.approx(0.0, abs=1e-3)  # the same images
    assert result["pair_accuracy"]["value"] == report["all"]["pair_accuracy"]
    assert result["held_out_pair_accuracy"]["value"] == report["held_out"]["pair_accuracy"]
    assert result["held_out_pair_accuracy"]["count"] == 100
    held = report["held_out"]
    half = (held["left_accuracy"] + held["right_accuracy"]) / 2
    assert result["held_out_half_accuracy"]["value"] == pytest.approx(half)
    assert result["swapped"]["value"] == report["all"]["swapped"]
    seen_only = compute_metrics(reference, ImageSource("s", images, prompts=captions), classifier,
                                ("pair_alignment",), progress=False)  # fmt: skip
    assert seen_only["pair_accuracy"]["value"] > 0.85
    assert "held-out pair" in seen_only["held_out_pair_accuracy"]["unavailable"]
    unlabelled = compute_metrics(reference, ImageSource("s", images), classifier,
                                 ("pair_alignment",), progress=False)  # fmt: skip
    assert "no prompts" in unlabelled["pair_accuracy"]["unavailable"]
    other = compute_metrics(reference, ImageSource("s", images, prompts=captions),
                            DomainFeatures(SHIPPED_CLASSIFIER), ("pair_alignment",),
                            progress=False)  # fmt: skip
    assert "pairs features" in other["swapped"]["unavailable"]


def test_held_out_prompts_are_scored_apart(classifier):
    images, labels = load_animal_mnist_arrays()
    cat, zebra = ANIMAL_CLASSES.index("cat"), ANIMAL_CLASSES.index("zebra")
    pick = [np.flatnonzero(labels == c)[:20] for c in (cat, zebra)]
    half = lambda i: torch.from_numpy(images[i]).float()[:, None] / 127.5 - 1  # noqa: E731
    x = compose_pair(half(pick[0]), half(pick[1]), 56)
    uint8 = ((x + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    prompts = ["a cat left of a zebra"] * 10 + ["a zebra right of a cat"] * 10
    left, right = read_halves(uint8, classifier)
    report = alignment_report(left, right, prompts)
    assert report["held_out"]["count"] == 20 and "seen" not in report
    assert report["held_out"]["pair_accuracy"] > 0.8
    assert (left == cat).mean() > 0.8 and (right == zebra).mean() > 0.8


def test_command_line_scores_an_inference_npz(tmp_path, real_pairs, capsys):
    images, captions, _ = real_pairs
    path = tmp_path / "samples.npz"
    np.savez(path, arr_0=images[:40], prompts=np.asarray(captions[:40]))
    assert main([str(path), "--json", str(tmp_path / "scores.json")]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["pairs"]["all"]["count"] == 40 and scores["pairs"]["all"]["pair_accuracy"] > 0.8
    np.savez(tmp_path / "labels.npz", arr_0=images[:4])
    assert main([str(tmp_path / "labels.npz")]) == 2
    assert "stores no prompts" in capsys.readouterr().err
    assert load_npz(path).prompts == captions[:40]
    np.savez(tmp_path / "ref.npz", arr_0=images[40:])
    out = tmp_path / "metrics.json"
    command = [str(tmp_path / "ref.npz"), str(path), "--features", "pairs", "--quiet"]
    assert evaluator.main([*command, "--metrics", "fid", "pair_alignment", "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["pair_accuracy"]["value"] == scores["pairs"]["all"]["pair_accuracy"]
    assert metrics["fid"]["value"] > 0 and "kid" not in metrics
    assert "pair accuracy: " in capsys.readouterr().out


def test_clip_score_formula():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    b = np.array([[2.0, 0.0], [0.0, -1.0], [1.0, 0.0]])
    assert clip_score(a, b) == pytest.approx(100 * (1 + 0 + np.sqrt(0.5)) / 3)


@pytest.fixture(scope="module")
def tiny_clip_model_dir(tmp_path_factory, tiny_clip_dir):
    """A tiny CLIP (text and vision towers) with its processor, saved in one folder."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        PreTrainedTokenizerFast,
    )  # fmt: skip

    tokenizer = PreTrainedTokenizerFast.from_pretrained(tiny_clip_dir)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}
        ),
        tokenizer=tokenizer,
    )
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, image_size=16, patch_size=8),
        projection_dim=8,
    )  # fmt: skip
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_clip_model")
    CLIPModel(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_clip_score_of_a_local_clip_matches_its_own_logits(tiny_clip_model_dir, tokenizer_captions):
    from transformers import CLIPModel

    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    embedder = ClipEmbedder(str(tiny_clip_model_dir))
    score = clip_score(*embedder.embed(images, tokenizer_captions))
    inputs = embedder.processor(text=tokenizer_captions, images=list(images),
                                return_tensors="pt", padding=True)  # fmt: skip
    model = CLIPModel.from_pretrained(tiny_clip_model_dir).eval()
    with torch.no_grad():
        out = model(**inputs)
        cos = out.logits_per_image.diagonal() / model.logit_scale.exp()
    assert score == pytest.approx(float(100 * cos.clamp(min=0).mean()), abs=1e-4)
