"""Texts for differential tests of the moderation fast paths: corpus lines, mutated corpus lines
(leetspeak, repeated and spaced-out letters, masks, lookalikes, invisible characters, emoji,
case), dictionary-word sentences and 200-character mixes. Deterministic for a seed."""

from __future__ import annotations

import random
from pathlib import Path

DATA = Path(__file__).parent / "data"
DICT = Path("/usr/share/dict/words")

_LEET = {"a": "4@", "e": "3", "i": "1!|", "o": "0", "s": "5$", "t": "7", "g": "9", "b": "8",
         "l": "1|"}  # fmt: skip
_LOOKALIKE = {"a": "\u0430", "e": "\u0435", "o": "\u043e", "p": "\u0440", "c": "\u0441",
              "x": "\u0445", "i": "\u0456", "s": "\u0455"}  # fmt: skip
_NOISE = ["\u200b", "\u00ad", "\U0001f602", "\u2764\ufe0f", "\u00e9", "\u2019", "\uff01",
          "\u00a0", "\u2014", "\U0001d41a", "\u2460", "\u0663"]  # fmt: skip
_SEPARATORS = [" ", ".", "-", "_", "*", " . ", "  ", "/", ","]
_EXTRAS = ["555 123 4567", "+44 7700 900123", "jess@gmail.com", "jess at gmail dot com",
           "@katie_x", "snap: katie", "discord.gg/abc", "www.site.com", "12 main st",
           "192.168.0.1", "five five five one two three four", "im 13", "14yo", "u r",
           "r u alone", "f***", "sh*t", "a**hole", "kiiiill", "b!tch", "#1234",
           "k i l l"]  # fmt: skip


def corpus_lines() -> list[str]:
    lines: list[str] = []
    for path in sorted(DATA.glob("moderation_corpus*.tsv")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line or line.startswith("#"):
                continue
            for part in line.split("\t"):
                # the message columns; labels and flags are short words, harmless as texts
                for msg in part.split(" || "):
                    if msg.strip():
                        lines.append(msg)
    return lines


def dictionary_words() -> list[str]:
    if not DICT.exists():
        return []
    return [w for w in DICT.read_text(encoding="utf-8", errors="replace").split() if w.isalpha()]


def mutate(rng: random.Random, text: str) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 4)):
        if not chars:
            break
        op = rng.randrange(11)
        i = rng.randrange(len(chars))
        c = chars[i].lower()
        if op == 0 and c in _LEET:
            chars[i] = rng.choice(_LEET[c])
        elif op == 1 and c.isalpha():
            chars[i] = chars[i] * rng.randint(2, 5)
        elif op == 2:  # space out the word around i
            a = i
            while a > 0 and chars[a - 1].isalpha():
                a -= 1
            b = i
            while b < len(chars) and chars[b].isalpha():
                b += 1
            sep = rng.choice(_SEPARATORS)
            chars[a:b] = [sep.join(chars[a:b])]
        elif op == 3 and c.isalpha():
            chars[i] = "*"
        elif op == 4 and c in _LOOKALIKE:
            chars[i] = _LOOKALIKE[c]
        elif op == 5:
            chars.insert(i, rng.choice(_NOISE))
        elif op == 6:
            chars[i] = chars[i].upper()
        elif op == 7:
            chars.insert(i, " " + rng.choice(_EXTRAS) + " ")
        elif op == 8:
            del chars[i]
        elif op == 9:
            chars = [x.upper() if rng.random() < 0.3 else x for x in chars]
        else:
            chars.insert(i, rng.choice("0123456789@#$!.*|"))
    return "".join(chars)


def texts(n: int, seed: int = 9) -> list[str]:
    """``n`` texts: a fifth each of corpus lines, mutated lines, doubly mutated lines,
    dictionary sentences (some mutated) and 200-character mixes."""
    rng = random.Random(seed)
    lines = corpus_lines()
    words = dictionary_words() or [w for line in lines for w in line.split()]
    out: list[str] = []
    while len(out) < n:
        kind = len(out) % 5
        if kind == 0:
            out.append(rng.choice(lines))
        elif kind == 1:
            out.append(mutate(rng, rng.choice(lines)))
        elif kind == 2:
            out.append(mutate(rng, mutate(rng, rng.choice(lines))))
        elif kind == 3:
            s = " ".join(rng.choice(words) for _ in range(rng.randint(1, 14)))
            out.append(mutate(rng, s) if rng.random() < 0.5 else s)
        else:
            parts: list[str] = []
            while sum(len(p) + 1 for p in parts) < 200:
                line = rng.choice(lines)
                parts.append(mutate(rng, line) if rng.random() < 0.3 else line)
            out.append(" ".join(parts)[:200])
    return out
