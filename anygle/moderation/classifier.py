"""The message classifier: normalise once, run only the rules whose key words occur, return the
most severe finding.

Cost control: every rule is gated by key tokens (a dict lookup per token), word lists are a dict
lookup per token, phone parsing only runs on messages with 7+ digits, and tiers are checked from
ZERO down so the first tier with a finding ends the work.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from . import personal
from .normalize import Normalized
from .rules import Rule, Rules, load_rules
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


@dataclass(frozen=True, slots=True)
class Signal:
    """One grooming signal found in one message."""

    name: str
    weight: int
    evidence: str


class Classifier:
    def __init__(self, rules_path: str | None = None) -> None:
        self.rules_path = rules_path
        self._rules = load_rules(rules_path)

    @property
    def rules(self) -> Rules:
        return self._rules

    def reload(self) -> None:
        """Re-read all rule files and swap them in; on error keep the old rules, raise ValueError."""
        self._rules = load_rules(self.rules_path)

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
        candidates = _candidates(rules, norm.token_set)
        for tier in _TIERS:
            if not moderated and tier < Severity.HIGH:
                break
            best: tuple[int, str, str] | None = None
            for rule in candidates:
                if rule.severity != tier or rule.signal is not None:
                    continue
                if not moderated and rule.category not in UNMODERATED_CATEGORIES:
                    continue
                if rule.category in PROTECTED_CATEGORIES and not protect_personal_info:
                    continue
                evidence = _match(rule, norm)
                if evidence is None:
                    continue
                if rule.requires_pi:
                    pi = personal.third_party_pi(norm.base, norm.token_set)
                    if pi is None:
                        continue
                    evidence = f"{evidence} {pi}"
                best = (_ORDER[rule.category], rule.category, evidence)
                break  # candidates are sorted by category order within a tier
            if tier is Severity.HIGH and protect_personal_info and moderated:
                found = personal.own_pi(norm.base, norm.token_set)
                if found and (best is None or _ORDER[found[0]] < best[0]):
                    best = (_ORDER[found[0]], *found)
            if tier <= Severity.MEDIUM:
                hit = _word_hit(rules, norm, tier)
                if hit and (best is None or _ORDER[hit[0]] < best[0]):
                    best = (_ORDER[hit[0]], *hit)
            if best is not None:
                return Verdict(tier, best[1], best[2])
        return CLEAN

    def grooming_signals(self, norm: Normalized, rules: Rules | None = None) -> list[Signal]:
        rules = rules or self._rules
        found = []
        for rule in _candidates(rules, norm.token_set):
            if rule.signal is None:
                continue
            evidence = _match(rule, norm)
            if evidence is not None:
                found.append(Signal(rule.signal, rule.weight, evidence))
        return found


def _candidates(rules: Rules, tokens: Iterable[str]) -> list[Rule]:
    by_key = rules.by_key
    seen: set[Rule] = set(rules.always)
    for token in tokens:
        hits = by_key.get(token)
        if hits:
            seen.update(hits)
    return sorted(seen, key=_rank)


def _rank(rule: Rule) -> tuple[int, int, int]:
    return rule.rank


def _view(rule: Rule, norm: Normalized) -> str:
    if rule.view == "text":
        return norm.text
    return norm.base if rule.view == "base" else norm.raw


def _match(rule: Rule, norm: Normalized) -> str | None:
    s = _view(rule, norm)
    if rule.pattern is not None:
        m = rule.pattern.search(s)
        return m.group() if m else None
    assert rule.near is not None
    first = [m.span() for m in rule.near[0].finditer(s)]
    if not first:
        return None
    for m in rule.near[1].finditer(s):
        s2, e2 = m.span()
        for s1, e1 in first:
            if max(s2 - e1, s1 - e2) <= rule.within:
                return s[min(s1, s2) : max(e1, e2)]
    return None


def _word_hit(rules: Rules, norm: Normalized, tier: Severity) -> tuple[str, str] | None:
    words = rules.words
    best: tuple[str, str] | None = None
    for raw_token, token in zip(norm.word_tokens, norm.text_tokens, strict=True):
        entries = words.get(token)
        if not entries or token in rules.allow:
            continue
        for entry in entries:
            if entry.severity == tier and entry.verify.fullmatch(raw_token):
                if best is None or _ORDER[entry.category] < _ORDER[best[0]]:
                    best = (entry.category, raw_token)
                break
    return best
