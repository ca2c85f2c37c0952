"""The table's rows and vectors held in memory, for exact vector search in a millisecond.

LanceDB's exact search reads every vector from disk on each query (4 ms at 1,000 memories, 19 ms
at 10,000); a matrix product over vectors held in memory takes 0.3 ms at 10,000. The copy
follows the table's latest version: each read asks Lance for it (microseconds), and when it
changed, reads only the fragments that changed. An add makes one new fragment, a delete changes
one fragment's deletion file, and compaction rewrites a few; the others are kept as they are.

Past `max_rows` live rows no copy is kept (it would cost 1.5 kB of memory per row): searches go
to LanceDB and its vector index instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from subcog.analysis import Holders, holders
from subcog.damage import UNREADABLE, what_lance_said

if TYPE_CHECKING:
    from lance import LanceDataset
    from lance.fragment import DataFile, LanceFragment

CACHE_HEADROOM = 1.25
_NONE = np.zeros(0, dtype=np.int64)
_NO_WINDOWS = np.zeros((0, 0), dtype=np.float32)
ROW_COLUMNS = ["id", "content", "content_hash", "tags", "scope", "metadata", "created_at"]
MEMORY_COLUMNS = ["id", "content", "tags", "scope", "metadata", "created_at"]  # a found row
_EPOCH = datetime(1970, 1, 1)
log = logging.getLogger(__name__)


def micros(moment: datetime) -> int:
    """Microseconds since the epoch, in UTC (naive datetimes are taken as UTC)."""
    offset = moment.utcoffset()
    naive = (moment - offset if offset else moment).replace(tzinfo=None)
    return (naive - _EPOCH) // timedelta(microseconds=1)


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
    def read(cls, fragment: LanceFragment) -> Block:
        table = fragment.to_table(columns=[*ROW_COLUMNS, "vector", "chunks"], with_row_id=True)
        # Without stable row ids (LanceDB's default) a row id is its address: the fragment id
        # in the high 32 bits, the row's offset in the fragment in the low 32.
        offsets = table["_rowid"].to_numpy().astype(np.int64) & 0xFFFFFFFF
        return cls.of(table, fragment.fragment_id, offsets, copy=True)

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


@dataclass(frozen=True)
class Snapshot:
    """One version of the table: a dataset pinned at it, and its rows if they are mirrored."""

    version: int
    dataset: LanceDataset
    blocks: tuple[Block, ...] | None  # None: more rows than the mirror keeps
    fragments: dict[int, int] = field(default_factory=dict)  # fragment id: index in blocks
    # fragment id: live rows, for each fragment whose files could not be read (damage.py)
    unreadable: dict[int, int] = field(default_factory=dict)

    def words(self, text: str, limit: int, where: str | None, dimension: int) -> Hits:
        """The `limit` best rows by BM25 for `text` among those passing the filter (SQL), best
        first, with their scores. Lance searches and returns row ids only (a third of the
        time with the columns); the rows come from memory."""
        assert self.blocks is not None, "only a mirrored snapshot has its rows in memory"
        found = self.dataset.to_table(
            full_text_query={"query": text, "columns": ["content"]},
            columns=["_score"],
            with_row_id=True,
            filter=where,
            prefilter=True,
            limit=limit,
        )
        rowids = found["_rowid"].to_numpy().astype(np.int64)
        scores = found["_score"].to_numpy().astype(np.float64)
        if self.unreadable:  # the index still names the rows of a damaged file: not found
            readable = np.array([f in self.fragments for f in (rowids >> 32).tolist()], dtype=bool)
            rowids, scores = rowids[readable], scores[readable]
        which = np.array([self.fragments[f] for f in (rowids >> 32).tolist()], dtype=np.int64)
        local = np.zeros(len(rowids), dtype=np.int64)
        for index in np.unique(which):
            chosen = which == index
            local[chosen] = np.searchsorted(self.blocks[index].offsets, rowids[chosen] & 0xFFFFFFFF)
        return self._hits(which, local, scores, dimension)

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
    """The latest snapshot of one Lance dataset, kept in step by reading what changed."""

    def __init__(
        self,
        uri: Path,
        max_rows: int,
        cache_bytes: Callable[[int], tuple[int, int]],
        counted_rows: int = 0,
    ) -> None:
        self._uri = uri
        self.max_rows = max_rows
        # Up to this many rows, each block also counts its rows' tokens (Snapshot.holders),
        # which the lexical reference needs; past it, each query asks the full-text index.
        self.counted_rows = counted_rows
        # Lance's index and metadata caches for a table of so many rows, each bounded. The
        # dataset is opened again with bigger ones once the table has outgrown what they were
        # sized for (with CACHE_HEADROOM to spare, so that this is rare).
        self._cache_bytes = cache_bytes
        self._sized_for = 0
        self._head: LanceDataset | None = None
        self._snapshot: Snapshot | None = None
        self._blocks: dict[Hashable, Block] = {}  # by the fragment's metadata: files and deletions
        # Fragments that failed to read, by the same key: (fragment id, live rows). Tried again
        # only once the fragment changes (a repair replaces it).
        self._unreadable: dict[Hashable, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def dataset(self) -> LanceDataset:
        """The dataset at its latest version, pinned there."""
        with self._lock:
            head = self._latest()
            return head.checkout_version(head.version)

    def latest(self) -> Snapshot:
        """The latest version, with its rows in memory unless there are more than max_rows."""
        with self._lock:
            head = self._latest()
            if self._snapshot is not None and self._snapshot.version == head.version:
                return self._snapshot
            fragments = head.get_fragments()
            rows = sum(fragment.metadata.num_rows for fragment in fragments)
            if rows > self._sized_for and self._cache_bytes(rows) != self._cache_bytes(
                self._sized_for
            ):
                head = self._head = self._open(rows)
                fragments = head.get_fragments()
                rows = sum(fragment.metadata.num_rows for fragment in fragments)
            blocks: tuple[Block, ...] | None = None
            kept: dict[Hashable, Block] = {}
            unreadable: dict[Hashable, tuple[int, int]] = {}
            if rows <= self.max_rows:
                for fragment in fragments:
                    key = _key(fragment)
                    block = self._blocks.get(key)
                    if block is None and key not in self._unreadable:
                        block = self._read_block(fragment)
                    if block is None:
                        unreadable[key] = (fragment.fragment_id, _live(fragment))
                        continue
                    kept[key] = block
                    if rows <= self.counted_rows:
                        block.counted()
                blocks = tuple(block for block in kept.values() if len(block))
            self._blocks, self._unreadable = kept, unreadable
            pinned = head.checkout_version(head.version)
            placed = {block.fragment: i for i, block in enumerate(blocks or ())}
            lost = dict(unreadable.values())
            self._snapshot = Snapshot(head.version, pinned, blocks, placed, lost)
            return self._snapshot

    def _read_block(self, fragment: LanceFragment) -> Block | None:
        """The fragment's rows, or None if one of its files cannot be read: the other
        fragments' memories are served, and the store reports the damage (store.damage)."""
        try:
            return Block.read(fragment)
        except UNREADABLE as error:
            log.warning(
                "%d memories in the store at %s cannot be read (%s); they are left out of every "
                "search and listing. Run `subcog doctor` to see the damaged files, and `subcog "
                "repair` to rebuild the store from every memory that can be read.",
                _live(fragment),
                self._uri.parent.parent,
                what_lance_said(error),
            )
            return None

    def added(self, table: pa.Table, before: int, written: LanceDataset) -> None:
        """Our own add of `table` after version `before`, `written` the dataset at its commit:
        its rows are one new fragment, and the next refresh need not read them from disk."""
        with self._lock:
            snapshot = self._snapshot
            if snapshot is None or snapshot.blocks is None or snapshot.version != before:
                return
            if written.version != before + 1:
                return  # another commit came in between: let the refresh read what changed
            known = {block.fragment for block in self._blocks.values()}
            new = [f for f in written.get_fragments() if f.fragment_id not in known]
            if len(new) == 1 and new[0].metadata.num_rows == table.num_rows:
                block = Block.of(table, new[0].fragment_id)
                if snapshot.count() < self.counted_rows:
                    block.counted()
                self._blocks[_key(new[0])] = block

    def forget(self) -> None:
        """Drop the copy: the next read builds it again (after the vectors were replaced)."""
        with self._lock:
            self._blocks, self._snapshot, self._unreadable = {}, None, {}

    def _latest(self) -> LanceDataset:
        if self._head is None:
            self._head = self._open(self._sized_for)
        else:
            self._head.checkout_latest()  # type: ignore[no-untyped-call]
        return self._head

    def _open(self, rows: int) -> LanceDataset:
        import lance  # pylance: the Lance inside lancedb, with a faster path for plain reads

        self._sized_for = int(rows * CACHE_HEADROOM)
        index_cache, metadata_cache = self._cache_bytes(self._sized_for)
        return lance.dataset(
            str(self._uri),
            index_cache_size_bytes=index_cache,
            metadata_cache_size_bytes=metadata_cache,
        )


def _key(fragment: LanceFragment) -> Hashable:
    """What identifies a fragment's rows: its id, its files and their columns, its deletions."""
    meta = fragment.metadata
    deleted = meta.deletion_file
    return (
        meta.id,
        meta.physical_rows,
        tuple((_path(file), tuple(file.fields)) for file in meta.files),
        None if deleted is None else (deleted.read_version, deleted.id, deleted.num_deleted_rows),
    )


def _live(fragment: LanceFragment) -> int:
    """The fragment's rows less its deleted ones; its physical rows if the deletions are
    unreadable too."""
    try:
        return int(fragment.count_rows())
    except UNREADABLE:
        return int(fragment.metadata.physical_rows or 0)


def _path(file: DataFile) -> str:
    """A data file's path. pylance's `DataFile.path` property defines a class on each access
    (to stay callable, as it once was): 7 us a fragment, most of what a refresh costs."""
    path = getattr(file, "_path", None)
    return path if isinstance(path, str) else str(file.path)
