"""The table's rows and vectors held in memory, for exact vector search in a millisecond.

LanceDB's exact search reads every vector from disk on each query; a matrix product over
vectors held in memory takes 0.3 ms at 10,000 (benchmarks/README.md). The copy follows the
table's latest version: each read asks LanceDB for it, and when it changed, lists the row ids
of the new version (their high 32 bits name the fragment, the low 32 the row's place in it)
and reads only the fragments whose rows changed. An add makes one new fragment, a delete
takes rows out of one, and compaction rewrites a few; the others are kept as they are.

Everything here goes through LanceDB: the server process loads one Lance (benchmarks/README.md,
"One Lance").

Past `max_rows` live rows no copy is kept: searches go to LanceDB and its vector index instead.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, TypeVar

import lancedb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from subcog.analysis import Holders, holders
from subcog.damage import UNREADABLE, what_lance_said

T = TypeVar("T")
_NONE = np.zeros(0, dtype=np.int64)
_NO_WINDOWS = np.zeros((0, 0), dtype=np.float32)
ROW_COLUMNS = ["id", "content", "content_hash", "tags", "scope", "metadata", "created_at"]
MEMORY_COLUMNS = ["id", "content", "tags", "scope", "metadata", "created_at"]  # a found row
_EPOCH = datetime(1970, 1, 1)
# Without stable row ids (LanceDB's default) a row id is the row's address: the fragment id in
# the high 32 bits, the row's offset in the fragment in the low 32. Checked on lancedb 0.40 by
# tests/test_store.py.
ROW_BITS = 0xFFFFFFFF
READ_ATTEMPTS = 5  # reads of a new version, when other processes' commits keep moving it
log = logging.getLogger(__name__)


def micros(moment: datetime) -> int:
    """Microseconds since the epoch, in UTC (naive datetimes are taken as UTC)."""
    offset = moment.utcoffset()
    naive = (moment - offset if offset else moment).replace(tzinfo=None)
    return (naive - _EPOCH) // timedelta(microseconds=1)


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
    window_rows: npt.NDArray[np.int64] = field(default_factory=lambda: _NONE, repr=False)
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
        offsets = found["_rowid"].to_numpy().astype(np.int64) & ROW_BITS
        return cls.of(found, fragment, offsets, copy=True)

    def counted(self) -> Block:
        """This block, with its tokens counted (20 to 50 us a row)."""
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
        far more memory than their rows need (at 100,000 memories, 150 MB beyond the rows'
        20 MB), so the block keeps copies instead. The vectors are always copied, chunk by
        chunk, into one array of their own."""
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

    def mask(
        self,
        scope: str | None,
        tags: Sequence[str],
        since: datetime | None,
        until: datetime | None,
    ) -> npt.NDArray[np.bool_] | None:
        """Which rows pass the filter; None when every row does."""
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
        return _NO_WINDOWS, _NONE
    values = pc.list_flatten(column)
    matrix = np.empty((len(values), dimension), dtype=np.float32)
    matrix[:] = values.flatten().to_numpy(zero_copy_only=False).reshape(len(values), dimension)
    return matrix, np.repeat(np.arange(len(counts), dtype=np.int64), counts)


# Keys of a block's rows, as their Python hashes sorted, the row of each, and the columns they
# are made of. A lookup is a binary search, verified on the row: 32 bytes a row for both kinds,
# where a dict of the keys took about 600 (60 MB at 100,000 memories).
_Keys = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], tuple[str, ...]]


def _keys(keys: Iterable[tuple[str, ...]], columns: tuple[str, ...]) -> _Keys:
    hashes = np.fromiter(map(hash, keys), dtype=np.int64)
    order = np.argsort(hashes, kind="stable")
    return hashes[order], order, columns


class FullText:
    """LanceDB's full-text search through its async API, each calling thread running it on an
    event loop of its own: 1 to 1.1 ms less a search than the sync query builder, whose query
    is a pydantic model (benchmarks/README.md, "One Lance")."""

    def __init__(self, table: Any) -> None:
        self._table = table  # a lancedb AsyncTable, reading the latest version
        self._local = threading.local()
        self._loops: list[asyncio.AbstractEventLoop] = []
        self._lock = threading.Lock()
        weakref.finalize(self, _close_loops, self._loops)  # a store dropped without close()

    def search(
        self, text: str, columns: list[str], where: str | None, limit: int, fast: bool = False
    ) -> pa.Table:
        """The `limit` best rows by BM25 for the words of `text` (a match query: never parsed
        as a query language), with `columns`, `_score` and `_rowid`; `fast`: the index only,
        not the rows added since it was last folded."""

        async def run() -> pa.Table:
            query = self._table.query().nearest_to_text(text, columns=["content"])
            if where:
                query = query.where(where)  # before the search (prefilter)
            if fast:
                query = query.fast_search()
            found: pa.Table = await query.select(columns).with_row_id().limit(limit).to_arrow()
            return found

        return self.run(run)

    def run(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run the coroutine work() makes to its end: on this thread's own event loop, or, in
        a thread whose event loop is running (an async caller), on a thread of its own."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            return _aside(work)
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        if loop is None:
            loop = self._local.loop = asyncio.new_event_loop()
            with self._lock:
                self._loops.append(loop)
        return loop.run_until_complete(work())

    def close(self) -> None:
        """Close the threads' event loops (their threads no longer search)."""
        with self._lock:
            _close_loops(self._loops)


def open_full_text(directory: str, table: str, session: Any) -> FullText:
    """The full-text search of this table, sharing the caches of `session`."""

    async def open_table() -> Any:
        db = await lancedb.connect_async(
            directory, read_consistency_interval=timedelta(0), session=session
        )
        return await db.open_table(table)

    return FullText(_aside(open_table))


def _aside(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine work() makes on a thread of its own (the caller may be inside a
    running event loop, where it could not)."""
    with ThreadPoolExecutor(1) as aside:
        return aside.submit(lambda: asyncio.run(work())).result()


def _close_loops(loops: list[asyncio.AbstractEventLoop]) -> None:
    while loops:
        loop = loops.pop()
        if not loop.is_running():
            loop.close()


@dataclass(frozen=True)
class Snapshot:
    """One version of the table, and its rows if they are mirrored. `table` is LanceDB's handle,
    which reads the latest version: a search through it may see rows newer than `version`,
    which a mirrored snapshot leaves out."""

    version: int
    table: Any
    full_text: FullText
    blocks: tuple[Block, ...] | None  # None: more rows than the mirror keeps
    fragments: dict[int, int] = field(default_factory=dict)  # fragment id: index in blocks
    # fragment id: live rows, for each fragment whose files could not be read (damage.py)
    unreadable: dict[int, int] = field(default_factory=dict)

    def words(self, text: str, limit: int, where: str | None, dimension: int) -> Hits:
        """The `limit` best rows by BM25 for `text` among those passing the filter (SQL), best
        first, with their scores. LanceDB searches and returns row ids only (a third of the
        time with the columns); the rows come from memory."""
        assert self.blocks is not None, "only a mirrored snapshot has its rows in memory"
        pending = [i for i, block in enumerate(self.blocks) if block.fragment < 0]
        columns = ["id", "_score"] if pending else ["_score"]  # see Mirror._after_our_add
        found = self.full_text.search(text, columns, where, limit)
        rowids = found["_rowid"].to_numpy().astype(np.int64)
        scores = found["_score"].to_numpy().astype(np.float64)
        which, local = self.places(rowids)
        for i in np.flatnonzero(which < 0).tolist() if pending else ():
            memory_id = found["id"][i].as_py()
            for index in pending:
                at = self.blocks[index].position(memory_id)
                if at >= 0:
                    which[i], local[i] = index, at
                    break
        kept = which >= 0  # rows of a damaged file, or newer than this version: not found
        return self._hits(which[kept], local[kept], scores[kept], dimension)

    def places(
        self, rowids: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Each row id's block and row in it; -1 for a row id that is not in the snapshot."""
        assert self.blocks is not None
        which = np.array([self.fragments.get(f, -1) for f in (rowids >> 32).tolist()], np.int64)
        local = np.full(len(rowids), -1, dtype=np.int64)
        for index in np.unique(which[which >= 0]).tolist():
            chosen = np.flatnonzero(which == index)
            offsets = self.blocks[index].offsets
            wanted = rowids[chosen] & ROW_BITS
            at = np.minimum(np.searchsorted(offsets, wanted), len(offsets) - 1)
            hit = offsets[at] == wanted
            local[chosen[hit]] = at[hit]
            which[chosen[~hit]] = -1
        return which, local

    def none(self, dimension: int) -> Hits:
        """No rows: what a search finds when its index cannot be read."""
        return self._hits(_NONE, _NONE, np.zeros(0), dimension)

    def find(self, keys: Sequence[tuple[str, ...]]) -> dict[tuple[str, ...], dict[str, Any]]:
        """The rows with these keys: ("id", id) or ("text", scope, content_hash)."""
        assert self.blocks is not None, "only a mirrored snapshot looks up in memory"
        found: dict[tuple[str, ...], dict[str, Any]] = {}
        for key in keys:
            for block in self.blocks:
                row = block.find(key)
                if row is not None:
                    found[key] = row
                    break
        return found

    def nearest(
        self,
        vector: npt.NDArray[np.float32],
        limit: int,
        scope: str | None = None,
        tags: Sequence[str] = (),
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Hits:
        """The `limit` rows most similar to `vector` among those passing the filter, best
        first, with their cosine similarities. Exact."""
        assert self.blocks is not None, "only a mirrored snapshot searches in memory"
        scores: list[npt.NDArray[np.float32]] = []
        for block in self.blocks:
            found = block.cosines(vector)
            keep = block.mask(scope, tags, since, until)
            scores.append(found if keep is None else np.where(keep, found, -np.inf))
        every = np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)
        count = min(limit, int(np.isfinite(every).sum()))
        if count == 0:
            return self.none(vector.shape[0])
        best = np.argpartition(-every, count - 1)[:count]
        best = best[np.argsort(-every[best], kind="stable")]
        starts = np.cumsum([0, *(len(b) for b in self.blocks)])
        which = np.searchsorted(starts, best, side="right") - 1
        return self._hits(which, best - starts[which], every[best].astype(np.float64), len(vector))

    def _hits(
        self,
        which: npt.NDArray[np.int64],
        local: npt.NDArray[np.int64],
        scores: npt.NDArray[np.float64],
        dimension: int,
    ) -> Hits:
        """The rows at these places (block index, row in block), in this order."""
        assert self.blocks is not None
        ids: list[str] = []
        scopes: list[str] = []
        vectors = np.empty((len(which), dimension), dtype=np.float32)
        created = np.empty(len(which), dtype=np.int64)
        for i, (index, at) in enumerate(zip(which.tolist(), local.tolist(), strict=True)):
            block = self.blocks[index]
            ids.append(block.ids[at])
            scopes.append(block.scopes[at])
            vectors[i] = block.vectors[at]
            created[i] = block.created[at]
        return Hits(self.blocks, which, local, ids, scopes, created, vectors, scores)

    def holders(self, tokens: Iterable[str]) -> Holders | None:
        """Which rows hold these tokens (and every row's length); None when the rows' tokens
        are not counted."""
        if self.blocks is None or any(block.holders is None for block in self.blocks):
            return None
        wanted = set(tokens)
        found = Holders()
        for block in self.blocks:
            counted = block.holders
            assert counted is not None
            found.texts += counted.texts
            found.length += counted.length
            for token in wanted & counted.shortest.keys():
                found.count[token] += counted.count[token]
                found.shortest[token] = min(
                    counted.shortest[token], found.shortest.get(token, counted.shortest[token])
                )
        return found

    def matching(
        self,
        scope: str | None = None,
        tags: Sequence[str] = (),
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> pa.Table | None:
        """The rows passing the filter (ROW_COLUMNS); None when there are no rows at all."""
        assert self.blocks is not None, "only a mirrored snapshot lists in memory"
        parts = []
        for block in self.blocks:
            keep = block.mask(scope, tags, since, until)
            parts.append(block.rows if keep is None else block.rows.filter(keep))
        return pa.concat_tables(parts) if parts else None

    def count(
        self,
        scope: str | None = None,
        tags: Sequence[str] = (),
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """How many rows pass the filter."""
        assert self.blocks is not None, "only a mirrored snapshot counts in memory"
        total = 0
        for block in self.blocks:
            keep = block.mask(scope, tags, since, until)
            total += len(block) if keep is None else int(keep.sum())
        return total


@dataclass(frozen=True)
class Hits:
    """Rows a search of the mirror found, best first, with their vectors and scores: what
    ranking needs of every one at once, the rest of a row when asked for (a search finds a
    hundred, a recall returns a few). The same methods as store.Found."""

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


class Mirror:
    """The latest snapshot of one LanceDB table, kept in step by reading what changed."""

    def __init__(
        self,
        table: Any,
        max_rows: int,
        counted_rows: int,
        full_text: FullText,
        resized: Callable[[int], Any | None] = lambda rows: None,
    ) -> None:
        self._table = table
        self.full_text = full_text
        # For a table of so many rows, the table opened again with Lance's caches sized for
        # it, or None to keep this one (Store._resized).
        self._resized = resized
        self.max_rows = max_rows
        # Up to this many rows, each block also counts its rows' tokens (Snapshot.holders),
        # which the lexical reference needs; past it, each query asks the full-text index.
        self.counted_rows = counted_rows
        self._snapshot: Snapshot | None = None
        self._blocks: dict[int, Block] = {}  # by fragment id
        # Fragments that failed to read: fragment id: its row ids then. Tried again only once
        # its rows change (a repair writes new fragments).
        self._unreadable: dict[int, npt.NDArray[np.int64]] = {}
        # Our own last add: the version it made and its rows, which need no read (added()).
        self._added: tuple[int, pa.Table] | None = None
        self._rows = 0  # live rows in the last version read, with those of unreadable files
        self._lock = threading.Lock()

    def latest(self) -> Snapshot:
        """The latest version, with its rows in memory unless there are more than max_rows."""
        with self._lock:
            for _ in range(READ_ATTEMPTS - 1):
                with suppress(Moved):
                    return self._latest()
            return self._latest()

    def _latest(self) -> Snapshot:
        # The version before the rows: a commit in between is read again next time.
        version = int(self._table.version)
        if self._snapshot is not None and self._snapshot.version == version:
            return self._snapshot
        rows = int(self._table.count_rows())
        self._table = self._resized(rows) or self._table
        blocks: tuple[Block, ...] | None = None
        if rows <= self.max_rows:
            kept = self._after_our_add(version, rows)
            if kept is None:
                kept = self._changed(rows)
            blocks = tuple(block for block in kept.values() if len(block))
            self._blocks = kept
        else:
            self._blocks, self._unreadable = {}, {}
        self._added, self._rows = None, rows
        placed = {block.fragment: i for i, block in enumerate(blocks or ())}
        lost = {fragment: len(rowids) for fragment, rowids in self._unreadable.items()}
        self._snapshot = Snapshot(version, self._table, self.full_text, blocks, placed, lost)
        return self._snapshot

    def _after_our_add(self, version: int, rows: int) -> dict[int, Block] | None:
        """The blocks after our own add (added()), if it made this version right after the
        last one read, with nothing read: the rows we wrote, in one new fragment. Its id is
        not known (LanceDB does not say), so the block goes under a key of its own below zero,
        and a full-text hit in an unknown fragment is looked up there by its memory id
        (Snapshot.words); the next full refresh reads the fragment under its id. None if
        anything else changed."""
        last = self._snapshot
        if self._added is None or self._added[0] != version or last is None:
            return None
        mine = self._added[1]
        if last.blocks is None or last.version != version - 1 or rows != self._rows + mine.num_rows:
            return None
        block = Block.of(mine, -version)
        if rows <= self.counted_rows:
            block.counted()
        return {**self._blocks, -version: block}

    def _changed(self, rows: int) -> dict[int, Block]:
        """The blocks of the latest version: those whose rows are unchanged kept, the others
        read. Fragments that cannot be read go to self._unreadable."""
        kept: dict[int, Block] = {}
        unreadable: dict[int, npt.NDArray[np.int64]] = {}
        for fragment, rowids in _by_fragment(self._rowids()).items():
            block = self._block(fragment, rowids)
            if block is None:
                unreadable[fragment] = rowids
                continue
            kept[fragment] = block
            if rows <= self.counted_rows:
                block.counted()
        self._unreadable = unreadable
        return kept

    def _rowids(self) -> npt.NDArray[np.int64]:
        """Every live row's id: LanceDB reads the fragments' row counts and deletions only (13
        ms at 100,000 memories, benchmarks/README.md)."""
        found = self._table.search().select(["_rowid"]).with_row_id(True).to_arrow()
        rowids: npt.NDArray[np.int64] = found["_rowid"].to_numpy().astype(np.int64)
        return rowids

    def _block(self, fragment: int, rowids: npt.NDArray[np.int64]) -> Block | None:
        """The fragment's block: kept if its rows are the same, else read again; None if one
        of its files cannot be read. A fragment's rows never change in place (an add or an
        update writes a new fragment, a delete takes rows out), so the row ids tell."""
        offsets = rowids & ROW_BITS
        known = self._blocks.get(fragment)
        if known is not None and np.array_equal(known.offsets, offsets):
            return known
        failed = self._unreadable.get(fragment)
        if failed is not None and np.array_equal(failed, rowids):
            return None
        try:
            return Block.read(self._table, fragment, rowids)
        except UNREADABLE as error:
            log.warning(
                "%d memories in the store at %s cannot be read (%s); they are left out of every "
                "search and listing. Run `subcog doctor` to see the damaged files, and `subcog "
                "repair` to rebuild the store from every memory that can be read.",
                len(rowids),
                self._table.uri,
                what_lance_said(error),
            )
            return None

    def added(self, table: pa.Table, version: int) -> None:
        """Our own add of `table`, committed as `version`: its rows are one new fragment, which
        the next refresh need not read from disk (if no other commit came in between)."""
        with self._lock:
            self._added = (version, table)

    def forget(self) -> None:
        """Drop the copy: the next read builds it again (after the vectors were replaced)."""
        with self._lock:
            self._blocks, self._snapshot, self._unreadable, self._added = {}, None, {}, None


def _by_fragment(rowids: npt.NDArray[np.int64]) -> dict[int, npt.NDArray[np.int64]]:
    """The row ids of each fragment, ascending."""
    rowids = np.sort(rowids)
    fragments = rowids >> 32
    cuts = np.flatnonzero(np.diff(fragments)) + 1
    return {int(part[0] >> 32): part for part in np.split(rowids, cuts) if len(part)}
