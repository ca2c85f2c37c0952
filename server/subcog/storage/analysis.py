"""How the full-text index reads text: one analysis for the index and for every query.

English words, folded to ASCII, lowercased and stemmed, stop words removed (LanceDB's own
analyzer: lancedb.index.FTS and lancedb.tokenize take the same options). Identifiers split at
punctuation (ERR-4711 is "err" and "4711"), so they still match word for word.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypedDict


class Analysis(TypedDict):
    base_tokenizer: str
    language: str
    lower_case: bool
    stem: bool
    remove_stop_words: bool
    ascii_folding: bool
    max_token_length: int


WORDS: Analysis = {
    "base_tokenizer": "simple",
    "language": "English",
    "lower_case": True,
    "stem": True,
    "remove_stop_words": True,
    "ascii_folding": True,
    "max_token_length": 40,
}


def tokens(text: str) -> list[str]:
    """The text's tokens as the index holds them, in order, repeats kept."""
    import lancedb

    return [token.text for token in lancedb.tokenize(text, **WORDS)]


@dataclass
class Holders:
    """Which texts hold each token: as many as BM25's scoring needs to know."""

    texts: int = 0
    length: int = 0  # tokens in all the texts together
    count: Counter[str] = field(default_factory=Counter)  # texts holding each token
    shortest: dict[str, int] = field(default_factory=dict)  # the shortest such text's length

    def add(self, other: Holders) -> None:
        self.texts += other.texts
        self.length += other.length
        self.count.update(other.count)
        for token, length in other.shortest.items():
            self.shortest[token] = min(length, self.shortest.get(token, length))


def holders(texts: Iterable[str]) -> Holders:
    """Count, for each token, the texts that hold it and the shortest of them."""
    found = Holders()
    for text in texts:
        words = tokens(text)
        found.texts += 1
        found.length += len(words)
        for token in set(words):
            found.count[token] += 1
            if len(words) < found.shortest.get(token, len(words) + 1):
                found.shortest[token] = len(words)
    return found
