"""Per-sender sliding window: catches what only shows across several messages.

* Split contact details: when the new message is a short fragment that could be part of
  contact details (at most ``FRAGMENT_CHARS`` characters with '@', '#' or a '.' before a letter
  or digit, a spelled-out letter, an app or contact word, or digits that with the recent
  messages' make a phone number's worth), it is joined with the recent messages (at most
  ``JOIN_CHARS`` characters) and checked again for personal info, links and doxing. A finding
  counts only if it is new, i.e. not already found in an earlier message or an earlier join,
  so an old, already-handled finding never blocks an innocent reply.
* Grooming with a teen is decided on the conversation (``Conversation``): every message of the
  sender in this chat is a move worth points -- a mild signal (age question, plain compliment),
  a grey move (the evidence does not settle it), a clear move (blocks alone) -- and a move that
  brings the chat's score to ``ConversationPolicy.block_at`` is blocked, so a grooming chat is
  stopped by its second move at the latest while one ambiguous line passes (and its recipient
  gets a safety notice). Asking a teen for sexual images is ``csam_solicitation`` (ZERO).
* Grooming between adults: each message's grooming signals (see data/grooming.json) are kept for
  the window; each signal type counts once, with its highest weight. A message that carries a
  signal and brings the window's score to ``grooming_threshold`` (default 5: two different
  signals of which one is strong) is flagged 'grooming', MEDIUM. Not applied in the unmoderated
  queue.
* The learned layer (learned.py) scores each message of a moderated queue the rules found
  less than HIGH for (the unmoderated queue keeps zero tolerance, which rests on rules); its
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
from .learned import Finding
from .normalize import Normalized, squeeze
from .verdict import CLEAN, CONVERSATION, MODEL, SIGNAL, Severity, Verdict

FRAGMENT_CHARS = 40
# What a joined window is checked for: contact details (and doxing) split over messages.
JOIN_CATEGORIES = frozenset({"personal_info", "link", "doxing"})
# What makes a short message a possible piece of contact details. Ordinary chat is full of
# digits (ages: "15 u?"), one-letter tokens ("u", "i", "r", the tails of "it's", "i'm") and
# words like "me", "at" and "one"; each of those alone once sent a quarter or more of ordinary
# lines to a second check of the joined window, the largest cost of a teen chat message.
_FRAGMENT_CHARS = re.compile(r"[@#]|\.[a-z0-9]")
_DIGITS = re.compile(r"[0-9]|\b(?:zero|one|two|three|four|five|six|seven|eight|nine|ten)\b")
# Letters that are whole words of chat ("r u ok", "y not", "k", "rock n roll", "b right back",
# "16 f", "m or f?") or the tails of contractions: a spelled-out handle has others among its
# letters.
CHAT_LETTERS = frozenset("iaurykncbfm")
CONTRACTION_TAILS = frozenset("smtd")
CONTACT_WORDS = frozenset(
    squeeze(w)
    for w in "dot gmail hotmail yahoo outlook icloud com net org gg snap snapchat sc insta "
    "instagram ig kik discord telegram tg whatsapp wa tiktok tik tok facebook fb skype "
    "number num phone cell street st road rd avenue ave lane drive address".split()
)
PHONE_DIGITS = 7  # digits (or number words) in the joined messages that could be a phone number
JOIN_CHARS = 200
# With a teen in the chat, one of these is a clear move (the policy in the README): secrecy,
# probing for supervision, location or school, leaving for another app, meeting, photos/camera.
# Flattery of the teen's maturity and gift offers are grey moves; age questions and relationship
# talk, which teens ask each other all the time, are mild.
STRONG_SIGNALS = frozenset({"secrecy", "alone", "meet", "off_platform", "photo"})
GREY_SIGNALS = frozenset({"flattery", "gifts"})
# Findings of the message itself that are also grooming moves: contact details asked or given.
CONTACT_MOVES = frozenset({"personal_info", "link"})
SAFETY_NOTICE = "grooming"  # the notice kind a grey conversation earns its recipient


@dataclass(frozen=True, slots=True)
class ConversationPolicy:
    """How a teen chat's grooming moves add up (README, "Teen policy"). The defaults block a
    clear move, the second grey move, or a grey move after two mild signals, and let one grey
    move through with a safety notice to the teen."""

    mild: int = 1  # a rule's weak signal or the model's ``weak`` class
    grey: int = 2  # the model's grooming reading between its grey and clear thresholds
    clear: int = 4  # a strong rule signal, or the model's grooming reading at its threshold
    block_at: int = 4  # a move that brings the chat's score here is blocked
    notice_at: int = 2  # a delivered move at this score earns the recipient a safety notice
    max_age: float = 1800.0  # moves older than this (seconds) no longer count
    max_moves: int = 24  # moves remembered per chat


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
NOTHING_FOUND: frozenset[tuple[str | None, str | None]] = frozenset()  # one, not one per message


@dataclass(slots=True)
class _Entry:
    time: float
    text: str | None  # None for messages too long to be part of a join
    signals: tuple[Signal, ...]
    found: frozenset[tuple[str | None, str | None]]


@dataclass(slots=True)
class _Move:
    time: float
    points: int
    kind: str | None  # a mild or grey rule signal's name (counted once per chat), else None


class Conversation:
    """One sender's grooming moves in one chat (a new chat starts from nothing: the next
    partner is another teen)."""

    __slots__ = ("key", "moves", "noticed")

    def __init__(self, key: object) -> None:
        self.key = key
        self.moves: deque[_Move] = deque()
        self.noticed = False  # the recipient has had its safety notice

    def score(self, now: float, policy: ConversationPolicy) -> int:
        moves = self.moves
        while moves and now - moves[0].time > policy.max_age:
            moves.popleft()
        best: dict[str, int] = {}
        total = 0
        for m in moves:
            if m.kind is None:
                total += m.points
            elif m.points > best.get(m.kind, 0):
                best[m.kind] = m.points
        return total + sum(best.values())

    def add(self, move: _Move, policy: ConversationPolicy) -> None:
        self.moves.append(move)
        if len(self.moves) > policy.max_moves:
            self.moves.popleft()


class SenderWindow:
    """Per-sender sliding window (one per connection), catches contact details split over several
    messages and grooming scored over recent messages."""

    def __init__(
        self,
        classifier: Classifier,
        *,
        max_messages: int = 8,
        max_age: float = 120.0,
        policy: ConversationPolicy | None = None,
    ) -> None:
        self.classifier = classifier
        self.max_messages = max_messages
        self.max_age = max_age
        self.policy = policy or ConversationPolicy()
        # a list, not a deque: at most ``max_messages`` entries, and an empty deque alone
        # takes 770 bytes (one per chatting user; kept while a dropped user may resume)
        self._entries: list[_Entry] = []
        self._conversation: Conversation | None = None

    def check(
        self,
        text: str,
        now: float,
        *,
        protect_personal_info: bool,
        moderated: bool,
        teen: bool | None = None,
        chat: object = None,
    ) -> Verdict:
        """The verdict on ``text`` in the context of this sender's recent messages.

        ``teen`` (default: ``protect_personal_info``): the chat is in the teen queue, where
        asking for sexual images is solicitation of a minor (zero tolerance) and grooming is
        decided on the conversation. ``chat`` names the chat (the room): grooming moves count
        within one chat only."""
        if teen is None:
            teen = protect_personal_info
        self._expire(now)
        if self._conversation is not None and self._conversation.key != chat:
            self._conversation = None  # a new chat: the next partner is another teen
        clf = self.classifier
        rules = clf.rules
        norm, verdict, signals = clf.check_text(
            text, protect_personal_info=protect_personal_info, moderated=moderated
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
        finding = None
        # The unmoderated queue keeps only zero tolerance, and zero tolerance rests on rules
        # that explain it: the model, which read "how do you even manage with all that" between
        # two adults as sexual content with a minor, has no say there.
        if learned is not None and moderated and verdict.severity < Severity.HIGH:
            finding = learned.judge(
                norm, protect_personal_info=protect_personal_info, moderated=moderated
            )
            if finding.verdict.severity > verdict.severity:
                verdict = finding.verdict
        if teen and moderated:
            verdict = self._converse(verdict, signals, finding, now, chat)
        else:
            g = None if finding is None else finding.grooming
            if g is not None and learned is not None and g >= learned.grooming_clear:
                # protected adults: the model's grooming reading acts alone, as it always has
                verdict = Verdict(Severity.HIGH, "grooming", f"learned p={g:.2f}", MODEL)
            if finding is not None and not signals and moderated:
                # only where the rules saw no signal: one message is one weak signal
                p = finding.weak if finding.weak is not None else finding.grooming
                if p is not None:
                    signals.append(Signal(LEARNED_WEAK, 2, f"learned p={p:.2f}"))
            if signals:
                threshold = (
                    rules.teen_grooming_threshold
                    if protect_personal_info
                    else rules.grooming_threshold
                )
                gv = self._grooming(tuple(signals), threshold, protect_personal_info)
                if gv.severity > verdict.severity:
                    verdict = gv

        # Long messages are never joined (see _joined): don't keep up to 16 KB per entry.
        kept = text if len(text) < JOIN_CHARS else None
        self._entries.append(
            _Entry(now, kept, tuple(signals), frozenset(found) if found else NOTHING_FOUND)
        )
        if len(self._entries) > self.max_messages:
            del self._entries[0]
        return verdict

    def score(self) -> int:
        """Current grooming score of the window (for logs and tests)."""
        return sum(_best_weights(e.signals for e in self._entries).values())

    def clear(self) -> None:
        self._entries.clear()
        self._conversation = None

    def conversation_score(self, now: float) -> int:
        """The current chat's grooming score (for logs and tests)."""
        conv = self._conversation
        return 0 if conv is None else conv.score(now, self.policy)

    def _expire(self, now: float) -> None:
        entries = self._entries
        stale = 0
        while stale < len(entries) and now - entries[stale].time > self.max_age:
            stale += 1
        if stale:
            del entries[:stale]

    def _fragment(self, norm: Normalized) -> bool:
        """Could this short message be part of split contact details? With '@', '#' or a
        '.' before a letter or digit ("gmail" ".com"), a spelled-out letter that is not a
        word of chat, a contact word (app names, 'dot', 'number', ...), or digits that with
        those of the joinable recent messages reach a phone number's worth. Most short
        replies ('lol', '15 u?', "it's ok") cannot, and skipping them saves re-classifying
        the joined text."""
        tokens = norm.token_set
        if _FRAGMENT_CHARS.search(norm.base) or not tokens.isdisjoint(CONTACT_WORDS):
            return True
        digits = _digits(norm.base)
        if digits:
            for entry in reversed(self._entries):
                if entry.text is None or digits >= PHONE_DIGITS:
                    break
                digits += _digits(entry.text.lower())
            if digits >= PHONE_DIGITS:
                return True
        for t in tokens:
            if len(t) == 1 and t not in CHAT_LETTERS:
                if t not in CONTRACTION_TAILS or "'" not in norm.base:
                    return True
        return False

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

    def _grooming(self, new: tuple[Signal, ...], threshold: int, protected: bool) -> Verdict:
        """Grooming outside the teen queue: signal weights over the window."""
        weights = _best_weights([*(e.signals for e in self._entries), new])
        total = sum(weights.values())
        strong = protected and any(s.name in STRONG_SIGNALS for s in new)
        if total < threshold and not strong:
            return CLEAN
        names = sorted(weights)
        evidence = "; ".join(f"{s.name}: {s.evidence}" for s in new)
        evidence = f"score {total} ({', '.join(names)}) {evidence}"
        return Verdict(Severity.HIGH if protected else Severity.MEDIUM, "grooming", evidence)

    def _converse(
        self,
        verdict: Verdict,
        signals: list[Signal],
        finding: Finding | None,
        now: float,
        chat: object,
    ) -> Verdict:
        """Grooming in a teen chat: score this message as a move of the sender's conversation
        (see ``ConversationPolicy``) and decide on the whole of it."""
        for s in signals:
            if s.name == SEXUAL_IMAGE:
                return Verdict(Severity.ZERO, "csam_solicitation", f"to a teen: {s.evidence}")
        policy = self.policy
        points, kind, evidence = 0, None, ""
        if verdict.category in CONTACT_MOVES and verdict.severity == Severity.HIGH:
            # asking for or giving contact details is a move too (blocked already)
            points, evidence = policy.clear, f"{verdict.category}: {verdict.evidence}"
        for s in signals:
            if s.name in STRONG_SIGNALS:
                p, k = policy.clear, None  # every clear move counts
            else:  # a mild or grey signal type counts once per chat
                p, k = (policy.grey if s.name in GREY_SIGNALS else policy.mild), s.name
            if p > points:
                points, kind, evidence = p, k, f"{s.name}: {s.evidence}"
        if finding is not None:
            learned = self.classifier.learned
            assert learned is not None
            if finding.grooming is not None:
                p = policy.clear if finding.grooming >= learned.grooming_clear else policy.grey
                evidence_ = f"learned p={finding.grooming:.2f}"
            elif finding.weak is not None and not signals:
                p, evidence_ = policy.mild, f"learned weak p={finding.weak:.2f}"
            else:
                p = 0
            if p > points:
                points, kind, evidence = p, None, evidence_
        if not points:
            return verdict
        conv = self._conversation  # check() dropped it if it was another chat's
        if conv is None:
            conv = self._conversation = Conversation(chat)
        before = conv.score(now, policy)
        conv.add(_Move(now, points, kind), policy)
        score = conv.score(now, policy)
        if score >= policy.block_at and verdict.severity <= Severity.HIGH:
            # two moves or more: the conversation's decision (a strike, the chat ends); one
            # clear move: a block (no strike for a grooming move; a rule's own finding stays)
            basis = CONVERSATION if before > 0 else SIGNAL
            if verdict.severity == Severity.HIGH and basis != CONVERSATION:
                return verdict  # the message's own finding explains more than one move does
            own = verdict.category if verdict.severity == Severity.HIGH else None
            return Verdict(
                Severity.HIGH,
                own or "grooming",
                f"score {score} ({len(conv.moves)} moves) {evidence}",
                basis,
            )
        if score >= policy.notice_at and not conv.noticed and not verdict:
            conv.noticed = True
            return Verdict(
                Severity.CLEAN, "grooming", f"score {score} {evidence}", SIGNAL, SAFETY_NOTICE
            )
        return verdict


def _digits(text: str) -> int:
    """Digits and number words in a (lower-case) message: a phone number split over messages."""
    return len(_DIGITS.findall(text))


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
