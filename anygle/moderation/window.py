"""Per-sender sliding window: catches what only shows across several messages.

* Split contact details: when the new message is a short fragment that could be part of
  contact details (at most ``FRAGMENT_CHARS`` characters with a digit, '@', a single letter, a
  number word, an app name, ...), it is joined with the recent messages (at most
  ``JOIN_CHARS`` characters) and checked again for personal info, links and doxing. A finding
  counts only if it is new, i.e. not already found in an earlier message or an earlier join,
  so an old, already-handled finding never blocks an innocent reply.
* Grooming: each message's grooming signals (see data/grooming.json) are kept for the window.
  Each signal type counts once, with its highest weight. A message that carries a signal and
  brings the window's score to ``grooming_threshold`` (default 5: two different signals of
  which one is strong) is flagged 'grooming', MEDIUM. With ``protect_personal_info`` (a teen is
  involved) it is HIGH, one strong signal (``STRONG_SIGNALS``) is enough and two different weak
  ones reach ``teen_grooming_threshold`` (default 4); asking a teen for sexual images is
  ``csam_solicitation`` (ZERO). Not applied in the unmoderated queue.
* The learned layer (learned.py) scores each message the rules found less than HIGH for; its
  verdict replaces the rules' only when it is more severe.

The window keeps at most ``max_messages`` messages no older than ``max_age`` seconds. One
instance per connection; not thread-safe (the reactor thread owns it).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from .classifier import Classifier, Signal
from .normalize import Normalized, squeeze
from .verdict import CLEAN, Severity, Verdict

FRAGMENT_CHARS = 40
# What a joined window is checked for: contact details (and doxing) split over messages.
JOIN_CATEGORIES = frozenset({"personal_info", "link", "doxing"})
_FRAGMENT_CHARS = re.compile(r"[0-9@#.]")
CONTACT_WORDS = frozenset(
    squeeze(w)
    for w in "at dot gmail hotmail yahoo outlook icloud com net org gg me snap snapchat sc insta "
    "instagram ig kik discord telegram tg whatsapp whats app wa tiktok tik tok facebook fb skype "
    "number num phone cell call text zero one two three four five six seven eight nine ten "
    "street st road rd avenue ave lane drive address".split()
)
JOIN_CHARS = 200
# With a teen in the chat, one of these is enough to block (the policy in the README): secrecy,
# probing for supervision, location or school, leaving for another app, meeting, photos/camera.
# The weak ones (age, flattery, gifts, relationship talk) still need a second signal.
STRONG_SIGNALS = frozenset({"secrecy", "alone", "meet", "off_platform", "photo"})
# The learned layer's weak signal (learned.WEAK_THRESHOLD): weighs like a rule's weak one.
LEARNED_WEAK = "learned_weak"
# Words that turn a request down when they stand just before it, or just after it.
NEGATIONS = frozenset(
    "no not never dont don't wont won't cant can't wouldnt wouldn't shouldnt shouldn't nope nah "
    "rather refuse allowed why stop".split()
)
REFUSALS_AFTER = frozenset("nah nope never no".split())
_PRESSURE = re.compile(r"\bno (?:pres+ure|wor+(?:ies|y)|stres+)\b")  # the text view is squeezed
_WORDS = re.compile(r"[a-z']+")
# Asking a teen for sexual images (nudes, underwear pictures, undressing on camera) is
# solicitation of a minor: zero tolerance in the teen queue, a grooming signal elsewhere.
SEXUAL_IMAGE = "sexual_image"


@dataclass(slots=True)
class _Entry:
    time: float
    text: str | None  # None for messages too long to be part of a join
    signals: tuple[Signal, ...]
    found: frozenset[tuple[str | None, str | None]]


class SenderWindow:
    """Per-sender sliding window (one per connection), catches contact details split over several
    messages and grooming scored over recent messages."""

    def __init__(
        self, classifier: Classifier, *, max_messages: int = 8, max_age: float = 120.0
    ) -> None:
        self.classifier = classifier
        self.max_messages = max_messages
        self.max_age = max_age
        self._entries: deque[_Entry] = deque()

    def check(
        self,
        text: str,
        now: float,
        *,
        protect_personal_info: bool,
        moderated: bool,
        teen: bool | None = None,
    ) -> Verdict:
        """The verdict on ``text`` in the context of this sender's recent messages.

        ``teen`` (default: ``protect_personal_info``): the chat is in the teen queue, where
        asking for sexual images is solicitation of a minor (zero tolerance)."""
        if teen is None:
            teen = protect_personal_info
        self._expire(now)
        clf = self.classifier
        rules = clf.rules
        norm = rules.normalizer(text)
        verdict, signals = clf.check_normalized(
            norm, rules=rules, protect_personal_info=protect_personal_info, moderated=moderated
        )
        found = {(verdict.category, verdict.evidence)} if verdict else set()

        if self._entries and len(text) <= FRAGMENT_CHARS and self._fragment(norm):
            joined = self._joined(text)
            if joined is not None:
                jv, _ = clf.check_normalized(
                    rules.normalizer(joined),
                    rules=rules,
                    signals=False,
                    only=JOIN_CATEGORIES,
                    protect_personal_info=protect_personal_info,
                    moderated=moderated,
                )
                key = (jv.category, jv.evidence)
                if jv and not any(key in e.found for e in self._entries):
                    found.add(key)
                    if jv.severity > verdict.severity:
                        verdict = jv

        if teen and verdict.category == "sexual_explicit":
            # sexual talk sent to a teen is sexual content involving a minor: blocked (a 'high'
            # warning and a strike) rather than warned; a ban still needs a zero-tolerance rule
            verdict = Verdict(Severity.HIGH, "minor_sexual", f"to a teen: {verdict.evidence}")

        # A teen's refusal ("i don't send pics", "meet up? nah") repeats the words of the
        # request it turns down: it is no signal.
        signals = [s for s in signals if not refused(norm.text, s.evidence)]

        learned = clf.learned
        if learned is not None and verdict.severity < Severity.HIGH:
            lv, weak = learned.judge(
                norm, protect_personal_info=protect_personal_info, moderated=moderated
            )
            if lv.severity > verdict.severity:
                verdict = lv
            if weak is not None and moderated and not signals:
                # only where the rules saw no signal: one message is one weak signal
                signals.append(Signal(LEARNED_WEAK, 2, f"learned p={weak:.2f}"))
        if signals:
            threshold = (
                rules.teen_grooming_threshold if protect_personal_info else rules.grooming_threshold
            )
            gv = self._grooming(tuple(signals), threshold, protect_personal_info, teen)
            # With a teen involved, grooming built over several signals also names the verdict
            # on a tie (e.g. with a personal_info block): it explains more than the single
            # message does. One strong signal alone does not rename the message's own finding.
            tie = (
                protect_personal_info
                and gv.severity == verdict.severity < Severity.ZERO
                and len(self._signal_types(signals)) > 1
            )
            if gv and (gv.severity > verdict.severity or tie):
                verdict = gv

        # Long messages are never joined (see _joined): don't keep up to 16 KB per entry.
        kept = text if len(text) < JOIN_CHARS else None
        self._entries.append(_Entry(now, kept, tuple(signals), frozenset(found)))
        if len(self._entries) > self.max_messages:
            self._entries.popleft()
        return verdict

    def score(self) -> int:
        """Current grooming score of the window (for logs and tests)."""
        return sum(_best_weights(e.signals for e in self._entries).values())

    def clear(self) -> None:
        self._entries.clear()

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries and (now - entries[0].time > self.max_age):
            entries.popleft()

    @staticmethod
    def _fragment(norm: Normalized) -> bool:
        """Could this short message be part of split contact details? Only with a digit,
        '@', '#' or '.', a single letter, a number word or a contact word (app names, 'at',
        'dot', ...); most short replies ('lol', 'ok cool') cannot, and skipping them saves
        re-classifying the joined text."""
        if _FRAGMENT_CHARS.search(norm.base) or any(len(t) == 1 for t in norm.text_tokens):
            return True
        return not norm.token_set.isdisjoint(CONTACT_WORDS)

    def _joined(self, text: str) -> str | None:
        parts = [text]
        size = len(text)
        for entry in reversed(self._entries):
            if entry.text is None:
                break
            size += len(entry.text) + 1
            if size > JOIN_CHARS:
                break
            parts.append(entry.text)
        if len(parts) == 1:
            return None
        return " ".join(reversed(parts))

    def _signal_types(self, new: Iterable[Signal]) -> set[str]:
        return {s.name for e in self._entries for s in e.signals} | {s.name for s in new}

    def _grooming(
        self, new: tuple[Signal, ...], threshold: int, protected: bool, teen: bool
    ) -> Verdict:
        if teen:
            for s in new:
                if s.name == SEXUAL_IMAGE:
                    return Verdict(Severity.ZERO, "csam_solicitation", f"to a teen: {s.evidence}")
        weights = _best_weights([*(e.signals for e in self._entries), new])
        total = sum(weights.values())
        strong = protected and any(s.name in STRONG_SIGNALS for s in new)
        if total < threshold and not strong:
            return CLEAN
        names = sorted(weights)
        evidence = "; ".join(f"{s.name}: {s.evidence}" for s in new)
        evidence = f"score {total} ({', '.join(names)}) {evidence}"
        return Verdict(Severity.HIGH if protected else Severity.MEDIUM, "grooming", evidence)


def refused(text: str, evidence: str) -> bool:
    """Is the signal found in ``text`` turned down rather than asked for? Looks at the three
    words before the match ("i don't send pics", but not "no pressure, send a pic" or "no one
    needs to know") and the two after it ("meet up? nah")."""
    at = text.find(evidence)
    if at < 0:
        return False
    before = _WORDS.findall(text, max(0, at - 40), at)[-3:]
    after = _WORDS.findall(text, at + len(evidence), at + len(evidence) + 30)[:2]
    if any(w in NEGATIONS for w in before):
        return not _PRESSURE.search(text, 0, at)
    return any(w in REFUSALS_AFTER for w in after)


def _best_weights(groups: Iterable[Iterable[Signal]]) -> dict[str, int]:
    best: dict[str, int] = {}
    for signals in groups:
        for s in signals:
            if s.weight > best.get(s.name, 0):
                best[s.name] = s.weight
    return best
