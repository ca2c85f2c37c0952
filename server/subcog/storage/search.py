"""One version of the table, searched: by BM25, by vector, by key, by filter.

Two implementations of one interface, chosen in one place (`search_of`):
- `InMemory` while the rows are held in memory (mirror.py): exact vector search as a matrix
  product, filters as masks, lookups as binary searches; the full-text search asks LanceDB for
  row ids only and takes the rows from memory.
- `InLance` past Limits.mirror_rows: LanceDB's searches, with its vector index.
Both return `Results` (results.py), best first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from lancedb.expr import col

from subcog.storage.analysis import BM25_B, BM25_K1, Holders, idf, tokens
from subcog.storage.blocks import Block
from subcog.storage.limits import Limits
from subcog.storage.mirror import Snapshot
from subcog.storage.results import Found, Hits, Reference, Results, Searched
from subcog.storage.schema import FOUND_COLUMNS, Filter, schema

R = TypeVar("R")
Key = tuple[str, ...]  # ("id", id) or ("text", scope, content_hash)
# int8 blocks are scanned half here, half in this thread: converting int8 to float32 takes
# longer than the product itself, and two cores take it back to float32's time.
_SCAN = ThreadPoolExecutor(max_workers=1, thread_name_prefix="subcog-scan")
# The rows whose exact vectors a search of int8 blocks reads first: about the depth a recall
# asks for, twice over (InMemory.nearest).
RESCORED = 256


class Search(Protocol):
    """One version of the table."""

    snapshot: Snapshot

    def words(self, text: str, depth: int, where: Filter) -> Results:
        """The `depth` best memories by BM25 for the words of `text` (a match query, never
        parsed as a query language), with their scores."""
        ...

    def nearest(self, vector: npt.NDArray[np.float32], limit: int, where: Filter) -> Results:
        """The `limit` memories most similar to `vector`, with their cosine similarities (a
        long memory's best window's)."""
        ...

    def find(self, keys: Sequence[Key]) -> dict[Key, dict[str, Any]]:
        """The stored rows with these keys (id, scope, content_hash and created_at at least)."""
        ...

    def matching(self, where: Filter, columns: list[str]) -> pa.Table:
        """The rows passing the filter, with these columns (of schema.ROW_COLUMNS)."""
        ...

    def count(self, where: Filter) -> int: ...

    def without_windows(self, min_chars: int, limit: int) -> list[tuple[str, str]]:
        """(id, content) of at most `limit` memories of at least `min_chars` characters whose
        windows were never embedded (`chunks` is null): those stored by an earlier subcog."""
        ...

    def rows(self) -> int:
        """Every live row."""
        ...

    def holders(self, tokens: Iterable[str]) -> Holders | None:
        """Which rows hold these tokens; None where they are not counted (lexical.py)."""
        ...


def search_of(snapshot: Snapshot, dimension: int, limits: Limits, rare: set[str]) -> Search:
    """The search of this snapshot: in memory if its rows are there. `rare` is the store's set
    of scopes too rare to filter after a search (see filtered)."""
    if snapshot.blocks is not None:
        return InMemory(snapshot, snapshot.blocks, dimension, rare)
    return InLance(snapshot, dimension, limits, rare)


def filtered(
    search: Callable[[str | None], R],
    in_scope: Callable[[R, str], R],
    size: Callable[[R], int],
    where: Filter,
    depth: int,
    enough: int,
    rare: set[str],
) -> R:
    """search(sql), which finds up to `depth` rows; at least `enough` of them if there are.

    Lance filters before a search of an index (prefilter) by building a mask of the matching
    rows: at 1,000,000 memories that took longer than the vector search itself, and a third of
    the full-text search (a quarter of it at 1,000). So a scope is filtered here, after the
    search, unless that leaves fewer than `enough` rows from a search that found `depth`: then
    the scope is rarer than that, and it is searched again with the prefilter, as it will be
    from then on. Any row of the scope better than the ones kept would have been found.
    """
    if not where.only_scope or where.scope in rare:
        return search(where.sql())
    assert where.scope is not None
    found = search(None)
    mine = in_scope(found, where.scope)
    if size(mine) >= enough or size(found) < depth:
        return mine
    rare.add(where.scope)
    return search(where.sql())


@dataclass
class InMemory:
    snapshot: Snapshot
    blocks: tuple[Block, ...]
    dimension: int
    rare: set[str]

    def words(self, text: str, depth: int, where: Filter) -> Hits:
        if all(block.holders is not None for block in self.blocks):
            return self._bm25(text, depth, where)

        def search(sql: str | None) -> Hits:
            return self._words(text, depth, sql)

        return filtered(search, Hits.in_scope, len, where, depth, depth, self.rare)

    def _bm25(self, text: str, limit: int, where: Filter) -> Hits:
        """Lance's BM25 of every row passing the filter, from the rows' counted tokens: the
        scores its index gives once every row is folded in (before, it scores each part of the
        index by that part's statistics), without a search of it (benchmarks/README.md, "One
        Lance"). A repeated query token counts again, as in Lance."""
        counted = [block.holders for block in self.blocks if block.holders is not None]
        starts = np.cumsum([0, *(len(block) for block in self.blocks)])
        if not counted or not starts[-1]:
            return Hits.empty(self.dimension)
        lengths = np.concatenate([held.lengths for held in counted]).astype(np.float64)
        average = lengths.mean() or 1.0  # 0: every row is stop words, and no token matches
        norm = BM25_K1 * (1 - BM25_B + BM25_B * lengths / average)
        scores = np.zeros(len(lengths))
        for token, times in Counter(tokens(text)).items():
            parts = [
                (held.postings[token], start)
                for held, start in zip(counted, starts.tolist(), strict=False)
                if token in held.postings
            ]
            if not parts:
                continue
            rows = np.concatenate([texts + start for (texts, _), start in parts])
            tf = np.concatenate([counts for (_, counts), _ in parts]).astype(np.float64)
            weight = times * idf(len(lengths), len(rows)) * (BM25_K1 + 1)
            scores[rows] += weight * tf / (tf + norm[rows])
        masks = [block.mask(where) for block in self.blocks]
        if any(mask is not None for mask in masks):
            keep = [
                np.ones(len(b), bool) if m is None else m
                for b, m in zip(self.blocks, masks, strict=True)
            ]
            scores[~np.concatenate(keep)] = 0.0
        hit = np.flatnonzero(scores > 0)
        best = hit[np.argsort(-scores[hit], kind="stable")[:limit]]
        which = np.searchsorted(starts, best, side="right") - 1
        return self._hits(which, best - starts[which], scores[best])

    def _words(self, text: str, limit: int, where: str | None) -> Hits:
        """LanceDB searches and returns row ids only (a third of the time with the columns);
        the rows come from memory."""
        pending = [i for i, block in enumerate(self.blocks) if block.fragment < 0]
        columns = ["id", "_score"] if pending else ["_score"]  # see Mirror._after_our_add
        found = self.snapshot.full_text.search(text, columns, where, limit)
        rowids = found["_rowid"].to_numpy().astype(np.int64)
        scores = found["_score"].to_numpy().astype(np.float64)
        which, local = self.snapshot.places(rowids)
        for i in np.flatnonzero(which < 0).tolist() if pending else ():
            memory_id = found["id"][i].as_py()
            for index in pending:
                at = self.blocks[index].position(memory_id)
                if at >= 0:
                    which[i], local[i] = index, at
                    break
        kept = which >= 0  # rows of a damaged file, or newer than this version: not found
        return self._hits(which[kept], local[kept], scores[kept])

    def nearest(self, vector: npt.NDArray[np.float32], limit: int, where: Filter) -> Hits:
        """Exact: every row's cosine, the filter as a mask. Rows held as int8 are scored
        within Block.error of their cosine; the best of them are then scored from their exact
        vectors, more of them until no row left out can be among the best `limit`, so the
        result is the exact search's."""

        def scan(blocks: Sequence[Block]) -> list[npt.NDArray[np.float32]]:
            scores = []
            for block in blocks:
                found = block.cosines(vector)
                keep = block.mask(where)
                scores.append(found if keep is None else np.where(keep, found, -np.inf))
            return scores

        error = max((block.error(vector) for block in self.blocks), default=0.0)
        if error > 0 and len(self.blocks) > 1:
            half = len(self.blocks) // 2
            other = _SCAN.submit(scan, self.blocks[:half])
            rest = scan(self.blocks[half:])
            scores = other.result() + rest
        else:
            scores = scan(self.blocks)
        every = np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)
        valid = int(np.isfinite(every).sum())
        count = min(limit, valid)
        if count == 0:
            return Hits.empty(self.dimension)
        starts = np.cumsum([0, *(len(b) for b in self.blocks)])
        if error == 0:
            best = np.argpartition(-every, count - 1)[:count]
            best = best[np.argsort(-every[best], kind="stable")]
            which = np.searchsorted(starts, best, side="right") - 1
            return self._hits(which, best - starts[which], every[best].astype(np.float64))
        exact = np.full(len(every), np.nan, dtype=np.float32)  # filled in as rows are scored
        wanted = min(valid, max(2 * count, RESCORED))
        while True:
            best = np.argpartition(-every, wanted - 1)[:wanted]
            new = best[np.isnan(exact[best])]
            which = np.searchsorted(starts, new, side="right") - 1
            exact[new] = self._exact(which, new - starts[which], vector)
            order = best[np.argsort(-exact[best], kind="stable")[:count]]
            # A row left out scores at most the lowest taken, so its cosine is at most that
            # plus the error: below the count-th best exact cosine, it cannot be among them.
            if wanted == valid or float(every[best].min()) + error < float(exact[order[-1]]):
                break
            wanted = min(valid, 4 * wanted)
        which = np.searchsorted(starts, order, side="right") - 1
        return self._hits(which, order - starts[which], exact[order].astype(np.float64))

    def _exact(
        self,
        which: npt.NDArray[np.int64],
        local: npt.NDArray[np.int64],
        vector: npt.NDArray[np.float32],
    ) -> npt.NDArray[np.float32]:
        """The exact cosines of the rows at these places."""
        exact = np.empty(len(which), dtype=np.float32)
        for index in np.unique(which).tolist():
            mine = np.flatnonzero(which == index)
            exact[mine] = self.blocks[index].exact_cosines(local[mine], vector)
        return exact

    def _hits(
        self,
        which: npt.NDArray[np.int64],
        local: npt.NDArray[np.int64],
        scores: npt.NDArray[np.float64],
    ) -> Hits:
        """The rows at these places (block index, row in block), in this order."""
        ids: list[str] = []
        scopes: list[str] = []
        vectors = np.empty((len(which), self.dimension), dtype=np.float32)
        created = np.empty(len(which), dtype=np.int64)
        for i, (index, at) in enumerate(zip(which.tolist(), local.tolist(), strict=True)):
            block = self.blocks[index]
            ids.append(block.id_at(at))
            scopes.append(block.scopes[at])
            created[i] = block.created[at]
        for index in np.unique(which).tolist():  # exact vectors, one read per block
            mine = np.flatnonzero(which == index)
            vectors[mine] = self.blocks[index].exact(local[mine])
        return Hits(self.blocks, which, local, ids, scopes, created, vectors, scores)

    def find(self, keys: Sequence[Key]) -> dict[Key, dict[str, Any]]:
        found: dict[Key, dict[str, Any]] = {}
        for key in keys:
            for block in self.blocks:
                row = block.find(key)
                if row is not None:
                    found[key] = row
                    break
        return found

    def matching(self, where: Filter, columns: list[str]) -> pa.Table:
        parts = []
        for block in self.blocks:
            keep = block.mask(where)
            parts.append((block.rows if keep is None else block.rows.filter(keep)).select(columns))
        if not parts:
            return schema("", self.dimension).empty_table().select(columns)
        return pa.concat_tables(parts)

    def without_windows(self, min_chars: int, limit: int) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for block in self.blocks:
            rows = block.without_windows(min_chars)[: limit - len(found)]
            if len(rows):
                picked = block.rows.take(rows)
                found += zip(picked["id"].to_pylist(), picked["content"].to_pylist(), strict=True)
        return found

    def count(self, where: Filter) -> int:
        total = 0
        for block in self.blocks:
            keep = block.mask(where)
            total += len(block) if keep is None else int(keep.sum())
        return total

    def rows(self) -> int:
        return sum(len(block) for block in self.blocks)

    def holders(self, tokens: Iterable[str]) -> Holders | None:
        if any(block.holders is None for block in self.blocks):
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


@dataclass
class InLance:
    """LanceDB's searches. `snapshot.table` reads the latest version, which may be newer."""

    snapshot: Snapshot
    dimension: int
    limits: Limits
    rare: set[str]

    def words(self, text: str, depth: int, where: Filter) -> Found:
        depth = min(depth, self.limits.lance_depth)

        def search(sql: str | None) -> pa.Table:
            return self.snapshot.full_text.search(text, [*FOUND_COLUMNS, "_score"], sql, depth)

        found = filtered(search, _in_scope, len, where, depth, depth, self.rare)
        return Found.of(found, found["_score"].to_numpy())

    def nearest(self, vector: npt.NDArray[np.float32], limit: int, where: Filter) -> Found:
        """Ranked by the exact vectors (the best window's, for a long memory), not the index's
        quantised distances."""
        limit = min(limit, self.limits.lance_depth)
        nearest, windows = self._nearest(vector, limit, where), self._windows(vector, limit, where)
        both = pa.concat_tables([nearest, windows])
        _, first = np.unique(both["id"].to_numpy(zero_copy_only=False), return_index=True)
        found = Found.of(both.take(np.sort(first)), None)
        exact = found.cosines(vector)
        best = np.argsort(-exact, kind="stable")[:limit]
        return found.take(best, exact[best].astype(np.float64))

    def _nearest(self, vector: npt.NDArray[np.float32], limit: int, where: Filter) -> pa.Table:
        """At least `limit` (and Limits.vector_fetch_min) rows that pass the filter, nearest
        first, by the vector index past Limits.vector_index_rows."""
        depth = max(limit, self.limits.vector_fetch_min)

        def search(sql: str | None) -> pa.Table:
            query = self.snapshot.table.search(vector, vector_column_name="vector")
            query = query.distance_type("cosine").nprobes(self.limits.nprobes)
            query = query.ef(self.limits.hnsw_ef)
            if sql:
                query = query.where(sql, prefilter=True)
            found: pa.Table = query.select(FOUND_COLUMNS).limit(depth).to_arrow()
            return found.drop_columns("_distance")

        return filtered(search, _in_scope, len, where, depth, limit, self.rare)

    def _windows(self, vector: npt.NDArray[np.float32], limit: int, where: Filter) -> pa.Table:
        """The long memories whose later windows are nearest: an exact search of the `chunks`
        column (Lance scores a list of vectors by its best one), which only long memories
        fill."""
        query = self.snapshot.table.search(vector, vector_column_name="chunks")
        query = query.distance_type("cosine")
        sql = where.sql()
        if sql:
            query = query.where(sql, prefilter=True)
        found: pa.Table = query.select(FOUND_COLUMNS).limit(limit).to_arrow()
        return found.drop_columns("_distance")

    def find(self, keys: Sequence[Key]) -> dict[Key, dict[str, Any]]:
        ids = sorted({key[1] for key in keys if key[0] == "id"})
        hashes = sorted({key[2] for key in keys if key[0] == "text"})
        condition = col("id").isin(ids) | col("content_hash").isin(hashes)
        columns = ["id", "scope", "content_hash", "created_at"]
        query = self.snapshot.table.search().where(condition.to_sql()).select(columns)
        found: dict[Key, dict[str, Any]] = {}
        for item in query.limit(None).to_arrow().to_pylist():
            found[("id", item["id"])] = item
            found[("text", item["scope"], item["content_hash"])] = item
        return {key: found[key] for key in keys if key in found}

    def matching(self, where: Filter, columns: list[str]) -> pa.Table:
        query = self.snapshot.table.search()
        sql = where.sql()
        if sql:
            query = query.where(sql)
        found: pa.Table = query.select(columns).limit(None).to_arrow()
        return found

    def count(self, where: Filter) -> int:
        return int(self.snapshot.table.count_rows(where.sql()))

    def without_windows(self, min_chars: int, limit: int) -> list[tuple[str, str]]:
        where = f"chunks IS NULL AND character_length(content) >= {int(min_chars)}"
        query = self.snapshot.table.search().where(where).select(["id", "content"])
        found = query.limit(limit).to_arrow()
        return list(zip(found["id"].to_pylist(), found["content"].to_pylist(), strict=True))

    def rows(self) -> int:
        return int(self.snapshot.table.count_rows())

    def holders(self, tokens: Iterable[str]) -> Holders | None:
        return None


def _in_scope(table: pa.Table, scope: str) -> pa.Table:
    return table.filter(pc.equal(table["scope"], scope))


Begun = tuple[Search, Future[tuple[Results, Reference]]]


class Searching:
    """A recall's searches under way (Store.search): the full-text search of one version
    started, the vector search waiting for the query's vector."""

    def __init__(
        self,
        begun: Begun,
        begin: Callable[[], Begun],
        read: Callable[[str, Callable[[], Searched]], Searched],
        depth: int,
        where: Filter,
    ) -> None:
        self._begun: Begun | None = begun
        self._begin = begin  # the same searches, of the latest version
        self._read = read  # retried when another process's cleanup removed files under it
        self._depth, self._where = depth, where

    def finish(self, vector: npt.NDArray[np.float32]) -> Searched:
        """Both searches of one version, best `depth` each, and the lexical reference."""

        def run() -> Searched:
            begun, self._begun = self._begun, None  # a retry begins afresh
            search, words = begun or self._begin()
            semantic = search.nearest(vector, self._depth, self._where)
            found, reference = words.result()
            return Searched(vector, found, semantic, reference)

        return self._read("search", run)
