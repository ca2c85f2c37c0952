"""The live rows of one Lance fragment, held in memory: their columns, their vectors as one
matrix, and what filters and lookups need, cached. Never changed once read (mirror.py keeps
them in step with the table)."""

from __future__ import annotations

import os
import tempfile
import threading
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from subcog.internals import offset_in_fragment
from subcog.storage.analysis import Holders, holders
from subcog.storage.schema import ROW_COLUMNS, Filter, micros

NONE = np.zeros(0, dtype=np.int64)
_NO_WINDOWS = np.zeros((0, 0), dtype=np.float32)
_NO_ROWS = np.zeros(0, dtype=bool)
_SCAN_ROWS = 512  # int8 rows converted to float32 at a time, in a buffer that stays in cache
_READ_ROWS = 1024  # rows a block reads from Lance at a time (Block.read)
_scan = threading.local()
_SEEK = threading.Lock()  # where os.pread is missing (Windows): one seek and read at a time


class Moved(Exception):
    """The table changed while a new version was being read: read the latest again."""


@dataclass(eq=False)
class Block:
    """The live rows of one Lance fragment. Never changed once read; filters are cached."""

    fragment: int
    offsets: npt.NDArray[np.int64]  # each row's place in the fragment's files, ascending
    rows: pa.Table  # ROW_COLUMNS
    # One unit-length row per memory: float32, or int8 times `scale` (each row's largest
    # component / 127) with the exact float32 rows in `exact_file` (see `_held`).
    vectors: npt.NDArray[Any]
    created: npt.NDArray[np.int64]  # created_at, microseconds since the epoch
    # The later windows of long memories (see embedder.py), and the row each belongs to.
    windows: npt.NDArray[np.float32] = field(default_factory=lambda: _NO_WINDOWS, repr=False)
    window_rows: npt.NDArray[np.int64] = field(default_factory=lambda: NONE, repr=False)
    # How many rows hold each token of the full-text analysis; None until counted (see Mirror).
    holders: Holders | None = field(default=None, repr=False)
    # Rows whose windows were never embedded (`chunks` is null): stored by an earlier subcog.
    unwindowed: npt.NDArray[np.bool_] = field(default_factory=lambda: _NO_ROWS, repr=False)
    scale: npt.NDArray[np.float32] | None = field(default=None, repr=False)
    exact_file: IO[bytes] | None = field(default=None, repr=False)
    _scopes: dict[str, npt.NDArray[np.bool_]] = field(default_factory=dict, repr=False)

    @classmethod
    def read(
        cls, table: Any, fragment: int, rowids: npt.NDArray[np.int64], spill: Path | None = None
    ) -> Block:
        """The rows with these row ids (ascending, at least one), all of one fragment, read
        from the table _READ_ROWS at a time, so that what Lance returns is never much more than
        a part of the block; with `spill`, their vectors are kept as int8 and their exact
        values in a file there (see `_held`)."""
        columns = [*ROW_COLUMNS, "vector", "chunks"]
        read: list[pa.Table] = []

        def parts() -> Iterator[npt.NDArray[np.float32]]:
            for at in range(0, len(rowids), _READ_ROWS):
                wanted = rowids[at : at + _READ_ROWS].tolist()
                found = table.take_row_ids(wanted).select(columns).with_row_id().to_arrow()
                if found.num_rows != len(wanted):
                    raise Moved  # rows deleted, or a fragment compacted away, since then
                found = found.sort_by("_rowid")
                read.append(found.drop_columns(["vector"]))
                yield from _parts(found["vector"])

        dimension = table.schema.field("vector").type.list_size
        vectors, scale, exact_file = _held(parts(), (len(rowids), dimension), spill)
        rest = pa.concat_tables(read)
        offsets = offset_in_fragment(rest["_rowid"].to_numpy().astype(np.int64))
        return cls._made(rest, fragment, offsets, vectors, scale, exact_file)

    def counted(self) -> Block:
        """This block, with its tokens counted (the cost per row is in benchmarks/README.md,
        "Design figures behind the code")."""
        if self.holders is None:
            self.holders = holders(self.rows["content"].to_pylist())
        return self

    @classmethod
    def of(cls, table: pa.Table, fragment: int) -> Block:
        """The block of these rows (our own add: they were never read, so never copied)."""
        size = (len(table), table["vector"].type.list_size)
        vectors, scale, exact_file = _held(_parts(table["vector"]), size, None)
        offsets = np.arange(len(table), dtype=np.int64)
        return cls._made(table, fragment, offsets, vectors, scale, exact_file, copy=False)

    @classmethod
    def _made(
        cls,
        table: pa.Table,
        fragment: int,
        offsets: npt.NDArray[np.int64],
        vectors: npt.NDArray[Any],
        scale: npt.NDArray[np.float32] | None,
        exact_file: IO[bytes] | None,
        copy: bool = True,
    ) -> Block:
        """The block of these rows and their vectors. `copy` for a table Lance read: its
        columns hold on to far more memory than their rows need (benchmarks/README.md, "Where
        the time went"), so the block keeps copies instead."""
        created = table["created_at"].combine_chunks().cast(pa.int64()).to_numpy()
        rows = pa.table({name: table[name] for name in ROW_COLUMNS})  # one schema for all
        chunks = table["chunks"].combine_chunks()
        windows, window_rows = _windows(chunks, vectors.shape[1])
        unwindowed = pc.is_null(chunks).to_numpy(zero_copy_only=False)
        block = cls(
            fragment,
            offsets,
            rows.take(np.arange(len(rows))) if copy else rows,
            vectors,
            created,
            windows,
            window_rows,
            unwindowed=unwindowed if unwindowed.any() else _NO_ROWS,
            scale=scale,
            exact_file=exact_file,
        )
        if exact_file is not None:
            weakref.finalize(block, exact_file.close)  # its space is freed with the block
        return block

    def cosines(self, vector: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Each row's cosine similarity to `vector`: its best window's, for a long memory.
        Of int8 rows, within `error(vector)` of the exact one."""
        if self.scale is None:
            found: npt.NDArray[np.float32] = self.vectors @ vector
        else:
            found = np.empty(len(self), dtype=np.float32)
            buffer = getattr(_scan, "buffer", None)
            if buffer is None or buffer.shape[1] != self.vectors.shape[1]:
                buffer = _scan.buffer = np.empty((_SCAN_ROWS, self.vectors.shape[1]), np.float32)
            for start in range(0, len(self), _SCAN_ROWS):
                part = self.vectors[start : start + _SCAN_ROWS]
                np.copyto(buffer[: len(part)], part, casting="unsafe")
                np.matmul(buffer[: len(part)], vector, out=found[start : start + len(part)])
            found *= self.scale
        if len(self.window_rows):
            np.maximum.at(found, self.window_rows, self.windows @ vector)
        return found

    def error(self, vector: npt.NDArray[np.float32]) -> float:
        """At most how far cosines() can be from a row's exact cosine: each int8 component is
        within half a step (scale / 2) of the exact one, so the product within
        scale / 2 * sum(|vector|). Windows are exact."""
        if self.scale is None:
            return 0.0
        return float(self.scale.max()) / 2 * float(np.abs(vector).sum())

    def exact(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """These rows' exact vectors."""
        if self.exact_file is None:
            return np.asarray(self.vectors[rows], dtype=np.float32)
        dimension = self.vectors.shape[1]
        found = np.empty((len(rows), dimension), dtype=np.float32)
        size = 4 * dimension
        for i, at in enumerate(np.asarray(rows).tolist()):
            found[i] = np.frombuffer(_read_at(self.exact_file, size, size * at), np.float32)
        return found

    def exact_cosines(
        self, rows: npt.NDArray[np.int64], vector: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        """The exact cosines of these rows (a long memory's best window's), their vectors read
        _SCAN_ROWS at a time, so a search that needs many holds few."""
        found = np.empty(len(rows), dtype=np.float32)
        for start in range(0, len(rows), _SCAN_ROWS):
            part = rows[start : start + _SCAN_ROWS]
            np.matmul(self.exact(part), vector, out=found[start : start + len(part)])
        if len(self.window_rows):
            best = np.full(len(self), -np.inf, dtype=np.float32)
            np.maximum.at(best, self.window_rows, self.windows @ vector)
            found = np.maximum(found, best[rows])
        return found

    def without_windows(self, min_chars: int) -> npt.NDArray[np.int64]:
        """The rows of at least `min_chars` characters whose windows were never embedded."""
        if not len(self.unwindowed):
            return NONE
        long = pc.greater_equal(pc.utf8_length(self.rows["content"]), min_chars)
        return np.flatnonzero(self.unwindowed & long.to_numpy(zero_copy_only=False))

    def __len__(self) -> int:
        return len(self.created)

    def id_at(self, at: int) -> str:
        """The id of this row (no list of every id is kept: 8 MB at 100,000 rows)."""
        memory_id: str = self.rows["id"][at].as_py()
        return memory_id

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
            if self.id_at(i) == memory_id:
                return int(i)
        return -1

    @cached_property
    def _by_id(self) -> _Keys:
        return _keys(zip(self.rows["id"].to_pylist(), strict=True), ("id",))

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


def _parts(column: pa.ChunkedArray) -> Iterator[npt.NDArray[np.float32]]:
    """The rows of a vector column as float32 matrices of at most _SCAN_ROWS rows, read in
    place where Arrow allows."""
    for chunk in column.chunks:
        for at in range(0, len(chunk), _SCAN_ROWS):
            part = chunk.slice(at, _SCAN_ROWS)
            yield part.flatten().to_numpy().reshape(len(part), -1)


def _held(
    parts: Iterable[npt.NDArray[np.float32]], size: tuple[int, int], spill: Path | None
) -> tuple[npt.NDArray[Any], npt.NDArray[np.float32] | None, IO[bytes] | None]:
    """Vectors as a block holds them, from their parts in order: float32; or, with `spill` (a
    directory), int8 with a scale per row (each row's largest component / 127), a quarter of
    float32's bytes, and their exact float32 values in an unlinked file of its own there, read
    only for a search's best candidates (search.InMemory.nearest), so every search still ranks
    by exact cosines. The mirror asks for int8 in a large store (Limits.int8_rows; what it
    saves is in benchmarks/README.md, "Memory at 100,000"). Converted a part at a time: never
    more than a part's copy at once."""
    if spill is None or not size[0]:
        vectors = np.empty(size, dtype=np.float32)
        start = 0
        for part in parts:
            vectors[start : start + len(part)] = part
            start += len(part)
        return vectors, None, None
    exact_file = tempfile.TemporaryFile(dir=spill)  # noqa: SIM115 (closed with its block)
    try:
        held, scale = np.empty(size, dtype=np.int8), np.empty(size[0], dtype=np.float32)
        start = 0
        for part in parts:
            exact_file.write(part.tobytes())
            most = np.abs(part).max(axis=1) / 127
            most[most == 0] = 1.0
            held[start : start + len(part)] = np.rint(part / most[:, None])
            scale[start : start + len(part)] = most
            start += len(part)
        exact_file.flush()
    except BaseException:
        exact_file.close()
        raise
    return held, scale, exact_file


def _read_at(file: IO[bytes], size: int, offset: int) -> bytes:
    """`size` bytes of the file from `offset`, safe beside other threads' reads."""
    if hasattr(os, "pread"):
        return os.pread(file.fileno(), size, offset)
    with _SEEK:
        file.seek(offset)
        return file.read(size)


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
