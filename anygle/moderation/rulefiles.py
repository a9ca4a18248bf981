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

``RuleBuilder`` turns the files into a ``ruleset.Rules``; ``rules.load_rules`` is the entry point.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .normalize import Normalizer, squeeze
from .patterns import (
    SHIFTED,
    expand_leading,
    split_alternation,
    squeeze_regex,
    top_level_words,
    verify_regex,
    whole_words,
    with_boundaries,
)
from .ruleset import DIGIT_KEY, Rule, Rules, WordEntry, gate_index, unmoderated
from .verdict import CATEGORY_ORDER, CATEGORY_SEVERITY

DATA_DIR = Path(__file__).parent / "data"
VIEWS = ("text", "base", "raw")
SUFFIXES = (
    "", "s", "es", "ed", "er", "ers", "ing", "ings", "in", "y", "ies", "ier", "iest",
    "head", "heads", "face", "faces", "wit", "wits", "ass", "bag", "bags", "hole", "holes",
)  # fmt: skip
_MACRO = re.compile(r"%([a-z_]+)%")
_WORD_ENTRY = re.compile(r"[a-z]+\*?")
_LITERAL = re.compile(r"(?<!\\)[a-z]+")
_PHRASE_WORD = re.compile(r"[a-z']+\*?")
_EMPTY: frozenset[str] = frozenset()
_MASK_PREFERENCE = ("profanity", "sexual_explicit", "insult", "harassment", "slur")


def rule_files(directory: Path) -> list[Path]:
    """The rule files of ``directory``, in the order they are loaded."""
    return sorted(p for p in directory.iterdir() if p.suffix in (".txt", ".json") and p.is_file())


class RuleBuilder:
    """Reads and validates rule files and compiles them into one ``Rules`` (``build``); keeps
    each text-view pattern's source for the prefilter (``prefilter``)."""

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
        by_key_unmoderated = {
            k: kept for k, v in by_key.items() if (kept := [r for r in v if unmoderated(r)])
        }
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
            gates=gate_index(by_key),
            gate_keys=frozenset(by_key),
            word_keys=frozenset(self.words),
            unmoderated_gates=gate_index(by_key_unmoderated),
            unmoderated_gate_keys=frozenset(by_key_unmoderated),
            unmoderated_always=tuple(r for r in sorted(always, key=_rank) if unmoderated(r)),
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
            src = with_boundaries(src, shift=True)
        elif view == "base":
            src = with_boundaries(src.replace(" ?", r"\s*").replace(" ", r"\s+"))
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
            for b in expand_leading(self._expand(branch, where))
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
        return top_level_words(self._expand(src, where))

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
            we = WordEntry(word, category, CATEGORY_SEVERITY[category], verify_regex(word))
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
