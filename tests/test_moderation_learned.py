"""The learned layer: exact sums, gating by queue and age group, and never a lower verdict."""

from __future__ import annotations

import gzip
import json
import random
from importlib import resources
from pathlib import Path

import pytest

from anygle.moderation import Classifier, SenderWindow, Severity
from anygle.moderation.evaluation import load_corpus, predict
from anygle.moderation.learned import SEVERITY, LearnedModel, ModelData, features

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def shipped() -> ModelData:
    raw = resources.files("anygle.moderation").joinpath("model/weights.json.gz").read_bytes()
    return json.loads(gzip.decompress(raw))


@pytest.fixture
def with_model(packaged_rules: Classifier) -> Classifier:
    return packaged_rules


def toy_model() -> LearnedModel:
    """Two words that push towards a category each; thresholds at 0.5."""
    classes = ["clean", "grooming", "minor_sexual"]
    return LearnedModel(
        {
            "classes": classes,
            "bias": [1.0, 0.0, 0.0],
            "thresholds": {"grooming": 0.5, "minor_sexual": 0.5},
            "weights": {"w:lure": [0.0, 5.0, 0.0], "w:vile": [0.0, 0.0, 5.0]},
            "vocabulary": ["a", "hello", "lure", "vile", "what"],
        }
    )


def test_features_are_words_character_grams_and_pairs() -> None:
    assert features(["hey", "me"]) == [
        "w:hey", "<he", "hey", "ey>", "<hey", "hey>", "w:me", "<me", "me>", "<me>", "b:hey me",
    ]  # fmt: skip
    # a message addressed to the partner also counts each word as addressed
    assert features(["hey", "u"])[-3:] == ["b:hey u", "y:hey", "y:u"]


@pytest.mark.slow
def test_scores_are_the_plain_sum_of_feature_weights(
    shipped: ModelData, rules_only: Classifier
) -> None:
    model = LearnedModel(shipped)
    norm = rules_only.normalize
    for text in ("hey whats up", "wat scool u go to lol", "send me a pic", "a" * 40, ""):
        tokens = list(norm(text).text_tokens)
        want = list(shipped["bias"])
        for f in features(tokens):
            for k, w in enumerate(shipped["weights"].get(f, ())):
                want[k] += w
        got = model.scores(tokens)
        assert got == pytest.approx(want, abs=1e-9)
        assert model.scores(tokens) == got  # the per-token cache changes nothing


def test_shipped_model_has_a_threshold_for_every_acting_category(shipped: ModelData) -> None:
    assert set(SEVERITY) <= set(shipped["classes"])
    for category in SEVERITY:
        assert 0.5 <= shipped["thresholds"][category] <= 1.0
    # trained on the kept corpora, never on a blind set
    corpora = shipped["meta"]["corpora"]  # corpus name -> cases (meta is typed as object)
    assert isinstance(corpora, dict)
    assert not [name for name in corpora if "blind" in name]


def test_gating_by_queue_and_age_group() -> None:
    model = toy_model()

    def v(text: str, **kw: bool):
        return model.verdict(text.split(), **kw)

    teen = {"protect_personal_info": True, "moderated": True}
    adult = {"protect_personal_info": False, "moderated": True}
    unmoderated = {"protect_personal_info": False, "moderated": False}
    assert (v("lure", **teen).category, v("lure", **teen).severity) == ("grooming", Severity.HIGH)
    assert not v("lure", **adult)  # grooming is a teen-chat category
    assert v("vile", **unmoderated).category == "minor_sexual"  # applies in every queue
    assert not v("hello", **teen)
    assert not v("", **teen)
    # mostly unknown tokens (ids, hashes): not judged
    assert not v("lure 3f9a0c 77be01", **teen)
    assert v("what a lure 3f9a0c", **teen).category == "grooming"


def test_learned_zero_tolerance_blocks_but_never_bans() -> None:
    assert toy_model().verdict(["vile"], protect_personal_info=True, moderated=True).severity == (
        Severity.HIGH
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "corpus", sorted(DATA.glob("moderation_corpus*.tsv")), ids=lambda p: p.name
)
def test_never_lowers_the_rules_verdict(
    corpus: Path, with_model: Classifier, rules_only: Classifier
) -> None:
    for case in load_corpus(corpus):
        assert predict(with_model, case).severity >= predict(rules_only, case).severity, case


@pytest.mark.slow
def test_the_window_uses_the_learned_verdict_when_it_is_more_severe(rules_only: Classifier) -> None:
    clf = Classifier(learned=False)
    clf.learned = toy_model()
    w = SenderWindow(clf)
    v = w.check("what a lure", 0.0, protect_personal_info=True, moderated=True)
    assert (v.category, v.severity) == ("grooming", Severity.HIGH)
    assert not SenderWindow(rules_only).check(
        "what a lure", 0.0, protect_personal_info=True, moderated=True
    )


def test_ids_and_hashes_are_not_judged(with_model: Classifier) -> None:
    """Chat made of ids (a load test, a pasted hash) must not collect learned strikes."""
    rng = random.Random(7)

    def uid() -> str:
        return "-".join(f"{rng.getrandbits(4 * n):0{n}x}" for n in (8, 4, 4, 4, 12))

    assert with_model.learned is not None
    for i in range(1000):
        text = f"{uid()}|{uid()}|{i % 50}"
        tokens = list(with_model.normalize(text).text_tokens)
        assert not with_model.learned.verdict(tokens, protect_personal_info=True, moderated=True)
