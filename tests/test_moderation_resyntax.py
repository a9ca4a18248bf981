"""The regex parser behind the rule gates and the Hyperscan rewrite (resyntax.py): the tree
``re`` builds (its simplifications included), the syntax it refuses, and the gates it yields
being sound on the packaged rules."""

from __future__ import annotations

import pytest

from anygle.moderation import Rules, load_rules
from anygle.moderation.patterns import SHIFTED, whole_words
from anygle.moderation.resyntax import (
    Anchor,
    AnyChar,
    Atomic,
    Backref,
    Branch,
    Category,
    Class,
    Group,
    Lit,
    Look,
    NotLit,
    Range,
    Repeat,
    Unsupported,
    parse,
)

A, B, C, D = Lit(97), Lit(98), Lit(99), Lit(100)


@pytest.fixture(scope="module")
def rules() -> Rules:
    return load_rules()


def test_plain_groups_are_inlined_or_repeated() -> None:
    assert parse("a(?:bc)d") == (A, B, C, D)
    assert parse("(?:ab)?") == (Repeat(0, 1, (A, B), "greedy"),)
    assert parse("(ab)(?P<x>c)(?P=x)\\1") == (
        Group((A, B), 1, "", ""),
        Group((C,), 2, "", ""),
        Backref(2),
        Backref(1),
    )
    assert parse("(?i:a)(?>b)") == (Group((A,), None, "i", ""), Atomic((B,)))


def test_alternatives_lose_a_shared_start_and_become_classes() -> None:
    assert parse("ab|ac") == (A, Class((B, C), False))
    assert parse("a|[bc]|a|b") == (Class((A, B, C), False),)
    assert parse("abc|abd|ab") == (A, B, Branch(((C,), (D,), ())))
    # a repeat or a group is never taken out, even when the alternatives spell it alike
    assert parse("a?b|a?c") == (
        Branch(((Repeat(0, 1, (A,), "greedy"), B), (Repeat(0, 1, (A,), "greedy"), C))),
    )


def test_classes_escapes_and_quantifiers() -> None:
    assert parse("[a][^a][a-c\\d-]") == (
        A,
        NotLit(97),
        Class((Range(97, 99), Category("d"), Lit(45)), False),
    )
    assert parse("[]a]\\x20\\.\\s.") == (
        Class((Lit(93), A), False),
        Lit(32),
        Lit(46),
        Class((Category("s"),), False),
        AnyChar(),
    )
    assert parse("a{2,}?b{,3}+c*d{x") == (
        Repeat(2, None, (A,), "lazy"),
        Repeat(0, 3, (B,), "possessive"),
        Repeat(0, None, (C,), "greedy"),
        D,
        Lit(123),
        Lit(120),
    )
    assert parse("^(?<!a)(?=b)(?#note)\\b$") == (
        Anchor("^"),
        Look((A,), True, True),
        Look((B,), False, False),
        Anchor("b"),
        Anchor("$"),
    )


@pytest.mark.parametrize(
    "src",
    [
        "(?i)abc",  # global flags change how the rest reads
        "(?x:a b)",  # verbose
        "(a)(?(1)b|c)",  # conditional
        "\\N{EM DASH}",
        "(a",
        "a)",
        "[a",
        "a**",
        "*a",
        "\\q",
        "x{3,2}",
        "(a\\1)",  # a reference to an open group
        "[z-a]",
    ],
)
def test_refused(src: str) -> None:
    with pytest.raises(Unsupported):
        parse(src)


def test_whole_words_skip_what_they_cannot_vouch_for() -> None:
    lb, la = "(?<![a-z0-9])(?:", ")(?![a-z0-9])"
    assert whole_words(f"{lb}(add) me[^a-z]+on{la}") == {"add", "me", "on"}
    # ab|ac is a[bc]: "a" is no word of its own; under (?i:...) a literal is not the token
    assert whole_words(f"{lb}(?:ab|ac)[^a-z]+(?i:my)[^a-z]+dd{la}") == {"dd"}
    assert whole_words("(?i)abc") == frozenset()


@pytest.mark.slow
def test_gates_are_sound_on_the_packaged_rules(rules: Rules) -> None:
    """Every pattern of the rule data parses, and wherever a rule's pattern matches a text
    view, the words its gate requires are tokens of that text."""
    from tests.moderation_texts import texts

    for rule in rules.rules:
        for pattern in [rule.pattern] if rule.pattern is not None else rule.near or ():
            assert parse(pattern.pattern)
    gated = [r for r in rules.rules if r.required and r.pattern is not None]
    assert len(gated) > 500
    matched = 0
    for text in texts(600, seed=5):
        norm = rules.normalizer(text)
        for rule in gated:
            assert rule.pattern is not None
            shifted = rule.pattern.pattern.startswith(SHIFTED)
            if rule.pattern.search(norm.text1 if shifted else norm.text):
                matched += 1
                assert rule.required <= norm.token_set, (text, rule.id)
    assert matched > 100  # the texts do reach the gated rules
