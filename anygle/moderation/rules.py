"""Rule data: loading, validating and compiling the word lists and pattern files.

Rules are data so an operator can extend them without a release (config path, SIGHUP reload).
The packaged files in ``anygle/moderation/data/`` are always loaded; ``extra`` (a directory or a
single file) is loaded after them and extends them. Two formats:

``<category>.txt`` -- one entry per line, ``#`` comments. ``word`` matches a whole token with
any letter repeatable (``fuuuck``), ``word*`` adds common inflections (s, ed, er, ing, ...),
anything with a space is a phrase (words separated by any non-letters; write the joined
form as its own word if it should match too, like ``killyourself``).
``allow.txt`` lists tokens that never fire from word lists.

``*.json`` -- ``{"macros": {name: regex}, "settings": {...}, "rules": [rule, ...]}``; a rule is
``{"id", "category", "re" | "near": [re, re] + "within" (+ "near_keys"), "keys", "also_keys",
"view", "requires_pi", "signal", "weight"}``. Regexes see the normalised copy (see normalize.py);
``%name%`` expands a macro, a space means "one or more non-letters", word boundaries are
implied, and on the default ``text`` view letter runs are squeezed like the text, so write
words normally. ``keys`` gate a
rule: it only runs when one of these tokens is in the message (rules without keys run on every
message and cost time); ``also_keys`` is a second such gate (``#digit``: any digit).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard

from twisted.logger import Logger

from . import personal, resyntax, scan
from .normalize import Normalizer, squeeze
from .resyntax import (
    Anchor,
    Atomic,
    Branch,
    Class,
    Group,
    Lit,
    Look,
    Node,
    Range,
    Repeat,
    Seq,
    Unsupported,
)
from .scan import Prefilter, Triage, bytes_pattern
from .verdict import CATEGORY_ORDER, CATEGORY_SEVERITY, UNMODERATED_CATEGORIES, Severity

_log = Logger(namespace="anygle.moderation")
DATA_DIR = Path(__file__).parent / "data"
DIGIT_KEY = "#digit"
VIEWS = ("text", "base", "raw")
SUFFIXES = (
    "", "s", "es", "ed", "er", "ers", "ing", "ings", "in", "y", "ies", "ier", "iest",
    "head", "heads", "face", "faces", "wit", "wits", "ass", "bag", "bags", "hole", "holes",
)  # fmt: skip
_MACRO = re.compile(r"%([a-z_]+)%")
_SQUEEZE_SRC = re.compile(r"(\\.)|([a-z])\2+")
_WORD_ENTRY = re.compile(r"[a-z]+\*?")
_LITERAL = re.compile(r"(?<!\\)[a-z]+")
_LEADING_LITERAL = re.compile(r"[a-z0-9' ]+")
_PLAIN = re.compile(r"(?:[a-z0-9 ]|'\??)+")
# A literal word standing alone at the top level: delimited by start/end, a space or an
# apostrophe on both sides, and not followed by a quantifier.
_TOP_WORD = re.compile(r"(?:(?<=^)|(?<=[ ']))[a-z]+(?=[ ']|$)(?![ ']?[?*{])")
_PHRASE_WORD = re.compile(r"[a-z']+\*?")
_EMPTY: frozenset[str] = frozenset()
_MASK_PREFERENCE = ("profanity", "sexual_explicit", "insult", "harassment", "slur")


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


def load_rules(extra: str | None = None) -> Rules:
    """Load packaged rules plus the operator's ``extra`` file or directory.

    Raises ValueError naming the file (and rule or line) on any broken input.
    """
    files = _rule_files(DATA_DIR)
    if extra:
        path = Path(extra)
        if path.is_dir():
            files += _rule_files(path)
        elif path.is_file() and path.suffix in (".txt", ".json"):
            files.append(path)
        else:
            raise ValueError(
                f"moderation rules path {extra!r} is not a directory, .txt or .json file"
            )
    builder = _Builder()
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


def _attach_prefilters(builder: _Builder, rules: Rules, extra: bool) -> None:
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
        builder = _Builder()
        rules = builder.build(_rule_files(DATA_DIR))
        _PACKAGED.append({q: _prefilter_inputs(builder, rules, q) for q in (True, False)})
    return _PACKAGED[0]


def _prefilter_inputs(
    builder: _Builder, rules: Rules, moderated: bool
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


def _rule_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix in (".txt", ".json") and p.is_file())


def _scan(src: str, start: int = 0) -> Iterator[tuple[int, str, str, int]]:
    """Walk a regex source: ``(index, char, kind, depth)`` with kind ``escape`` (a backslash pair,
    index of the backslash), ``class`` (inside or delimiting ``[...]``), ``open``/``close`` (a
    group parenthesis; depth after it) or ``plain`` (depth = the group depth it stands at)."""
    depth, i, in_class = 0, start, False
    while i < len(src):
        c = src[i]
        if c == "\\":
            yield i, c, "escape", depth
            i += 2
            continue
        if in_class:
            in_class = c != "]"
            yield i, c, "class", depth
        elif c == "[":
            in_class = True
            yield i, c, "class", depth
        elif c == "(":
            depth += 1
            yield i, c, "open", depth
        elif c == ")":
            depth -= 1
            yield i, c, "close", depth
        else:
            yield i, c, "plain", depth
        i += 1


def split_alternation(src: str) -> list[str]:
    """Top-level branches of ``src`` (unwrapping one enclosing ``(?:...)``)."""
    src = src.strip()
    if src.startswith("(?:") and _closing(src, 0) == len(src) - 1:
        src = src[3:-1]
    parts, start = [], 0
    for i, c, kind, depth in _scan(src):
        if kind == "plain" and c == "|" and depth == 0:
            parts.append(src[start:i])
            start = i + 1
    parts.append(src[start:])
    return parts


def _top_level(src: str) -> str:
    """``src`` with every group, character class and escape blanked out (replaced by '#')."""
    out = []
    for _, c, kind, depth in _scan(src):
        if kind == "escape":
            out.append("##")
        else:
            out.append(c if kind == "plain" and depth == 0 else "#")
    return "".join(out)


def _expand_leading(src: str) -> list[str]:
    """``(?:a|b c|d)rest`` -> ``[a rest, b c rest, d rest]`` when the leading group is a plain
    list of words: each variant then starts with a fixed word (fast, see _with_boundaries)
    and is gated by its own words."""
    if not src.startswith("(?:"):
        return [src]
    end = _closing(src, 0)
    if end < 0 or src[end + 1 : end + 2] in ("?", "*", "+", "{"):
        return [src]
    alts = split_alternation(src[: end + 1])
    if len(alts) > 32 or not all(_PLAIN.fullmatch(a) for a in alts):
        return [src]
    return [a + src[end + 1 :] for a in alts]


def _closing(src: str, open_at: int) -> int:
    """Index of the parenthesis closing the one at ``open_at`` (-1 if unbalanced)."""
    for i, _, kind, depth in _scan(src, open_at):
        if kind == "close" and depth == 0:
            return i
    return -1


SHIFTED = "[^a-z0-9](?:"


def _with_boundaries(src: str, shift: bool = False) -> str:
    """Wrap in word boundaries. When the pattern starts with a fixed word, put that word first
    and check the boundary after it: Python's regex engine then finds candidate positions with
    a fast literal scan instead of trying every position (5-10x faster on a 200-char text).

    Otherwise, with ``shift``, the left boundary is a consumed non-alphanumeric character
    (``SHIFTED``): such a pattern runs on the view with a space in front (``text1``), and the
    engine skips letters at C speed instead of evaluating a lookbehind at every position
    (about 25 % faster). Matches are the same, one character later."""
    m = _LEADING_LITERAL.match(src)
    if m and len(split_alternation(src)) == 1:
        lit = m.group()
        if src[m.end() : m.end() + 1] in ("?", "*", "+", "{"):
            lit = lit[:-1]
        if lit:
            return f"{lit}(?<![a-z0-9]{lit})(?:{src[len(lit) :]})(?![a-z0-9])"
    if shift:
        return f"{SHIFTED}{src})(?![a-z0-9])"
    return f"(?<![a-z0-9])(?:{src})(?![a-z0-9])"


_LETTERS = range(97, 123)


def _class_has_letter(cls: Class) -> bool:
    """Can a character class (``[...]``) match a lowercase letter? Unknown -> True."""
    hit = [False] * 26
    for item in cls.items:
        if isinstance(item, Lit):
            if item.code in _LETTERS:
                hit[item.code - 97] = True
        elif isinstance(item, Range):
            for c in range(max(item.lo, 97), min(item.hi, 122) + 1):
                hit[c - 97] = True
        elif item.kind in ("d", "s"):
            pass
        elif item.kind in ("D", "S"):
            hit = [True] * 26
        else:  # \w, \W
            return True
    return any(not h for h in hit) if cls.negate else any(hit)


def _edge(seq: Sequence[Node], last: bool) -> tuple[bool, bool]:
    """(may the first -- or, with ``last``, the final -- character be a letter, may the
    sequence match the empty string) for a parsed regex sequence. Conservative: unknown
    constructs may be letters."""
    may_letter = False
    for node in reversed(seq) if last else seq:
        if isinstance(node, Lit):
            letter, empty = node.code in _LETTERS or 65 <= node.code <= 90, False
        elif isinstance(node, Class):
            letter, empty = _class_has_letter(node), False
        elif isinstance(node, Look | Anchor):
            letter, empty = False, True
        elif isinstance(node, Group | Atomic):
            letter, empty = _edge(node.body, last)
        elif isinstance(node, Branch):
            edges = [_edge(b, last) for b in node.alternatives]
            letter, empty = any(e[0] for e in edges), any(e[1] for e in edges)
        elif isinstance(node, Repeat):
            letter, empty = _edge(node.body, last)
            empty = empty or node.lo == 0
        else:  # AnyChar, NotLit, Backref: anything
            letter, empty = True, True
        may_letter = may_letter or letter
        if not empty:
            return may_letter, False
    return may_letter, True


def _flatten(seq: Seq) -> list[Node]:
    """Top-level sequence with capturing groups inlined. A group with inline flags stays
    whole: under ``(?i:...)`` a literal is not the word it spells (the parser has already
    inlined plain ``(?:...)`` groups)."""
    out: list[Node] = []
    for node in seq:
        if isinstance(node, Group) and not node.flags_on and not node.flags_off:
            out.extend(_flatten(node.body))
        else:
            out.append(node)
    return out


def _is_letter(node: Node) -> TypeGuard[Lit]:
    return isinstance(node, Lit) and node.code in _LETTERS


def whole_words(compiled: str) -> frozenset[str]:
    """Literal words every match of a text-view pattern contains as complete tokens: runs of
    literal letters in the top-level sequence that no letter can precede or follow (the
    pattern's word boundaries count as non-letters). Used to gate rules exactly."""
    try:
        nodes = _flatten(resyntax.parse(compiled))
    except Unsupported:  # not ours to read: gate on the keys alone
        return frozenset()
    found = set()
    i, n = 0, len(nodes)
    while i < n:
        if not _is_letter(nodes[i]):
            i += 1
            continue
        j = i
        word = []
        while j < n and _is_letter(node := nodes[j]):
            word.append(chr(node.code))
            j += 1
        if not _edge(nodes[:i], True)[0] and not _edge(nodes[j:], False)[0]:
            found.add("".join(word))
        i = j
    return frozenset(found)


def squeeze_regex(src: str) -> str:
    """Squeeze repeated letters in a regex's literals the way the text view is squeezed."""
    return _SQUEEZE_SRC.sub(lambda m: m.group(1) or m.group(2), src)


def _verify_regex(word: str) -> re.Pattern[str]:
    parts = []
    for m in re.finditer(r"([a-z])\1*", word):
        n = len(m.group())
        parts.append(f"{m.group(1)}+" if n == 1 else f"{m.group(1)}{{{n},}}")
    return re.compile("".join(parts))


class _Builder:
    def __init__(self) -> None:
        self.macros: dict[str, str] = {}
        self.words: dict[str, list[WordEntry]] = {}
        self.rules: list[Rule] = []
        self.allow: set[str] = set()
        self.known: set[str] = set()
        # masked-word candidates with a preference (lower first): "f***" should read "fuck",
        # not "face"; word-list stems by category, then their inflections, then phrase words
        self.masked: dict[str, tuple[int, int, int]] = {}
        self.settings: dict[str, int] = {"grooming_threshold": 5, "teen_grooming_threshold": 4}
        self.count = 0
        # text-view pattern (compiled source) -> its source before word boundaries were added,
        # for the one-pass prefilter (scan.py)
        self.prefilter: dict[str, str] = {}

    def build(self, files: list[Path]) -> Rules:
        docs: list[tuple[Path, dict[str, object]]] = []
        for path in files:
            if path.suffix == ".json":
                docs.append((path, self._read_json(path)))
        for path, doc in docs:  # macros first, so any file may use any file's macros
            macros = doc.get("macros", {})
            if not isinstance(macros, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in macros.items()
            ):
                raise ValueError(f"{path}: 'macros' must map names to regex strings")
            self.macros.update(macros)
        for path, doc in docs:
            settings = doc.get("settings", {})
            if not isinstance(settings, dict):
                raise ValueError(f"{path}: 'settings' must be an object")
            for key, value in settings.items():
                if key not in self.settings or not isinstance(value, int) or value < 1:
                    raise ValueError(f"{path}: unknown or invalid setting {key!r}: {value!r}")
                self.settings[key] = value
            rules = doc.get("rules", [])
            if not isinstance(rules, list):
                raise ValueError(f"{path}: 'rules' must be a list")
            for i, spec in enumerate(rules):
                where = (
                    f"{path}: rule #{i} ({spec.get('id', '?') if isinstance(spec, dict) else '?'})"
                )
                self.rules.extend(self._split(spec, where))
        for path in files:
            if path.suffix == ".txt":
                self._read_words(path)
        for i, rule in enumerate(sorted(self.rules, key=_rank)):
            object.__setattr__(rule, "order", i)
        by_key: dict[str, list[Rule]] = {}
        always = []
        for rule in self.rules:
            self.known.update(rule.keys)
            if not rule.keys:
                always.append(rule)
            for key in rule.keys:
                by_key.setdefault(key, []).append(rule)
        self.known.update(self.words)
        return Rules(
            words={k: tuple(v) for k, v in self.words.items()},
            by_key={k: tuple(sorted(v, key=_rank)) for k, v in by_key.items()},
            always=tuple(sorted(always, key=_rank)),
            rules=tuple(self.rules),
            allow=frozenset(self.allow),
            grooming_threshold=self.settings["grooming_threshold"],
            teen_grooming_threshold=self.settings["teen_grooming_threshold"],
            normalizer=Normalizer(
                self.known - {""}, sorted(self.masked, key=self.masked.__getitem__)
            ),
            sources=tuple(str(p) for p in files),
            gates=_gates(by_key),
            gate_keys=frozenset(by_key),
            word_keys=frozenset(self.words),
        )

    @staticmethod
    def _read_json(path: Path) -> dict[str, object]:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read rules: {exc}") from exc
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: top level must be an object")
        return doc

    def _expand(self, src: str, where: str) -> str:
        for _ in range(8):
            if "%" not in src:
                return src
            try:
                src = _MACRO.sub(lambda m: self.macros[m.group(1)], src)
            except KeyError as exc:
                raise ValueError(f"{where}: unknown macro %{exc.args[0]}%") from None
        raise ValueError(f"{where}: macros nested too deeply")

    def _compile(self, src: str, view: str, where: str) -> re.Pattern[str]:
        if not isinstance(src, str) or not src:
            raise ValueError(f"{where}: pattern must be a non-empty string")
        src = self._expand(src, where)
        if view == "text":
            src = src.replace(" ?", "[^a-z0-9]*").replace(" ", "[^a-z0-9]+")
            src = squeeze_regex(src)
            # Every word a rule mentions may be spelled out letter by letter ("s e l l").
            self.known.update(w for w in _LITERAL.findall(src) if len(w) > 1)
            bare = src
            src = _with_boundaries(src, shift=True)
        elif view == "base":
            src = _with_boundaries(src.replace(" ?", r"\s*").replace(" ", r"\s+"))
        else:
            src = src.replace(" ?", r"\s*").replace(" ", r"\s+")
            src = "(?<![A-Za-z0-9])(?:" + src + ")(?![A-Za-z0-9])"
        try:
            compiled = re.compile(src)
        except re.error as exc:
            raise ValueError(f"{where}: bad regex: {exc}") from exc
        if view == "text":
            self.prefilter[compiled.pattern] = bare
        return compiled

    def _split(self, spec: object, where: str) -> list[Rule]:
        """Compile a rule; a rule whose pattern is a top-level alternation becomes one rule per
        branch, each gated only by the keys that occur in that branch. Same matches, but a
        message runs only the small branches its words can match (big alternations are what
        makes Python regexes slow)."""
        rule = self._rule(spec, where)
        if not isinstance(spec, dict) or "re" not in spec or rule.view == "raw":
            return [rule]
        branches = [
            b
            for branch in split_alternation(spec["re"])
            for b in _expand_leading(self._expand(branch, where))
        ]
        if len(branches) < 2:
            return [rule]
        out = []
        for n, branch in enumerate(branches):
            literals = set(_LITERAL.findall(squeeze_regex(branch.lower())))
            # A key counts for a branch if it occurs in one of its words ("bullet" in "bullets?").
            keys = [k for k in rule.keys if any(k in w for w in literals)] or sorted(rule.keys)
            sub = {**spec, "id": f"{rule.id}#{n}", "re": branch, "keys": keys}
            out.append(self._rule(sub, f"{where} branch {n}"))
        return out

    def _rule(self, spec: object, where: str) -> Rule:
        if not isinstance(spec, dict):
            raise ValueError(f"{where}: a rule must be an object")
        unknown = set(spec) - {
            "id", "category", "re", "near", "within", "keys", "also_keys", "view",
            "requires_pi", "signal", "weight", "near_keys", "_doc",
        }  # fmt: skip
        if unknown:
            raise ValueError(f"{where}: unknown fields {sorted(unknown)}")
        category = spec.get("category")
        if category not in CATEGORY_SEVERITY:
            raise ValueError(f"{where}: unknown category {category!r}")
        view = spec.get("view", "text")
        if view not in VIEWS:
            raise ValueError(f"{where}: view must be one of {VIEWS}")
        if ("re" in spec) == ("near" in spec):
            raise ValueError(f"{where}: give exactly one of 're' or 'near'")
        if "near_keys" in spec and "near" not in spec:
            raise ValueError(f"{where}: 'near_keys' only applies to 'near' rules")
        pattern = near = None
        if "re" in spec:
            pattern = self._compile(spec["re"], view, where)
        else:
            parts = spec["near"]
            if not isinstance(parts, list) or len(parts) != 2:
                raise ValueError(f"{where}: 'near' must be a list of two patterns")
            near = (self._compile(parts[0], view, where), self._compile(parts[1], view, where))
        keys = spec.get("keys", [])
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            raise ValueError(f"{where}: 'keys' must be a list of words")
        signal = spec.get("signal")
        weight = spec.get("weight", 0)
        if (category == "grooming") != (signal is not None):
            raise ValueError(f"{where}: grooming rules (and only they) need a 'signal'")
        if signal is not None and (not isinstance(weight, int) or weight < 1):
            raise ValueError(f"{where}: grooming signals need a positive integer 'weight'")
        within = spec.get("within", 40)
        if not isinstance(within, int) or within < 0:
            raise ValueError(f"{where}: 'within' must be a non-negative integer")
        self.count += 1
        severity = CATEGORY_SEVERITY[category]
        return Rule(
            id=str(spec.get("id") or f"rule{self.count}"),
            category=category,
            severity=severity,
            view=view,
            pattern=pattern,
            near=near,
            within=within,
            keys=frozenset(squeeze(k.lower()) for k in keys),
            required=self._required(spec.get("re"), view, where)
            | (whole_words(pattern.pattern) if pattern is not None and view == "text" else _EMPTY),
            also_keys=self._also_keys(spec.get("also_keys"), where),
            near_keys=self._also_keys(spec.get("near_keys"), where),
            requires_pi=bool(spec.get("requires_pi", False)),
            signal=signal,
            weight=weight,
            rank=(-severity, CATEGORY_ORDER.index(category), self.count),
            source=where,
            text_search=pattern.search if pattern is not None and view == "text" else None,
            shifted=pattern is not None and pattern.pattern.startswith(SHIFTED),
            near_shifted=(
                (near[0].pattern.startswith(SHIFTED), near[1].pattern.startswith(SHIFTED))
                if near is not None
                else (False, False)
            ),
        )

    @staticmethod
    def _also_keys(keys: object, where: str) -> frozenset[str] | None:
        """Second gate: one of these must occur too ('#digit': any digit in the message)."""
        if keys is None:
            return None
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            raise ValueError(f"{where}: 'also_keys' must be a list of words")
        return frozenset(k if k == DIGIT_KEY else squeeze(k.lower()) for k in keys)

    def _required(self, src: object, view: str, where: str) -> frozenset[str]:
        """Words every match must contain as whole tokens: literal words outside any group or
        quantifier. A rule only runs when all of them occur (on top of its keys)."""
        if view != "text" or not isinstance(src, str):
            return frozenset()
        src = self._expand(src, where)
        if len(split_alternation(src)) > 1:
            return frozenset()
        found = set()
        for m in _TOP_WORD.finditer(_top_level(src)):
            found.add(squeeze(m.group()))
        return frozenset(found)

    def _read_words(self, path: Path) -> None:
        category = path.stem
        if category != "allow" and category not in CATEGORY_SEVERITY:
            raise ValueError(
                f"{path}: word list must be named after a category "
                f"({', '.join(CATEGORY_ORDER)}) or 'allow'"
            )
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: cannot read word list: {exc}") from exc
        for lineno, line in enumerate(lines, 1):
            entry = line.split("#", 1)[0].strip().lower()
            if not entry:
                continue
            where = f"{path}:{lineno}"
            if category == "allow":
                if not _WORD_ENTRY.fullmatch(entry.rstrip("*")):
                    raise ValueError(f"{where}: allow entries are single words")
                self.allow.add(squeeze(entry))
            elif " " in entry:
                self._phrase(entry, category, where)
            elif _WORD_ENTRY.fullmatch(entry):
                self._word(entry, category)
            else:
                raise ValueError(f"{where}: {entry!r} is not a word, word* or phrase")

    def _word(self, entry: str, category: str) -> None:
        stem = entry.rstrip("*")
        rank = _MASK_PREFERENCE.index(category) if category in _MASK_PREFERENCE else 9
        for suffix in SUFFIXES if entry.endswith("*") else ("",):
            word = stem + suffix
            self._mask(word, rank, 1 if suffix else 0)
            we = WordEntry(word, category, CATEGORY_SEVERITY[category], _verify_regex(word))
            self.words.setdefault(squeeze(word), []).append(we)

    def _mask(self, word: str, rank: int, inflected: int) -> None:
        key = (rank, inflected, len(self.masked))  # then the order the files list them in
        if key < self.masked.get(word, (99, 9, 0)):
            self.masked[word] = key

    def _phrase(self, entry: str, category: str, where: str) -> None:
        words = entry.split()
        if not all(_PHRASE_WORD.fullmatch(w) for w in words):
            raise ValueError(f"{where}: phrase words may only contain letters and apostrophes")
        for w in words:
            if w.rstrip("*").isalpha():
                self._mask(w.rstrip("*"), 10, 0)
        parts = [re.escape(w.rstrip("*")).replace("'", "'?") for w in words]
        if words[-1].endswith("*"):
            parts[-1] += "(?:" + "|".join(s for s in SUFFIXES if s) + ")?"
        src = "[^a-z0-9]+".join(parts)
        tokens = re.findall(r"[a-z]+", entry)
        keys = [max(tokens, key=len), "".join(tokens)]
        spec = {"id": f"{category}:{entry}", "category": category, "re": src, "keys": keys}
        self.rules.append(self._rule(spec, where))


def _rank(rule: Rule) -> tuple[int, int, int]:
    return rule.rank


def _gates(by_key: dict[str, list[Rule]]) -> dict[str, Gate]:
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
