"""The store of one data directory: what the domain asks of storage.

It puts together the table (table.py), the in-memory copy (mirror.py) and its searches
(search.py), upkeep and erasure (upkeep.py), damage found while serving (health.py) and the
model switch (reindex.py). Knows nothing of models or MCP: vectors come in as arrays, filters
as validated values, and nothing here calls back into the domain.
"""

from __future__ import annotations

import atexit
import logging
import os
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from lancedb.expr import col, lit

from subcog.errors import MissingIds
from subcog.storage.browse import Key, Tallies, page_keys, tallies
from subcog.storage.damage import UNREADABLE, Damage
from subcog.storage.health import Health, name_damage
from subcog.storage.lexical import Lexical
from subcog.storage.limits import Limits
from subcog.storage.location import Location
from subcog.storage.mirror import Mirror
from subcog.storage.reindex import MODEL_MARK, Reindex
from subcog.storage.repair import Repaired, repair
from subcog.storage.results import Hits, Reference, Results
from subcog.storage.schema import (
    MEMORY_COLUMNS,
    Filter,
    Row,
    naive_utc,
    rows_table,
    windows_column,
    windows_type,
)
from subcog.storage.search import Search, Searching, search_of
from subcog.storage.table import Table
from subcog.storage.upkeep import Upkeep

log = logging.getLogger(__name__)

# Stores still open. At exit they stop their upkeep first: a thread that is inside Lance when the
# interpreter shuts down can abort the process ("FATAL: exception not rethrown").
_OPEN: weakref.WeakSet[Store] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for store in list(_OPEN):
        store.close()


@dataclass(eq=False)  # identity, not field equality: stores live in a WeakSet
class Store:
    data_dir: Path
    model: str
    dimension: int
    check_model: bool = True  # False only for `subcog reindex`, which changes the model
    limits: Limits = field(default_factory=Limits)
    # Upkeep in a short-lived child process (aside.py), for a server: it needs the `lance`
    # package, which a server should not load (benchmarks/README.md, "One Lance").
    upkeep_aside: bool = False
    # In that child: when upkeep asks to run again, the delay goes here, back to the server.
    asked: list[float] | None = None
    # Where the table lives (None: DATA_DIR/lancedb), and on object storage how long a read
    # may answer from the version it last saw (table.py).
    location: Location | None = None
    refresh_s: float = 0.0
    _rare: set[str] = field(init=False, default_factory=set)  # see search.filtered
    _model_mark: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self._table = Table(
            self.data_dir,
            self.model,
            self.dimension,
            self.limits,
            self.check_model,
            self.location,
            self.refresh_s,
        )
        table = self._table
        self.location = table.location
        # On object storage there is no directory to stat: LanceDB's refresh interval does it.
        stamped = None if table.remote else table.uri
        self._mirror = Mirror(
            table.handle,
            self.limits,
            table.full_text,
            table.resized,
            table_dir=stamped,
            spill_dir=self.data_dir,
        )
        self._health = Health(table, self.upkeep_aside)
        self._upkeep = Upkeep(table, self._mirror, self._health, self.upkeep_aside, self.asked)
        self._lexical = Lexical(self.limits, self._words_failed)
        # The full-text search runs here while the caller embeds its query.
        self._searches = ThreadPoolExecutor(max_workers=2, thread_name_prefix="subcog-search")
        _OPEN.add(self)
        if self._upkeep.marker.pending() is not None:
            self._upkeep.soon()  # a process that exited left forgotten rows to erase

    # What tests and stats may read.

    @property
    def cache_sized_for(self) -> int:
        """The number of memories Lance's caches are sized for (Limits.cache_bytes)."""
        return self._table.sized_for

    def schema(self) -> pa.Schema:
        schema: pa.Schema = self._table.handle.schema
        return schema

    def indexes(self) -> dict[str, tuple[int, int]]:
        """Each indexed column: (rows in the index, rows not yet folded into it)."""
        found = {}
        for index in self._table.indexes():
            stats = self._table.handle.index_stats(index.name)
            found[index.columns[0]] = (stats.num_indexed_rows, stats.num_unindexed_rows)
        return found

    @property
    def vector_index_builds(self) -> int:
        """How often this process built the vector index over the whole table."""
        return self._upkeep.indexes.vector_builds

    @property
    def rare_scopes(self) -> frozenset[str]:
        """Scopes searched with LanceDB's prefilter (see search.filtered)."""
        return frozenset(self._rare)

    def held_as_int8(self) -> int:
        """How many of the memories held in memory keep int8 vectors (Limits.int8_rows)."""
        blocks = self._mirror.latest().blocks or ()
        return sum(len(block) for block in blocks if block.scale is not None)

    @property
    def closed(self) -> bool:
        return self._upkeep.closed.is_set()

    # Reads: each sees the latest committed version, and is retried if another process's
    # cleanup removed files under it.

    def _search(self) -> Search:
        """The latest version, searched in memory or by LanceDB (search.search_of)."""
        snapshot = self._mirror.latest()
        return search_of(snapshot, self.dimension, self.limits, self._rare)

    def _check_model_if_changed(self) -> None:
        """Before a search: a reindex by another process touches MODEL_MARK when it switches
        the model, so a stat call is all a search costs until then."""
        try:
            mark = (self.data_dir / MODEL_MARK).stat().st_mtime
        except OSError:
            mark = 0.0
        if mark != self._model_mark:
            self._mirror.forget()  # the vectors were replaced
            self._table.read("model check", self._table.check_model)
            self._model_mark = mark

    def search(self, text: str, depth: int, where: Filter) -> Searching:
        """Start a recall's searches: the full-text ones start at once, in another thread,
        and run while the caller embeds the query (ONNX Runtime and Lance both release the
        GIL), which hides them (benchmarks/README.md, "How recall ranks"). Searching.finish
        takes the query's vector and returns both searches' best `depth` memories."""
        self._check_model_if_changed()

        def begin() -> tuple[Search, Future[tuple[Results, Reference]]]:
            search = self._search()
            return search, self._searches.submit(self._words, search, text, depth, where)

        return Searching(self._table.read("search", begin), begin, self._table.read, depth, where)

    def _words(
        self, search: Search, text: str, depth: int, where: Filter
    ) -> tuple[Results, Reference]:
        """The best `depth` memories by BM25, and the query's lexical reference. None found if
        the full-text index cannot be read: the search goes on by meaning alone while upkeep
        builds the index again."""
        try:
            found = search.words(text, depth, where)
        except UNREADABLE as error:
            self._words_failed(error)
            found = Hits.empty(self.dimension)  # no rows, from either search
        return found, self._lexical.reference(text, search)

    def lexical_reference(self, text: str) -> Reference:
        """The query's lexical reference in the latest version (lexical.py)."""
        return self._lexical.reference(text, self._table.read("reference", self._search))

    def _words_failed(self, error: BaseException) -> None:
        if self._health.index_failed(["content"], error):
            self._upkeep.soon()

    def nearest(
        self,
        vector: npt.NDArray[np.float32],
        limit: int,
        where: Filter,
        at_least: float = -1.0,
    ) -> list[tuple[dict[str, Any], float]]:
        """The closest memories by cosine, with their similarity; only those `at_least` so
        similar (their rows are read only then)."""
        found = self._table.read("nearest", lambda: self._search().nearest(vector, limit, where))
        close = [i for i, score in enumerate(found.scores.tolist()) if score >= at_least]
        return list(zip(found.rows_at(close), found.scores[close].tolist(), strict=True))

    def existing(self, ids: Sequence[str], search: Search | None = None) -> set[str]:
        """Which of these ids are stored, in `search`'s version or else the latest."""
        if not ids:
            return set()
        search = search or self._table.read("id lookup", self._search)
        return {key[1] for key in search.find([("id", i) for i in ids])}

    def _matching(self, what: str, where: Filter, columns: list[str]) -> pa.Table:
        return self._table.read(what, lambda: self._search().matching(where, columns))

    def get(self, memory_id: str) -> dict[str, Any] | None:
        def run() -> dict[str, Any] | None:
            search = self._search()
            if search.snapshot.blocks is None:  # by the id's index, not a scan
                where = (col("id") == lit(memory_id)).to_sql()
                found = self._table.scan("get", where, MEMORY_COLUMNS, 1)
                return found.to_pylist()[0] if found.num_rows else None
            row = search.find([("id", memory_id)]).get(("id", memory_id))
            return None if row is None else {name: row[name] for name in MEMORY_COLUMNS}

        return self._table.read("get", run)

    def recent(self, where: Filter, limit: int) -> list[dict[str, Any]]:
        table = self._matching("list", where, MEMORY_COLUMNS)
        rows: list[dict[str, Any]] = (
            table.sort_by([("created_at", "descending")]).slice(0, limit).to_pylist()
        )
        return rows

    def page(self, where: Filter, limit: int, after: Key | None = None) -> list[dict[str, Any]]:
        """Up to `limit` memories passing the filter, newest first, from just after `after`
        (browse.py): the keys of every match are read, and the other columns of one page."""

        def run() -> list[dict[str, Any]]:
            search = self._search()
            narrowed = where
            if after is not None:
                end = naive_utc(after.moment)
                narrowed = replace(where, until=min(end, naive_utc(where.until or end)))
            keys = page_keys(search.matching(narrowed, ["id", "created_at"]), limit, after)
            if not keys:
                return []
            span = replace(where, since=keys[-1].moment, until=keys[0].moment)
            rows = {row["id"]: row for row in search.matching(span, MEMORY_COLUMNS).to_pylist()}
            return [rows[key.id] for key in keys if key.id in rows]

        return self._table.read("page", run)

    def tallies(self) -> Tallies:
        """How many memories per scope, per tag and per week."""
        return tallies(self._matching("tallies", Filter(), ["scope", "tags", "created_at"]))

    def all_rows(self) -> Iterator[dict[str, Any]]:
        """Every memory, oldest first, in batches so a large store is not one Python list."""
        table = self._matching("export", Filter(), MEMORY_COLUMNS)
        for batch in table.sort_by("created_at").to_batches(max_chunksize=1024):
            yield from batch.to_pylist()

    def count(self) -> int:
        return self._table.count()

    def count_matching(self, where: Filter) -> int:
        """How many memories pass the filter."""
        return self._table.read("count", lambda: self._search().count(where))

    def scopes(self) -> dict[str, int]:
        counts = pc.value_counts(self._matching("scopes", Filter(), ["scope"])["scope"])
        return {item["values"]: item["counts"] for item in counts.to_pylist()}

    @property
    def remote(self) -> bool:
        """Whether the table is on object storage."""
        return self._table.remote

    def disk_bytes(self) -> int:
        """The bytes of the store: its files on disk, or on object storage the latest
        version's data (LanceDB's table statistics: no listing of the bucket)."""
        if self._table.remote:
            stats = self._table.read("stats", lambda: self._table.handle.stats())
            return int(stats["total_bytes"])
        total = 0
        for root, _dirs, files in os.walk(self.data_dir):
            for name in files:
                with suppress(OSError):  # a file removed by upkeep meanwhile
                    total += os.path.getsize(os.path.join(root, name))
        return total

    def refreshing(self) -> Future[None]:
        """Bring the in-memory copy up to the latest version in a search thread, which the
        next read needs, while the caller embeds a text, which hides it (benchmarks/README.md,
        "Design figures behind the code"). The future never fails: the read that needs the
        version tries again, and reports."""

        def refresh() -> None:
            with suppress(Exception):
                self._table.read("refresh", self._mirror.latest)

        return self._searches.submit(refresh)

    def warm(self) -> None:
        """Read the rows into memory now rather than in the first search, and search the
        full-text index once: searches in memory do not read it (search.InMemory), so a
        damaged one would otherwise go unnoticed until the store outgrows
        Limits.counted_rows."""
        snapshot = self._table.read("warm", self._mirror.latest)
        if not snapshot.blocks:
            return
        text = snapshot.blocks[0].rows["content"][0].as_py()[:200]
        try:
            snapshot.full_text.search(text, ["_score"], None, 1)
        except UNREADABLE as error:
            self._words_failed(error)
        except Exception:  # a probe: the server serves without it
            log.warning("the full-text index could not be searched", exc_info=True)

    # Writes: serialised across processes by the lock file, and retried on a commit conflict.

    def add_new(
        self, rows: Sequence[Row], replacing: Sequence[str] = ()
    ) -> list[dict[str, Any] | None]:
        """Add the rows that are new; for each row, None if added, else the memory it repeats.

        A row repeats a memory with its id, or with its content (by hash) in its scope, or an
        earlier row of the same call. The check and the add happen under the cross-process
        write lock, in one commit, so two processes remembering the same text at once still
        store it once. The memories with the ids in `replacing` are deleted under the same lock,
        after the add; all of them must exist, or nothing changes (MissingIds).
        """
        table = self._table
        with table.locked():
            if replacing:
                table.latest()  # on object storage: what is stored now, not a second ago
            # One version for every check and the add: under the lock, nobody else commits.
            search = table.read("write check", self._search)
            current = table.handle.schema
            table.check_model(current)
            missing = set(replacing) - self.existing(replacing, search)
            if missing:
                raise MissingIds(sorted(missing))
            keys = [("id", row.id) for row in rows]
            known = search.find(keys + [("text", row.scope, row.content_hash) for row in rows])
            results: list[dict[str, Any] | None] = []
            fresh: list[Row] = []
            for row in rows:
                earlier = known.get(("id", row.id)) or known.get(
                    ("text", row.scope, row.content_hash)
                )
                results.append(earlier)
                if earlier is None:
                    fresh.append(row)
                    seen = {"id": row.id, "created_at": row.created_at}
                    known[("id", row.id)] = known[("text", row.scope, row.content_hash)] = seen
            if fresh:
                data = rows_table(fresh, current, self.dimension)
                written = table.write("add", lambda: table.handle.add(data))
                self._mirror.added(data, int(written.version))
                if table.remote:
                    earlier = self._settle(fresh)
                    results = [
                        earlier.get(row.id) if result is None else result
                        for row, result in zip(rows, results, strict=True)
                    ]
            kept = {result["id"] for result in results if result is not None}
            self._delete_locked([i for i in replacing if i not in kept])
        if fresh:
            self._upkeep.wrote()
        return results

    def _settle(self, fresh: Sequence[Row]) -> dict[str, dict[str, Any]]:
        """On object storage, right after our add: no lock kept another machine from adding
        the same text in the same scope meanwhile, so look again, in the version our commit
        made (which holds every commit before it). Of the rows with one text in one scope, the
        first committed stays: it has the lowest row id, since each commit's fragment gets a
        higher id than any before it. A row of ours that came later is deleted again, and
        the memory it repeats returned for it (id: that memory). The first writer may not see
        the later one; the later one always sees the first, so exactly one row stays."""
        table = self._table
        condition: Any = None
        for row in fresh:
            same = (col("scope") == lit(row.scope)) & (col("content_hash") == lit(row.content_hash))
            condition = same if condition is None else condition | same
        columns = ["id", "scope", "content_hash", "created_at"]

        def look() -> pa.Table:
            query = table.handle.search().where(condition.to_sql()).select(columns)
            found: pa.Table = query.with_row_id(True).to_arrow()
            return found

        first: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        for found in table.read("duplicate check", look).to_pylist():
            key = (found["scope"], found["content_hash"])
            if key not in first or found["_rowid"] < first[key][0]:
                first[key] = (found["_rowid"], found)
        earlier: dict[str, dict[str, Any]] = {}
        for row in fresh:
            winner = first.get((row.scope, row.content_hash))
            if winner is not None and winner[1]["id"] != row.id:
                earlier[row.id] = {k: winner[1][k] for k in ("id", "created_at")}
        if earlier:
            log.debug("%d memories were remembered by another server at once", len(earlier))
            self._delete_locked(sorted(earlier))
        return earlier

    def delete(self, ids: Sequence[str]) -> list[str]:
        """Delete the memories with these ids; return the ids that existed.

        The rows stop being returned at once. Their bytes stay in LanceDB's files until upkeep
        erases them, which this schedules straight away (upkeep.py).
        """
        with self._table.locked():
            self._table.latest()  # on object storage: a memory stored a moment ago elsewhere
            found = self.existing(ids)
            self._delete_locked(sorted(found))
        return [memory_id for memory_id in ids if memory_id in found]

    def delete_matching(self, where: Filter) -> int:
        """Delete every memory that passes the filter; return how many there were."""
        table = self._table
        with table.locked():
            table.latest()
            count = self.count_matching(where)
            if count:
                condition = where.sql() or "true"  # built from validated values (Filter.sql)
                table.write("delete", lambda: table.handle.delete(condition))
                self._upkeep.forgot()
        return count

    def _delete_locked(self, ids: Sequence[str]) -> None:
        """Delete rows that exist, holding the write lock, and have their bytes erased."""
        if not ids:
            return
        table = self._table
        table.write("delete", lambda: table.handle.delete(col("id").isin(list(ids))))
        self._upkeep.forgot()

    def without_windows(self, min_chars: int, limit: int) -> list[tuple[str, str]]:
        """(id, content) of memories of at least `min_chars` characters whose windows were
        never embedded (`chunks` is null): those stored by an earlier subcog."""
        search = self._table.read("windows backlog", self._search)
        if search.snapshot.unreadable:
            return []  # a scan would read the damaged file: after the repair
        return self._table.read("windows backlog", lambda: search.without_windows(min_chars, limit))

    def set_windows(self, windows: dict[str, npt.NDArray[np.float32]]) -> None:
        """Store the later windows' vectors of these memories (an empty array: none)."""
        if not windows:
            return
        chunks = windows_type(self.dimension)
        update = pa.table(
            {"id": list(windows), "chunks": windows_column(list(windows.values()), self.dimension)},
            schema=pa.schema(  # the id is the primary key: merge_insert needs it non-nullable
                [pa.field("id", pa.string(), nullable=False), pa.field("chunks", chunks)]
            ),
        )
        table = self._table
        with self._upkeep.running:  # close() waits for this write as for upkeep's
            if self.closed:
                return
            with table.locked():
                table.check_model()  # a reindex may have switched the model meanwhile
                table.write("windows", lambda: table.merge(update))
        self._upkeep.wrote()

    def set_tags(self, memory_id: str, tags: Sequence[str]) -> bool:
        """Replace a memory's tags (validated); False when no memory has the id."""
        update = pa.table(
            {"id": [memory_id], "tags": [list(tags)]},
            schema=pa.schema(  # the id is the primary key: merge_insert needs it non-nullable
                [pa.field("id", pa.string(), nullable=False), self.schema().field("tags")]
            ),
        )
        table = self._table
        with self._upkeep.running, table.locked():
            if not self.existing([memory_id]):
                return False
            table.write("tags", lambda: table.merge(update))
        self._upkeep.wrote()
        return True

    def reindexing(self) -> Reindex:
        """The model switch (reindex.py), which the domain drives with the vectors it embeds."""
        return Reindex(self._table, self._mirror, self._upkeep)

    # Upkeep, erasure and damage (upkeep.py, health.py, repair.py).

    def upkeep(self) -> bool:
        """One pass of upkeep if the locks are free (see Upkeep.run); whether it ran."""
        return self._upkeep.run()

    def upkeep_now(self) -> bool:
        """A pass of upkeep before returning, waiting for the locks."""
        return self._upkeep.now()

    def upkeep_pass(
        self, unreadable: set[int], broken: dict[str, list[str]]
    ) -> tuple[bool, bool, list[str]]:
        """In the upkeep child (aside.py): one pass, for the server that asked."""
        return self._upkeep.run_pass(unreadable, broken)

    def bulk(self) -> Any:
        """For a bulk import: upkeep leaves the vector and full-text indexes alone until the
        end (upkeep_now). The vector index would be built over and over as the store grows."""
        return self._upkeep.bulk()

    def watch(self) -> None:
        """For long-running processes: look now and then for upkeep another process left."""
        self._upkeep.watch()

    def erasure_pending(self) -> bool:
        """Whether forgotten memories may still be in the files (see finish_erasure)."""
        return self._upkeep.marker.pending() is not None

    def finish_erasure(self, timeout: float | None = None) -> bool:
        """Erase forgotten rows from the files before returning, for a process about to exit;
        True when nothing is left to erase. If the store stays busy, the marker stays for the
        next process that opens it."""
        if timeout is None:
            timeout = 2 * self.limits.lock_timeout_s
        return self._upkeep.finish_erasure(timeout)

    def damage(self) -> Damage:
        """What this process found it cannot read in the latest version (health.py). Free
        while nothing failed; `examine` reads every file."""
        return self._health.damage(self._table.read("damage", self._mirror.latest))

    def name_damage(self, fragments: dict[int, int]) -> list[Any]:
        """In the upkeep child: the damaged files of these fragments."""
        return name_damage(self._table, fragments)

    def examine(self) -> Damage:
        """Read every data, deletion and index file of the latest version to its end (on
        object storage: not examined, a damaged object is found when a search reads it)."""
        from subcog.storage.damage import examine

        if self._table.remote:
            return Damage()
        uri = self._table.uri
        return self._table.read("examine", lambda: examine(uri, self._table.dataset()))

    def repair(self, keep_in: Path) -> Repaired:
        """Rebuild the store from every row that can be read (repair.py)."""
        with self._upkeep.running:
            indexes = self._upkeep.indexes
            return repair(self._table, indexes, self._health, self._mirror, keep_in)

    def close(self, timeout: float = 30.0) -> None:
        """Stop upkeep and wait for a pass in progress: a process that exits while a background
        thread is inside Lance can abort instead of exiting cleanly."""
        self._upkeep.closed.set()
        self._searches.shutdown(wait=True)
        self._upkeep.close(timeout)
        self._table.close()
        self._mirror.full_text.close()
