"""One-pass prefilter for the rule patterns (optional: needs the ``google-re2`` package).

Key words decide which rules *may* apply to a message, but in a 200-character message most
gated rules still do not match, and each costs a full Python regex scan (3-15 us for the big
ones). RE2 matches a whole set of patterns in one linear pass, so every message is first run
through one RE2 set holding a *relaxed* copy of every text-view pattern: lookarounds and word
boundaries dropped, ``\\w``/``\\d``/``\\s`` widened to their Unicode meaning. A relaxed
pattern matches wherever the original does (it only drops conditions), so a rule whose
relaxed pattern does not match cannot match either and is skipped: same verdicts, less work.

Whenever the answer is not certain, nothing is skipped: without ``re2``, for a pattern that
cannot be relaxed safely or that RE2 rejects, and when a match fails (an always-matching
sentinel pattern must be in every answer, so an RE2 failure such as running out of DFA
memory is noticed instead of read as "nothing matches").
"""

from __future__ import annotations

try:  # pragma: no cover - exercised by whichever environment runs the tests
    import re2
except ImportError:  # pragma: no cover
    re2 = None

MAX_MEM = 64 << 20  # RE2's DFA budget for the set (bytes)
_WIDE = {"\\w": "\\w\\pL\\pN", "\\d": "\\d\\pN", "\\s": "\\s\\v\\x1c-\\x1f\\x85\\pZ"}
_LOOKAROUND = ("(?=", "(?!", "(?<=", "(?<!")
_QUANTIFIER = ("?", "*", "+", "{")


def available() -> bool:
    return re2 is not None


def relax(src: str) -> str | None:
    """An RE2 pattern matching (at least) wherever the Python pattern ``src`` matches, or
    None when that cannot be guaranteed."""
    out: list[str] = []
    i, n = 0, len(src)
    in_class = negated = False
    class_start = 0
    while i < n:
        c = src[i]
        if c == "\\":
            esc = src[i : i + 2]
            if esc in _WIDE:
                if not in_class:
                    out.append(f"[{_WIDE[esc]}]")
                else:  # a negated class already matches more in RE2 (ASCII \w, \d, \s)
                    out.append(esc if negated else _WIDE[esc])
            elif esc in ("\\b", "\\B") and not in_class:
                pass  # a boundary only restricts
            elif len(esc) < 2 or esc[1].isdigit() or esc[1] in "AZNuUxgPp":
                return None  # backreferences and escapes whose meaning differs
            else:
                out.append(esc)
            i += 2
            continue
        if in_class:
            if c == "[":
                return None  # nested-set syntax: don't guess
            if c == "]" and i > class_start:
                in_class = False
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            negated = src[i + 1 : i + 2] == "^"
            class_start = i + (2 if negated else 1) + 1  # a ']' right after '[' or '[^' is literal
            out.append(src[i : class_start - 1])
            i = class_start - 1
            continue
        if c == "$" or src.startswith("{,", i):
            return None  # '$' also matches before a final newline; '{,n}' is literal in RE2
        if src.startswith(_LOOKAROUND, i):
            end = _group_end(src, i)
            if end < 0 or src[end + 1 : end + 2] in _QUANTIFIER:
                return None
            i = end + 1
            continue
        if src.startswith("(?P=", i) or src.startswith("(?(", i):
            return None
        out.append(c)
        i += 1
    return None if in_class else "".join(out)


def _group_end(src: str, start: int) -> int:
    depth, i, in_class = 0, start, False
    while i < len(src):
        c = src[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if src[i + 1 : i + 2] == "^":
                i += 1
            if src[i + 1 : i + 2] == "]":
                i += 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


class Prefilter:
    """An RE2 set of relaxed patterns. ``add`` returns the pattern's index (None: not
    filterable); ``match(text)`` returns the indices that may match, or None (no answer:
    treat every pattern as possible)."""

    def __init__(self) -> None:
        if re2 is None:
            raise RuntimeError("google-re2 is not installed")
        options = re2.Options()
        options.max_mem = MAX_MEM
        options.log_errors = False
        self._set = re2.Set.SearchSet(options)
        self._sentinel = self._set.Add("")  # matches every text: proves a match ran
        self._compiled = False
        self._size = 1

    def add(self, pattern: str) -> int | None:
        relaxed = relax(pattern)
        if relaxed is None:
            return None
        try:
            index = self._set.Add(relaxed)
        except Exception:  # re2.error, or syntax RE2 does not know
            return None
        self._size += 1
        return index

    def compile(self) -> bool:
        try:
            self._set.Compile()
        except Exception:
            return False
        self._compiled = True
        return True

    def __len__(self) -> int:
        return self._size - 1

    def match(self, text: str) -> frozenset[int] | None:
        if not self._compiled:
            return None
        try:
            hits = self._set.Match(text)
        except Exception:  # e.g. lone surrogates cannot be encoded as UTF-8
            return None
        if not hits or self._sentinel not in hits:
            return None
        return frozenset(hits)
