"""How recall ranks: every weight and threshold of the hybrid search lives here.

Candidates come from two searches over the same filtered rows: BM25 full-text search and exact
cosine vector search (a long memory by its best window), each `depth` deep. For each candidate:

1. Lexical share ``L``: its BM25 over the query's lexical reference (Store.lexical_reference),
   the share of the query's information it matches. A word no memory holds counts as unmatched
   information, so one common shared word earns little and an identifier earns nearly all.
2. ``s = cosine + lexical * L ** lexical_power``: meaning always counts; words count more the
   more of the query they cover, and a memory that holds the query's identifier exactly gets
   more than one that shares its parts.
3. Context: a candidate stored next to a stronger one (just before or after it in its scope,
   within neighbour_gap) gains ``context`` of the difference; a match is never lowered.
4. Newer wins: a memory very like one ranked above it (newer_cosine), stored in a later
   sitting (after neighbour_gap), is the changed fact: it moves above, with the older's score.
5. The floor: if no candidate has vector evidence (floor_cosine), a strong lexical match
   (floor_lexical) or the query's identifier as written, nothing is returned. Results with
   none of these (member_cosine) are left out.
6. Diversity: a candidate whose vector is within near_duplicate of a better result is left out.
7. The score shown is calibrated on the dev set: how often results like it answered the
   question (benchmarks/README.md, "How recall ranks").

The weights are a Weights dataclass (tests build their own). They were chosen on LoCoMo and the
everyday dev set together, and checked leave one out (benchmarks/tune.py; the figures are in
benchmarks/README.md, "How recall ranks").
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy stays out of the server's start-up
    import numpy as np
    import numpy.typing as npt


@dataclass(frozen=True)
class Weights:
    """Every weight and threshold of recall; tests build their own."""

    # Candidates per search: deep enough that an answer ranked low by one search but high by
    # the other is still seen (depth 50 against 100 lost 0.002 of LoCoMo R@10).
    depth: int = 100
    # Words against meaning. A memory matching all of the query's information gains 1.5 (as much
    # as cosine 1.5); one matching half of it, 0.53; a quarter, 0.19. Chosen on LoCoMo and the
    # everyday set together over a grid (benchmarks/tune.py), and by six of ten leave-one-out
    # folds; tuned on either set alone, the other lost (everyday MRR@5 0.862 -> 0.834, LoCoMo
    # R@10 0.804 -> 0.776).
    lexical: float = 1.5
    lexical_power: float = 1.5
    # A memory holding the query's identifier exactly (ERR-4711, v2.3.1) ranks above one that
    # merely shares its parts (ERR-4712, v2.1.3) whatever the model thinks of either: their
    # cosines differed by up to 0.45 (MiniLM reads "v2.1.3" as close to "v2.3.1").
    exact: float = 1.0
    # A query naming an identifier that no memory holds (ERR-9999 when ERR-4711 is stored)
    # asks for something not remembered: its closest memories keep their order, but their
    # score is this share, below what true answers score.
    absent: float = 0.5
    # Memories stored together often belong together (a question and its answer): one stored
    # next to a stronger match gains this share of the difference (LoCoMo R@10 0.765 -> 0.801),
    # never more than that match has. It does nothing to memories stored days apart.
    context: float = 0.5
    neighbour_gap: timedelta = timedelta(minutes=30)
    # A changed fact and its old version had cosine 0.70-0.84 on the dev set, and 0.48-0.90
    # (80% at 0.65 or more) on 20 pairs written apart from it; different facts on one topic
    # stayed under 0.55 but one.
    newer_cosine: float = 0.65
    # Below this cosine a best match is as likely unrelated as not: 55% of unrelated dev
    # questions are refused, 3% of answerable ones.
    floor_cosine: float = 0.28
    # A memory matching half of the query's information is evidence even when the model sees
    # none (an identifier such as PO-77310 has cosine 0 with its memory).
    floor_lexical: float = 0.5
    # Results with neither evidence are left out of a list: they are unrelated memories.
    member_cosine: float = 0.2
    # Memories at least this similar to a better result say the same; one is shown.
    near_duplicate: float = 0.95
    # The score shown: logit = a + b * ln(s) + c * ln(s / s_best) + d for the best result, a
    # logistic fit of whether each result answered its dev-set question (held out five ways,
    # the bands still held). How strong a match is, how far below the best it falls, and
    # whether it is the best all tell: a weak best match is right about half the time, the
    # same strength further down rarely.
    calibration: tuple[float, float, float, float] = (-0.08, 1.0, 3.2, 0.86)


WEIGHTS = Weights()
NEWER_WINDOW = 20  # newer-wins compares every pair among the best 20 (not a weight: a cost)

NOTHING_FOUND = "Nothing relevant is remembered for this query."
NOTHING_PASSES = "No memory passes these filters."
RELAXED = (
    "No memory matched the query closely; these are the closest of the memories that pass "
    "the filters."
)
MEANING = (
    "Relevance from 0 to 1: the share of results at this score that answered the question "
    "on subcog's dev set. 0.6 and up is a strong match, 0.4 to 0.6 related, below 0.4 weak."
)


@dataclass
class Candidate:
    """One memory found by either search."""

    id: str
    scope: str
    created: int  # microseconds since the epoch
    vector: npt.NDArray[np.float32]  # unit length
    cosine: float  # its best window's, for a long memory
    load: Callable[[], dict[str, Any]]  # its stored columns, read only if needed
    bm25: float = 0.0  # 0 when full-text search did not find it
    lexical: float = 0.0  # the share of the query's information it matches
    exact: bool = False  # it holds one of the query's identifiers as written
    score: float = field(default=0.0)  # s, before calibration
    relevance: float = field(default=0.0)  # the calibrated score shown
    origin: Any = None  # where the caller found it (ranking does not look)
    _row: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def row(self) -> dict[str, Any]:
        if self._row is None:
            self._row = self.load()
        return self._row

    def given(self, row: dict[str, Any]) -> None:
        """Its stored columns, read along with others'."""
        self._row = row


@dataclass
class Ranking:
    results: list[Candidate]  # each with its relevance
    evident: bool  # whether any candidate cleared the floor


def calibrated(score: float, best: float, first: bool, weights: Weights = WEIGHTS) -> float:
    """The score shown for a result of fused score `score` in a list whose best is `best`;
    `first` for the best result itself."""
    if score <= 0 or best <= 0:
        return 0.0
    a, b, c, d = weights.calibration
    logit = a + b * math.log(score) + c * math.log(min(1.0, score / best)) + (d if first else 0)
    return 1.0 / (1.0 + math.exp(-logit))


def rank(
    candidates: Sequence[Candidate],
    query: str,
    limit: int,
    reference: float,
    unseen: Collection[str] = (),
    diverse: bool = True,
    floor: bool = True,
    weights: Weights = WEIGHTS,
) -> Ranking:
    """Score, smooth, order and gate the candidates; best first, at most `limit`.

    `reference` and `unseen` are the query's lexical reference and the words of it that no
    memory holds (Store.lexical_reference). Without `floor`, every candidate may be returned
    (filters that leave only a few memories)."""
    if not candidates:
        return Ranking([], False)
    words = _identifiers(query)
    exact = [identifier for _, identifier in words]
    for c in candidates:
        c.lexical = min(1.0, c.bm25 / reference) if reference > 0 else 0.0
        c.score = max(0.0, c.cosine) + weights.lexical * c.lexical**weights.lexical_power
        c.exact = bool(exact) and c.bm25 > 0 and _holds(c.row["content"], exact)
        if c.exact:
            c.score += weights.exact
    held = any(c.exact for c in candidates)
    if not held and any(word in unseen for word, _ in words):  # asked about, nowhere held
        for c in candidates:
            c.score *= weights.absent
    _add_context(candidates, weights)
    ordered = _newer_first(sorted(candidates, key=lambda c: c.score, reverse=True), weights)
    evident = any(_evidence(c, weights) for c in ordered)
    if floor and not evident:
        return Ranking([], False)
    chosen: list[Candidate] = []
    for c in ordered:
        if len(chosen) == limit:
            break
        if floor and not (
            c.exact or c.cosine >= weights.member_cosine or c.lexical >= weights.floor_lexical
        ):
            continue
        if diverse and any(
            float(c.vector @ kept.vector) >= weights.near_duplicate for kept in chosen
        ):
            continue
        chosen.append(c)
    for i, c in enumerate(chosen):
        c.relevance = calibrated(c.score, chosen[0].score, i == 0, weights)
    return Ranking(chosen, evident)


def _evidence(c: Candidate, weights: Weights) -> bool:
    """Whether a candidate alone is reason to answer: the model sees it as related, it matches
    much of the query's information, or it holds the query's identifier as written."""
    return c.exact or c.cosine >= weights.floor_cosine or c.lexical >= weights.floor_lexical


def _add_context(candidates: Sequence[Candidate], weights: Weights) -> None:
    import numpy as np

    gap = weights.neighbour_gap // timedelta(microseconds=1)
    scope_ids: dict[str, int] = {}
    scopes = np.array([scope_ids.setdefault(c.scope, len(scope_ids)) for c in candidates])
    created = np.array([c.created for c in candidates], dtype=np.int64)
    order = np.lexsort((created, scopes))  # by scope, then time
    own = np.array([c.score for c in candidates])[order]
    at, scope = created[order], scopes[order]
    # together[k]: the k-th and (k+1)-th memories of that order were stored together
    together = (scope[1:] == scope[:-1]) & (at[1:] - at[:-1] <= gap)
    neighbour = np.zeros(len(own))
    neighbour[1:] = np.where(together, own[:-1], 0.0)
    neighbour[:-1] = np.maximum(neighbour[:-1], np.where(together, own[1:], 0.0))
    # A memory stored next to a stronger match gains part of the difference: never more than
    # that match has, and a match is never lowered for its weaker neighbours.
    smoothed = own + weights.context * np.maximum(0.0, neighbour - own)
    for k, i in enumerate(order.tolist()):
        candidates[i].score = float(smoothed[k])


def _newer_first(ordered: list[Candidate], weights: Weights) -> list[Candidate]:
    """Move each memory above an older one it closely resembles, in its scope, stored in an
    earlier sitting: the newer states the fact as it is now. It takes the older one's score,
    so scores still fall down the list."""
    import numpy as np

    window = ordered[:NEWER_WINDOW]
    if len(window) < 2:
        return ordered
    gap = weights.neighbour_gap // timedelta(microseconds=1)
    similar = np.stack([c.vector for c in window])
    similar = similar @ similar.T >= weights.newer_cosine
    created = np.array([c.created for c in window])
    scopes = [c.scope for c in window]
    # supersedes[i, j]: the memory at j (by its place in `window`) is a newer version of i's
    later = (created[None, :] - created[:, None]) > gap
    supersedes = similar & later & np.array([[a == b for b in scopes] for a in scopes])
    if not supersedes.any():
        return ordered
    order = list(range(len(window)))
    moved = True
    while moved:
        moved = False
        for i, older in enumerate(order):
            newer = next((j for j in order[i + 1 :] if supersedes[older, j]), None)
            if newer is not None:
                window[newer].score = max(window[newer].score, window[older].score)
                order.remove(newer)
                order.insert(i, newer)
                moved = True
                break
    return [window[i] for i in order] + ordered[len(window) :]


# A query's identifiers: words mixing digits with letters or signs (ERR-4711, v2.3.1, E1042,
# 192.168.50.10), or joining letters with - _ . / : # @ (pocket-ios, /etc/acme/prod.yaml).
# A bare number is not one: "12" may be a date, a count or a price. Trailing sentence
# punctuation is not part of an identifier.
_WORD = re.compile(r"\S+")
_IDENTIFIER = re.compile(r"(?=.*\d)(?=.*\D)|.*\w[-_./:#@]\w")


def _identifiers(query: str) -> list[tuple[str, str]]:
    """The query's identifiers: each as the word it came from, and as matched (casefolded)."""
    found = []
    for word in _WORD.findall(query):
        bare = word.strip("\"'()[]{}<>,;!?").rstrip(".:")
        if len(bare) > 1 and _IDENTIFIER.match(bare):
            found.append((word, bare.casefold()))
    return found


def _holds(content: str, identifiers: Sequence[str]) -> bool:
    """Whether the content holds one of the identifiers as a whole, not inside a longer one."""
    text = content.casefold()
    for identifier in identifiers:
        start = text.find(identifier)
        while start >= 0:
            end = start + len(identifier)
            before = text[start - 1] if start else " "
            after = text[end] if end < len(text) else " "
            if not before.isalnum() and not after.isalnum():
                return True
            start = text.find(identifier, start + 1)
    return False
