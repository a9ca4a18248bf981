"""Evaluate the moderation classifier on the labelled corpus (tests/data/moderation_corpus.tsv).

Prints precision/recall per category, recall per severity tier and per evasion form, the
benign false-positive rate and the per-message cost (median and p99, microseconds), and
writes the numbers to bench/results/moderation.json (the latest run).

Run: .venv/bin/python bench/moderation_eval.py [--corpus PATH] [--no-json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from anygle.moderation import Classifier, SenderWindow  # noqa: E402
from anygle.moderation.evaluation import Case, Report, evaluate, load_corpus  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "moderation_corpus.tsv"
HOLDOUTS = sorted((ROOT / "tests" / "data").glob("moderation_corpus.holdout*.tsv"))
RESULTS = ROOT / "bench" / "results"
TARGETS = {"zero_recall": 0.95, "high_recall": 0.95, "personal_info_recall": 0.90,
           "benign_fp_rate": 0.01, "chars200_p99_us": 100.0}  # fmt: skip


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timing(classifier: Classifier, cases: list[Case], repeats: int = 7) -> dict[str, float]:
    """Per-message cost of SenderWindow.check (classification included), in microseconds.

    Measured as thread CPU time (CLOCK_THREAD_CPUTIME_ID), so time the process spends
    preempted on a busy machine is not counted; each message is timed ``repeats`` times and
    its median kept; median and 99th percentile are then taken over messages.
    ``first_p99_us`` is the p99 of each message's *first* call (CPU time), before anything
    about it can be cached (the classifier caches per-token work; the repeats would hit it).
    ``wall_p99_us`` is the plain wall-clock p99 of single calls, load included, for comparison.
    """
    messages = [(m, c.teen) for c in cases for m in c.messages]
    benign = [(m, c.teen) for c in cases if c.label == "clean" for m in c.messages]
    rng = random.Random(4)
    long_mixed = [_two_hundred(rng, messages) for _ in range(300)]
    long_benign = [_two_hundred(rng, benign) for _ in range(300)]
    cpu, wall = time.thread_time_ns, time.perf_counter_ns

    def run(msgs: list[tuple[str, bool]]) -> tuple[list[float], list[float], list[float]]:
        window = SenderWindow(classifier)
        per_message, raw, first = [], [], []
        for i, (text, teen) in enumerate(msgs):
            samples = []
            for r in range(repeats):
                w0, c0 = wall(), cpu()
                window.check(text, i * 10.0 + r, protect_personal_info=teen, moderated=True)
                c1, w1 = cpu(), wall()
                samples.append((c1 - c0) / 1000)
                raw.append((w1 - w0) / 1000)
            per_message.append(statistics.median(samples))
            first.append(samples[0])
        return per_message, raw, first

    run(messages[:200])  # warm-up
    out: dict[str, float | int] = {"corpus_messages": len(messages), "repeats": repeats}
    for name, msgs in (("corpus", messages), ("chars200_benign", long_benign),
                       ("chars200_mixed", long_mixed)):  # fmt: skip
        per_message, raw, first = run(msgs)
        out[f"{name}_median_us"] = round(statistics.median(per_message), 1)
        out[f"{name}_p99_us"] = round(_percentile(per_message, 0.99), 1)
        out[f"{name}_first_p99_us"] = round(_percentile(first, 0.99), 1)
        out[f"{name}_wall_p99_us"] = round(_percentile(raw, 0.99), 1)
    return out


def _two_hundred(rng: random.Random, messages: list[tuple[str, bool]]) -> tuple[str, bool]:
    """A 200-character message made of corpus messages (mixed benign and abusive)."""
    parts: list[str] = []
    while sum(len(p) + 1 for p in parts) < 200:
        parts.append(rng.choice(messages)[0])
    return " ".join(parts)[:200], rng.random() < 0.5


def first_scores() -> list[str]:
    """The blind log's first scores as aligned rows (the newest set last), and for the sets whose
    conversations were run, the move at which each grooming conversation was stopped."""
    log = RESULTS / "moderation-blind.tsv"
    if not log.exists():
        return []
    rows = [line.split("\t") for line in log.read_text().splitlines()]
    head, rows = rows[0], [r for r in rows[1:] if r[2] == "first"]
    want = ("set", "commit", "zero_blocked", "high_blocked", "grooming", "grooming_flagged",
            "personal_info", "benign_fp", "teen_benign_blocked", "near_miss_blocked",
            "conv_reached_max", "conv_stopped_2nd", "innocent_ok")  # fmt: skip
    keep = [head.index(k) for k in want if k in head]

    def cell(r: list[str], i: int) -> str:
        return r[i].split(" (")[0] if i < len(r) else "-"

    table = [[cell(r, i) for i in keep] for r in [head, *rows]]
    width = [max(len(r[i]) for r in table) for i in range(len(keep))]
    lines = ["  " + "  ".join(c.rjust(w) for c, w in zip(r, width, strict=True)) for r in table]
    for path in sorted(RESULTS.glob("moderation-conversations-*.json")):
        conv = json.loads(path.read_text())
        stops = {
            cid: r.get("stopped_at_move")
            for cid, r in conv["per_conversation"].items()
            if r["harmful"]
        }
        lines.append(
            f"  {path.stem.removeprefix('moderation-conversations-')}: grooming conversations "
            "stopped at move " + ", ".join(f"{c}={m}" for c, m in stops.items())
        )
    return lines


def report(result: Report, cost: dict[str, float] | None) -> str:
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
    rate = result["benign_fp_rate"]  # None: no benign cases
    lines.append(
        f"benign false positives: {result['benign_false_positives']}/{result['benign']}"
        f" = {'-' if rate is None else f'{100 * rate:.2f} %'}"
    )
    if cost is not None:
        lines.extend(_cost_lines(cost))
    if result["errors"]:
        lines.append("")
        lines.append("misclassified:")
        for e in result["errors"]:
            lines.append(
                f"  line {e['line']}: {e['label']} -> {e['got']} [{e['evidence']}] {e['text']}"
            )
    return "\n".join(lines)


def _cost_lines(cost: dict[str, float]) -> list[str]:
    lines = [
        "",
        f"cost per message, SenderWindow.check, us of thread CPU time (median of {cost['repeats']}"
        " runs each; 1st p99 = first call of each message, nothing cached for it; wall p99 ="
        " single calls, machine load included):",
        f"  {'messages':<34}{'median':>8}{'p99':>8}{'1st p99':>9}{'wall p99':>10}",
    ]
    for name, label in (("corpus", "corpus messages"),
                        ("chars200_benign", "200-char, benign small talk"),
                        ("chars200_mixed", "200-char, mixed with abuse")):  # fmt: skip
        lines.append(
            f"  {label:<34}{cost[name + '_median_us']:>8}{cost[name + '_p99_us']:>8}"
            f"{cost[name + '_first_p99_us']:>9}{cost[name + '_wall_p99_us']:>10}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument(
        "--holdout", type=Path, action="append", help="held-out corpus (default: all of them)"
    )
    ap.add_argument("--no-json", action="store_true", help="do not write bench/results/*.json")
    ap.add_argument("--repeats", type=int, default=7, help="timing repetitions per message")
    args = ap.parse_args(argv)
    classifier = Classifier()
    cases = load_corpus(args.corpus)
    result = evaluate(classifier, cases)
    holdouts = {p.name: evaluate(classifier, load_corpus(p)) for p in (args.holdout or HOLDOUTS)}
    cost = timing(classifier, cases, args.repeats)
    print(
        f"== {args.corpus.relative_to(ROOT) if args.corpus.is_relative_to(ROOT) else args.corpus}"
    )
    print(report(result, cost))
    for name, held in holdouts.items():
        print(f"\n== held-out corpus {name}")
        print(report(held, None))
    blind = first_scores()
    if blind:
        print("\n== blind sets, first scores (bench/results/moderation-blind.tsv; the only")
        print("   numbers that measure text nobody tuned for; see bench/moderation_blind.py)")
        print("\n".join(blind))
    if not args.no_json:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / "moderation.json"  # the latest run; the date is inside
        payload = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "load_average": list(os.getloadavg()),
            "targets": TARGETS,
            "cost_us": cost,
            "corpus": result,
            "holdout": holdouts,
        }
        out.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"\nwrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
