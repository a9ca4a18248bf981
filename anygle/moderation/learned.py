"""The learned layer: a small linear model that catches paraphrases the rules do not list.

The rules stay the explainable hard blocks (contact-detail formats, zero-tolerance phrases);
this model only ever *adds* a verdict where the rules found less, never lowers one (the window
takes the more severe of the two). It reads the normaliser's tokens (leetspeak undone, repeated
letters squeezed), so the evasions the rules see through are seen through here too.

Features (``features``): each token as a word, the token's character 3- and 4-grams (with
``<``/``>`` marking its ends, so "snapp", "sn4p" and "snapchat" share grams), and each pair of
adjacent tokens. Scores are a multinomial logistic regression over counts of those features,
trained by ``tools/train_moderation.py`` from the project's labelled corpora; the weights ship
in ``model/weights.json.gz`` with a probability threshold per category chosen on
cross-validated predictions (see anygle/moderation/README.md, "Learned layer").

Cost: a token's word and character-gram weights are summed once and cached (bounded), so a
message costs a dict lookup per token and per token pair plus one sum over the hits.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from itertools import islice, pairwise
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from .normalize import Normalized
from .verdict import (
    CLEAN,
    MODEL,
    PROTECTED_CATEGORIES,
    UNMODERATED_CATEGORIES,
    Severity,
    Verdict,
)

CHAR_GRAMS = (3, 4)
MAX_TOKEN = 24  # longer tokens contribute their word feature only
MEMO_CHARS = 64  # messages up to this long have their answer remembered (see judge)
MEMO_SIZE = 20_000  # remembered answers at most (about 300 bytes each)
CACHE_SIZE = 50_000  # tokens whose summed weights are kept, per cache (about 200 bytes each)
# What a learned finding does. Zero-tolerance categories block with a 'high' warning but never
# ban: a ban needs a rule that explains it (see README, "Learned layer"). ``grooming`` is not
# a verdict of its own: its probability is one move in the sender's conversation (window.py).
SEVERITY = {
    "csam_solicitation": Severity.HIGH,
    "minor_sexual": Severity.HIGH,
    "violent_threat": Severity.HIGH,
    "doxing": Severity.HIGH,
    "personal_info": Severity.HIGH,
    "grooming": Severity.HIGH,
}
# per token: its summed weights (None: no feature known), is it a word (3+ letters), is it a
# known word, and the weights of the pairs it starts (second token -> weights)
_Entry = tuple[tuple[float, ...] | None, bool, bool, dict[str, tuple[float, ...]] | None]
TEEN_ONLY = frozenset({"grooming"}) | PROTECTED_CATEGORIES
# The ``weak`` class (flattery, gifts, age and relationship talk) never acts alone: with a teen,
# a message whose most probable class it is, at this probability or more, is a weak grooming
# signal in the sender window (window.LEARNED_WEAK).
WEAK_THRESHOLD = 0.5
# Tokens (as the normaliser gives them) that address the partner. In a message that has one,
# every word also counts as "y:<word>": "parents" in "are ur parents home" and in "my parents
# are strict" then weigh differently, which a sum of single words cannot express.
SECOND_PERSON = frozenset(
    {"you", "u", "ur", "your", "youre", "ya", "yourself", "urself", "yours", "urs", "yall"}
)


def make_room(memo: dict[Any, Any]) -> None:
    """Forget the older half of a full memo (dicts keep insertion order): what chat repeats
    stays remembered, where clearing it all dropped the hit rate every time it filled up."""
    for key in list(islice(memo, len(memo) // 2)):
        del memo[key]


def token_features(token: str) -> list[str]:
    out = ["w:" + token]
    if len(token) <= MAX_TOKEN:
        padded = f"<{token}>"
        for n in CHAR_GRAMS:
            out.extend(padded[i : i + n] for i in range(len(padded) - n + 1))
    return out


def addressed(tokens: Sequence[str]) -> bool:
    """Does the message speak to the partner ("you", "ur", ...)?"""
    return not SECOND_PERSON.isdisjoint(tokens)


def features(tokens: Sequence[str]) -> list[str]:
    """Every feature of one message (what the trainer counts; the model sums the same)."""
    out = [f for t in tokens for f in token_features(t)]
    out.extend(f"b:{a} {b}" for a, b in pairwise(tokens))
    if addressed(tokens):
        out.extend("y:" + t for t in tokens)
    return out


@dataclass(frozen=True, slots=True)
class Finding:
    """What the model says of one message: a verdict of a category that acts alone (or
    CLEAN), and the grooming reading the sender window scores as a conversation move."""

    verdict: Verdict
    weak: float | None = None  # probability of ``weak`` when it is the most probable class
    grooming: float | None = None  # probability of ``grooming`` when it is the most probable


NOTHING = Finding(CLEAN)


class ModelData(TypedDict):
    """The model file as tools/train_moderation.py writes it (weights per class, in
    ``classes`` order)."""

    classes: list[str]
    bias: list[float]
    weights: dict[str, list[float]]  # feature -> weights
    thresholds: dict[str, float]  # category -> probability threshold
    vocabulary: NotRequired[list[str]]
    meta: NotRequired[dict[str, object]]  # how it was trained: informative only


class LearnedModel:
    """Weights and thresholds of the trained model; ``verdict`` is the per-message call."""

    def __init__(self, data: ModelData) -> None:
        self.classes: list[str] = data["classes"]
        self.bias: tuple[float, ...] = tuple(data["bias"])
        self.weights: dict[str, tuple[float, ...]] = {}
        # token pairs as first token -> second token -> weights: no string built per pair
        self.pairs: dict[str, dict[str, tuple[float, ...]]] = {}
        for f, w in data["weights"].items():
            if f.startswith("b:"):
                a, b = f[2:].split(" ", 1)
                self.pairs.setdefault(a, {})[b] = tuple(w)
            else:
                self.weights[f] = tuple(w)
        # class index -> threshold, only for the classes that act
        self.thresholds: dict[int, float] = {
            self.classes.index(c): t for c, t in data["thresholds"].items() if c in SEVERITY
        }
        self._grooming = self.classes.index("grooming") if "grooming" in self.classes else None
        # grooming probabilities: at ``grooming`` a move that blocks alone, at ``grooming_grey``
        # a move the evidence does not settle (a safety notice; a second move blocks)
        self.grooming_clear: float = data["thresholds"].get("grooming", 1.0)
        self.grooming_grey: float = data["thresholds"].get("grooming_grey", self.grooming_clear)
        self.meta: dict[str, object] = data.get("meta", {})
        # words seen at least twice in training; a message mostly made of other tokens (ids,
        # hashes, another language) is not judged: character grams of noise say nothing
        self.vocabulary: frozenset[str] = frozenset(data.get("vocabulary", ()))
        self._weak = self.classes.index("weak") if "weak" in self.classes else None
        self._tokens: dict[str, _Entry] = {}
        self._addressed: dict[str, _Entry] = {}
        self._memo: dict[tuple[str, bool, bool], Finding] = {}

    @classmethod
    def load(cls, path: str | Path | None = None) -> LearnedModel:
        """The packaged model, or the one at ``path`` (a .json or .json.gz file)."""
        if path is None:
            raw = resources.files(__package__).joinpath("model/weights.json.gz").read_bytes()
        else:
            raw = Path(path).read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return cls(json.loads(raw))

    def _entry(self, token: str, is_addressed: bool) -> _Entry:
        weights = self.weights
        feats = token_features(token)
        if is_addressed:
            feats.append("y:" + token)
        hits = [w for f in feats if (w := weights.get(f)) is not None]
        vector = tuple(map(sum, zip(*hits, strict=True))) if hits else None
        word = len(token) > 2  # letters and two-letter bits say nothing about the language
        return vector, word, word and token in self.vocabulary, self.pairs.get(token)

    def _scan(self, tokens: Sequence[str]) -> tuple[list[float], bool]:
        """``(scores, judged)``: raw class scores (logits) of one message, and whether enough
        of its words are known to judge it (it has words of 3+ letters, at least half of them
        known)."""
        is_addressed = addressed(tokens)
        # one lookup per token: its features (and, in an addressed message, its "y:" word)
        # summed, whether it is a known word, and the pairs it starts
        cache = self._addressed if is_addressed else self._tokens
        vectors = [self.bias]
        append = vectors.append
        following = None
        words = known = 0
        for t in tokens:
            e = cache.get(t)
            if e is None:
                if len(cache) >= CACHE_SIZE:
                    make_room(cache)
                e = cache[t] = self._entry(t, is_addressed)
            vector, word, is_known, starts = e
            if vector is not None:
                append(vector)
            if following is not None:
                pair = following.get(t)
                if pair is not None:
                    append(pair)
            following = starts
            words += word
            known += is_known
        return list(map(sum, zip(*vectors, strict=True))), known * 2 >= words > 0

    def scores(self, tokens: Sequence[str]) -> list[float]:
        """Raw class scores (logits) of one message."""
        return self._scan(tokens)[0]

    def verdict(
        self, tokens: Sequence[str], *, protect_personal_info: bool, moderated: bool
    ) -> Verdict:
        """The most probable acting category over its threshold, as a Verdict (or CLEAN); a
        grooming reading at the blocking threshold as a ``grooming`` verdict."""
        f = self.assess(tokens, protect_personal_info=protect_personal_info, moderated=moderated)
        if f.grooming is not None and f.grooming >= self.grooming_clear:
            return Verdict(Severity.HIGH, "grooming", f"learned p={f.grooming:.2f}", MODEL)
        return f.verdict

    def judge(self, norm: Normalized, *, protect_personal_info: bool, moderated: bool) -> Finding:
        """``assess`` for one normalised message, remembered for short texts: chat repeats
        its short lines ("hi", "m or f?", "lol same") all the time, and a remembered answer
        spares building the tokens too."""
        text = norm.original
        if len(text) > MEMO_CHARS:
            return self.assess(
                norm.text_tokens, protect_personal_info=protect_personal_info, moderated=moderated
            )
        key = (text, protect_personal_info, moderated)
        found = self._memo.get(key)
        if found is None:
            if len(self._memo) >= MEMO_SIZE:
                make_room(self._memo)
            found = self._memo[key] = self.assess(
                norm.text_tokens, protect_personal_info=protect_personal_info, moderated=moderated
            )
        return found

    def assess(
        self, tokens: Sequence[str], *, protect_personal_info: bool, moderated: bool
    ) -> Finding:
        """The verdict as in ``verdict``; with a teen, when the message's most probable class is
        ``weak`` (flattery, gifts, age or relationship talk: a mild signal) or ``grooming``, its
        probability, for the sender window to score as a move of the conversation."""
        if not tokens:
            return NOTHING
        s, judged = self._scan(tokens)
        if not judged:
            return NOTHING
        top = max(s)
        best = max(range(len(s)), key=s.__getitem__)
        p = 1.0 / sum(math.exp(x - top) for x in s)
        if best == self._weak:
            return (
                Finding(CLEAN, weak=p) if p >= WEAK_THRESHOLD and protect_personal_info else NOTHING
            )
        if best == self._grooming:
            if protect_personal_info and moderated and p >= self.grooming_grey:
                return Finding(CLEAN, grooming=p)
            return NOTHING
        threshold = self.thresholds.get(best)
        if threshold is None or p < threshold:
            return NOTHING
        category = self.classes[best]
        if category in TEEN_ONLY and not protect_personal_info:
            return NOTHING
        if not moderated and category not in UNMODERATED_CATEGORIES:
            return NOTHING
        return Finding(Verdict(SEVERITY[category], category, f"learned p={p:.2f}", MODEL))
