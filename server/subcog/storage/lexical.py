"""A query's lexical reference: what BM25 would give a memory that matched all of the query's
information. A memory's BM25 over it is the share of the query's information the memory
matches (ranking.py): one common shared word earns little, an identifier or every content word
earns nearly all.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from subcog.storage.analysis import BM25_B, BM25_K1, idf, tokens
from subcog.storage.damage import UNREADABLE
from subcog.storage.limits import Limits
from subcog.storage.results import Reference
from subcog.storage.search import Search

# One occurrence of a token earns at most (K1 + 1) times its idf: a token no memory holds is
# weighed at that bound.
BM25_MOST_PER_IDF = BM25_K1 + 1
# The simple tokenizer splits at whatever is not a letter or digit, so each such piece of a
# word is one token or none (a stop word).
_PIECE = re.compile(r"[^\W_]+")


class Lexical:
    """Computes references, remembering each token's best score where it must ask the index."""

    def __init__(self, limits: Limits, index_failed: Callable[[BaseException], None]) -> None:
        self._limits = limits
        self._index_failed = index_failed  # the full-text index failed a search (damage.py)
        # token: (its best BM25, the version and row count it was read at); see _best_score
        self._best: dict[str, tuple[float, int, int]] = {}

    def reference(self, text: str, search: Search) -> Reference:
        """The sum, over the query's tokens (as the index analyses them; a repeated token
        counts again, as in BM25), of what the token earns in the shortest memory that holds
        it; a token that no memory holds counts at the most one occurrence of it could score
        (BM25_MOST_PER_IDF times its idf)."""
        rows = search.rows()
        words: list[tuple[str, list[tuple[str, str]]]] = []
        for word in text.split():
            pieces = [(piece, tokens(piece)) for piece in _PIECE.findall(word)]
            words.append((word, [(piece, kept[0]) for piece, kept in pieces if kept]))
        held = search.holders(token for _, pieces_of in words for _, token in pieces_of)
        total = 0.0
        missing: set[str] = set()
        for word, pieces_of in words:
            for piece, token in pieces_of:
                if held is None:  # the piece as written: the search stems it once
                    best = self._best_score(search, rows, piece)
                elif held.count[token]:
                    average = held.length / max(1, held.texts)
                    weight = (BM25_K1 + 1) / (
                        1 + BM25_K1 * (1 - BM25_B + BM25_B * held.shortest[token] / average)
                    )
                    best = weight * idf(rows, held.count[token])
                else:
                    best = 0.0
                total += best or BM25_MOST_PER_IDF * idf(rows, 0)
                if not best:
                    missing.add(word)
        return Reference(total, frozenset(missing))

    def _best_score(self, search: Search, rows: int, piece: str) -> float:
        """The best BM25 any memory gets for this one piece of a word (one token); 0 if none
        holds it.

        One search of the full-text index per token (benchmarks/README.md, "Design figures behind
        the code"), so the answers are kept: a token some memory holds keeps its best score while
        the store stays within Limits.best_score_drift of its size then (the score drifts little
        with it); that no memory holds a token is asked again at every new version, since the next
        memory may hold it. Rows not yet folded into the index are not searched here (each search
        would read them whole): until upkeep folds them, their words count as unseen."""
        version = search.snapshot.version
        kept = self._best.get(piece)
        if kept is not None:
            best, then_version, then_rows = kept
            drift = self._limits.best_score_drift * then_rows
            if then_version == version or (best > 0 and abs(rows - then_rows) <= drift):
                return best
        try:  # the index only: rows not yet folded into it would be read whole
            found = search.snapshot.full_text.search(piece, ["_score"], None, 1, fast=True)
        except UNREADABLE as error:
            self._index_failed(error)
            return 0.0
        best = float(found["_score"][0].as_py()) if found.num_rows else 0.0
        if len(self._best) >= self._limits.best_scores_kept:
            self._best.clear()
        self._best[piece] = (best, version, rows)
        return best
