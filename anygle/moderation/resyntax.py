"""A parser for Python regular-expression syntax, into a small typed tree.

Rule patterns are read for their structure twice: ``patterns.whole_words`` (literal words every
match must contain, to gate rules) and ``scan.bytes_pattern`` (the Hyperscan rewrite). The
standard library's parser is the private ``re._parser`` (it was ``sre_parse`` until 3.11 and
may change again), so this module parses the syntax itself.

The tree is the one ``re`` builds, simplifications included, so that both readers give the
same answers as they did on ``re._parser``'s tree: a non-capturing group without flags is
inlined into the enclosing sequence (or, quantified, is the repeated sequence); alternatives
lose their common leading characters (``ab|ac`` is ``a[bc]``); alternatives of single
characters become one class; a class of one character is that character (``[a]`` is ``a``).

It knows the whole syntax the rule data uses and most of the rest. What it does not take --
global inline flags (``(?i)`` at the start, which would change how everything else reads),
verbose groups, conditional groups, ``\\N{...}`` -- raises ``Unsupported``, like malformed
input: callers then assume nothing about the pattern (no required words, no Hyperscan filter),
which costs speed, never a match.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias, TypeGuard

CategoryKind: TypeAlias = Literal["d", "D", "s", "S", "w", "W"]
AnchorKind: TypeAlias = Literal["^", "$", "A", "Z", "b", "B"]
RepeatMode: TypeAlias = Literal["greedy", "lazy", "possessive"]


class Unsupported(ValueError):
    """Malformed, or syntax this parser does not take: assume nothing about the pattern."""


# The tree's nodes: frozen, compared by value; characters are code points.
@dataclass(frozen=True, slots=True)
class Lit:  # one character
    code: int


@dataclass(frozen=True, slots=True)
class NotLit:  # any character but this one ([^x])
    code: int


@dataclass(frozen=True, slots=True)
class AnyChar:  # .
    pass


@dataclass(frozen=True, slots=True)
class Category:  # \d, \s, \w or their negations (D, S, W): only in a Class
    kind: CategoryKind


@dataclass(frozen=True, slots=True)
class Range:  # lo-hi in a class (inclusive)
    lo: int
    hi: int


ClassItem: TypeAlias = Lit | Range | Category


@dataclass(frozen=True, slots=True)
class Class:  # [...] (\d and the like are a class of one Category)
    items: tuple[ClassItem, ...]
    negate: bool


@dataclass(frozen=True, slots=True)
class Repeat:  # body repeated lo to hi times (hi None: no upper bound)
    lo: int
    hi: int | None
    body: Seq
    mode: RepeatMode


@dataclass(frozen=True, slots=True)
class Group:  # a capturing group (index), or a group with inline flags ((?i:...))
    body: Seq
    index: int | None
    flags_on: str
    flags_off: str


@dataclass(frozen=True, slots=True)
class Atomic:  # (?>...)
    body: Seq


@dataclass(frozen=True, slots=True)
class Branch:  # a|b|...
    alternatives: tuple[Seq, ...]


@dataclass(frozen=True, slots=True)
class Look:  # a lookahead ((?=...), (?!...)) or, with behind, a lookbehind
    body: Seq
    behind: bool
    negative: bool


@dataclass(frozen=True, slots=True)
class Anchor:  # ^, $, \A, \Z, \b or \B
    kind: AnchorKind


@dataclass(frozen=True, slots=True)
class Backref:  # \1 or (?P=name): the text a group matched
    group: int


Node: TypeAlias = (
    Lit | NotLit | AnyChar | Class | Repeat | Group | Atomic | Branch | Look | Anchor | Backref
)
Seq: TypeAlias = tuple[Node, ...]

# re compares these by value when it factors alternatives; everything else holds a
# sub-sequence and never compares equal there (so it is never factored out)
_UNITS = (Lit, NotLit, AnyChar, Class, Anchor, Backref)
_SPECIAL = frozenset(".\\[{()*+?^$|")
_DIGITS = frozenset("0123456789")
_OCTAL = frozenset("01234567")
_HEX = frozenset("0123456789abcdefABCDEF")
_FLAGS = frozenset("imsxaLu")
_REPEATS: dict[str, tuple[int, int | None]] = {"?": (0, 1), "*": (0, None), "+": (1, None)}
_MAX_REPEAT = 2**32 - 1  # re's MAXREPEAT: counts from here up are an error
_ESCAPES = {
    "a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92,
}  # fmt: skip
_CATEGORIES: dict[str, CategoryKind] = {k: k for k in ("d", "D", "s", "S", "w", "W")}
_ANCHORS: dict[str, AnchorKind] = {"A": "A", "Z": "Z", "b": "b", "B": "B"}
_HEX_LENGTH = {"x": 2, "u": 4, "U": 8}


def parse(src: str) -> Seq:
    """The tree of ``src``. Raises Unsupported if it is malformed or outside the syntax taken."""
    parser = _Parser(src)
    seq = parser.alternation()
    if parser.next is not None:
        raise Unsupported("unbalanced parenthesis")
    return seq


class _Parser:
    """Recursive descent over tokens: one character, or a backslash and the next one."""

    def __init__(self, src: str) -> None:
        self.src = src
        self.pos = 0
        self.next: str | None = None
        self.groups = 0  # capturing groups opened so far
        self.closed: set[int] = set()
        self.names: dict[str, int] = {}
        self._load()

    # -- tokens

    def _load(self) -> None:
        i = self.pos
        if i >= len(self.src):
            self.next = None
        elif self.src[i] == "\\":
            if i + 1 >= len(self.src):
                raise Unsupported("bad escape (end of pattern)")
            self.next = self.src[i : i + 2]
        else:
            self.next = self.src[i]

    def get(self) -> str | None:
        token = self.next
        if token is not None:
            self.pos += len(token)
            self._load()
        return token

    def match(self, token: str) -> bool:
        if self.next == token:
            self.get()
            return True
        return False

    def seek(self, pos: int) -> None:
        self.pos = pos
        self._load()

    def getwhile(self, n: int, chars: frozenset[str]) -> str:
        out = ""
        for _ in range(n):
            if self.next is None or self.next not in chars:
                break
            out += self.next
            self.get()
        return out

    def digits(self) -> str:
        return self.getwhile(len(self.src), _DIGITS)

    def until(self, end: str) -> str:
        out = ""
        while True:
            token = self.get()
            if token is None:
                raise Unsupported(f"missing {end}")
            if token == end:
                break
            out += token
        if not out:
            raise Unsupported("missing group name")
        return out

    # -- structure

    def alternation(self) -> Seq:
        items = [self.sequence()]
        while self.match("|"):
            items.append(self.sequence())
        if len(items) == 1:
            return items[0]
        out: list[Node] = []
        # a leading character all alternatives share is taken out (ab|ac -> a(?:b|c))
        while all(items):
            first = items[0][0]
            if not isinstance(first, _UNITS) or any(item[0] != first for item in items[1:]):
                break
            out.append(first)
            items = [item[1:] for item in items]
        # alternatives of one character each are a class (a|b|[cd] -> [abcd])
        chars: list[ClassItem] = []
        for item in items:
            if len(item) != 1:
                break
            node = item[0]
            if isinstance(node, Lit):
                chars.append(node)
            elif isinstance(node, Class) and not node.negate:
                chars.extend(node.items)
            else:
                break
        else:
            out.append(Class(tuple(dict.fromkeys(chars)), False))
            return tuple(out)
        out.append(Branch(tuple(items)))
        return tuple(out)

    def sequence(self) -> Seq:
        out: list[Node] = []
        while True:
            this = self.next
            if this is None or this in ("|", ")"):
                break
            self.get()
            if this[0] == "\\":
                out.append(self.escape(this[1]))
            elif this not in _SPECIAL:
                out.append(Lit(ord(this)))
            elif this == "[":
                out.append(self.char_class())
            elif this in ("*", "+", "?", "{"):
                bounds = self.quantifier(this)
                if bounds is None:  # a '{' that starts no quantifier is itself
                    out.append(Lit(ord("{")))
                    continue
                if not out or isinstance(out[-1], Anchor):
                    raise Unsupported("nothing to repeat")
                last = out[-1]
                if isinstance(last, Repeat):
                    raise Unsupported("multiple repeat")
                body = last.body if _plain_group(last) else (last,)
                mode: RepeatMode = (
                    "lazy" if self.match("?") else "possessive" if self.match("+") else "greedy"
                )
                out[-1] = Repeat(bounds[0], bounds[1], body, mode)
            elif this == ".":
                out.append(AnyChar())
            elif this == "(":
                node = self.group()
                if node is not None:
                    out.append(node)
            elif this == "^":
                out.append(Anchor("^"))
            else:  # "$"
                out.append(Anchor("$"))
        flat: list[Node] = []
        for node in out:
            if isinstance(node, Group) and _plain_group(node):
                flat.extend(node.body)
            else:
                flat.append(node)
        return tuple(flat)

    def quantifier(self, this: str) -> tuple[int, int | None] | None:
        """Bounds of the quantifier ``this`` starts (None: a '{' that starts none)."""
        if this != "{":
            return _REPEATS[this]
        if self.next == "}":
            return None
        here = self.pos
        lo = self.digits()
        hi = self.digits() if self.match(",") else lo
        if not self.match("}"):
            self.seek(here)
            return None
        low = int(lo) if lo else 0
        high = int(hi) if hi else None
        if low >= _MAX_REPEAT or (high is not None and high >= _MAX_REPEAT):
            raise Unsupported("the repetition number is too large")
        if high is not None and high < low:
            raise Unsupported("min repeat greater than max repeat")
        return low, high

    def group(self) -> Node | None:
        """After '(': the group, lookaround or backreference (None for a comment)."""
        capture, atomic, name, flags_on, flags_off = True, False, None, "", ""
        if self.match("?"):
            char = self.get()
            if char == "P":
                if self.match("<"):
                    name = self.until(">")
                    if not name.isidentifier() or name in self.names:
                        raise Unsupported(f"bad group name {name!r}")
                elif self.match("="):
                    ref = self.until(")")
                    gid = self.names.get(ref)
                    if gid is None or gid not in self.closed:
                        raise Unsupported(f"bad group reference {ref!r}")
                    return Backref(gid)
                else:
                    raise Unsupported("unknown extension ?P")
            elif char == ":":
                capture = False
            elif char == "#":
                while (token := self.get()) != ")":
                    if token is None:
                        raise Unsupported("unterminated comment")
                return None
            elif char in ("=", "!", "<"):
                behind = char == "<"
                if behind:
                    char = self.get()
                    if char not in ("=", "!"):
                        raise Unsupported("unknown extension ?<")
                body = self.alternation()
                if not self.match(")"):
                    raise Unsupported("missing ), unterminated subpattern")
                return Look(body, behind, char == "!")
            elif char == ">":
                capture, atomic = False, True
            elif char is not None and (char in _FLAGS or char == "-"):
                flags_on, flags_off = self.flags(char)
                capture = False
            else:
                raise Unsupported(f"unknown or unsupported extension ?{char}")
        index = None
        if capture:
            self.groups += 1
            index = self.groups
            if name is not None:
                self.names[name] = index
        body = self.alternation()
        if not self.match(")"):
            raise Unsupported("missing ), unterminated subpattern")
        if index is not None:
            self.closed.add(index)
        if atomic:
            return Atomic(body)
        return Group(body, index, flags_on, flags_off)

    def flags(self, char: str) -> tuple[str, str]:
        """``(?flags-flags:`` after '(?' and the first flag character."""
        on = off = ""
        token: str | None = char
        while token is not None and token in _FLAGS:
            on += token
            token = self.get()
        if token == "-":
            token = self.get()
            while token is not None and token in _FLAGS:
                off += token
                token = self.get()
            if not off:
                raise Unsupported("missing flag")
        if token == ")":
            raise Unsupported("global inline flags")
        if token != ":" or set(on) & set(off):
            raise Unsupported("bad inline flags")
        if "x" in on:
            raise Unsupported("verbose group")
        return on, off

    def char_class(self) -> Node:
        """After '[': the class (or the one character it names)."""
        items: list[ClassItem] = []
        negate = self.match("^")
        while True:
            this = self.get()
            if this is None:
                raise Unsupported("unterminated character set")
            if this == "]" and items:
                break
            first = self.class_escape(this[1]) if this[0] == "\\" else Lit(ord(this))
            if self.match("-"):
                that = self.get()
                if that is None:
                    raise Unsupported("unterminated character set")
                if that == "]":
                    items += [first, Lit(ord("-"))]
                    break
                last = self.class_escape(that[1]) if that[0] == "\\" else Lit(ord(that))
                if not isinstance(first, Lit) or not isinstance(last, Lit):
                    raise Unsupported("bad character range")
                if last.code < first.code:
                    raise Unsupported("bad character range")
                items.append(Range(first.code, last.code))
            else:
                items.append(first)
        unique = list(dict.fromkeys(items))
        if len(unique) == 1 and isinstance(unique[0], Lit):
            return NotLit(unique[0].code) if negate else unique[0]
        return Class(tuple(unique), negate)

    def escape(self, c: str) -> Node:
        """A backslash escape outside a class (``c``: the character after the backslash)."""
        if c in _ANCHORS:
            return Anchor(_ANCHORS[c])
        if c in _CATEGORIES:
            return Class((Category(_CATEGORIES[c]),), False)
        if c in _ESCAPES:
            return Lit(_ESCAPES[c])
        if c in _HEX_LENGTH:
            return Lit(self.hex_escape(c))
        if c == "0":
            return Lit(int(c + self.getwhile(2, _OCTAL), 8))
        if c in _DIGITS:
            digits = c
            if self.next is not None and self.next in _DIGITS:
                digits += self.next
                self.get()
                if c in _OCTAL and digits[1] in _OCTAL and self.next is not None:
                    if self.next in _OCTAL:  # three octal digits: a character
                        digits += self.next
                        self.get()
                        return Lit(_octal(digits))
            group = int(digits)
            if group > self.groups or group not in self.closed:
                raise Unsupported(f"invalid group reference {group}")
            return Backref(group)
        return Lit(_plain_escape(c))

    def class_escape(self, c: str) -> ClassItem:
        """A backslash escape inside a class."""
        if c in _ESCAPES:
            return Lit(_ESCAPES[c])
        if c in _CATEGORIES:
            return Category(_CATEGORIES[c])
        if c in _HEX_LENGTH:
            return Lit(self.hex_escape(c))
        if c in _OCTAL:
            return Lit(_octal(c + self.getwhile(2, _OCTAL)))
        if c in _DIGITS:
            raise Unsupported(f"bad escape \\{c}")
        return Lit(_plain_escape(c))

    def hex_escape(self, c: str) -> int:
        digits = self.getwhile(_HEX_LENGTH[c], _HEX)
        if len(digits) != _HEX_LENGTH[c]:
            raise Unsupported(f"incomplete escape \\{c}{digits}")
        code = int(digits, 16)
        if code > 0x10FFFF:
            raise Unsupported(f"bad escape \\{c}{digits}")
        return code


def _plain_group(node: Node) -> TypeGuard[Group]:
    """A non-capturing group without flags: re inlines it (or repeats its contents)."""
    return (
        isinstance(node, Group) and node.index is None and not node.flags_on and not node.flags_off
    )


def _octal(digits: str) -> int:
    code = int(digits, 8)
    if code > 0o377:
        raise Unsupported(f"octal escape value \\{digits} outside of range 0-0o377")
    return code


def _plain_escape(c: str) -> int:
    """``\\c`` for a character with no special meaning: itself (ASCII letters are an error)."""
    if c.isascii() and c.isalpha():
        raise Unsupported(f"bad escape \\{c}")
    return ord(c)
