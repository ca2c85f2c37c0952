"""How recall ranks: every weight and threshold of the hybrid search lives here.

Candidates come from two searches over the same filtered rows: BM25 full-text search and
exact cosine vector search, each DEPTH deep. Each candidate's relevance, from 0 to 1:

1. ``f = W_BM25 * bm25 / best_bm25 + (1 - W_BM25) * clip(cosine, 0, 1)``: exact words
   (names, numbers, identifiers such as ERR-4711) and meaning both count, on scales that do not
   depend on the query or the store.
2. Context: memories stored one after another in a scope often belong together (a question and
   its answer, "I loved it" after the book it is about). Among the candidates, the better ``f``
   of the neighbours stored just before and just after, within NEIGHBOUR_GAP, adds
   ``BETA * f_neighbour``; the sum is divided by ``1 + BETA`` to stay in 0..1.
3. The relevance floor: the answer's confidence is the top score blended with how many of the
   query's content words the top memories contain. Under FLOOR nothing is returned; results
   under MEMBER_FLOOR are dropped from longer lists.
4. Diversity: a candidate whose vector is within NEAR_DUPLICATE_COSINE of a better result is
   left out, so near-identical memories do not crowd the list.

Tuned on the LoCoMo dev split (benchmarks/locomo.py), with leave-one-conversation-out checks:
W_BM25 0.3-0.45 and BETA 0.25-0.4 all give recall@10 0.79-0.81.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy stays out of the server's start-up
    import numpy as np
    import numpy.typing as npt

DEPTH = 100
W_BM25 = 0.35
BETA = 0.3
NEIGHBOUR_GAP = timedelta(minutes=30)
FLOOR = 0.36
COVERAGE_WEIGHT = 0.5
COVERAGE_TOP = 3
MEMBER_FLOOR = 0.30
NEAR_DUPLICATE_COSINE = 0.95

MEANING = (
    "score is relevance from 0 to 1, comparable across queries: about 0.6 and up is a strong "
    "match, 0.4 to 0.6 related; weaker matches are not returned."
)
NOTHING_FOUND = "Nothing relevant is remembered for this query."


@dataclass
class Candidate:
    """One memory found by either search."""

    id: str
    scope: str
    created: int  # microseconds since the epoch
    vector: npt.NDArray[np.float32]  # unit length
    cosine: float
    load: Callable[[], dict[str, Any]]  # its stored columns, read only if needed
    bm25: float = 0.0  # 0 when full-text search did not find it
    score: float = field(default=0.0)

    @cached_property
    def row(self) -> dict[str, Any]:
        return self.load()


@dataclass
class Ranking:
    results: list[Candidate]
    confidence: float


def rank(candidates: Sequence[Candidate], query: str, limit: int, diverse: bool = True) -> Ranking:
    """Score, smooth, gate and (if `diverse`) diversify the candidates; best first, at most
    `limit`."""
    if not candidates:
        return Ranking([], 0.0)
    best_bm25 = max(c.bm25 for c in candidates)
    for c in candidates:
        lexical = c.bm25 / best_bm25 if best_bm25 > 0 else 0.0
        c.score = W_BM25 * lexical + (1 - W_BM25) * min(1.0, max(0.0, c.cosine))
    _add_context(candidates)
    ordered = sorted(candidates, key=lambda c: c.score, reverse=True)
    top_texts = [c.row["content"] for c in ordered[:COVERAGE_TOP]]
    confidence = (ordered[0].score + COVERAGE_WEIGHT * coverage(query, top_texts)) / (
        1 + COVERAGE_WEIGHT
    )
    if confidence < FLOOR:
        return Ranking([], confidence)
    chosen: list[Candidate] = []
    for c in ordered:
        if len(chosen) == limit or (chosen and c.score < MEMBER_FLOOR):
            break
        if diverse and any(
            float(c.vector @ kept.vector) >= NEAR_DUPLICATE_COSINE for kept in chosen
        ):
            continue
        chosen.append(c)
    return Ranking(chosen, confidence)


def _add_context(candidates: Sequence[Candidate]) -> None:
    gap = NEIGHBOUR_GAP // timedelta(microseconds=1)
    order = sorted(candidates, key=lambda c: (c.scope, c.created))
    own = [c.score for c in order]
    for i, c in enumerate(order):
        neighbour = 0.0
        for j in (i - 1, i + 1):
            if 0 <= j < len(order):
                other = order[j]
                if other.scope == c.scope and abs(other.created - c.created) <= gap:
                    neighbour = max(neighbour, own[j])
        c.score = (own[i] + BETA * neighbour) / (1 + BETA)


STOP_WORDS = frozenset(
    """a an and are as at be but by for if in into is it no not of on or such that the their
    then there these they this to was will with i me my myself we our ours ourselves you your
    yours yourself yourselves he him his himself she her hers herself its itself them theirs
    themselves what which who whom whose when where why how all any both each few more most
    other some own same so than too very s t can just don should now am been being have has had
    having do does did doing would could might must shall may about against between through
    during before after above below from up down out off over under again further once here
    only nor also ever""".split()
)
_WORD = re.compile(r"[a-z0-9]+")


def content_words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS and len(w) > 1]


def _matches(word: str, words: set[str]) -> bool:
    """Exact, or sharing a stem-like prefix for longer words (paint, painted, painting)."""
    if word in words:
        return True
    if len(word) < 5:
        return False
    stem = word[: max(5, len(word) - 2)]
    return any(len(other) >= 5 and other[: len(stem)] == stem for other in words)


def coverage(query: str, texts: Sequence[str]) -> float:
    """The largest share of the query's content words found in one of the texts."""
    wanted = content_words(query)
    if not wanted:
        return 0.0
    best = 0.0
    for text in texts:
        words = set(content_words(text))
        best = max(best, sum(_matches(w, words) for w in wanted) / len(wanted))
    return best
