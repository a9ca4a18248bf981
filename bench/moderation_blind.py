"""Score a blind moderation set once, and log that first score.

The protocol (issue 9, anygle/moderation/README.md "Blind evaluation"): every new evaluation set
is written by someone who has not seen the rules, the training data or the earlier sets, and is
scored **once**, before anything is changed because of it. This script scores a line-level set
(same format as tests/data/moderation_corpus.tsv) and, optionally, a conversation set (see
bench/moderation_conversations.py, run through a real server), and appends the result to
``bench/results/moderation-blind.tsv``. A set already in the log is scored and printed but is
logged again only with ``--rescore``, marked ``rescore``: the first score is the one to quote.

Recall columns count a line as caught when the message is stopped: its verdict is at least
HIGH (blocked), except ``zero_tier``, which asks for ZERO (blocked and banned). Grooming and
personal-info recall leave out lines tagged ``innocent-probe`` (a teen's innocent question that
the teen-queue policy blocks on purpose); ``probe_blocked`` is the share of those that were
blocked, the policy's cost. ``benign_fp`` is the share of clean lines with any verdict.
Added for issue 17 (the conversation policy): ``grooming_flagged`` counts a grooming line as
caught when it is blocked *or* earns the teen a ``safety_notice`` (a grey move passes with a
notice; the next move is blocked); ``teen_benign_blocked`` is the share of the teen's clean
lines that were blocked (the 1 % target), ``near_miss_blocked`` that share among the clean lines
tagged ``near-miss``; ``conv_stopped_2nd`` counts grooming conversations stopped by the
stranger's second move, ``innocent_ok`` innocent conversations (``ok-…``) with no line blocked.

Run: .venv/bin/python -m bench.moderation_blind SET.tsv --name set-a [--conversations CONV.tsv]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

from anygle.moderation import Classifier
from anygle.moderation.evaluation import Case, load_corpus, predict_with_notice
from anygle.moderation.verdict import CATEGORY_SEVERITY, Severity
from bench import procs

ROOT = Path(__file__).resolve().parent.parent
LOG = ROOT / "bench" / "results" / "moderation-blind.tsv"
COLUMNS = (
    "date", "set", "kind", "commit", "lines", "zero_tier", "zero_blocked", "high_blocked",
    "grooming", "personal_info", "benign_fp", "probe_blocked", "conv_reached_max",
    "conv_within_target", "grooming_flagged", "teen_benign_blocked", "near_miss_blocked",
    "conv_stopped_2nd", "innocent_ok",
)  # fmt: skip
LINE_COLUMNS = (*COLUMNS[5:12], *COLUMNS[14:17])
ZERO = frozenset(c for c, s in CATEGORY_SEVERITY.items() if s is Severity.ZERO)
HIGH = frozenset(c for c, s in CATEGORY_SEVERITY.items() if s is Severity.HIGH)


def _share(hits: int, total: int) -> str:
    return f"{hits / total:.3f} ({hits}/{total})" if total else "-"


def score_lines(classifier: Classifier, cases: list[Case]) -> tuple[dict[str, str], list[str]]:
    counts: dict[str, list[int]] = {k: [0, 0] for k in LINE_COLUMNS}
    misses = []
    for case in cases:
        v, notice = predict_with_notice(classifier, case)
        blocked = v.severity >= Severity.HIGH
        probe = "innocent-probe" in case.tags
        row = []
        if case.label == "clean":
            row.append(("benign_fp", bool(v)))
            if case.teen:
                row.append(("teen_benign_blocked", blocked))
                if "near-miss" in case.tags:
                    row.append(("near_miss_blocked", blocked))
        elif probe:
            row.append(("probe_blocked", blocked))
        else:
            if case.label in ZERO:
                row += [("zero_tier", v.severity >= Severity.ZERO), ("zero_blocked", blocked)]
            if case.label in HIGH:
                row.append(("high_blocked", blocked))
            if case.label in ("grooming", "personal_info"):
                row.append((case.label, blocked))
            if case.label == "grooming":
                row.append(("grooming_flagged", blocked or notice))
        for key, hit in row:
            counts[key][0] += hit
            counts[key][1] += 1
            wanted = key not in (
                "benign_fp",
                "probe_blocked",
                "teen_benign_blocked",
                "near_miss_blocked",
            )
            if hit != wanted and key not in (
                "zero_blocked",
                "high_blocked",
                "grooming_flagged",
                "near_miss_blocked",
            ):
                got = f"{v.severity.name}/{v.category}" if v else "clean"
                misses.append(f"{key}: {case.label} -> {got}: {' || '.join(case.messages)}")
    return {k: _share(*v) for k, v in counts.items()}, misses


def _commit() -> str:
    out = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    )
    return out.stdout.strip() or "unknown"


def _logged(name: str) -> bool:
    if not LOG.exists():
        return False
    return any(line.split("\t")[1:2] == [name] for line in LOG.read_text().splitlines()[1:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("set", type=Path, help="line-level set (moderation_corpus.tsv format)")
    ap.add_argument("--name", required=True, help="the set's name in the log")
    ap.add_argument("--conversations", type=Path, help="conversation set, run through a server")
    ap.add_argument("--rescore", action="store_true", help="log a score after the first one")
    ap.add_argument("--misses", action="store_true", help="print every miss and false positive")
    args = ap.parse_args(argv)

    cases = load_corpus(args.set)
    row, misses = score_lines(Classifier(), cases)
    row.update(conv_reached_max="-", conv_within_target="-", conv_stopped_2nd="-", innocent_ok="-")
    if args.conversations:
        from bench.moderation_conversations import run, table

        procs.install_cleanup()
        server = procs.anygle("memory")
        try:
            report = run([args.conversations], server)
        finally:
            server.stop()
        print(table(report))
        conv = report[args.conversations.name]
        row["conv_reached_max"] = str(conv["max_delivered_per_conversation"])
        row["conv_within_target"] = f"{conv['conversations_within_target']}/{conv['conversations']}"
        row["conv_stopped_2nd"] = f"{conv['stopped_by_second_move']}/{conv['conversations']}"
        row["innocent_ok"] = f"{conv['innocent_unblocked']}/{conv['innocent_conversations']}"
        if args.misses:
            print(json.dumps(conv["per_conversation"], indent=1, ensure_ascii=False))
        # per conversation: the move at which it was stopped (bench/moderation_eval.py shows it)
        out = LOG.parent / f"moderation-conversations-{args.name}.json"
        out.write_text(json.dumps(conv, indent=1, ensure_ascii=False) + "\n")
    first = not _logged(args.name)
    row.update(
        date=dt.datetime.now(dt.UTC).isoformat(timespec="minutes"),
        set=args.name,
        kind="first" if first else "rescore",
        commit=_commit(),
        lines=str(len(cases)),
    )
    for key in COLUMNS:
        print(f"{key:>20}  {row[key]}")
    if args.misses:
        print("\n".join(misses))
    if first or args.rescore:
        header = "\t".join(COLUMNS)
        if not LOG.exists():
            LOG.parent.mkdir(parents=True, exist_ok=True)
            LOG.write_text(header + "\n")
        else:  # columns are only ever added at the end: older rows keep theirs
            lines = LOG.read_text().splitlines()
            if lines[0] != header:
                LOG.write_text("\n".join([header, *lines[1:]]) + "\n")
        with LOG.open("a") as f:
            f.write("\t".join(row[k] for k in COLUMNS) + "\n")
        print(f"logged as {row['kind']} in {LOG.relative_to(ROOT)}")
    else:
        print("already scored once: not logged (use --rescore to log a later score)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
