"""The compiled rule set the classifier reads: ``Rule``, ``WordEntry``, ``Rules`` and the gate
index that decides which rules a message's tokens can trigger.

``rulefiles.RuleBuilder`` builds it from the rule files; ``rules.load_rules`` adds the
Hyperscan prefilter (the ``hs``, ``prefilters``, ``fast_gate``, ``by_pattern`` and
``unfiltered`` fields).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .normalize import Normalizer
from .scan import Prefilter
from .verdict import UNMODERATED_CATEGORIES, Severity

DIGIT_KEY = "#digit"


@dataclass(frozen=True, slots=True)
class WordEntry:
    word: str
    category: str
    severity: Severity
    verify: re.Pattern[str]


@dataclass(frozen=True, slots=True, eq=False)
class Rule:
    id: str
    category: str
    severity: Severity
    view: str
    pattern: re.Pattern[str] | None
    near: tuple[re.Pattern[str], re.Pattern[str]] | None
    within: int
    keys: frozenset[str]
    required: frozenset[str]
    also_keys: frozenset[str] | None
    near_keys: frozenset[str] | None  # 'near' rules: words the first pattern's matches contain
    requires_pi: bool
    signal: str | None
    weight: int
    rank: tuple[int, int, int]
    source: str
    order: int = 0  # position in rank order (set by the builder; cheap sort key)
    # pattern.search for a plain pattern on the text view (the common case, called inline)
    text_search: Callable[[str], re.Match[str] | None] | None = None
    shifted: bool = False  # pattern is SHIFTED: search norm.text1, drop the first character
    near_shifted: tuple[bool, bool] = (False, False)
    # compiled sources of this rule's text-view patterns in the one-pass prefilter (scan.py);
    # the rule can only match if the scan flagged all of them. None: not prefiltered.
    hs: frozenset[str] | None = None


Gate = tuple[tuple[Rule, ...], tuple[Rule, ...], tuple[tuple[str, tuple[Rule, ...]], ...]]


@dataclass(frozen=True)
class Rules:
    words: dict[str, tuple[WordEntry, ...]]
    by_key: dict[str, tuple[Rule, ...]]
    always: tuple[Rule, ...]
    rules: tuple[Rule, ...]
    allow: frozenset[str]
    grooming_threshold: int
    normalizer: Normalizer
    teen_grooming_threshold: int = 4  # with a teen in the chat (see window.py)
    sources: tuple[str, ...] = field(default=())
    # token -> (rules gated by it alone, rules with also_keys to check, ((word, rules that also
    # need that word), ...)): a rule with required words is filed under its longest one, so
    # e.g. the 16 "add me on %app%" branches are only looked at when "add", "follow", ... occur.
    gates: dict[str, Gate] = field(default_factory=dict)
    gate_keys: frozenset[str] = field(default=frozenset())
    word_keys: frozenset[str] = field(default=frozenset())  # the keys of ``words``
    # one Hyperscan pass per message (scan.py): (unmoderated queue, moderated queue)
    prefilters: tuple[Prefilter, Prefilter] | None = None
    # per queue: the scan covers every rule there (a rule it cannot filter has all its gate
    # words in the scan's vocabulary), so the scan's answers replace the token set
    fast_gate: tuple[bool, bool] = (False, False)
    by_pattern: dict[str, tuple[Rule, ...]] = field(default_factory=dict)  # prefiltered rules
    unfiltered: tuple[Rule, ...] = ()  # rules the prefilter cannot rule out
    # the same index over the rules the unmoderated queue runs (zero tolerance and doxing, no
    # signals): most of its messages then have no candidate rule at all
    unmoderated_gates: dict[str, Gate] = field(default_factory=dict)
    unmoderated_gate_keys: frozenset[str] = field(default=frozenset())
    unmoderated_always: tuple[Rule, ...] = ()


def unmoderated(rule: Rule) -> bool:
    """Does the unmoderated queue run this rule (see classifier.check_normalized)?"""
    return (
        rule.signal is None
        and rule.category in UNMODERATED_CATEGORIES
        and rule.severity >= Severity.HIGH
    )


def gate_index(by_key: dict[str, list[Rule]]) -> dict[str, Gate]:
    """``Rules.gates`` from the rules filed under each of their keys."""
    out = {}
    for key, rules in by_key.items():
        plain: list[Rule] = []
        checked: list[Rule] = []
        cond: dict[str, list[Rule]] = {}
        for rule in rules:
            others = rule.required - {key}
            if others:
                word = max(sorted(others), key=len)
                cond.setdefault(word, []).append(rule)
            elif rule.also_keys is not None:
                checked.append(rule)
            else:
                plain.append(rule)
        out[key] = (
            tuple(plain),
            tuple(checked),
            tuple((w, tuple(rs)) for w, rs in sorted(cond.items())),
        )
    return out
