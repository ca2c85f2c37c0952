"""The live rows of one Lance fragment, held in memory: their columns, their vectors as one
matrix, and what filters and lookups need, cached. Never changed once read (mirror.py keeps
them in step with the table)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from subcog.internals import offset_in_fragment
from subcog.storage.analysis import Holders, holders
from subcog.storage.schema import ROW_COLUMNS, Filter, micros

NONE = np.zeros(0, dtype=np.int64)
_NO_WINDOWS = np.zeros((0, 0), dtype=np.float32)


class Moved(Exception):
    """The table changed while a new version was being read: read the latest again."""


@dataclass(eq=False)
class Block:
    """The live rows of one Lance fragment. Never changed once read; filters are cached."""

    fragment: int
    offsets: npt.NDArray[np.int64]  # each row's place in the fragment's files, ascending
    rows: pa.Table  # ROW_COLUMNS
    vectors: npt.NDArray[np.float32]  # one unit-length row per memory
    created: npt.NDArray[np.int64]  # created_at, microseconds since the epoch
    # The later windows of long memories (see embedder.py), and the row each belongs to.
    windows: npt.NDArray[np.float32] = field(default_factory=lambda: _NO_WINDOWS, repr=False)
    window_rows: npt.NDArray[np.int64] = field(default_factory=lambda: NONE, repr=False)
    # How many rows hold each token of the full-text analysis; None until counted (see Mirror).
    holders: Holders | None = field(default=None, repr=False)
    _scopes: dict[str, npt.NDArray[np.bool_]] = field(default_factory=dict, repr=False)

    @classmethod
    def read(cls, table: Any, fragment: int, rowids: npt.NDArray[np.int64]) -> Block:
        """The rows with these row ids, all of one fragment, read from the table."""
        columns = [*ROW_COLUMNS, "vector", "chunks"]
        found = table.take_row_ids(rowids.tolist()).select(columns).with_row_id().to_arrow()
        if found.num_rows != len(rowids):
            raise Moved  # rows deleted, or a fragment compacted away, since the ids were read
        found = found.sort_by("_rowid")
        offsets = offset_in_fragment(found["_rowid"].to_numpy().astype(np.int64))
        return cls.of(found, fragment, offsets, copy=True)

    def counted(self) -> Block:
        """This block, with its tokens counted (the cost per row is in benchmarks/README.md,
        "Design figures behind the code")."""
        if self.holders is None:
            self.holders = holders(self.rows["content"].to_pylist())
        return self

    @classmethod
    def of(
        cls,
        table: pa.Table,
        fragment: int,
        offsets: npt.NDArray[np.int64] | None = None,
        copy: bool = False,
    ) -> Block:
        """The block of these rows. `copy` for a table Lance read: its columns hold on to
        far more memory than their rows need (benchmarks/README.md, "Where the time went"),
        so the block keeps copies instead. The vectors are always copied, chunk by chunk, into
        one array of their own."""
        column = table["vector"]
        vectors = np.empty((len(table), column.type.list_size), dtype=np.float32)
        start = 0
        for chunk in column.chunks:
            end = start + len(chunk)
            vectors[start:end] = chunk.flatten().to_numpy().reshape(len(chunk), -1)
            start = end
        created = table["created_at"].combine_chunks().cast(pa.int64()).to_numpy()
        rows = pa.table({name: table[name] for name in ROW_COLUMNS})  # one schema for all
        windows, window_rows = _windows(table["chunks"].combine_chunks(), vectors.shape[1])
        return cls(
            fragment,
            np.arange(len(table), dtype=np.int64) if offsets is None else offsets,
            rows.take(np.arange(len(rows))) if copy else rows,
            vectors,
            created,
            windows,
            window_rows,
        )

    def cosines(self, vector: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Each row's cosine similarity to `vector`: its best window's, for a long memory."""
        found: npt.NDArray[np.float32] = self.vectors @ vector
        if len(self.window_rows):
            np.maximum.at(found, self.window_rows, self.windows @ vector)
        return found

    def __len__(self) -> int:
        return len(self.created)

    @cached_property
    def ids(self) -> list[str]:
        ids: list[str] = self.rows["id"].to_pylist()
        return ids

    @cached_property
    def scopes(self) -> list[str]:
        """Each row's scope; one str object per distinct scope, not one per row."""
        interned: dict[str, str] = {}
        return [interned.setdefault(scope, scope) for scope in self.rows["scope"].to_pylist()]

    def find(self, key: tuple[str, ...]) -> dict[str, Any] | None:
        """The row with the key ("id", id) or ("text", scope, content_hash), if here."""
        hashes, order, columns = self._by_id if key[0] == "id" else self._by_text
        wanted = hash(key[1:])
        start = np.searchsorted(hashes, wanted, side="left")
        end = np.searchsorted(hashes, wanted, side="right")
        for i in order[start:end].tolist():  # more than one if hashes collide
            row: dict[str, Any] = self.rows.slice(i, 1).to_pylist()[0]
            if tuple(row[name] for name in columns) == key[1:]:
                return row
        return None

    def position(self, memory_id: str) -> int:
        """The row with this id, if here; -1 if not."""
        hashes, order, _ = self._by_id
        wanted = hash((memory_id,))
        start = np.searchsorted(hashes, wanted, side="left")
        end = np.searchsorted(hashes, wanted, side="right")
        for i in order[start:end].tolist():
            if self.ids[i] == memory_id:
                return int(i)
        return -1

    @cached_property
    def _by_id(self) -> _Keys:
        return _keys(zip(self.ids, strict=True), ("id",))

    @cached_property
    def _by_text(self) -> _Keys:
        digests = self.rows["content_hash"].to_pylist()
        return _keys(zip(self.scopes, digests, strict=True), ("scope", "content_hash"))

    def mask(self, where: Filter) -> npt.NDArray[np.bool_] | None:
        """Which rows pass the filter; None when every row does."""
        scope, tags, since, until = where.scope, where.tags, where.since, where.until
        keep: npt.NDArray[np.bool_] | None = None
        if scope is not None:
            if scope not in self._scopes:
                self._scopes[scope] = pc.equal(self.rows["scope"], scope).to_numpy(
                    zero_copy_only=False
                )
            keep = self._scopes[scope]
        if tags:
            column = self.rows["tags"].combine_chunks()
            values = pc.list_flatten(column)
            parents = pc.list_parent_indices(column).to_numpy()
            for tag in tags:
                has = np.zeros(len(self), dtype=bool)
                has[parents[pc.equal(values, tag).to_numpy(zero_copy_only=False)]] = True
                keep = has if keep is None else keep & has
        if since is not None:
            after = self.created >= micros(since)
            keep = after if keep is None else keep & after
        if until is not None:
            before = self.created <= micros(until)
            keep = before if keep is None else keep & before
        return keep


def _windows(
    column: pa.ListArray, dimension: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """The window vectors of a `chunks` column (a list of vectors per row; null or empty for
    most rows) as one matrix, copied out of Arrow, and the row of each."""
    counts = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
    if not counts.any():
        return _NO_WINDOWS, NONE
    values = pc.list_flatten(column)
    matrix = np.empty((len(values), dimension), dtype=np.float32)
    matrix[:] = values.flatten().to_numpy(zero_copy_only=False).reshape(len(values), dimension)
    return matrix, np.repeat(np.arange(len(counts), dtype=np.int64), counts)


# Keys of a block's rows, as their Python hashes sorted, the row of each, and the columns they
# are made of. A lookup is a binary search, verified on the row: two int64 a row for each kind,
# a small part of what a dict of the keys took (benchmarks/README.md, "Design figures behind the
# code").
_Keys = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], tuple[str, ...]]


def _keys(keys: Iterable[tuple[str, ...]], columns: tuple[str, ...]) -> _Keys:
    hashes = np.fromiter(map(hash, keys), dtype=np.int64)
    order = np.argsort(hashes, kind="stable")
    return hashes[order], order, columns
