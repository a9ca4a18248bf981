"""The message classifier: normalise once, run only the rules whose key words occur, return the
most severe finding.

Cost control: every rule is gated by key tokens (a dict lookup per token), word lists are a dict
lookup per token, phone parsing only runs on messages with 7+ digits, and tiers are checked from
ZERO down so the first tier with a finding ends the work.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from operator import attrgetter

from . import personal
from .learned import LearnedModel, make_room
from .normalize import Normalized, tokens
from .rules import load_rules
from .ruleset import DIGIT_KEY, Rule, Rules
from .verdict import (
    CATEGORY_ORDER,
    CLEAN,
    PROTECTED_CATEGORIES,
    UNMODERATED_CATEGORIES,
    Severity,
    Verdict,
)

_TIERS = (Severity.ZERO, Severity.HIGH, Severity.MEDIUM, Severity.LOW)
_ORDER = {c: i for i, c in enumerate(CATEGORY_ORDER)}
_NEAR_SPAN = 40  # longest expected match of a 'near' part, in characters
_RANK = attrgetter("order")
_ANY_DIGIT = re.compile(r"\d")
MEMO_CHARS = 32  # lines up to this long have their check remembered (see check_text)
MEMO_SIZE = 4096  # remembered lines at most (about 1 KB each, with the normalised views)


@dataclass(frozen=True, slots=True)
class Signal:
    """One grooming signal found in one message."""

    name: str
    weight: int
    evidence: str


# a remembered check: the normalised message, its verdict and grooming signals
_Checked = tuple[Normalized, Verdict, tuple[Signal, ...]]


class Classifier:
    """Packaged rules plus the operator's (``rules_path``: a directory or a .txt/.json file).

    ``classify`` is pure apart from reading the current rules, so one instance serves all
    connections; ``reload`` swaps the rules atomically."""

    def __init__(self, rules_path: str | None = None, *, learned: bool = True) -> None:
        self.rules_path = rules_path
        self._rules = load_rules(rules_path)
        # The learned layer (learned.py), used by SenderWindow beside the rules.
        self.learned: LearnedModel | None = LearnedModel.load() if learned else None
        self._memo: dict[tuple[str, bool, bool], _Checked] = {}  # see check_text

    @property
    def rules(self) -> Rules:
        return self._rules

    def reload(self) -> None:
        """Re-read all rule files and swap them in atomically.

        On a broken file raise ValueError (naming file and rule/line) and keep the old rules."""
        rules = load_rules(self.rules_path)
        self._rules, self._memo = rules, {}  # what the old rules said is forgotten with them

    def check_text(
        self, text: str, *, protect_personal_info: bool, moderated: bool
    ) -> tuple[Normalized, Verdict, list[Signal]]:
        """Normalise ``text`` and check it (``check_normalized`` with signals), remembered
        for short lines: chat repeats "hi", "m or f?", "16 u?", "lol same" all the time, and
        what one message says alone depends on nothing else (the sender window adds the
        context)."""
        remember = len(text) <= MEMO_CHARS
        key = (text, protect_personal_info, moderated)
        memo = self._memo
        hit = memo.get(key) if remember else None
        if hit is None:
            rules = self._rules
            norm = rules.normalizer(text)
            verdict, found = self.check_normalized(
                norm, protect_personal_info=protect_personal_info, moderated=moderated, rules=rules
            )
            if not remember:
                return norm, verdict, found
            if len(memo) >= MEMO_SIZE:
                make_room(memo)
            hit = memo[key] = (norm, verdict, tuple(found))
        return hit[0], hit[1], list(hit[2])

    def normalize(self, text: str) -> Normalized:
        return self._rules.normalizer(text)

    def classify(self, text: str, *, protect_personal_info: bool, moderated: bool) -> Verdict:
        rules = self._rules
        return self.classify_normalized(
            rules.normalizer(text),
            protect_personal_info=protect_personal_info,
            moderated=moderated,
            rules=rules,
        )

    def classify_normalized(
        self,
        norm: Normalized,
        *,
        protect_personal_info: bool,
        moderated: bool,
        rules: Rules | None = None,
    ) -> Verdict:
        rules = rules or self._rules
        verdict, _ = self.check_normalized(
            norm,
            protect_personal_info=protect_personal_info,
            moderated=moderated,
            rules=rules,
            signals=False,
        )
        return verdict

    def check_normalized(
        self,
        norm: Normalized,
        *,
        protect_personal_info: bool,
        moderated: bool,
        rules: Rules | None = None,
        signals: bool = True,
        only: frozenset[str] | None = None,
    ) -> tuple[Verdict, list[Signal]]:
        """Verdict for one normalised message, plus its grooming signals when asked.

        ``only`` restricts the check to these categories (used for joined fragments)."""
        rules = rules or self._rules
        # Rule vocabulary in the message: from the one-pass scan, else all tokens (the checks
        # below only ask about vocabulary words, so both give the same answers).
        # The queue's one-pass scan (scan.py), if the message had one from these rules: only
        # rules whose patterns it flagged (and those it cannot filter) can match.
        scan = norm.scanned(moderated) if norm.prefilters is rules.prefilters is not None else None
        if scan is not None and rules.fast_gate[moderated]:
            tokens, flagged = scan  # every token the checks below ask about
            candidates = _flagged_candidates(rules, norm, tokens, flagged)
        else:
            tokens = norm.token_set
            candidates = _candidates(rules, tokens, norm.base, moderated)
            if scan is not None:
                flagged = scan[1]
                candidates = [r for r in candidates if r.hs is None or r.hs <= flagged]
        # One pass: grooming signals, and verdict rules bucketed by severity (already in
        # category order, so the first match of a tier names it).
        # One signal per type (the heaviest): the window counts each type once anyway, so a
        # rule that cannot raise its type's weight is not run.
        found_by_type: dict[str, Signal] = {}
        tiers: dict[Severity, list[Rule]] = {}
        want_signals = signals and moderated
        for rule in candidates:
            if rule.signal is not None:
                if want_signals:
                    have = found_by_type.get(rule.signal)
                    if have is not None and have.weight >= rule.weight:
                        continue
                    search = rule.text_search
                    if search is not None:
                        m = search(norm.text1 if rule.shifted else norm.text)
                        evidence = None if m is None else m.group()[rule.shifted :]
                    else:
                        evidence = _match(rule, norm)
                    if evidence is not None:
                        found_by_type[rule.signal] = Signal(rule.signal, rule.weight, evidence)
                continue
            category = rule.category
            if only is not None and category not in only:
                continue
            if not moderated and category not in UNMODERATED_CATEGORIES:
                continue
            if not protect_personal_info and category in PROTECTED_CATEGORIES:
                continue
            tiers.setdefault(rule.severity, []).append(rule)
        found = list(found_by_type.values())
        check_own_pi = (
            protect_personal_info
            and moderated
            and (only is None or not only.isdisjoint(PROTECTED_CATEGORIES))
        )
        words: dict[Severity, tuple[str, str]] | None = None
        for tier in _TIERS:
            if not moderated and tier < Severity.HIGH:
                break
            best: tuple[int, str, str] | None = None
            for rule in tiers.get(tier, ()):
                search = rule.text_search
                if search is not None:
                    m = search(norm.text1 if rule.shifted else norm.text)
                    if m is None:
                        continue
                    evidence = m.group()[rule.shifted :]
                else:
                    evidence = _match(rule, norm)
                    if evidence is None:
                        continue
                if rule.requires_pi:
                    pi = personal.third_party_pi(norm.base, tokens)
                    if pi is None:
                        continue
                    evidence = f"{evidence} {pi}"
                best = (_ORDER[rule.category], rule.category, evidence)
                break
            if tier is Severity.HIGH and check_own_pi:
                pi_found = personal.own_pi(norm.base, tokens)
                if pi_found and (best is None or _ORDER[pi_found[0]] < best[0]):
                    best = (_ORDER[pi_found[0]], *pi_found)
            if tier <= Severity.MEDIUM and only is None:
                if words is None:
                    words = _word_hits(rules, norm, tokens)
                hit = words.get(tier)
                if hit and (best is None or _ORDER[hit[0]] < best[0]):
                    best = (_ORDER[hit[0]], *hit)
            if best is not None:
                return Verdict(tier, best[1], best[2]), found
        return CLEAN, found


def _candidates(
    rules: Rules, tokens: frozenset[str], base: str = "", moderated: bool = True
) -> list[Rule]:
    """Rules to run: one of their keys and all of their required words are in the message;
    sorted by rank (severity, category order). Unmoderated: only the rules that queue runs."""
    if moderated:
        gates, keys, always = rules.gates, rules.gate_keys, rules.always
    else:
        gates, keys = rules.unmoderated_gates, rules.unmoderated_gate_keys
        always = rules.unmoderated_always
    present = tokens & keys  # C-level set intersection
    if not present and not always:
        return []
    free: set[Rule] = set(always)  # gated by the key alone
    check: set[Rule] = set()  # required words or also_keys still to check
    for token in present:
        plain, conditional, cond = gates[token]
        free.update(plain)
        if conditional:
            check.update(conditional)
        for word, hits in cond:
            if word in tokens:
                check.update(hits)
    digit: bool | None = None
    for r in check:
        if r in free or not r.required <= tokens:
            continue
        also = r.also_keys
        if also is not None and also.isdisjoint(tokens):
            if DIGIT_KEY not in also:
                continue
            if digit is None:
                digit = _ANY_DIGIT.search(base) is not None
            if not digit:
                continue
        free.add(r)
    return sorted(free, key=_RANK)


def _flagged_candidates(
    rules: Rules, norm: Normalized, present: frozenset[str], flagged: frozenset[str]
) -> list[Rule]:
    """``_candidates`` for a message the prefilter scanned: the same rules, minus those whose
    patterns cannot match. ``present`` holds the tokens the unfiltered rules' gates ask
    about; a flagged rule's gate is checked on all tokens."""
    out = [r for r in rules.unfiltered if _gate_open(r, present, norm.base)]
    if flagged:
        tokens = norm.token_set
        by_pattern = rules.by_pattern
        seen: set[Rule] = set()
        for name in flagged:
            for r in by_pattern.get(name, ()):
                if r not in seen:
                    seen.add(r)
                    # (by_pattern holds prefiltered rules only: hs is set)
                    if r.hs is not None and r.hs <= flagged and _gate_open(r, tokens, norm.base):
                        out.append(r)
        out.sort(key=_RANK)
    return out


def _gate_open(rule: Rule, tokens: frozenset[str], base: str) -> bool:
    """Would ``_candidates`` pick this rule? A rule without keys always; otherwise one of its
    keys and all of its required words are tokens, and so is one of its ``also_keys``
    ('#digit': any digit in the message)."""
    if not rule.keys:
        return True
    if rule.keys.isdisjoint(tokens) or not rule.required <= tokens:
        return False
    also = rule.also_keys
    if also is None or not also.isdisjoint(tokens):
        return True
    return DIGIT_KEY in also and _ANY_DIGIT.search(base) is not None


def _view(rule: Rule, norm: Normalized) -> str:
    if rule.view == "text":
        return norm.text
    return norm.base if rule.view == "base" else norm.raw


def _match(rule: Rule, norm: Normalized) -> str | None:
    s = _view(rule, norm)
    if rule.pattern is not None:
        if rule.shifted:
            m = rule.pattern.search(norm.text1)
            return m.group()[1:] if m else None
        m = rule.pattern.search(s)
        return m.group() if m else None
    assert rule.near is not None
    # The second pattern is the gated (rarer) one: find it first, then look for the first
    # pattern only in a window around each hit instead of the whole message.
    other, reach = rule.near[0], rule.within + _NEAR_SPAN
    other_shifted, near_shifted = rule.near_shifted
    s1 = norm.text1 if other_shifted or near_shifted else s
    near_keys = rule.near_keys
    n = len(s)
    for s2, e2 in _spans(rule.near[1], near_shifted, s, s1, 0, n):
        lo, hi = max(0, s2 - reach), min(n, e2 + reach)
        if near_keys is not None and not _window_has(near_keys, s, lo, hi):
            continue  # every match of the first pattern holds one of these words
        for a1, e1 in _spans(other, other_shifted, s, s1, lo, hi):
            if e1 == hi < n:  # may be cut short by the window: match again on the full text
                full = other.match(s1, a1) if other_shifted else other.match(s, a1)
                if full is None:
                    continue
                e1 = full.end() - other_shifted
            if max(s2 - e1, a1 - e2) <= rule.within:
                return s[min(a1, s2) : max(e1, e2)]
    return None


def _spans(
    pattern: re.Pattern[str], shifted: bool, s: str, s1: str, lo: int, hi: int
) -> Iterator[tuple[int, int]]:
    """Spans (in ``s``) of the successive matches of ``pattern`` in ``s[lo:hi]``; a SHIFTED
    pattern runs on ``s1`` (= ' ' + s), where the same match sits one character later."""
    if not shifted:
        for m in pattern.finditer(s, lo, hi):
            yield m.span()
        return
    pos, end = lo, hi + 1
    while True:
        found = pattern.search(s1, pos, end)
        if found is None:
            return
        a, b = found.start(), found.end() - 1
        yield a, b
        pos = b if b > a else a + 1


def _window_has(keys: frozenset[str], s: str, lo: int, hi: int) -> bool:
    """Does ``s[lo:hi]`` hold one of ``keys`` as a token ('#digit': any digit)? A token cut
    by the window's edge only matters if a match ends there, and then it holds the cut
    part too (a word boundary is checked against the full text later)."""
    if not keys.isdisjoint(tokens(s[lo:hi])):
        return True
    return DIGIT_KEY in keys and _ANY_DIGIT.search(s, lo, hi) is not None


def _word_hits(
    rules: Rules, norm: Normalized, tokens: frozenset[str]
) -> dict[Severity, tuple[str, str]]:
    """Best word-list hit per severity: one dict lookup per token, verified on the unsqueezed
    token so 'as' never matches 'ass'. ``tokens``: the message's tokens, or at least all of
    them that are word-list keys."""
    words = rules.words
    best: dict[Severity, tuple[str, str]] = {}
    present = tokens & rules.word_keys  # C-level; usually empty
    if not present:
        return best
    for raw_token, token in zip(norm.word_tokens, norm.text_tokens, strict=True):
        if token not in present or token in rules.allow:
            continue
        entries = words[token]
        for entry in entries:
            if entry.verify.fullmatch(raw_token):
                old = best.get(entry.severity)
                if old is None or _ORDER[entry.category] < _ORDER[old[0]]:
                    best[entry.severity] = (entry.category, raw_token)
                break
    return best
