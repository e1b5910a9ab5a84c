"""Word tokens and set similarity, shared by topic deduplication, catalog search and the
near-duplicate check against MLGym's datasets."""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9]+")
_CAMEL = re.compile(r"([a-z])([A-Z])")

STOPWORDS = frozenset(
    "a an and as at by for from in into of on or the to with using via based its their over under "
    "task tasks dataset datasets data".split()
)

# Words that name the kind of task, not its subject: ignored when comparing topic titles, so that
# "Predicting wine quality" and "Wine quality prediction" are the same topic.
TASK_WORDS = frozenset(
    "predict predicting prediction predictive classify classifying classification estimate estimating "
    "estimation forecast forecasting detect detecting detection recognise recognize recognising "
    "recognizing recognition model modelling modeling learning analysis identification identifying "
    "approach method methods".split()
)


def _stem(word: str) -> str:
    """Plural ``s`` only: enough for ``cars``/``car`` and ``digits``/``digit``, never ``glass``."""
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def tokens(text: str, stopwords: frozenset[str] = STOPWORDS) -> set[str]:
    """Lower-case alphanumeric words of ``text`` (camelCase split, plural ``s`` removed), minus
    ``stopwords``."""
    text = _CAMEL.sub(r"\1 \2", text).lower()
    return {_stem(w) for w in _WORD.findall(text) if w not in stopwords}


def compact(text: str) -> str:
    """``"Fashion-MNIST_v2"`` -> ``"fashionmnistv2"``: separators and case removed."""
    return "".join(_WORD.findall(text.lower()))


def jaccard(a: set[str], b: set[str]) -> float:
    """|a & b| / |a | b|; 0.0 when both are empty."""
    if not a and not b:
        return 0.0
    return len(a & b) / len(a | b)
