"""``load_rules()``: the packaged rule files plus the operator's, compiled (``rulefiles.py``) and
given one Hyperscan prefilter per queue (``scan.py``): what each queue's scan looks for, and
which rules it can rule out.
"""

from __future__ import annotations

from pathlib import Path

from twisted.logger import Logger

from . import personal, scan
from .resyntax import Unsupported
from .rulefiles import DATA_DIR, RuleBuilder, rule_files
from .ruleset import Rule, Rules
from .scan import Prefilter, Triage, bytes_pattern
from .verdict import UNMODERATED_CATEGORIES

_log = Logger(namespace="anygle.moderation")


def load_rules(extra: str | None = None) -> Rules:
    """Load packaged rules plus the operator's ``extra`` file or directory.

    Raises ValueError naming the file (and rule or line) on any broken input.
    """
    files = rule_files(DATA_DIR)
    if extra:
        path = Path(extra)
        if path.is_dir():
            files += rule_files(path)
        elif path.is_file() and path.suffix in (".txt", ".json"):
            files.append(path)
        else:
            raise ValueError(
                f"moderation rules path {extra!r} is not a directory, .txt or .json file"
            )
    builder = RuleBuilder()
    rules = builder.build(files)
    if not scan.AVAILABLE:  # pragma: no cover - without it every rule runs as before
        return rules
    try:
        _attach_prefilters(builder, rules, bool(extra))
    except Exception:  # pragma: no cover - the scan only saves time: run every rule instead
        _log.failure("moderation prefilter unavailable; classifying without it")
        for rule in rules.rules:
            object.__setattr__(rule, "hs", None)
        object.__setattr__(rules, "prefilters", None)
        rules.normalizer.prefilters = None
    return rules


def _names(rule: Rule) -> frozenset[str]:
    if rule.pattern is not None:
        return frozenset([rule.pattern.pattern])
    return frozenset(p.pattern for p in rule.near or ())


def _attach_prefilters(builder: RuleBuilder, rules: Rules, extra: bool) -> None:
    """Compile the scans (moderated queue: every rule; unmoderated: only what applies there)
    and tell each rule which compiled patterns it needs."""
    inputs = {queue: _prefilter_inputs(builder, rules, queue) for queue in (True, False)}
    if extra:  # the packaged part is compiled (and cached) on its own
        base = _packaged_inputs()
        parts = {
            queue: [
                base[queue],
                (
                    inputs[queue][0] - base[queue][0],
                    {k: v for k, v in inputs[queue][1].items() if k not in base[queue][1]},
                ),
            ]
            for queue in (True, False)
        }
    else:
        if not _PACKAGED:
            _PACKAGED.append(inputs)
        parts = {queue: [inputs[queue]] for queue in (True, False)}
    moderated, unmoderated = Prefilter(parts[True]), Prefilter(parts[False])
    for rule in rules.rules:
        if rule.view == "text" and _names(rule) <= moderated.patterns:
            object.__setattr__(rule, "hs", _names(rule))
    by_pattern: dict[str, list[Rule]] = {}
    for rule in rules.rules:
        for name in rule.hs or ():
            by_pattern.setdefault(name, []).append(rule)
    unfiltered = [r for r in rules.rules if r.hs is None]
    fast = {}
    for queue, pf in ((True, moderated), (False, unmoderated)):
        relevant = [r for r in rules.rules if queue or r.category in UNMODERATED_CATEGORIES]
        # every relevant prefiltered rule's patterns are in this scan, and the vocabulary
        # answers the gates of the relevant unfiltered ones
        complete = all(r.hs <= pf.patterns for r in relevant if r.hs is not None)
        words = {w for w in _gate_words([r for r in relevant if r.hs is None]) if w.isalpha()}
        fast[queue] = complete and words <= pf.vocabulary
    object.__setattr__(rules, "by_pattern", {k: tuple(v) for k, v in by_pattern.items()})
    object.__setattr__(rules, "unfiltered", tuple(unfiltered))
    object.__setattr__(rules, "prefilters", (unmoderated, moderated))
    object.__setattr__(rules, "fast_gate", (fast[False], fast[True]))
    rules.normalizer.prefilters = rules.prefilters
    rules.normalizer.triage = Triage()


# Contact-detail checks look for these tokens (personal.py): part of the scanned vocabulary.
PI_VOCABULARY = (
    personal._NUMBER_TOKENS
    | personal._MAIL_WORDS
    | personal.STREET_WORDS
    | personal.PHONE_WORDS
    | {"at"}
)
_Inputs = dict[bool, tuple[frozenset[str], dict[str, str]]]
_PACKAGED: list[_Inputs] = []


def _packaged_inputs() -> _Inputs:
    if not _PACKAGED:
        builder = RuleBuilder()
        rules = builder.build(rule_files(DATA_DIR))
        _PACKAGED.append({q: _prefilter_inputs(builder, rules, q) for q in (True, False)})
    return _PACKAGED[0]


def _prefilter_inputs(
    builder: RuleBuilder, rules: Rules, moderated: bool
) -> tuple[frozenset[str], dict[str, str]]:
    """What one queue's scan looks for: the vocabulary (contact-detail words; word-list keys in
    the moderated queue; the gate words of rules the scan cannot filter: with no pattern
    flagged, the scan's ``present`` answers every check the classifier makes) and the
    text-view patterns (compiled source -> source before word boundaries) of the rules that
    apply in that queue."""
    relevant = [r for r in rules.rules if moderated or r.category in UNMODERATED_CATEGORIES]
    patterns = {}
    for rule in relevant:
        if rule.view == "text":
            for name in _names(rule):
                patterns[name] = builder.prefilter[name]
    convertible = set()
    for name, src in patterns.items():
        try:
            bytes_pattern(src)
        except Unsupported:
            continue
        convertible.add(name)
    unfiltered = [r for r in relevant if r.view != "text" or not _names(r) <= convertible]
    vocab = set(PI_VOCABULARY) | _gate_words(unfiltered)
    if moderated:
        vocab |= rules.word_keys
    return frozenset(vocab), patterns


def _gate_words(rules: list[Rule]) -> frozenset[str]:
    words: set[str] = set()
    for rule in rules:
        words |= rule.keys | rule.required
        if rule.also_keys:
            words |= rule.also_keys
    return frozenset(words)
