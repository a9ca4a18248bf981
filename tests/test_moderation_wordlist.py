"""Every rule against a full English word list: innocent words must never fire.

Needs the Debian package ``wamerican`` (/usr/share/dict/words). This test never skips: a
missing word list is a failure, because it is the guard against Scunthorpe-style false
positives.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from anygle.moderation import Classifier

WORDS = Path("/usr/share/dict/words")

# Reviewed: dictionary words that are expected to fire (base forms; "'s" and inflections of
# these are covered). Everything here is a swear word, slur, sexual term or insult in its
# main chat meaning. Known compromises are marked: 'cock' (rooster) and 'tits' (birds).
EXPECTED_TO_FIRE = {
    # profanity
    "asshole", "assholes", "bastard", "bastards", "bitch", "bitched", "bitches", "bitchier",
    "bitchiest", "bitching", "bitchy", "bullshit", "bullshits", "bullshitted", "bullshitting",
    "cunt", "cunts", "fuck", "fucked", "fucker", "fuckers", "fucking", "fucks", "motherfucker",
    "motherfuckers", "piss", "pissed", "pissing", "shit", "shits", "shittier", "shittiest",
    "shitting", "shitty",
    # insults
    "dimwit", "dimwits", "dimwitted", "imbecile", "imbeciles", "jackass", "jackasses", "moron",
    "moronic", "morons", "nitwit", "nitwits",
    # slurs
    "faggot", "faggots", "fagot", "fagots", "gook", "gooks", "nigga", "niggas", "niggaz",
    "nigger", "niggers", "retard", "retarded", "retards", "wetback", "wetbacks",
    # harassment (sexual insults)
    "slut", "sluts", "whore", "whores",
    # explicit sexual terms
    "boobies", "boobs", "clit", "clitoris", "cock", "cocks", "cocksucker", "cocksuckers",
    "cumming", "cybersex", "hornier", "horny", "masturbate", "masturbated", "masturbating",
    "masturbation", "milf", "milfs", "nsfw", "nudes", "orgasm", "orgasms", "porn", "porno",
    "pussies", "pussy", "sexting", "tits", "wank", "wanked", "wanking",
}  # fmt: skip


@pytest.fixture(scope="module")
def words() -> list[str]:
    if not WORDS.is_file():
        pytest.fail(
            f"{WORDS} is missing: install the Debian package 'wamerican' "
            "(apt-get install -y wamerican); this test must not be skipped"
        )
    found = [w.strip() for w in WORDS.read_text(encoding="utf-8").splitlines() if w.strip()]
    assert len(found) > 50_000, f"{WORDS} looks truncated ({len(found)} words)"
    return found


def _base(word: str) -> str:
    return word.lower().removesuffix("'s")


@pytest.mark.slow
def test_no_rule_fires_on_innocent_english_words(
    words: list[str], packaged_rules: Classifier
) -> None:
    clf = packaged_rules
    unexpected = {}
    for word in words:
        for protect in (True, False):
            v = clf.classify(word, protect_personal_info=protect, moderated=True)
            if v and _base(word) not in EXPECTED_TO_FIRE:
                unexpected[word] = (v.category, v.evidence)
    assert not unexpected, f"innocent dictionary words fire: {unexpected}"


# 'asl' (age/sex/location?) is an age probe; weight 2 never reaches the threshold alone.
EXPECTED_SIGNALS = {"asl"}


@pytest.mark.slow
def test_no_grooming_signal_on_single_words(words: list[str], packaged_rules: Classifier) -> None:
    clf = packaged_rules
    fired = {}
    for word in words:
        _, signals = clf.check_normalized(
            clf.normalize(word), protect_personal_info=True, moderated=True
        )
        if signals and _base(word) not in EXPECTED_SIGNALS:
            fired[word] = [s.name for s in signals]
    assert not fired, f"grooming signals on single words: {fired}"


@pytest.mark.slow
def test_expected_words_really_fire(words: list[str], packaged_rules: Classifier) -> None:
    """Keeps the allow-list honest: every entry must be in the dictionary and fire."""
    clf = packaged_rules
    in_dict = {_base(w) for w in words}
    stale = sorted(
        w
        for w in EXPECTED_TO_FIRE
        if w not in in_dict or not clf.classify(w, protect_personal_info=True, moderated=True)
    )
    assert not stale, f"allow-list entries that are not dictionary words or do not fire: {stale}"
