"""How the full-text index reads text: one analysis for the index and for every query.

English words, folded to ASCII, lowercased and stemmed, stop words removed (LanceDB's own
analyzer: lancedb.index.FTS and lancedb.tokenize take the same options). Identifiers split at
punctuation (ERR-4711 is "err" and "4711"), so they still match word for word.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np
import numpy.typing as npt


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


# Lance's BM25 (lance-index, scalar/inverted/scorer.rs): K1 = 1.2 and B = 0.75, so one
# occurrence of a token earns at most (K1 + 1) times its idf.
BM25_K1, BM25_B = 1.2, 0.75


def idf(rows: int, holders: int) -> float:
    """Lance's BM25 idf of a token that `holders` of `rows` texts hold."""
    return math.log(1 + (rows - holders + 0.5) / (holders + 0.5))


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
    # BM25's postings: token: (the texts holding it, in order, and how often each does), and
    # each text's length in tokens (search.InMemory scores BM25 from them)
    postings: dict[str, tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]] = field(
        default_factory=dict
    )
    lengths: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))


def holders(texts: Iterable[str]) -> Holders:
    """Count, for each token, the texts that hold it (how often each) and the shortest of
    them."""
    found = Holders()
    postings: dict[str, tuple[list[int], list[int]]] = {}
    lengths: list[int] = []
    for i, text in enumerate(texts):
        words = tokens(text)
        found.texts += 1
        found.length += len(words)
        lengths.append(len(words))
        for token, times in Counter(words).items():
            found.count[token] += 1
            if len(words) < found.shortest.get(token, len(words) + 1):
                found.shortest[token] = len(words)
            rows, counts = postings.setdefault(token, ([], []))
            rows.append(i)
            counts.append(times)
    found.postings = {
        token: (np.asarray(rows, np.int32), np.asarray(counts, np.int32))
        for token, (rows, counts) in postings.items()
    }
    found.lengths = np.asarray(lengths, np.int32)
    return found
