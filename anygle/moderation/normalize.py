"""Evasion-resistant matching copies of a message (the delivered text is never changed).

Views, each derived from the previous one:

* ``raw``   NFKC, zero-width and bidi controls removed; case kept (for capitalised names;
            computed only when a rule needs it).
* ``base``  casefolded, Unicode lookalikes (Cyrillic/Greek/maths letters, confusables data)
            mapped to ASCII, dash variants to '-'. Digits, '@', '.', '#' survive: contact details
            are detected here.
* ``words`` leetspeak mapped inside tokens that mix letters and digits/symbols (``sh1t``,
            ``sn@p``), masked words resolved (``f*ck``), runs of single letters joined
            (``f.u.c.k``, ``s e x``). Space-only runs are joined only where the result is a
            known rule word, so ``r u ok`` and ``pu sh it`` stay as they are.
* ``text``  ``words`` with every run of a repeated letter squeezed to one (``fuuuck`` -> ``fuck``,
            ``kill`` -> ``kil``). Phrase rules are squeezed the same way when compiled.

Pure-ASCII messages (the common case) skip the Unicode steps, which keeps the per-message
cost low.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from operator import itemgetter
from typing import TYPE_CHECKING

import confusable_homoglyphs

if TYPE_CHECKING:
    from .scan import Prefilter, Triage

Scan = tuple[frozenset[str], frozenset[str]]  # Prefilter.scan: (words present, patterns flagged)

_INVISIBLE = (
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200c\u200d\u200e\u200f"
    "\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069"
    "\u206a\u206b\u206c\u206d\u206e\u206f\u3164\ufe00\ufe01\ufe02\ufe03\ufe04\ufe05\ufe06"
    "\ufe07\ufe08\ufe09\ufe0a\ufe0b\ufe0c\ufe0d\ufe0e\ufe0f\ufeff\uffa0"
)
STRIP_TABLE: dict[int, None] = dict.fromkeys(map(ord, _INVISIBLE))


def _build_fold_table() -> dict[int, str | None]:
    """Map every non-ASCII lookalike of an ASCII letter or digit to that character.

    Built from the Unicode confusables data shipped with ``confusable_homoglyphs``; letters
    win over digits (Cyrillic small o, U+043E, becomes 'o', not '0').
    """
    path = os.path.join(os.path.dirname(confusable_homoglyphs.__file__), "confusables.json")
    with open(path, encoding="utf-8") as fh:
        data: dict[str, list[dict[str, str]]] = json.load(fh)
    table: dict[int, str] = {}

    def put(ch: str, target: str) -> None:
        if len(ch) != 1 or ch.isascii():
            return
        old = table.get(ord(ch))
        if old is None or (old.isdigit() and target.isalpha()):
            table[ord(ch)] = target

    for key, homoglyphs in data.items():
        if len(key) == 1 and key.isascii() and key.isalnum():
            for h in homoglyphs:
                put(h["c"], key.lower())
        elif len(key) == 1 and not key.isascii():
            for h in homoglyphs:
                c = h["c"]
                if len(c) == 1 and c.isascii() and c.isalnum():
                    put(key, c.lower())
    # Digits of other scripts (Arabic-Indic, Devanagari, ...) count as digits for phone numbers.
    for cp in range(0x80, 0x20000):
        ch = chr(cp)
        if unicodedata.category(ch) == "Nd" and cp not in table:
            table[cp] = str(unicodedata.decimal(ch))
    # Dingbat circled digits have no NFKC decomposition.
    for start in (0x2776, 0x2780, 0x278A):
        for i in range(9):
            table[start + i] = str(i + 1)
        table[start + 9] = "10"
    for dash in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d":
        table[ord(dash)] = "-"
    return {**table, **STRIP_TABLE}


FOLD_TABLE = _build_fold_table()

LEET_TABLE = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g"}
    | {"@": "a", "$": "s", "!": "i", "|": "l"}
)
# A digit/symbol touching a letter ("sh1t", "$hit", "b!tch"; not "hello!"). One leading
# character class (no top-level alternation), so the regex engine skips plain letters at C speed.
_LEET_HINT = re.compile(r"[0-9@$|!](?:(?<=[a-z][0-9@$|])|(?=[a-z]))")
_LEET_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789@$!|")
_LEET_SYMBOL = re.compile(r"[0-9@$|!]")
_TOKEN_TABLE = bytes(c if 97 <= c <= 122 else 32 for c in range(256))
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
# Digit-first tokens that are numbers with a unit or ordinal, never leetspeak ("14yo", "3rd").
_UNIT = re.compile(
    r"\d+(?:yo|yrs?|years?|y|st|nd|rd|th|am|pm|s|k|m|km|kg|g|mb|gb|min|mins|h|hr|hrs|x|d"
    r"|mm|cm|ml|lb|lbs|ft|p|v|gen|mph)"
)
_MASKED = re.compile(r"[a-z]+\*+[a-z]*|\*+[a-z]{2,}")
# The shortest _SINGLE_RUN ("s e"), searched in " " + text with the left boundary consumed:
# the engine skips letters at C speed. A match means _SINGLE_RUN has work to do.
_SINGLE_PAIR = re.compile(r"[^a-z0-9][a-z][ ._\-*+~|/\\,:;]{1,3}[a-z](?![a-z0-9])")
_SINGLE_RUN = re.compile(r"(?<![a-z0-9])[a-z](?:[ ._\-*+~|/\\,:;]{1,3}[a-z](?![a-z0-9]))+")
_SEPARATOR = re.compile(r"[ ._\-*+~|/\\,:;]+")
_SPACED = re.compile(r"[ ._\-*+~|/\\,:;]*\s[ ._\-*+~|/\\,:;]*")
_SQUEEZE = re.compile(r"([a-z])\1+")
WORD = re.compile(r"[a-z]+")


MAX_JOIN = 16  # longest word joined from single letters
# Shorter messages skip the prefilter scan: its fixed cost is more than the key-gated rules
# cost on them (measured: break-even around 120 characters).
PREFILTER_MIN = 120
_LOWER = "abcdefghijklmnopqrstuvwxyz"
MAX_MASKED = 16  # masked words ("f*ck") resolved per message
_FIRST = itemgetter(1)  # C-level replacement callback: much cheaper than the template r"\1"


# A letter followed by the same letter: deleting those squeezes every run to its last letter.
_DOUBLED = re.compile(r"([a-z])(?=\1)")


def squeeze(s: str) -> str:
    """Collapse every run of one repeated letter to a single letter (``_SQUEEZE.sub``; deleting
    each letter that the same letter follows needs no replacement callback: about 2x faster
    than 26 substring checks and replaces, and 1.5x faster than a callback per run)."""
    return _DOUBLED.sub("", s)


class Normalized:
    """The views of one message. ``base`` and ``words`` are computed up front; ``text`` and the
    token lists on first use (plain chat usually never needs them, see scan.py).

    ``prefilters`` (unmoderated, moderated queue; None: not scanned) are the rules' one-pass
    scans; ``scanned(moderated)`` runs the queue's scan over ``text`` once."""

    __slots__ = (
        "_raw",
        "_scans",
        "_text",
        "_text1",
        "_text_tokens",
        "_token_set",
        "_word_tokens",
        "base",
        "original",
        "prefilters",
        "words",
    )

    def __init__(
        self,
        original: str,
        base: str,
        words: str,
        prefilters: tuple[Prefilter, Prefilter] | None = None,
    ) -> None:
        self.original = original
        self.base = base
        self.words = words
        self.prefilters = prefilters
        self._scans: list[Scan | None] | None = None
        self._text: str | None = None
        self._word_tokens: list[str] | None = None
        self._text_tokens: list[str] | None = None
        self._token_set: frozenset[str] | None = None
        self._raw: str | None = None
        self._text1: str | None = None

    @property
    def text(self) -> str:
        """``words`` with runs of a repeated letter squeezed to one."""
        if self._text is None:
            self._text = squeeze(self.words)
        return self._text

    @property
    def word_tokens(self) -> list[str]:
        if self._word_tokens is None:
            self._word_tokens = tokens(self.words)
        return self._word_tokens

    @property
    def text_tokens(self) -> list[str]:
        if self._text_tokens is None:
            self._text_tokens = tokens(self.text)
        return self._text_tokens

    @property
    def token_set(self) -> frozenset[str]:
        if self._token_set is None:
            self._token_set = frozenset(self.text_tokens)
        return self._token_set

    @property
    def text1(self) -> str:
        """``text`` with a space in front, for patterns whose left word boundary is a consumed
        character (see patterns.SHIFTED)."""
        if self._text1 is None:
            self._text1 = " " + self.text
        return self._text1

    @property
    def raw(self) -> str:
        """NFKC, invisible characters removed, case kept (computed on first use)."""
        if self._raw is None:
            t = self.original
            self._raw = (
                t if t.isascii() else unicodedata.normalize("NFKC", t).translate(STRIP_TABLE)
            )
        return self._raw

    def scanned(self, moderated: bool) -> Scan:
        """(vocabulary words that are tokens of ``text``, names of the patterns that may
        match) from the queue's prefilter (see scan.py); only when ``prefilters`` is set."""
        scans = self._scans
        if scans is None:
            scans = self._scans = [None, None]
        found = scans[moderated]
        if found is None:
            if self.prefilters is None:
                raise ValueError("scanned() needs prefilters")
            found = scans[moderated] = self.prefilters[moderated].scan(self.text)
        return found

    def __repr__(self) -> str:
        return f"Normalized({self.original!r}, base={self.base!r}, words={self.words!r})"


class Normalizer:
    """Builds the matching views; ``known`` are squeezed rule words used to join letter runs,
    ``masked_words`` are candidate words for masked tokens like ``f*ck``, most preferred first."""

    def __init__(self, known: Iterable[str], masked_words: Iterable[str]) -> None:
        self.known = frozenset(known)
        self._joined: dict[str, str] = {}  # letter run -> joined form (pure, bounded cache)
        # Every prefix of a known word: joining stops as soon as no known word can follow.
        self._prefixes = frozenset(w[:k] for w in self.known for k in range(1, len(w) + 1))
        self._masked: dict[tuple[int, str], list[str]] = {}
        for w in dict.fromkeys(masked_words):  # in the given order of preference
            self._masked.setdefault((len(w), w[0]), []).append(w)

    # set together by load_rules (rules.py): the (unmoderated, moderated) scans
    prefilters: tuple[Prefilter, Prefilter] | None = None
    triage: Triage | None = None

    def __call__(self, text: str) -> Normalized:
        base = text.lower() if text.isascii() else fold(text)
        prefilters, triage = self.prefilters, self.triage
        if prefilters is None or triage is None or len(base) < PREFILTER_MIN:
            return Normalized(text, base, self._words(base))
        # One scan tells whether the words view can differ from base at all.
        bits = triage.bits(base)
        words = self._words(base, bits) if bits else base
        return Normalized(text, base, words, prefilters)

    def _words(self, base: str, triage: int | None = None) -> str:
        """The ``words`` view: leetspeak, single-letter runs and masked words resolved.
        ``triage``: Triage.bits(base), if known (the same answers as the first two checks)."""
        # Cheap C-speed checks decide whether the slower passes are needed at all.
        words = base
        if triage is None:
            leet = _LEET_SYMBOL.search(words) is not None and _LEET_HINT.search(words) is not None
        else:
            leet = bool(triage & 1)
        if leet:
            words = _apply_leet(words)
        if triage is None or triage & 2 or words != base:
            m = _SINGLE_PAIR.search(" " + words)
        else:
            m = None  # the scan found no single-letter pair in base, and words is base
        if m is not None:  # the first run starts at m.start() (after the consumed separator)
            at = m.start()
            words = words[:at] + _SINGLE_RUN.sub(self._join_run, words[at:])
        if "*" in words:
            words = self._unmask_all(words)
        return words

    def _unmask_all(self, s: str) -> str:
        """``_MASKED.sub(self._unmask, s, count=MAX_MASKED)``, found from the '*'s instead of
        letting the regex engine try (and backtrack at) every letter of the message."""
        out: list[str] = []
        last = 0
        n = len(s)
        i = s.find("*")
        done = 0
        while i >= 0 and done < MAX_MASKED:
            j = i + 1
            while j < n and s[j] == "*":
                j += 1
            a = max(last, len(s[:i].rstrip(_LOWER)))  # letters right before the stars
            b = n - len(s[j:].lstrip(_LOWER))  # letters right after them
            if a < i or b - j >= 2:
                out.append(s[last:a])
                out.append(self._unmask_token(s[a:b]))
                last = b
                done += 1
            i = s.find("*", max(j, b))
        if not out:
            return s
        out.append(s[last:])
        return "".join(out)

    def _unmask(self, m: re.Match[str]) -> str:
        return self._unmask_token(m.group())

    def _unmask_token(self, tok: str) -> str:
        if tok[0] == "*" or len(tok) > 24:  # no word is that long; don't compile huge patterns
            return tok
        candidates = self._masked.get((len(tok), tok[0]))
        if candidates:
            # Each '*' stands for one letter (candidates are letters only): compare the other
            # positions directly instead of compiling a regex per masked word.
            first, last = tok.find("*"), tok.rfind("*")
            if first < 0:
                return tok
            if tok.count("*") == last - first + 1:
                # one run of stars ("f*ck", "a**hole"): C-speed prefix/suffix checks
                head, tail = tok[:first], tok[last + 1 :]
                for w in candidates:
                    if w.startswith(head) and w.endswith(tail):
                        return w
                return tok
            fixed = [(i, c) for i, c in enumerate(tok) if c != "*"]
            for w in candidates:
                if all(w[i] == c for i, c in fixed):
                    return w
        return tok

    def _join_run(self, m: re.Match[str]) -> str:
        """Join a run of single letters: parts glued by '.', '-', '_' etc. always ("f.u.c.k",
        "y.o."); parts separated only by spaces just where the result is a known rule word
        ("s e x", "k i l l u" -> "kill u"; "r u ok" stays)."""
        run = m.group()
        if len(run) > 96:
            return run
        joined = self._joined.get(run)
        if joined is None:
            if len(self._joined) >= 4096:  # bounded: start over rather than grow
                self._joined.clear()
            joined = self._joined[run] = self._join_units(run)
        return joined

    def _join_units(self, run: str) -> str:
        units = [_SEPARATOR.sub("", g) for g in _SPACED.split(run)]
        out: list[str] = []
        i = 0
        while i < len(units):
            if len(units[i]) != 1:
                out.append(units[i])
                i += 1
                continue
            j = i
            while j < len(units) and len(units[j]) == 1:
                j += 1
            out.extend(self._join_known(units[i:j]))
            i = j
        return " ".join(out)

    def _join_known(self, letters: list[str]) -> list[str]:
        """Join the longest known word (at most MAX_JOIN letters) first, then the same on
        either side. Candidate words are found in one pass (squeezed as they grow), so a long
        run of single letters cannot make a message expensive."""
        known = self.known
        prefixes = self._prefixes
        n = len(letters)
        ends: list[list[int]] = []
        for i in range(n):
            found = []
            sq = letters[i]
            for j in range(i + 1, min(n, i + MAX_JOIN)):
                if letters[j] != sq[-1]:
                    sq += letters[j]
                    if sq not in prefixes:
                        break
                if sq in known:
                    found.append(j + 1)
            ends.append(found)
        if not any(ends):
            return letters
        return _pick(letters, ends, 0, n)


def _pick(letters: list[str], ends: list[list[int]], lo: int, hi: int) -> list[str]:
    best_i = best_j = -1
    for i in range(lo, hi):
        for j in ends[i]:
            if j <= hi and j - i > best_j - best_i:
                best_i, best_j = i, j
    if best_i < 0:
        return letters[lo:hi]
    return [
        *_pick(letters, ends, lo, best_i),
        "".join(letters[best_i:best_j]),
        *_pick(letters, ends, best_j, hi),
    ]


def tokens(s: str) -> list[str]:
    """The ``[a-z]+`` runs of ``s`` (C-speed: bytes.translate + split instead of a regex)."""
    return s.encode("ascii", "replace").translate(_TOKEN_TABLE).decode("ascii").split()


def fold(text: str) -> str:
    """``base`` view of a non-ASCII message: NFKC, casefold, lookalikes mapped to ASCII.

    ``str.translate`` with a dict costs a lookup per character, so a mostly-ASCII message only
    translates its non-ASCII stretches."""
    s = unicodedata.normalize("NFKC", text).casefold()
    if s.isascii():
        return s
    if 4 * (len(s.encode("utf-8")) - len(s)) < len(s):
        return _NON_ASCII.sub(_fold_match, s)
    return s.translate(FOLD_TABLE)


def _fold_match(m: re.Match[str]) -> str:
    return m.group().translate(FOLD_TABLE)


def _apply_leet(s: str) -> str:
    """Map leetspeak inside tokens that mix letters with digits/symbols ('sh1t', 'sn@p')."""
    out: list[str] = []
    last = 0
    n = len(s)
    for m in _LEET_HINT.finditer(s):
        a = m.start()
        if a < last:
            continue
        while a > last and s[a - 1] in _LEET_CHARS:
            a -= 1
        b = m.end()
        while b < n and s[b] in _LEET_CHARS:
            b += 1
        out.append(s[last:a])
        out.append(_leet(s[a:b]) if b - a <= 32 else s[a:b])  # longer "tokens" are not words
        last = b
    if not out:
        return s
    out.append(s[last:])
    return "".join(out)


@lru_cache(maxsize=4096)  # pure per token; evasion tokens repeat across messages
def _leet(tok: str) -> str:
    core = tok.rstrip("!")
    if not core or core.isalpha() or core.isdigit():
        return tok
    if not any("a" <= c <= "z" for c in core):
        return tok
    if core[0].isdigit() and _UNIT.fullmatch(squeeze(core)):
        return tok
    return core.translate(LEET_TABLE) + tok[len(core) :]
