"""The speed-ups must not change results: each fast path against the plain regex it replaces,
on generated strings, plus the rule-data gates derived from patterns."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anygle.moderation import Classifier, Severity, load_rules
from anygle.moderation import normalize as N
from anygle.moderation import personal as P
from anygle.moderation import scan as S
from anygle.moderation.classifier import Signal
from anygle.moderation.patterns import SHIFTED, whole_words
from anygle.moderation.resyntax import Unsupported
from anygle.moderation.verdict import UNMODERATED_CATEGORIES

_OLD_SQUEEZE = re.compile(r"([a-z])\1+")
_OLD_MASKED = re.compile(r"[a-z]+\*+[a-z]*|\*+[a-z]{2,}")
_OLD_HANDLE = re.compile(
    r"(?<![\w.@])@(?!\d{1,2}(?:am|pm|:)|\d+(?![a-z_.]))[a-z0-9_][a-z0-9_.]{2,}"
)
_OLD_DIGIT_RUN = re.compile(r"\+?\d(?:[\s().,\-/]{0,3}\d){6,17}")
_OLD_LEET_HINT = re.compile(r"[0-9@$|](?<=[a-z].)|[0-9@$|!](?=[a-z])")


@pytest.fixture(scope="module")
def rules():
    return load_rules()


@pytest.fixture
def clf(packaged_rules: Classifier) -> Classifier:
    return packaged_rules


def chunks(alphabet: list[str], max_size: int = 14):
    return st.lists(st.sampled_from(alphabet), max_size=max_size).map("".join)


@settings(max_examples=400, deadline=None)
@given(chunks(["a", "b", "bb", "c", " ", "1", ",", "é", "ss", "sss"]))
def test_squeeze_matches_regex(s: str) -> None:
    assert N.squeeze(s) == _OLD_SQUEEZE.sub(lambda m: m.group(1), s)


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(chunks(["a", "bc", "*", "**", " ", "f", "ck", "sh", "t", "1", "-", "u"], 20))
def test_masked_words_match_regex(rules, s: str) -> None:
    nz = rules.normalizer
    assert nz._unmask_all(s) == _OLD_MASKED.sub(nz._unmask, s, count=N.MAX_MASKED)


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(chunks(["a", "b", " ", ".", "1", "ab", "'", "-", "  ", "é", "_", "    "]))
def test_letter_run_gate_is_exact(s: str) -> None:
    assert (N._SINGLE_RUN.search(s) is not None) == (N._SINGLE_PAIR.search(" " + s) is not None)


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(chunks(["a", "1", "@", "$", "!", "|", " ", "sh", "t", "x"]))
def test_leet_hint_matches_regex(s: str) -> None:
    assert [m.span() for m in N._LEET_HINT.finditer(s)] == [
        m.span() for m in _OLD_LEET_HINT.finditer(s)
    ]


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(chunks(["+", "1", "23", "456", " ", "(", ")", "-", ".", "/", "+4", "a", "00"], 16))
def test_digit_runs_match_regex(s: str) -> None:
    assert [m.span() for m in P._DIGIT_RUN.finditer(s)] == [
        m.span() for m in _OLD_DIGIT_RUN.finditer(s)
    ]


@settings(max_examples=400, deadline=None)
@given(chunks(["jess", "@", " at ", "(at)", "[at]", " dot ", ".", "gmail", "com", "x", "_", "-",
               " ", "99", "<", ">", "+", "%", "www.", "http://", ".io", "/", ":"], 12))  # fmt: skip
def test_anchored_contact_searches_match_regex(s: str) -> None:
    toks = frozenset(re.findall("[a-z]+", s))
    if "@" in s:
        m = P._EMAIL.search(s) or P._EMAIL_SPELLED.search(s)
        expected = m.group() if m else None
    elif "at" in toks and (not toks.isdisjoint(P._MAIL_WORDS) or P._DOT_WORD.search(s)):
        m = P._EMAIL_SPELLED.search(s)
        expected = m.group() if m else None
    else:
        expected = None
    assert P.find_email(s, toks) == expected
    old, new = _OLD_HANDLE.search(s), P._HANDLE.search(s)  # literal-first form
    assert (old and old.span()) == (new and new.span())
    if "." in s and ("://" in s or "www." in s or P._DOT_TLD.search(s)):
        if not P._CONTACT_LINK.search(s):
            link = P._LINK.search(s)
            assert P.find_links(s) == (None, link.group() if link else None)


def test_whole_words_are_complete_tokens() -> None:
    src = r"add(?<![a-z0-9]add)(?:(?:[^a-z0-9]+me)?[^a-z0-9]+on)(?![a-z0-9])"
    assert whole_words(src) == {"add", "on"}  # "me" is optional
    # a word that may continue with letters is not required
    assert "porn" not in whole_words(r"(?<![a-z0-9])(?:porn\w*)(?![a-z0-9])")
    assert "kil" not in whole_words(r"(?<![a-z0-9])(?:kil+s?)(?![a-z0-9])")


@pytest.mark.slow
def test_shifted_patterns_report_the_same_evidence(clf: Classifier) -> None:
    v = clf.classify("lol ur such an idiot", protect_personal_info=False, moderated=True)
    assert v.severity is Severity.LOW and v.evidence and v.evidence.startswith("ur")


@pytest.mark.parametrize(
    ("masked", "word"), [("f***", "fuck"), ("f**k", "fuck"), ("sh*t", "shit"), ("b***h", "bitch")]
)
def test_masked_words_prefer_profanity(rules, masked: str, word: str) -> None:
    assert rules.normalizer._unmask_token(masked) == word


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("u just turned 12? wanna sext", "minor_sexual"),
        ("do you touch yourself? ur 13 right", "minor_sexual"),
        ("you're 14? that's so hot", "minor_sexual"),
        ("who sells vids of girls under 13", "csam_solicitation"),
        ("if i see you again you're dead", "violent_threat"),
        ("you're gonna get your teeth kicked in", "violent_threat"),
        ("i'll beat you till you bleed", "violent_threat"),
        ("she lives at 12 east 42nd st", "doxing"),
        ("those trannies should leave", "slur"),
        ("no one would notice if you disappeared", "harassment"),
        ("what the f*** man", "profanity"),
    ],
)
def test_general_rule_additions(clf: Classifier, text: str, category: str) -> None:
    v = clf.classify(text, protect_personal_info=True, moderated=True)
    assert v.category == category, v


@pytest.mark.parametrize(
    "text",
    [
        "my little brother turned 7 and touched the stove",
        "next time you're dead last in the race lol",
        "girls under 12 play in the junior league",
        "i could buy you that game for your birthday",
        "you'll get shot down if you ask her out",
        "a chink in his armour",
        "I go to The Academy gym on mondays",
    ],
)
def test_general_rule_additions_spare_small_talk(clf: Classifier, text: str) -> None:
    assert not clf.classify(text, protect_personal_info=True, moderated=True)


# --- the one-pass prefilter (scan.py) ----------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(chunks(["a", "b", " ", ".", "1", "ab", "!", "*", "@", "$", "|", "-", "é", "_", "  "], 16))
def test_triage_scan_is_exact(rules, s: str) -> None:
    leet = N._LEET_SYMBOL.search(s) is not None and N._LEET_HINT.search(s) is not None
    single = N._SINGLE_PAIR.search(" " + s) is not None
    bits = rules.normalizer.triage.bits(s)
    assert (bool(bits & 1), bool(bits & 2), bool(bits & 4)) == (leet, single, "*" in s)


def _texts(n: int) -> list[str]:
    from tests.moderation_texts import texts

    return texts(n, seed=21)


def test_prefilter_never_misses_a_pattern_match(rules) -> None:
    """Every text-view pattern that ``re`` finds in a text view is flagged by the scan (a
    superset test: the scan may flag more, never less)."""
    pf_mod, pf_unmod = rules.prefilters[1], rules.prefilters[0]
    patterns = [
        (p, rule.category)
        for rule in rules.rules
        if rule.hs is not None
        for p in ([rule.pattern] if rule.pattern is not None else rule.near)
    ]
    for text in _texts(600):
        norm = rules.normalizer(text)
        _, flagged = pf_mod.scan(norm.text)
        _, flagged_unmod = pf_unmod.scan(norm.text)
        present = frozenset(norm.token_set) & pf_mod.vocabulary
        assert pf_mod.scan(norm.text)[0] == present
        for pattern, category in patterns:
            if pattern.search(norm.text1 if pattern.pattern.startswith(SHIFTED) else norm.text):
                assert pattern.pattern in flagged, (text, pattern.pattern[:80])
                if category in UNMODERATED_CATEGORIES:
                    assert pattern.pattern in flagged_unmod, (text, pattern.pattern[:80])


@pytest.mark.slow
def test_prefilter_gives_the_same_verdicts(rules, clf: Classifier) -> None:
    """With and without the scan (long messages take it, short ones don't): same verdicts,
    categories and evidence on corpus, mutated and dictionary texts."""
    nz = rules.normalizer
    saved = nz.prefilters
    cases = [(t, p, m) for t in _texts(2500) for p in (False, True) for m in (False, True)]
    try:
        nz.prefilters = None
        plain = [clf.classify(t, protect_personal_info=p, moderated=m) for t, p, m in cases]
    finally:
        nz.prefilters = saved
    old_min, N.PREFILTER_MIN = N.PREFILTER_MIN, 0  # every message takes the scan
    try:
        scanned = [clf.classify(t, protect_personal_info=p, moderated=m) for t, p, m in cases]
    finally:
        N.PREFILTER_MIN = old_min
    diffs = [(c, a, b) for c, a, b in zip(cases, plain, scanned, strict=True) if a != b]
    assert not diffs, diffs[:5]
    assert sum(bool(v) for v in plain) > 1000  # the texts exercise the rules


def test_bytes_pattern_rewrites() -> None:
    assert S.bytes_pattern("ab") == b"(?:^|[^a-z0-9])(?:[\\x61][\\x62])(?:[^a-z0-9]|$)"
    with pytest.raises(Unsupported):
        S.bytes_pattern("(?i:abc)")  # inline flags are not rewritten: the rule runs unfiltered
    # lookarounds are dropped (the rewrite may only match more); classes that can be
    # non-ASCII may repeat (one character, several bytes)
    assert b"\\x80-\\xff]+" in S.bytes_pattern(r"a(?!b)[^a-z]c")
    assert b"(?!" not in S.bytes_pattern(r"a(?!b)[^a-z]c")


def test_unmoderated_gates_give_the_same_verdicts(rules, clf: Classifier) -> None:
    """The unmoderated queue's own gate index (only the rules it runs) against the full one:
    the same verdicts and evidence on corpus, mutated and dictionary texts, joined checks
    (``only``) included."""
    import dataclasses

    from anygle.moderation.window import JOIN_CATEGORIES

    full = dataclasses.replace(
        rules,
        unmoderated_gates=rules.gates,
        unmoderated_gate_keys=rules.gate_keys,
        unmoderated_always=rules.always,
    )
    assert len(rules.unmoderated_gate_keys) < len(rules.gate_keys) / 2
    diffs, flagged = [], 0
    for text in _texts(2500):
        for only in (None, JOIN_CATEGORIES):
            got, _ = clf.check_normalized(
                rules.normalizer(text),
                rules=rules,
                protect_personal_info=False,
                moderated=False,
                only=only,
            )
            want, _ = clf.check_normalized(
                full.normalizer(text),
                rules=full,
                protect_personal_info=False,
                moderated=False,
                only=only,
            )
            flagged += bool(want)
            if got != want:
                diffs.append((text, got, want))
    assert not diffs, diffs[:5]
    assert flagged > 100  # the texts exercise the zero-tolerance rules


@pytest.mark.slow
def test_remembered_checks_are_the_checks(tmp_path) -> None:
    """``check_text`` remembers short lines: the second answer is the first, both are what
    ``check_normalized`` says, and a reload of the rules forgets them."""
    clf = Classifier(learned=False)
    texts = [t for t in _texts(1500) if len(t) <= 32] + ["hi", "16 u?", "ur so mature"]
    for protect, moderated in ((True, True), (False, True), (False, False)):
        args = {"protect_personal_info": protect, "moderated": moderated}
        for text in texts:
            want = clf.check_normalized(
                clf.normalize(text), protect_personal_info=protect, moderated=moderated
            )
            first = clf.check_text(text, **args)
            second = clf.check_text(text, **args)
            assert (first[1], first[2]) == want == (second[1], second[2]), text
            second[2].append(Signal("changed by a caller", 0, ""))  # a caller's list is its own
            assert clf.check_text(text, **args)[2] == want[1]
    assert clf._memo
    clf.reload()
    assert not clf._memo
