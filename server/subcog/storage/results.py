"""What a search finds: rows, best first, with their vectors and scores.

Ranking needs every found row's id, scope, date and vector at once, and the rest of a row only
for the few a recall returns. `Results` is that interface; `Found` holds rows LanceDB read,
`Hits` points into the rows held in memory (blocks.py), so a search of the mirror copies no
row it does not return.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from subcog.storage.blocks import NONE, Block
from subcog.storage.schema import MEMORY_COLUMNS


class Results(Protocol):
    """Rows found by a search, best first."""

    @property
    def vectors(self) -> npt.NDArray[np.float32]: ...
    @property
    def scores(self) -> npt.NDArray[np.float64]: ...

    def __len__(self) -> int: ...
    def ids(self) -> list[str]: ...
    def scopes(self) -> list[str]: ...
    def created(self) -> list[int]:
        """created_at, in microseconds since the epoch."""
        ...

    def cosines(self, vector: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Each row's cosine similarity to `vector`: its best window's, for a long memory."""
        ...

    def row(self, index: int) -> dict[str, Any]: ...
    def rows(self) -> list[dict[str, Any]]: ...
    def rows_at(self, indices: Sequence[int]) -> list[dict[str, Any]]: ...
    def in_scope(self, scope: str) -> Results:
        """The rows in this scope, in the same order."""
        ...


@dataclass(frozen=True)
class Reference:
    """A query's lexical reference (lexical.py)."""

    total: float
    unseen: frozenset[str]  # the query's words (split at whitespace) that no memory holds


@dataclass
class Searched:
    """What a recall's searches found, for ranking."""

    vector: npt.NDArray[np.float32]  # the query's
    lexical: Results  # the best by BM25, with their scores
    semantic: Results  # the best by cosine similarity, with their cosines
    reference: Reference


@dataclass
class Found:
    """Rows LanceDB found: their columns, their vectors as one matrix, and their scores."""

    table: pa.Table  # MEMORY_COLUMNS
    vectors: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float64]
    windows: list[npt.NDArray[np.float32] | None] = field(default_factory=list)

    @classmethod
    def of(cls, table: pa.Table, scores: npt.NDArray[Any] | None) -> Found:
        """From a table with MEMORY_COLUMNS, the vectors and the chunks; no scores yet when
        None."""
        column = table["vector"].combine_chunks()
        dimension = column.type.list_size
        vectors = column.flatten().to_numpy().reshape(len(table), dimension)
        windows: list[npt.NDArray[np.float32] | None] = [
            None if not chunks else np.asarray(chunks, dtype=np.float32)
            for chunks in table["chunks"].to_pylist()
        ]
        return cls(
            table.select(MEMORY_COLUMNS),
            vectors.astype(np.float32, copy=False),
            np.zeros(len(table)) if scores is None else scores.astype(np.float64),
            windows,
        )

    def cosines(self, vector: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Each row's cosine similarity to `vector`: its best window's, for a long memory."""
        found: npt.NDArray[np.float32] = self.vectors @ vector
        for i, windows in enumerate(self.windows):
            if windows is not None:
                found[i] = max(found[i], float((windows @ vector).max()))
        return found

    def take(self, order: npt.NDArray[np.int64], scores: npt.NDArray[np.float64]) -> Found:
        """These rows, in this order, with these scores."""
        windows = [self.windows[i] for i in order.tolist()] if self.windows else []
        return Found(self.table.take(order), self.vectors[order], scores, windows)

    def __len__(self) -> int:
        return len(self.scores)

    def in_scope(self, scope: str) -> Found:
        keep = np.flatnonzero(pc.equal(self.table["scope"], scope).to_numpy(zero_copy_only=False))
        return self.take(keep, self.scores[keep])

    def ids(self) -> list[str]:
        ids: list[str] = self.table["id"].to_pylist()
        return ids

    def scopes(self) -> list[str]:
        scopes: list[str] = self.table["scope"].to_pylist()
        return scopes

    def created(self) -> list[int]:
        """created_at, in microseconds since the epoch."""
        created: list[int] = self.table["created_at"].cast(pa.int64()).to_pylist()
        return created

    def row(self, index: int) -> dict[str, Any]:
        row: dict[str, Any] = self.table.slice(index, 1).to_pylist()[0]
        return row

    def rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.table.to_pylist()
        return rows

    def rows_at(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.table.take(np.asarray(indices, np.int64)).to_pylist()
        return rows


@dataclass(frozen=True)
class Hits:
    """Rows a search of the in-memory copy found: places in its blocks, and what ranking needs
    of every one, copied out."""

    blocks: tuple[Block, ...]
    which: npt.NDArray[np.int64]  # the block of each
    local: npt.NDArray[np.int64]  # its row in the block
    found_ids: list[str]
    found_scopes: list[str]
    found_created: npt.NDArray[np.int64]  # microseconds since the epoch
    vectors: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls, dimension: int) -> Hits:
        vectors = np.zeros((0, dimension), np.float32)
        return cls((), NONE, NONE, [], [], NONE, vectors, np.zeros(0))

    def ids(self) -> list[str]:
        return self.found_ids

    def scopes(self) -> list[str]:
        return self.found_scopes

    def created(self) -> list[int]:
        created: list[int] = self.found_created.tolist()
        return created

    def cosines(self, vector: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Each hit's cosine similarity to `vector`: its best window's, for a long memory."""
        found: npt.NDArray[np.float32] = self.vectors @ vector
        for index in np.unique(self.which).tolist():
            block = self.blocks[index]
            if not len(block.window_rows):
                continue
            best = np.full(len(block), -np.inf, dtype=np.float32)
            np.maximum.at(best, block.window_rows, block.windows @ vector)
            mine = self.which == index
            found[mine] = np.maximum(found[mine], best[self.local[mine]])
        return found

    def row(self, i: int) -> dict[str, Any]:
        block = self.blocks[int(self.which[i])]
        found = block.rows.slice(int(self.local[i]), 1).select(MEMORY_COLUMNS)
        row: dict[str, Any] = found.to_pylist()[0]
        return row

    def rows(self) -> list[dict[str, Any]]:
        return self.rows_at(list(range(len(self))))

    def rows_at(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """The rows of these hits, in this order: one read per block."""
        found: list[dict[str, Any]] = [{} for _ in indices]
        places = np.asarray(indices, dtype=np.int64)
        for index in np.unique(self.which[places]).tolist():
            mine = np.flatnonzero(self.which[places] == index)
            local = self.local[places[mine]]
            rows = self.blocks[index].rows.take(local).select(MEMORY_COLUMNS).to_pylist()
            for at, row in zip(mine.tolist(), rows, strict=True):
                found[at] = row
        return found

    def in_scope(self, scope: str) -> Hits:
        """The hits in this scope, in the same order."""
        picked = [i for i, mine in enumerate(self.found_scopes) if mine == scope]
        return Hits(
            self.blocks,
            self.which[picked],
            self.local[picked],
            [self.found_ids[i] for i in picked],
            [self.found_scopes[i] for i in picked],
            self.found_created[picked],
            self.vectors[picked],
            self.scores[picked],
        )
