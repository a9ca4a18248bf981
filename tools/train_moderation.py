"""Train the learned moderation layer (anygle/moderation/learned.py) from the project's corpora.

Inputs: every labelled corpus the project keeps for training (``tests/data/moderation_corpus*.tsv``
-- the main corpus and the held-out corpora that are no longer blind -- and
``tests/data/moderation_train.*.tsv``). Never the blind sets under ``tests/data/blind/``: those
measure the model and must stay unseen by it.

Samples: every single-message case with its label; every message of a multi-message clean case
as clean. Labels: the categories the layer can act on, ``clean``, ``other`` (slurs, harassment,
explicit talk, insults, profanity: the rules' business, kept apart so they do not blur
``clean``) and ``weak``: clean lines tagged ``weak`` (one weak grooming signal) and the
messages of multi-message grooming cases, which build up from weak signals; the sender window
counts a ``weak`` message as one weak signal. Other multi-message abusive cases are left out:
their parts are innocent alone (a phone number in three pieces), the window's job.

Conversations (``tests/data/moderation_conv_train.*.tsv``, the format of
bench/moderation_conversations.py) add every line as a sample: the stranger's by its label, the
teen's as clean. ``--extra FILE`` adds an operator's own labelled lines (e.g. reported
transcripts exported with the console's ``export_reports``; lines still labelled ``?`` are
skipped).

Method: scikit-learn's multinomial LogisticRegression over counts of learned.features(); 5-fold
cross-validated probabilities choose each acting category's threshold: the lowest one (at least
``--min-threshold``) at which that category claims at most ``--fp-budget`` of the clean samples
out of fold (half that for the zero-tolerance categories); for ``grooming`` also a lower
``grooming_grey`` threshold with ``--grey-fp-budget`` (a grey reading alone only earns the teen a
safety notice; a second move blocks: see window.py). The final model is fitted on
everything, pruned of negligible weights and written to
``anygle/moderation/model/weights.json.gz`` with the thresholds and the out-of-fold recall.

Run: .venv/bin/pip install ".[train]" && .venv/bin/python tools/train_moderation.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from anygle.moderation import Classifier  # noqa: E402
from anygle.moderation.evaluation import load_corpus  # noqa: E402
from anygle.moderation.learned import SEVERITY, features  # noqa: E402
from anygle.moderation.verdict import CATEGORY_SEVERITY, Severity  # noqa: E402
from anygle.reports import UNLABELLED  # noqa: E402

DATA = ROOT / "tests" / "data"
OUT = ROOT / "anygle" / "moderation" / "model" / "weights.json.gz"
OTHER = frozenset({"harassment", "slur", "sexual_explicit", "profanity", "insult", "link"})


def corpora() -> list[Path]:
    return sorted(DATA.glob("moderation_corpus*.tsv")) + sorted(DATA.glob("moderation_train.*.tsv"))


def conversations() -> list[Path]:
    return sorted(DATA.glob("moderation_conv_train.*.tsv"))


CONV_LABELS = {
    "clean": "clean",
    "weak": "weak",
    "grooming": "grooming",
    "personal_info": "personal_info",
}


def conversation_samples(paths: list[Path], docs: list, labels: list, per_file: Counter) -> None:
    norm = Classifier(learned=False).rules.normalizer
    for path in paths:
        for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not raw.strip() or raw.startswith("#"):
                continue
            _, role, label, text = raw.split("\t")
            if label not in CONV_LABELS:
                raise ValueError(f"{path}:{n}: unknown label {label!r}")
            docs.append(list(norm(text).text_tokens))
            labels.append(CONV_LABELS[label] if role == "stranger" else "clean")
            per_file[path.name] += 1


def samples(paths: list[Path]) -> tuple[list[list[str]], list[str], Counter]:
    norm = Classifier(learned=False).rules.normalizer
    docs, labels, per_file = [], [], Counter()
    for path in paths:
        for case in load_corpus(path, skip=frozenset({UNLABELLED})):
            label = "other" if case.label in OTHER else case.label
            if label == "clean" and "weak" in case.tags:
                label = "weak"
            elif len(case.messages) > 1 and label == "grooming":
                label = "weak"  # a sequence's parts: mostly weak signals that build up
            elif len(case.messages) > 1 and label != "clean":
                continue
            for m in case.messages:
                docs.append(list(norm(m).text_tokens))
                labels.append(label)
                per_file[path.name] += 1
    return docs, labels, per_file


def _vectorizer() -> CountVectorizer:
    return CountVectorizer(analyzer=features, lowercase=False, min_df=1)


Weights = str | dict[int, float] | None  # LogisticRegression's class_weight


def _model(c: float, weights: Weights) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=3000, class_weight=weights)


def _scale(vec: CountVectorizer, char_scale: float) -> sparse.dia_matrix:
    """Column scaling: character grams count ``char_scale`` each, words and pairs 1. A
    character gram then needs a larger weight to matter and is held back by the
    regularisation: grams generalise to misspellings but also to unrelated words ("show" in
    "shows"). Exported weights are multiplied back, so inference just sums them."""
    names = vec.get_feature_names_out()
    factors = np.array([1.0 if n[:2] in ("w:", "b:") else char_scale for n in names])
    return sparse.diags(factors)


def _fit(docs: list[list[str]], y: np.ndarray, c: float, char_scale: float, weights: Weights):
    vec = _vectorizer()
    x = vec.fit_transform(docs)
    scale = _scale(vec, char_scale)
    model = _model(c, weights).fit(x @ scale, y)
    return vec, scale, model


def out_of_fold(
    docs: list[list[str]], y: np.ndarray, c: float, seed: int, char_scale: float, weights: Weights
) -> np.ndarray:
    proba = np.zeros((len(docs), len(np.unique(y))))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    for train, test in folds.split(np.zeros(len(y)), y):
        vec, scale, model = _fit([docs[i] for i in train], y[train], c, char_scale, weights)
        proba[test] = model.predict_proba(vec.transform([docs[i] for i in test]) @ scale)
    return proba


def lowest_threshold(
    proba: np.ndarray, y: np.ndarray, k: int, clean_k: int, allowed: float, floor: float
) -> float:
    """The lowest probability (from ``floor``) at which class ``k`` claims at most ``allowed``
    of the clean samples out of fold."""
    pred = proba.argmax(1)
    top = proba.max(1)
    clean = y == clean_k
    mine = pred == k
    for t in np.arange(floor, 1.0, 0.01):
        if ((mine & (top >= t)) & clean).sum() <= allowed * clean.sum():
            return float(round(t, 2))
    return 1.0


def thresholds(
    proba: np.ndarray, y: np.ndarray, classes: list[str], budget: float, floor: float,
    grey_budget: float = 0.0, grooming_budget: float | None = None,
) -> tuple[dict[str, float], dict[str, dict]]:  # fmt: skip
    pred = proba.argmax(1)
    top = proba.max(1)
    clean = y == classes.index("clean")
    chosen, report = {}, {}
    for k, name in enumerate(classes):
        if name not in SEVERITY:
            continue
        # a false zero-tolerance finding costs more (a block and a strike on an innocent
        # sender's record): half the budget
        allowed = budget * (0.5 if CATEGORY_SEVERITY[name] is Severity.ZERO else 1.0)
        if name == "grooming" and grooming_budget is not None:
            # one grooming reading at this threshold blocks alone; below it, down to the grey
            # threshold, it is one move of the conversation (window.py)
            allowed = grooming_budget
        mine = pred == k
        best = lowest_threshold(proba, y, k, classes.index("clean"), allowed, floor)
        fires = mine & (top >= best)
        support = (y == k).sum()
        chosen[name] = best
        report[name] = {
            "threshold": best,
            "support": int(support),
            "oof_recall": round(float((fires & (y == k)).sum() / support), 3),
            "oof_clean_claimed": int((fires & clean).sum()),
        }
        if name == "grooming" and grey_budget > allowed:
            grey = lowest_threshold(proba, y, k, classes.index("clean"), grey_budget, 0.3)
            grey = min(grey, best)
            chosen["grooming_grey"] = grey
            fires = mine & (top >= grey)
            report["grooming_grey"] = {
                "threshold": grey,
                "oof_recall": round(float((fires & (y == k)).sum() / support), 3),
                "oof_clean_claimed": int((fires & clean).sum()),
            }
    return chosen, report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--c", type=float, default=2.0, help="inverse regularisation strength")
    ap.add_argument("--fp-budget", type=float, default=0.0075,
                    help="share of clean samples one category may claim out of fold")  # fmt: skip
    ap.add_argument("--grey-fp-budget", type=float, default=0.015,
                    help="share of clean samples the grey grooming reading may claim")  # fmt: skip
    ap.add_argument("--min-threshold", type=float, default=0.6)
    ap.add_argument("--extra", type=Path, action="append", default=[],
                    help="an operator's labelled file ('?' lines skipped)")  # fmt: skip
    ap.add_argument("--prune", type=float, default=0.02, help="drop features below this |w|")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--char-scale", type=float, default=0.5, help="see _scale()")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--class-weight", choices=("balanced", "none"), default="none",
                    help="balanced: every class weighs as much as clean")  # fmt: skip
    ap.add_argument("--grooming-fp-budget", type=float, default=0.004,
                    help="clean share a grooming reading that blocks alone may claim")  # fmt: skip
    ap.add_argument("--zero-weight", type=float, default=3.0,
                    help="weight of the zero-tolerance classes (class weight none)")  # fmt: skip
    args = ap.parse_args(argv)
    weights: Weights = None if args.class_weight == "none" else args.class_weight

    paths = corpora() + args.extra
    docs, labels, per_file = samples(paths)
    convs = conversations()
    conversation_samples(convs, docs, labels, per_file)
    paths += convs
    classes = sorted(set(labels))
    y = np.array([classes.index(lab) for lab in labels])
    if weights is None and args.zero_weight != 1.0:
        # the zero-tolerance classes are small (a few hundred lines): weigh them up alone
        weights = {
            k: args.zero_weight if CATEGORY_SEVERITY.get(c) is Severity.ZERO else 1.0
            for k, c in enumerate(classes)
        }
    print(f"{len(docs)} samples from {len(paths)} corpora: {dict(Counter(labels))}")
    proba = out_of_fold(docs, y, args.c, args.seed, args.char_scale, weights)
    chosen, report = thresholds(
        proba, y, classes, args.fp_budget, args.min_threshold, args.grey_fp_budget,
        args.grooming_fp_budget,
    )  # fmt: skip
    for name, row in report.items():
        print(f"  {name:<18} {row}")

    vec, scale, model = _fit(docs, y, args.c, args.char_scale, weights)
    names = vec.get_feature_names_out()
    coef = model.coef_ * scale.diagonal()  # (classes, features), back to unscaled counts
    keep = np.abs(coef).max(0) >= args.prune
    weights = {
        str(f): [round(float(w), 4) for w in coef[:, i]] for i, f in enumerate(names) if keep[i]
    }
    print(f"features: {len(names)}, kept {len(weights)} (|w| >= {args.prune})")
    counts = Counter(t for doc in docs for t in set(doc))
    vocabulary = sorted(t for t, n in counts.items() if n >= 2)
    data = {
        "classes": classes,
        "vocabulary": vocabulary,
        "bias": [round(float(b), 4) for b in model.intercept_],
        "thresholds": chosen,
        "weights": weights,
        "meta": {
            "trained": dt.datetime.now(dt.UTC).isoformat(timespec="minutes"),
            "corpora": dict(per_file),
            "samples": len(docs),
            "c": args.c,
            "char_scale": args.char_scale,
            "fp_budget": args.fp_budget,
            "grey_fp_budget": args.grey_fp_budget,
            "grooming_fp_budget": args.grooming_fp_budget,
            "class_weight": args.class_weight,
            "zero_weight": args.zero_weight,
            "out_of_fold": report,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    raw = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    args.out.write_bytes(gzip.compress(raw, 9, mtime=0))
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
