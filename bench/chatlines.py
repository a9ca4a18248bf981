"""What users send: the varied chat lines the relay rows feed the servers (``bench/data/``).

``chat-lines.tsv`` holds ordinary, benign chat lines (``queue<TAB>text``: ``teen`` or ``adult``)
written for the benchmark by a helper session that had not seen the moderation rules or data,
with lengths like real chat (most under 25 characters, a few hundred-character stories).  A
load worker sends each line in a slightly varied form (:func:`vary`: the typos, repeated
letters, trailing "lol"s and emoji real people add), so that most messages of a run are text the
server has never seen: a cache of verdicts would get no more than real chat's hit rate.
"""

from __future__ import annotations

import random
from pathlib import Path

LINES = Path(__file__).resolve().parent / "data" / "chat-lines.tsv"
_TAILS = (" lol", " lmao", " haha", "?", "!", "!!", " 😂", " 💀", " fr", " tbh", "...", " ngl")
_HEADS = ("ok ", "lol ", "yeah ", "bro ", "wait ", "omg ", "hmm ")


def load(queue: str, path: Path | str = LINES) -> list[str]:
    """The lines written for ``queue`` (``teen``, ``adult``, or ``all``)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for row in f:
            kind, _, text = row.rstrip("\n").partition("\t")
            if text and (queue == "all" or kind == queue):
                out.append(text)
    if not out:
        raise ValueError(f"{path}: no lines for queue {queue!r}")
    return out


def vary(rng: random.Random, text: str) -> str:
    """``text`` as somebody might type it this time: unchanged one time in seven, else with
    one or two of the changes people make (so that most long lines are new and short ones
    repeat, as in real chat)."""
    r = rng.random()
    if r < 0.15 or not text:
        return text
    text = _change(rng, text)
    return _change(rng, text) if rng.random() < 0.4 else text


def _change(rng: random.Random, text: str) -> str:
    r = rng.random()
    if r < 0.25:
        return text + rng.choice(_TAILS)
    if r < 0.35:
        return rng.choice(_HEADS) + text
    i = rng.randrange(len(text))
    if r < 0.60:  # a repeated letter ("heyyy")
        return text[: i + 1] + text[i] * rng.randint(1, 3) + text[i + 1 :]
    if r < 0.75 and len(text) > 3:  # a dropped letter
        return text[:i] + text[i + 1 :]
    if r < 0.90 and i + 1 < len(text):  # two letters swapped
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    return text.upper() if len(text) < 30 and r < 0.94 else text.capitalize()


def stream(texts: list[str], n: int, seed: int | str) -> list[str]:
    """``n`` messages drawn from ``texts`` in a random order, each varied."""
    rng = random.Random(seed)
    return [vary(rng, rng.choice(texts)) for _ in range(n)]
