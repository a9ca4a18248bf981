"""One Hyperscan pass per message: which rule words occur, which text-view patterns can match.

The classifier's results are still computed by Python's ``re`` (leftmost-first matches, the
same evidence); these scans only tell it which work it can skip. Every scan is a *superset*
test: when it says "no", the skipped work would have found nothing.

* ``Triage`` (on ``base``): can leetspeak mapping, letter-run joining or unmasking change the
  message? If not, the ``words`` view is ``base`` and those passes are skipped.
* ``Prefilter`` (on the squeezed ``text`` view), one per queue:
  - vocabulary: contact-detail words, word-list keys (moderated queue) and the gate words of
    the few rules the scan cannot filter, each as a whole token, so that when no pattern is
    flagged the scan's ``present`` answers every token question the classifier asks
    (``token_set & vocabulary``) without splitting the message;
  - patterns: each text-view pattern rewritten for Hyperscan (``bytes_pattern``: lookarounds
    dropped, consumed word boundaries, UTF-8 bytes). A rule whose patterns are not flagged
    cannot match in ``re`` either. The unmoderated queue's scan holds only the patterns of
    the categories that apply there (zero tolerance and doxing).

Scanning is on UTF-8 bytes: a class that can match a non-ASCII character may repeat (one
character is several bytes), and ``\\w``/``\\s``/``\\d`` also accept every non-ASCII byte.
Compiling the packaged rules takes a few seconds, so compiled databases are cached per
process and on disk (``ANYGLE_HS_CACHE``, default ``~/.cache/anygle``). Without the
``hyperscan`` package, or for a pattern it cannot compile, the checks run as before.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from importlib import metadata
from typing import assert_never

from . import resyntax as rx
from .resyntax import Unsupported

try:  # pragma: no cover - exercised by the import itself
    import hyperscan

    AVAILABLE = True
except ImportError:  # pragma: no cover - hyperscan ships wheels; keep working without it
    AVAILABLE = False

_ASCII_SPACE = frozenset([9, 10, 11, 12, 13, 28, 29, 30, 31, 32])
_ASCII_DIGIT = frozenset(range(48, 58))
_ASCII_WORD = frozenset([*range(48, 58), *range(65, 91), *range(97, 123), 95])
_ALL_ASCII = frozenset(range(128))
# ASCII codes of each \\d-style category; every non-ASCII byte is allowed too (superset)
_CATEGORY: dict[rx.CategoryKind, frozenset[int]] = {
    "d": _ASCII_DIGIT,
    "D": _ALL_ASCII - _ASCII_DIGIT,
    "s": _ASCII_SPACE,
    "S": _ALL_ASCII - _ASCII_SPACE,
    "w": _ASCII_WORD,
    "W": _ALL_ASCII - _ASCII_WORD,
}


def _byte_class(allowed: set[int], non_ascii: bool) -> str:
    """A byte class for the ASCII codes in ``allowed`` (plus 0x80-0xff with ``non_ascii``)."""
    codes = sorted(allowed)
    parts = []
    i = 0
    while i < len(codes):
        j = i
        while j + 1 < len(codes) and codes[j + 1] == codes[j] + 1:
            j += 1
        parts.append(f"\\x{codes[i]:02x}" if i == j else f"\\x{codes[i]:02x}-\\x{codes[j]:02x}")
        i = j + 1
    if non_ascii:
        parts.append("\\x80-\\xff")
    if not parts:
        raise Unsupported("empty class")
    return "[" + "".join(parts) + "]"


def _atom(allowed: set[int] | frozenset[int], non_ascii: bool) -> str:
    """One character -> a byte class; repeatable if it can be non-ASCII (several bytes)."""
    cls = _byte_class(set(allowed), non_ascii)
    return cls + "+" if non_ascii else cls


def _in(cls: rx.Class) -> str:
    allowed: set[int] = set()
    non_ascii = False
    for item in cls.items:
        if isinstance(item, rx.Lit):
            if item.code < 128:
                allowed.add(item.code)
            else:
                non_ascii = True
        elif isinstance(item, rx.Range):
            allowed.update(range(item.lo, min(item.hi, 127) + 1))
            non_ascii = non_ascii or item.hi >= 128
        else:
            allowed.update(_CATEGORY[item.kind])
            non_ascii = True
    if cls.negate:
        # [^...] may match any non-ASCII character unless it names it; allow them all
        return _atom(_ALL_ASCII - allowed, True)
    return _atom(allowed, non_ascii)


def _render(seq: rx.Seq) -> str:
    out = []
    for node in seq:
        if isinstance(node, rx.Lit):
            if node.code >= 128:
                out.append("".join(f"\\x{b:02x}" for b in chr(node.code).encode("utf-8")))
            else:
                out.append(_atom({node.code}, False))
        elif isinstance(node, rx.NotLit):
            out.append(_atom(_ALL_ASCII - {node.code} if node.code < 128 else _ALL_ASCII, True))
        elif isinstance(node, rx.AnyChar):
            out.append(_atom(_ALL_ASCII - {10}, True))
        elif isinstance(node, rx.Class):
            out.append(_in(node))
        elif isinstance(node, rx.Repeat):
            body = _render(node.body)
            if not body:
                continue
            lo, hi = node.lo, node.hi
            if hi is None:
                q = "*" if lo == 0 else "+" if lo == 1 else f"{{{lo},}}"
            elif lo == hi:
                q = f"{{{lo}}}"
            else:
                q = "?" if (lo, hi) == (0, 1) else f"{{{lo},{hi}}}"
            out.append(f"(?:{body}){q}")
        elif isinstance(node, rx.Group):
            if node.flags_on or node.flags_off:
                raise Unsupported("inline flags")
            out.append(f"(?:{_render(node.body)})")
        elif isinstance(node, rx.Atomic):
            out.append(f"(?:{_render(node.body)})")
        elif isinstance(node, rx.Branch):
            out.append("(?:" + "|".join(_render(b) for b in node.alternatives) + ")")
        elif isinstance(node, rx.Look | rx.Anchor):
            continue  # dropped: the rewrite may only match more, never less
        elif isinstance(node, rx.Backref):
            out.append("[\\x00-\\xff]*")
        else:
            assert_never(node)
    return "".join(out)


def bytes_pattern(src: str) -> bytes:
    """Hyperscan source that matches the UTF-8 ``text`` view wherever
    ``(?<![a-z0-9])(?:src)(?![a-z0-9])`` matches it as a ``str`` (and maybe elsewhere too).
    Raises Unsupported for constructs it cannot rewrite (or parse: see resyntax)."""
    body = _render(rx.parse(src))
    if not body:
        raise Unsupported("empty pattern")
    return f"(?:^|[^a-z0-9])(?:{body})(?:[^a-z0-9]|$)".encode("ascii")


def vocabulary_pattern(word: str) -> bytes:
    """``word`` as a whole token (a maximal run of a-z)."""
    return f"(?:^|[^a-z]){word}(?:[^a-z]|$)".encode("ascii")


class Prefilter:
    """Compiled Hyperscan databases (the packaged rules' one is cached, see ``_database``) and
    what their match ids mean. ``scan`` runs them all over one view."""

    def __init__(self, parts: Iterable[tuple[Iterable[str], dict[str, str]]]) -> None:
        if not AVAILABLE:  # pragma: no cover
            raise RuntimeError("hyperscan is not installed")
        self.skipped: dict[str, str] = {}
        self._dbs: list[hyperscan.Database] = []
        # per id: (0, word) | (1, pattern name) | (2, "": rejected by hyperscan)
        kinds: list[tuple[int, str]] = []
        self.vocabulary: frozenset[str] = frozenset()
        for vocabulary, patterns in parts:
            words = sorted(w for w in set(vocabulary) if w.isalpha() and w.isascii())
            exprs = [vocabulary_pattern(w) for w in words]
            meaning: list[tuple[int, str]] = [(0, w) for w in words]
            for name in sorted(patterns):
                try:
                    exprs.append(bytes_pattern(patterns[name]))
                except Unsupported as exc:
                    self.skipped[name] = str(exc)
                    continue
                meaning.append((1, name))
            if not exprs:
                continue
            db, bad = _database(exprs, len(kinds))
            for i in bad:
                if meaning[i][0] != 1:
                    raise ValueError(f"prefilter: cannot compile {exprs[i]!r}")
                self.skipped[meaning[i][1]] = "rejected by hyperscan"
                meaning[i] = (2, "")
            self._dbs.append(db)
            kinds += meaning
            self.vocabulary |= frozenset(words)
        self._kinds = tuple(kinds)
        self.patterns = frozenset(v for k, v in kinds if k == 1)

    def scan(self, s: str) -> tuple[frozenset[str], frozenset[str]]:
        """(vocabulary words present as tokens, pattern names that may match)."""
        hits = _Hits()
        data = s.encode("utf-8", "surrogatepass")
        for db in self._dbs:
            db.scan(data, match_event_handler=hits.on_match)
        if not hits:
            return _NONE, _NONE
        kinds = self._kinds
        words = []
        pats = []
        for i in hits:
            kind, value = kinds[i]
            if kind == 0:
                words.append(value)
            elif kind == 1:
                pats.append(value)
        return frozenset(words), frozenset(pats)


class Triage:
    """Can leetspeak mapping, letter-run joining or unmasking change this ``base`` view? The
    exact conditions Normalizer._words starts from, as one scan (if not, ``words`` is
    ``base``)."""

    EXPRESSIONS = (
        rb"[a-z][0-9@$|]|[0-9@$|!][a-z]",  # _LEET_SYMBOL and _LEET_HINT
        rb"(?:^|[^a-z0-9])[a-z][ ._\-*+~|/\\,:;]{1,3}[a-z](?:[^a-z0-9]|$)",  # _SINGLE_PAIR
        rb"\*",  # masked words
    )

    def __init__(self) -> None:
        self.db, bad = _database(list(self.EXPRESSIONS), 0)
        assert not bad

    def bits(self, base: str) -> int:
        """1: leetspeak hint, 2: a pair of single letters, 4: '*' (0: words is base)."""
        hits = _Hits()
        self.db.scan(base.encode("utf-8", "surrogatepass"), match_event_handler=hits.on_match)
        bits = 0
        for i in hits:
            bits |= 1 << i
        return bits


_NONE: frozenset[str] = frozenset()
_FLAGS = 0
_MEMO: dict[str, tuple[bytes, tuple[int, ...]]] = {}


def _database(exprs: list[bytes], first_id: int) -> tuple[hyperscan.Database, tuple[int, ...]]:
    """Compile (ids from ``first_id``), leaving out what Hyperscan rejects (returned as
    indexes). Compiling the packaged rules takes several seconds, so databases are kept per
    process and on disk (``ANYGLE_HS_CACHE``, default ``~/.cache/anygle``; best effort)."""
    flags = hyperscan.HS_FLAG_SINGLEMATCH
    version = metadata.version("hyperscan")  # hyperscan.__version__, which its stub lacks
    key = hashlib.sha256(repr((version, flags, first_id, exprs)).encode()).hexdigest()
    cached = _MEMO.get(key)
    if cached is None:
        cached = _load(key)
    if cached is not None:
        try:
            db = hyperscan.loadb(cached[0], hyperscan.HS_MODE_BLOCK)
            db.scratch = hyperscan.Scratch(db)
            return db, cached[1]
        except Exception:  # a stale or foreign cache file: compile instead
            pass
    ids = list(range(first_id, first_id + len(exprs)))
    bad: list[int] = []
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    try:
        db.compile(expressions=exprs, ids=ids, flags=flags)
    except hyperscan.error:
        for i, e in enumerate(exprs):
            probe = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            try:
                probe.compile(expressions=[e], ids=[0], flags=flags)
            except hyperscan.error:
                bad.append(i)
        keep = [i for i in range(len(exprs)) if i not in bad]
        db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        db.compile(expressions=[exprs[i] for i in keep], ids=[ids[i] for i in keep], flags=flags)
    blob = hyperscan.dumpb(db)
    _MEMO[key] = (blob, tuple(bad))
    _store(key, blob, tuple(bad))
    return db, tuple(bad)


def _cache_dir() -> str:
    return os.environ.get("ANYGLE_HS_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "anygle"
    )


def _load(key: str) -> tuple[bytes, tuple[int, ...]] | None:
    path = os.path.join(_cache_dir(), f"hs-{key}.db")
    try:
        with open(path, "rb") as fh:
            head = fh.readline()
            blob = fh.read()
        bad = tuple(int(x) for x in head.split())
    except (OSError, ValueError):
        return None
    try:
        os.utime(path)  # recently used: kept by _prune
    except OSError:  # a cache the user may read but not touch (built into an image)
        pass
    _MEMO[key] = (blob, bad)
    return blob, bad


def _store(key: str, blob: bytes, bad: tuple[int, ...]) -> None:
    directory = _cache_dir()
    path = os.path.join(directory, f"hs-{key}.db")
    try:
        os.makedirs(directory, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(" ".join(map(str, bad)).encode() + b"\n")
            fh.write(blob)
        os.replace(tmp, path)
        _prune(directory)
    except OSError:
        pass


_KEEP = 16  # cached databases kept (most recently used); older rule versions are dropped


def _prune(directory: str) -> None:
    files = [
        os.path.join(directory, f)
        for f in os.listdir(directory)
        if f.startswith("hs-") and f.endswith(".db")
    ]
    if len(files) <= _KEEP:
        return
    files.sort(key=os.path.getmtime, reverse=True)
    for path in files[_KEEP:]:
        try:
            os.remove(path)
        except OSError:
            pass


class _Hits(list[int]):
    """The ids a scan matched, in the order reported."""

    def on_match(self, id_: int, start: int, end: int, flags: int, context: object) -> None:
        self.append(id_)
