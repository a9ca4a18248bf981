"""Scoring the classifier against a labelled corpus (used by bench/moderation_eval.py and the
corpus test). Corpus format: see the header of tests/data/moderation_corpus.tsv."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from .classifier import Classifier
from .verdict import CATEGORY_ORDER, CATEGORY_SEVERITY, CLEAN, Verdict
from .window import SenderWindow


@dataclass(frozen=True, slots=True)
class Case:
    line: int
    label: str
    teen: bool
    tags: tuple[str, ...]
    messages: tuple[str, ...]


class CategoryScore(TypedDict):
    support: int  # cases labelled with the category
    precision: float | None  # None: never predicted
    recall: float | None  # None: no support


class CaseError(TypedDict):
    """A misclassified case."""

    line: int
    label: str
    got: str
    evidence: str | None
    text: str


class Report(TypedDict):
    """What ``evaluate`` measures (bench/moderation_eval.py prints and stores it)."""

    cases: int
    per_category: dict[str, CategoryScore]
    tier_recall: dict[str, float]  # severity name -> share of cases given at least that
    evasion_recall: dict[str, float]  # evasion tag -> share of its cases caught exactly
    benign: int
    benign_false_positives: int
    benign_fp_rate: float | None
    errors: list[CaseError]


def load_corpus(path: Path, *, skip: frozenset[str] = frozenset()) -> list[Case]:
    """The cases of a corpus file; lines labelled with one of ``skip`` (e.g. ``?``, an
    exported report line nobody has labelled yet) are left out."""
    cases = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        label, who, tags, text = line.split("\t")
        if label in skip:
            continue
        if label != "clean" and label not in CATEGORY_SEVERITY:
            raise ValueError(f"{path}:{lineno}: unknown label {label!r}")
        if who not in ("teen", "adult"):
            raise ValueError(f"{path}:{lineno}: who must be teen or adult")
        tag_tuple = () if tags == "-" else tuple(tags.split(","))
        cases.append(Case(lineno, label, who == "teen", tag_tuple, tuple(text.split(" || "))))
    return cases


def predict(classifier: Classifier, case: Case) -> Verdict:
    """Feed the case's messages through one fresh window; the most severe verdict wins."""
    return predict_with_notice(classifier, case)[0]


def predict_with_notice(classifier: Classifier, case: Case) -> tuple[Verdict, bool]:
    """``predict``'s verdict (CLEAN when no message got one), and whether any of the case's
    messages earned its recipient a safety notice (a delivered grey grooming move)."""
    window = SenderWindow(classifier)
    worst, notice = CLEAN, False
    for i, msg in enumerate(case.messages):
        v = window.check(
            msg, float(i), protect_personal_info=case.teen, moderated=True, teen=case.teen
        )
        notice = notice or v.notice is not None
        if v.severity > worst.severity:
            worst = v
    return worst, notice


def evaluate(classifier: Classifier, cases: list[Case]) -> Report:
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    tier_total: Counter[str] = Counter()
    tier_hit: Counter[str] = Counter()
    evasion_total: Counter[str] = Counter()
    evasion_hit: Counter[str] = Counter()
    benign = benign_fp = 0
    errors: list[CaseError] = []
    for case in cases:
        v = predict(classifier, case)
        got = v.category or "clean"
        if case.label == "clean":
            benign += 1
            if v:
                benign_fp += 1
                fp[got] += 1
                errors.append(_err(case, v))
            continue
        want_sev = CATEGORY_SEVERITY[case.label]
        tier = want_sev.name
        tier_total[tier] += 1
        if v.severity >= want_sev:
            tier_hit[tier] += 1
        if got == case.label:
            tp[case.label] += 1
        else:
            fn[case.label] += 1
            if v:
                fp[got] += 1
            errors.append(_err(case, v))
        for tag in case.tags:
            if tag.startswith("evasion:"):
                evasion_total[tag[8:]] += 1
                evasion_hit[tag[8:]] += got == case.label
    per_category: dict[str, CategoryScore] = {}
    for cat in CATEGORY_ORDER:
        support = tp[cat] + fn[cat]
        predicted = tp[cat] + fp[cat]
        if not support and not predicted:
            continue
        per_category[cat] = {
            "support": support,
            "precision": round(tp[cat] / predicted, 3) if predicted else None,
            "recall": round(tp[cat] / support, 3) if support else None,
        }
    return {
        "cases": len(cases),
        "per_category": per_category,
        "tier_recall": {t: round(tier_hit[t] / tier_total[t], 3) for t in tier_total},
        "evasion_recall": {
            e: round(evasion_hit[e] / evasion_total[e], 3) for e in sorted(evasion_total)
        },
        "benign": benign,
        "benign_false_positives": benign_fp,
        "benign_fp_rate": round(benign_fp / benign, 4) if benign else None,
        "errors": errors,
    }


def _err(case: Case, v: Verdict) -> CaseError:
    return {
        "line": case.line,
        "label": case.label,
        "got": v.category or "clean",
        "evidence": v.evidence,
        "text": " || ".join(case.messages),
    }
