"""Differential check: this tree's moderation against another commit's, text by text.

Extracts ``anygle/moderation`` at ``--ref`` (git) into a temporary package, then compares
``Classifier.classify`` (all four flag combinations) and ``SenderWindow.check`` sequences
(verdict severity, category and evidence) on ``--n`` generated texts (tests/moderation_texts.py:
corpus lines, mutated lines, dictionary sentences, 200-character mixes).

With ``--timing``: the cost instead, old and new alternating message by message.

Run: .venv/bin/python bench/moderation_diff.py --ref ed70ec3 --n 12000 [--timing]
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from anygle.moderation import Classifier, SenderWindow  # noqa: E402
from tests.moderation_texts import texts  # noqa: E402

FLAGS = [(p, m) for p in (False, True) for m in (False, True)]


def load_ref(ref: str, into: Path):
    """``anygle/moderation`` as of ``ref``, importable as the package ``ref_moderation``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "anygle/moderation"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "anygle" / "moderation").rename(into / "ref_moderation")
    sys.path.insert(0, str(into))
    return importlib.import_module("ref_moderation")


def timing(ref, new: Classifier, repeats: int = 7) -> None:
    """Cost of SenderWindow.check, old and new alternating message by message in one process
    (so machine load hits both alike): the 200-character sets of bench/moderation_eval.py,
    thread CPU time, median of ``repeats`` runs per message, then median and p99."""
    import random
    import statistics

    from anygle.moderation.evaluation import load_corpus
    from bench.moderation_eval import CORPUS, _percentile, _two_hundred

    cases = load_corpus(CORPUS)
    messages = [(m, c.teen) for c in cases for m in c.messages]
    benign = [(m, c.teen) for c in cases if c.label == "clean" for m in c.messages]
    rng = random.Random(4)
    sets = {
        "200-char mixed": [_two_hundred(rng, messages) for _ in range(300)],
        "200-char benign": [_two_hundred(rng, benign) for _ in range(300)],
        "relay message (60 chars)": [(RELAY, False), (RELAY, True)] * 20,
    }
    cpu = time.thread_time_ns
    for name, msgs in sets.items():
        for moderated in (True, False):
            windows = {"old": ref.SenderWindow(ref.Classifier()), "new": SenderWindow(new)}
            per: dict[str, list[float]] = {"old": [], "new": []}
            for i, (text, teen) in enumerate(msgs):
                for label, window in windows.items():
                    samples = []
                    for r in range(repeats):
                        c0 = cpu()
                        window.check(
                            text, i * 10.0 + r, protect_personal_info=teen, moderated=moderated
                        )
                        samples.append((cpu() - c0) / 1000)
                    per[label].append(statistics.median(samples))
            queue = "moderated" if moderated else "unmoderated"
            print(
                f"{name:<26} {queue:<12}"
                + "".join(
                    f" {label} p50 {statistics.median(v):5.1f} p99 {_percentile(v, 0.99):6.1f} us"
                    for label, v in per.items()
                )
            )


RELAY = "hey there! how is your day going? i am bored, want to chat ?"  # bench/run.py CONTENT


def key(v) -> tuple[int, str | None, str | None]:
    return int(v.severity), v.category, v.evidence


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", required=True, help="git commit to compare against")
    ap.add_argument("--n", type=int, default=12000)
    ap.add_argument("--seed", type=int, default=9)
    ap.add_argument("--timing", action="store_true", help="only compare the cost, old vs new")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        ref = load_ref(args.ref, Path(tmp))
        old, new = ref.Classifier(), Classifier()
        if args.timing:
            timing(ref, new)
            return 0
        msgs = texts(args.n, args.seed)
        diffs = 0
        t0 = time.perf_counter()
        for text in msgs:
            for p, m in FLAGS:
                a = old.classify(text, protect_personal_info=p, moderated=m)
                b = new.classify(text, protect_personal_info=p, moderated=m)
                if key(a) != key(b):
                    diffs += 1
                    if diffs <= 20:
                        print(f"classify p={p} m={m} {text!r}: {key(a)} != {key(b)}")
        # windows: conversations of 12 consecutive texts, short fragments included
        for p, m in FLAGS:
            wo, wn = ref.SenderWindow(old), SenderWindow(new)
            for i, text in enumerate(msgs):
                if i % 12 == 0:
                    wo.clear()
                    wn.clear()
                for part in (text, *text.split()[:3]) if i % 7 == 0 else (text,):
                    a = wo.check(part, i * 5.0, protect_personal_info=p, moderated=m)
                    b = wn.check(part, i * 5.0, protect_personal_info=p, moderated=m)
                    if key(a) != key(b):
                        diffs += 1
                        if diffs <= 40:
                            print(f"window p={p} m={m} {part!r}: {key(a)} != {key(b)}")
        flagged = sum(
            bool(new.classify(t, protect_personal_info=True, moderated=True)) for t in msgs
        )
        print(
            f"{len(msgs)} texts ({flagged} flagged), 4 flag combinations, windows too: "
            f"{diffs} differences vs {args.ref} ({time.perf_counter() - t0:.1f} s)"
        )
    return 1 if diffs else 0


if __name__ == "__main__":
    raise SystemExit(main())
