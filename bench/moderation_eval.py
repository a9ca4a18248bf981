"""Evaluate the moderation classifier on the labelled corpus (tests/data/moderation_corpus.tsv).

Prints precision/recall per category, recall per severity tier and per evasion form, the
benign false-positive rate and the per-message cost (median and p99, microseconds), and
writes the numbers to bench/results/moderation-<YYYY-MM-DD>.json.

Run: .venv/bin/python bench/moderation_eval.py [--corpus PATH] [--no-json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from anygle.moderation import Classifier, SenderWindow, Severity, Verdict  # noqa: E402
from anygle.moderation.verdict import CATEGORY_ORDER, CATEGORY_SEVERITY  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "moderation_corpus.tsv"
RESULTS = ROOT / "bench" / "results"
TARGETS = {"zero_recall": 0.95, "high_recall": 0.95, "personal_info_recall": 0.90,
           "benign_fp_rate": 0.01, "p99_200_chars_us": 100.0}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Case:
    line: int
    label: str
    teen: bool
    tags: tuple[str, ...]
    messages: tuple[str, ...]


def load_corpus(path: Path = CORPUS) -> list[Case]:
    cases = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        label, who, tags, text = line.split("\t")
        if label != "clean" and label not in CATEGORY_SEVERITY:
            raise ValueError(f"{path}:{lineno}: unknown label {label!r}")
        if who not in ("teen", "adult"):
            raise ValueError(f"{path}:{lineno}: who must be teen or adult")
        tag_tuple = () if tags == "-" else tuple(tags.split(","))
        cases.append(Case(lineno, label, who == "teen", tag_tuple, tuple(text.split(" || "))))
    return cases


def predict(classifier: Classifier, case: Case) -> Verdict:
    """Feed the case's messages through one fresh window; the most severe verdict wins."""
    window = SenderWindow(classifier)
    worst = None
    for i, msg in enumerate(case.messages):
        v = window.check(msg, float(i), protect_personal_info=case.teen, moderated=True)
        if worst is None or v.severity > worst.severity:
            worst = v
    assert worst is not None
    return worst


def evaluate(classifier: Classifier, cases: list[Case]) -> dict:
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    tier_total: Counter[str] = Counter()
    tier_hit: Counter[str] = Counter()
    evasion_total: Counter[str] = Counter()
    evasion_hit: Counter[str] = Counter()
    benign = benign_fp = 0
    errors: list[dict] = []
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
    per_category = {}
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


def _err(case: Case, v: Verdict) -> dict:
    return {
        "line": case.line,
        "label": case.label,
        "got": v.category or "clean",
        "evidence": v.evidence,
        "text": " || ".join(case.messages),
    }


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timing(classifier: Classifier, cases: list[Case], rounds: int = 20) -> dict:
    """Per-message cost of window.check (classification included), in microseconds."""
    messages = [(m, c.teen) for c in cases for m in c.messages]
    rng = random.Random(4)
    long_msgs = [_two_hundred(rng, messages) for _ in range(300)]
    clock = time.perf_counter_ns

    def run(msgs: list[tuple[str, bool]]) -> list[float]:
        window = SenderWindow(classifier)
        out = []
        for r in range(rounds):
            for i, (text, teen) in enumerate(msgs):
                t0 = clock()
                window.check(text, r * 1000.0 + i, protect_personal_info=teen, moderated=True)
                out.append((clock() - t0) / 1000)
        return out

    run(messages[:200])  # warm-up
    corpus_us = run(messages)
    long_us = run(long_msgs)
    return {
        "corpus_messages": len(messages),
        "median_us": round(statistics.median(corpus_us), 1),
        "p99_us": round(_percentile(corpus_us, 0.99), 1),
        "chars200_median_us": round(statistics.median(long_us), 1),
        "chars200_p99_us": round(_percentile(long_us, 0.99), 1),
    }


def _two_hundred(rng: random.Random, messages: list[tuple[str, bool]]) -> tuple[str, bool]:
    """A 200-character message made of corpus messages (mixed benign and abusive)."""
    parts: list[str] = []
    while sum(len(p) + 1 for p in parts) < 200:
        parts.append(rng.choice(messages)[0])
    return " ".join(parts)[:200], rng.random() < 0.5


def report(result: dict, cost: dict) -> str:
    lines = [f"{'category':<20}{'support':>8}{'precision':>11}{'recall':>9}"]
    for cat, row in result["per_category"].items():
        p = "-" if row["precision"] is None else f"{row['precision']:.3f}"
        r = "-" if row["recall"] is None else f"{row['recall']:.3f}"
        lines.append(f"{cat:<20}{row['support']:>8}{p:>11}{r:>9}")
    lines.append("")
    lines.append("tier recall (severity >= label's): " + ", ".join(
        f"{t}={v:.3f}" for t, v in result["tier_recall"].items()))  # fmt: skip
    lines.append("evasion recall (exact category): " + ", ".join(
        f"{t}={v:.2f}" for t, v in result["evasion_recall"].items()))  # fmt: skip
    lines.append(
        f"benign false positives: {result['benign_false_positives']}/{result['benign']}"
        f" = {100 * result['benign_fp_rate']:.2f} %"
    )
    lines.append(
        f"cost per message (window.check): median {cost['median_us']} us, p99 {cost['p99_us']} us;"
        f" 200-char messages: median {cost['chars200_median_us']} us,"
        f" p99 {cost['chars200_p99_us']} us"
    )
    if result["errors"]:
        lines.append("")
        lines.append("misclassified:")
        for e in result["errors"]:
            lines.append(
                f"  line {e['line']}: {e['label']} -> {e['got']} [{e['evidence']}] {e['text']}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--no-json", action="store_true", help="do not write bench/results/*.json")
    ap.add_argument("--rounds", type=int, default=20, help="timing repetitions")
    args = ap.parse_args(argv)
    classifier = Classifier()
    cases = load_corpus(args.corpus)
    result = evaluate(classifier, cases)
    cost = timing(classifier, cases, args.rounds)
    print(report(result, cost))
    if not args.no_json:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"moderation-{dt.datetime.now(dt.UTC).date().isoformat()}.json"
        payload = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "targets": TARGETS,
            "cost_us": cost,
            **result,
        }
        out.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"\nwrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
