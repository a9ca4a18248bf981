"""The labelled corpus must meet the issue's quality targets (recall on zero tolerance, high
severity and personal information; benign false positives)."""

from __future__ import annotations

from pathlib import Path

import pytest

from anygle.moderation import Classifier
from anygle.moderation.evaluation import Report, evaluate, load_corpus

CORPUS = Path(__file__).parent / "data" / "moderation_corpus.tsv"


@pytest.fixture(scope="module")
def result(packaged_rules: Classifier) -> Report:
    return evaluate(packaged_rules, load_corpus(CORPUS))


@pytest.mark.slow
def test_corpus_is_substantial(result: Report) -> None:
    assert result["benign"] >= 300
    assert all(row["support"] >= 20 for row in result["per_category"].values())


def test_zero_tolerance_and_high_recall(result: Report) -> None:
    assert result["tier_recall"]["ZERO"] >= 0.95
    assert result["tier_recall"]["HIGH"] >= 0.95


def test_personal_info_recall_including_obfuscated(result: Report) -> None:
    recall = result["per_category"]["personal_info"]["recall"]
    assert recall is not None and recall >= 0.90


def test_benign_false_positives_at_most_one_percent(result: Report) -> None:
    rate = result["benign_fp_rate"]
    assert rate is not None and rate <= 0.01, result["errors"]
