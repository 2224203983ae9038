"""Text to index terms: the one tokenizer every index uses (sans-IO).

Words are runs of letters and digits (`\\w+`), case-folded; common English
function words are dropped; what is left goes through a light suffix
stemmer, so "gardens", "gardening" and "gardened" meet at "garden". The
pure-Python index and the FTS5 index both store these terms (FTS5 is fed the
terms joined by spaces), so the two rank alike.

The stemmer is deliberately light (plurals, -ing, -ed, -ly, a few
derivational endings): it never cuts a word to fewer than three letters and
never touches short words, so "cat" never matches "category".
"""

from __future__ import annotations

import re

__all__ = ["STOPWORDS", "stem", "terms", "tokenize"]

_WORD = re.compile(r"\w+")

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself
    yourselves""".split()  # noqa: SIM905 - a word list reads better as text
)

# (suffix, replacement, shortest stem to leave): the first rule that applies wins.
_RULES: tuple[tuple[str, str, int], ...] = (
    ("ational", "ate", 3),
    ("ization", "ize", 3),
    ("fulness", "ful", 3),
    ("iveness", "ive", 3),
    ("ousness", "ous", 3),
    ("iness", "y", 3),
    ("ements", "", 4),
    ("ement", "", 4),
    ("ments", "", 4),
    ("ment", "", 4),
    ("ness", "", 3),
    ("ities", "", 3),
    ("ity", "", 3),
    ("ations", "ate", 3),
    ("ation", "ate", 3),
    ("ingly", "", 3),
    ("edly", "", 3),
    ("ings", "", 3),
    ("ing", "", 3),
    ("ies", "y", 2),
    ("ied", "y", 2),
    ("ed", "", 3),
    ("ly", "", 5),
    ("ers", "", 3),
    ("er", "", 3),
    ("es", "", 3),
    ("s", "", 3),
)
_UNDOUBLE = frozenset({"ing", "ings", "ed", "er", "ers"})
_DOUBLED = re.compile(r"([bdfgmnprt])\1$")


def stem(word: str) -> str:
    """A light English stem of a case-folded word (see the module docstring)."""
    if len(word) <= 3 or not word.isalpha() or word.endswith(("ss", "us", "is")):
        return word
    for suffix, replacement, keep in _RULES:
        if word.endswith(suffix) and len(word) - len(suffix) >= keep:
            word = word[: len(word) - len(suffix)] + replacement
            if suffix in _UNDOUBLE and _DOUBLED.search(word):
                word = word[:-1]  # running -> runn -> run
            break
    # "note", "notes", "noted" all end as "not": a final e is dropped everywhere.
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """Every word of `text`, case-folded, in order (no stopword removal, no stemming)."""
    return _WORD.findall(text.casefold())


def terms(text: str) -> list[str]:
    """The index terms of `text`, in order and with repeats (term frequency counts)."""
    return [stem(w) for w in tokenize(text) if w not in STOPWORDS]
