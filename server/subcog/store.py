"""The LanceDB table of memories: schema, add, search, delete, locking and upkeep.

Knows nothing of models or MCP: vectors come in as arrays, filters as validated values.
Writes from every process on one data directory are serialised by a lock file, and every
read sees the latest committed version (read_consistency_interval=0), so several servers
and CLI commands can share a store.
"""

from __future__ import annotations

import atexit
import heapq
import json
import logging
import math
import os
import re
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import lancedb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from filelock import FileLock, Timeout
from lancedb.expr import col, lit
from lancedb.index import FTS, Bitmap, BTree, HnswSq

from subcog import upkeep as child
from subcog.analysis import WORDS, tokens
from subcog.damage import UNREADABLE, Damage, DamagedFile, what_lance_said
from subcog.errors import MissingIds, ModelMismatch, NoSpace, StoreBusy, SubcogError, full_disk
from subcog.mirror import MEMORY_COLUMNS, FullText, Hits, Mirror, Snapshot, open_full_text

log = logging.getLogger(__name__)
T = TypeVar("T")

TABLE = "memories"
# 2: the `chunks` column, the later windows of long memories (see embedder.py).
SCHEMA_VERSION = "2"


# Lance's BM25 gives one occurrence of a token at most (K1 + 1) times the token's idf, with
# K1 = 1.2 (lance-index, scalar/inverted/scorer.rs). A token no memory holds is weighed at that
# bound in a query's reference (see lexical_reference).
BM25_MOST_PER_IDF = 2.2
# Lance's BM25 constants (K1 as above): a token some memory holds is weighed at what it earns in
# the shortest memory holding it, as if it occurred there once (see _best_score, which asks the
# index the same past COUNTED_ROWS).
BM25_K1, BM25_B = 1.2, 0.75
# Up to this many memories, the in-memory copy counts which memories hold each token, so a
# query's reference costs no search; counting a 4,096-row fragment that compaction rewrote
# takes 0.1 to 0.2 s, which upkeep pays, not a tool call (see upkeep).
COUNTED_ROWS = 5_000
LOCK_TIMEOUT_S = 30.0
# Every add or delete makes a LanceDB version and, for adds, a fragment. Compacting after this
# many writes by one process keeps the table small and searches fast.
UPKEEP_EVERY = 50
QUIET_AFTER_S = 1.0  # and after a write, once no other write followed for this long
# Compaction merges fragments smaller than this into fragments of about this size, and leaves
# bigger ones alone, so each run rewrites at most this many rows however large the table is.
FRAGMENT_ROWS = 4096
# Old versions are kept this long after compaction, so that a reader in another process in the
# middle of a query rarely finds its files gone (and when it does, the read is retried).
KEEP_OLD_VERSIONS = timedelta(seconds=4)
# How often a long-running process looks for upkeep that another process asked for.
UPKEEP_POLL_S = 10.0
# Up to this many memories, their vectors are searched exactly in memory (see mirror.py): about
# 1.2 ms per 10,000 and 1.7 kB of memory per memory. Past it, by LanceDB with a vector index:
# measured at 100,000, recall took 34 ms that way and 18 ms in memory (RSS 770 and 930 MB).
MIRROR_ROWS = 150_000
# LanceDB's vector search: exact below VECTOR_INDEX_ROWS memories, then an HNSW index with scalar
# quantisation. One graph per HNSW_ROWS_PER_GRAPH rows (rounded down, so at least one): a search
# visits every graph (NPROBES), and at 1,000,000 memories four graphs of 250,000 took 3.6 ms
# where one took 1.9. A search takes at least VECTOR_FETCH_MIN rows and orders them by their
# exact vectors, read with them anyway; Lance's refine_factor would read them a second time.
VECTOR_INDEX_ROWS = 120_000  # built before the mirror stops, so it is ready when needed
HNSW_ROWS_PER_GRAPH = 1_000_000
NPROBES = 64
HNSW_EF = 300
VECTOR_FETCH_MIN = 30
# A recall's two searches each take the best ranking.DEPTH (100) memories from the in-memory
# copy, but only LANCE_DEPTH from LanceDB: reading each row's columns there is most of a
# search's time (at 1,000,000 memories, 26 ms for 100 rows and 16 ms for 50). On LoCoMo, depth
# 50 instead of 100 moved R@10 from 0.785 to 0.783 and MRR@10 from 0.535 to 0.533.
LANCE_DEPTH = 50
VECTOR_REBUILD_SHARE = 0.15
VECTOR_DELTAS_MAX = 8
# New rows are folded into the full-text index at every upkeep while it holds fewer than
# WORDS_FOLD_ALWAYS_BELOW rows (a fold takes under half a second there), and past that once
# they are WORDS_UNINDEXED_SHARE of it.
WORDS_FOLD_ALWAYS_BELOW = 100_000
WORDS_UNINDEXED_SHARE = 0.01
# Every write makes a version; LanceDB caches each version's metadata. Bounded, so a server's
# memory stays flat however long it runs.
# Lance's caches, sized for the table's rows rounded up to CACHE_STEP_ROWS times a power of two:
# so many bytes a row, at least CACHE_MIN_BYTES, at most the maximum (benchmarks/README.md,
# "One Lance": at 419 memories, 128 MB of index cache held 30 MB of old index versions).
CACHE_STEP_ROWS = 4096
CACHE_MIN_BYTES = 4 * 2**20
META_CACHE_BYTES = 32 * 2**20
META_CACHE_BYTES_PER_ROW = 256
INDEX_CACHE_BYTES = 128 * 2**20
INDEX_CACHE_BYTES_PER_ROW = 1024
VECTOR_INDEX_BYTES_PER_ROW = 768  # HNSW with scalar quantisation: 581-588 bytes a row measured
BEST_SCORES_KEPT = 4096  # tokens in lexical_reference's cache
BEST_SCORE_DRIFT = 0.1
READ_ATTEMPTS = 5
WRITE_ATTEMPTS = 8
# LanceDB compresses strings by default; stored plainly, forgotten text can be shown to be gone
# from every file by scanning the bytes (see README, "Forget means erased").
PLAIN = {"lance-encoding:compression": "none"}
NEXT_VECTOR = "vector_next"  # a reindex in progress writes the new model's vectors here
NEXT_WINDOWS = "chunks_next"  # and the new model's windows here
Embed = Callable[[list[str]], tuple[npt.NDArray[np.float32], list[npt.NDArray[np.float32]]]]
MODEL_MARK = ".model-changed"  # touched when a reindex switches the model


def schema(model: str, dimension: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("content", pa.string(), nullable=False, metadata=PLAIN),
            pa.field("content_hash", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dimension), nullable=False),
            pa.field(
                "tags", pa.list_(pa.field("item", pa.string(), metadata=PLAIN)), nullable=False
            ),
            pa.field("scope", pa.string(), nullable=False),
            pa.field("metadata", pa.string(), nullable=False, metadata=PLAIN),
            pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("chunks", windows_type(dimension), nullable=True),
        ],
        metadata={
            "subcog.model": model,
            "subcog.dimension": str(dimension),
            "subcog.schema": SCHEMA_VERSION,
        },
    )


def windows_type(dimension: int) -> pa.DataType:
    """A memory's later windows: a list of vectors, empty (or null) for most memories."""
    return pa.list_(pa.list_(pa.float32(), dimension))


@dataclass(frozen=True)
class Filter:
    """Which memories a read may return. Every value here has been validated."""

    scope: str | None = None  # None: every scope
    tags: Sequence[str] = ()  # all must be present
    since: datetime | None = None
    until: datetime | None = None

    def sql(self) -> str | None:
        parts: list[str] = []
        if self.scope is not None:
            parts.append((col("scope") == lit(self.scope)).to_sql())
        if self.tags:
            # lancedb.expr has no list functions, so this one part is written as SQL. The tags
            # were validated to letters, digits and . _ : / @ + # -, which cannot end a literal.
            quoted = ", ".join(f"'{tag}'" for tag in self.tags)
            parts.append(f"array_has_all(tags, [{quoted}])")
        if self.since is not None:
            parts.append((col("created_at") >= lit(_naive_utc(self.since))).to_sql())
        if self.until is not None:
            parts.append((col("created_at") <= lit(_naive_utc(self.until))).to_sql())
        return " AND ".join(parts) or None


def _naive_utc(moment: datetime) -> datetime:
    offset = moment.utcoffset()
    return (moment - offset if offset else moment).replace(tzinfo=None)


@dataclass
class Found:
    """Rows found by a search: their columns, their vectors as one matrix, and their scores.

    Rows become Python objects only when asked for: a search finds a hundred, a recall
    returns a few."""

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
        rows: list[dict[str, Any]] = self.table.take(list(indices)).to_pylist()
        return rows


def _in_scope(table: pa.Table, scope: str) -> pa.Table:
    return table.filter(pc.equal(table["scope"], scope))


S = TypeVar("S", pa.Table, Hits)  # rows found by a search
Results = Found | Hits  # the same methods, from LanceDB or from the mirror


@dataclass(frozen=True)
class Reference:
    """A query's lexical reference (Store.lexical_reference)."""

    total: float
    unseen: frozenset[str]  # the query's words (split at whitespace) that no memory holds


@dataclass
class Searched:
    """What a recall's searches found, for ranking."""

    vector: npt.NDArray[np.float32]  # the query's
    lexical: Results  # the best by BM25, with their scores
    semantic: Results  # the best by cosine similarity, with their cosines
    reference: Reference


@dataclass(frozen=True)
class Erasure:
    """What the erase marker holds: a forget's token (a new one with every forget), and once
    the files hold the forgotten rows no more, the table's version then and the time."""

    token: str
    rewritten: int | None = None
    at: float | None = None

    @classmethod
    def read(cls, text: str) -> Erasure:
        try:
            data = json.loads(text)
            return cls(str(data["token"]), data.get("rewritten"), data.get("at"))
        except (ValueError, KeyError, TypeError):  # an earlier subcog's marker: a bare token
            return cls(text.strip() or "?")

    def text(self) -> str:
        return json.dumps({"token": self.token, "rewritten": self.rewritten, "at": self.at})


@dataclass
class Row:
    id: str
    content: str
    content_hash: str
    vector: npt.NDArray[np.float32]
    tags: list[str]
    scope: str
    metadata: str
    created_at: datetime
    chunks: npt.NDArray[np.float32] | None = None  # the later windows' vectors, if any


# Stores still open. At exit they stop their upkeep first: a thread that is inside Lance when the
# interpreter shuts down can abort the process ("FATAL: exception not rethrown").
_OPEN: weakref.WeakSet[Store] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for store in list(_OPEN):
        store.close()


def _retrying(attempts: int, what: str, action: Callable[[], T]) -> T:
    """Run action, retrying with backoff: LanceDB commits can conflict with another process's,
    and a read can lose files to another process's cleanup. Both succeed on a fresh try."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except (SubcogError, ValueError, TypeError):
            raise
        except Exception as exc:
            if attempt == attempts or full_disk(exc):
                raise
            log.debug("%s failed (%s); retry %d", what, exc, attempt)
            time.sleep(min(0.5, 0.01 * 2**attempt))
    raise AssertionError("unreachable")


_PIECE = re.compile(r"[^\W_]+")


def _idf(rows: int, holders: int) -> float:
    """Lance's BM25 idf of a token that `holders` of `rows` memories hold."""
    return math.log(1 + (rows - holders + 0.5) / (holders + 0.5))


@dataclass(eq=False)  # identity, not field equality: stores live in a WeakSet
class Store:
    """One data directory: the LanceDB table, its lock file and its upkeep."""

    data_dir: Path
    model: str
    dimension: int
    check_model: bool = True  # False only for `subcog reindex`, which changes the model
    # Upkeep in a short-lived child process (upkeep.py), for a server: it needs the `lance`
    # package, which a server should not load (benchmarks/README.md, "One Lance").
    upkeep_aside: bool = False
    # In that child: when upkeep asks to run again, the delay goes here, back to the server.
    asked: list[float] | None = None
    _table: Any = field(init=False, repr=False)
    _lock: FileLock = field(init=False, repr=False)
    _index_lock: FileLock = field(init=False, repr=False)
    _writes: int = field(init=False, default=0)
    _upkeep_running: threading.Lock = field(init=False, default_factory=threading.Lock)
    # Scopes too rare to filter after a search rather than before it (see _filtered).
    _rare_scopes: set[str] = field(init=False, default_factory=set)
    _later: Later = field(init=False, repr=False)
    _closed: threading.Event = field(init=False, default_factory=threading.Event)
    _model_mark: float = field(init=False, default=0.0)
    _bulk: bool = field(init=False, default=False)
    _mirror: Mirror = field(init=False, repr=False)
    # token: (its best BM25, the version and row count it was read at); see _best_score
    _best_scores: dict[str, tuple[float, int, int]] = field(init=False, default_factory=dict)
    # The full-text search runs here while the caller searches the vectors.
    _searches: ThreadPoolExecutor = field(init=False, repr=False)
    # Damage found while serving (damage.py): indexes whose search failed, by name: (its parts,
    # Lance said); the damaged files of unreadable fragments, by the fragment's data files.
    _broken: dict[str, tuple[frozenset[str], str]] = field(init=False, default_factory=dict)
    _named: dict[tuple[tuple[int, int], ...], tuple[DamagedFile, ...]] = field(
        init=False, default_factory=dict
    )
    _told_waiting: bool = field(init=False, default=False)
    _sized_for: int = field(init=False, default=0)  # see _resized
    _session: Any = field(init=False, repr=False)  # the caches of the table last opened

    def __post_init__(self) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        self._lock = FileLock(self.data_dir / ".write.lock", timeout=LOCK_TIMEOUT_S)
        self._index_lock = FileLock(self.data_dir / ".index.lock")
        self._later = Later(self.upkeep, "subcog-upkeep")
        self._searches = ThreadPoolExecutor(max_workers=2, thread_name_prefix="subcog-search")
        with self._locked():
            self._table = self._open(0)
            self._resized(self._table.count_rows())  # room for the vector index in the cache
            if self.check_model:
                self._check_model()
            self._upgrade()
            self._ensure_indexes()
        self._mirror = Mirror(
            self._table, MIRROR_ROWS, COUNTED_ROWS, self._full_text(), self._resized
        )
        _OPEN.add(self)
        if self._erase_pending() is not None:
            self._upkeep_soon()  # a process that exited left forgotten rows to erase

    @property
    def cache_sized_for(self) -> int:
        """The number of memories Lance's caches are sized for (see _cache_bytes)."""
        return self._sized_for

    def _resized(self, rows: int) -> Any | None:
        """For a store grown to `rows`, the table opened again with Lance's caches sized for
        it; None if they need not grow (they grow in steps, see _cache_bytes)."""
        if rows <= self._sized_for or self._cache_bytes(rows) == self._cache_bytes(self._sized_for):
            return None
        self._sized_for = rows
        self._table = self._open(self._sized_for)
        if getattr(self, "_mirror", None) is not None:  # not while the store opens
            # The old search's loops close once no snapshot holds it (FullText's finalizer).
            self._mirror.full_text = self._full_text()
        return self._table

    def _full_text(self) -> FullText:
        """The full-text search (mirror.FullText), sharing the caches of the table last
        opened (_open)."""
        return open_full_text(str(self.data_dir / "lancedb"), TABLE, self._session)

    def _open(self, rows: int) -> Any:
        """The table, created if new, with Lance's caches sized for `rows` memories. The
        caller holds the write lock."""
        index_cache, metadata_cache = self._cache_bytes(rows)
        self._session = lancedb.Session(
            index_cache_size_bytes=index_cache, metadata_cache_size_bytes=metadata_cache
        )
        db = lancedb.connect(
            str(self.data_dir / "lancedb"),
            read_consistency_interval=timedelta(0),
            session=self._session,
        )
        if TABLE in db.list_tables().tables:
            table: Any = db.open_table(TABLE)
        else:
            table = db.create_table(TABLE, schema=schema(self.model, self.dimension))
            table.set_unenforced_primary_key("id")
        return table

    def _upgrade(self) -> None:
        """A store made by an earlier subcog gets what this one expects: the `chunks` column
        (null until Memory.backfill_windows fills it). The caller holds the write lock."""
        if "chunks" in self._table.schema.names:
            return
        # The windows have the size of the store's vectors, which a reindex (opening the store
        # set to another model) has not changed yet.
        dimension = int(self._meta(self._table.schema).get("subcog.dimension", self.dimension))
        self._table.add_columns(pa.field("chunks", windows_type(dimension), nullable=True))
        self._update_meta({"subcog.schema": SCHEMA_VERSION})
        log.info("upgraded the store in %s to schema %s", self.data_dir, SCHEMA_VERSION)

    def _indexed(self) -> set[str]:
        return {column for index in self._table.list_indices() for column in index.columns}

    def _ensure_indexes(self) -> None:
        """BM25 on content; B-trees on id and content_hash for the duplicate check; a bitmap
        on scope, which every search filters on (past the in-memory limit, LanceDB's searches
        would read the whole scope column for it: at 1,000,000 memories, 114 against 47 ms
        for the vector search and 57 against 6 ms for the full-text one). Rows added later
        are searched too, unindexed, until upkeep folds them into the indexes."""
        indexed = self._indexed()
        if "content" not in indexed:
            self._table.create_index("content", config=FTS(**WORDS))
        for column in ("id", "content_hash"):
            if column not in indexed:
                self._table.create_index(column, config=BTree())
        if "scope" not in indexed:
            self._table.create_index("scope", config=Bitmap())

    def _index_vectors(self) -> None:
        """Exact search reads every vector; past VECTOR_INDEX_ROWS an HNSW index answers the
        same (recall@10 against exact search is measured by benchmarks/bench.py).

        New rows join the index at every pass, as a small graph of their own (a delta): while
        any row is outside the index, Lance searches the graph with a filter, and at 1,000,000
        memories the graph search took 12 to 17 ms instead of 1 to 2. Every search walks every
        delta, so once there are VECTOR_DELTAS_MAX the small ones merge into one; once they
        hold VECTOR_REBUILD_SHARE of the rows, the index is built again over everything.
        """
        import lance

        index = next((i for i in self._table.list_indices() if i.columns == ["vector"]), None)
        rows = self._table.count_rows()
        if rows < VECTOR_INDEX_ROWS:
            return
        if index is not None:
            dataset = lance.dataset(str(self._uri))
            stats = dataset.stats.index_stats(index.name)
            unindexed: int = stats["num_unindexed_rows"]
            deltas: list[int] = stats["num_indexed_rows_per_delta"]
            if unindexed == 0:
                return
            if sum(deltas[1:]) + unindexed <= VECTOR_REBUILD_SHARE * rows:
                merge = 0 if len(deltas) < VECTOR_DELTAS_MAX else len(deltas) - 1
                dataset.optimize.optimize_indices(
                    index_names=[index.name], num_indices_to_merge=merge
                )
                self._table.checkout_latest()
                return
        config = HnswSq(distance_type="cosine", num_partitions=max(1, rows // HNSW_ROWS_PER_GRAPH))
        self._table.create_index("vector", config=config, replace=True)
        log.info("built the vector index over %d memories", rows)

    @staticmethod
    def _cache_bytes(rows: int) -> tuple[int, int]:
        """Lance's index and metadata caches for a table of `rows` memories, in steps (see
        CACHE_STEP_ROWS), plus room for the whole vector index when the store is big enough to
        have one. Smaller, each search would read parts of the index from disk again: at
        1,000,000 memories the index is 588 MB, and with 128 MB of cache a recall took over a
        second."""
        sized = CACHE_STEP_ROWS
        while sized < rows:
            sized *= 2
        index = min(INDEX_CACHE_BYTES, max(CACHE_MIN_BYTES, sized * INDEX_CACHE_BYTES_PER_ROW))
        meta = min(META_CACHE_BYTES, max(CACHE_MIN_BYTES, sized * META_CACHE_BYTES_PER_ROW))
        if rows >= VECTOR_INDEX_ROWS:
            index += sized * VECTOR_INDEX_BYTES_PER_ROW
        return index, meta

    @property
    def _uri(self) -> Path:
        return self.data_dir / "lancedb" / f"{TABLE}.lance"

    @property
    def _erase_marker(self) -> Path:
        return self.data_dir / ".erase-pending"

    def _meta(self, schema: pa.Schema | None = None) -> dict[str, str]:
        """The table's metadata, from `schema` or else the latest version's."""
        schema = self._table.schema if schema is None else schema
        return {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}

    def _check_model(self, schema: pa.Schema | None = None) -> None:
        """Vectors of two models cannot be compared: refuse to mix them. Checked when the store
        opens and before every write, since `subcog reindex` may change the model meanwhile."""
        if not self.check_model:
            return
        meta = self._meta(schema)
        built_with = (meta.get("subcog.model"), meta.get("subcog.dimension"))
        if built_with != (self.model, str(self.dimension)):
            raise ModelMismatch(
                f"The store in {self.data_dir} holds vectors of the embedding model "
                f"{built_with[0]} ({built_with[1]} dimensions), but this subcog uses "
                f"{self.model} ({self.dimension} dimensions). Run `subcog reindex` to re-embed "
                f"every memory with {self.model}, or set SUBCOG_MODEL={built_with[0]} to keep "
                "the model the store was built with."
            )

    def _check_model_if_changed(self) -> None:
        """Before a search: a reindex by another process touches MODEL_MARK when it switches
        the model, so a stat call is all a search costs until then."""
        try:
            mark = (self.data_dir / MODEL_MARK).stat().st_mtime
        except OSError:
            mark = 0.0
        if mark != self._model_mark:
            self._mirror.forget()  # the vectors were replaced
            self._read("model check", self._check_model)
            self._model_mark = mark

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self._lock.acquire()
        except Timeout:
            raise StoreBusy(
                f"Another process held the write lock on {self.data_dir} for over "
                f"{LOCK_TIMEOUT_S:.0f} s. Try again shortly."
            ) from None
        try:
            yield
        finally:
            self._lock.release()

    # Reads: each sees the latest committed version, and is retried if another process's
    # cleanup removed files under it.

    def _read(self, what: str, action: Callable[[], T]) -> T:
        return _retrying(READ_ATTEMPTS, what, action)

    def _scan(
        self, what: str, where: str | None, columns: list[str], limit: int | None
    ) -> pa.Table:
        """Rows matching a filter, without vector search, as an Arrow table."""

        def run() -> pa.Table:
            query = self._table.search()
            if where:
                query = query.where(where)
            found: pa.Table = query.select(columns).limit(limit).to_arrow()
            return found

        return self._read(what, run)

    def candidates(
        self, text: str, embed: Callable[[], npt.NDArray[np.float32]], depth: int, where: Filter
    ) -> Searched:
        """The query's vector (from `embed`), the best `depth` memories by BM25 and by cosine
        similarity (past the in-memory copy, at most LANCE_DEPTH), both over the filtered rows
        only, each with its vector, and the query's lexical reference (lexical_reference).

        Both searches read one version of the table. The full-text searches start first, in
        another thread, and run while the query is embedded (ONNX Runtime and Lance both
        release the GIL), which hides them (benchmarks/README.md, "How recall ranks").
        """
        self._check_model_if_changed()
        sql = where.sql()
        embedded: list[npt.NDArray[np.float32]] = []  # once, however often the reads are tried

        def words(snapshot: Snapshot, depth: int) -> tuple[Results, Reference]:
            return self._words(snapshot, text, depth, where, sql), self.lexical_reference(
                text, snapshot
            )

        def run() -> Searched:
            snapshot = self._mirror.latest()
            deep = depth if snapshot.blocks is not None else min(depth, LANCE_DEPTH)
            # One thread for the full-text searches, one for the model: two cores' worth.
            lexical = self._searches.submit(words, snapshot, deep)
            if not embedded:
                embedded.append(embed())
            semantic = self._vectors(snapshot, embedded[0], deep, where, sql)
            found, reference = lexical.result()
            return Searched(embedded[0], found, semantic, reference)

        return self._read("search", run)

    def lexical_reference(self, text: str, snapshot: Snapshot | None = None) -> Reference:
        """What BM25 would give a memory that matched all of the query's information: the sum,
        over the query's tokens (as the index analyses them; a repeated token counts again, as
        in BM25), of what the token earns in the shortest memory that holds it; a token that
        no memory holds counts at the most one occurrence of it could score (BM25_MOST_PER_IDF
        times its idf). A memory's BM25 over this is the share of the query's information it
        matches: one common shared word earns little, an identifier or every content word
        earns nearly all."""
        snapshot = snapshot or self._read("reference", self._mirror.latest)
        rows = snapshot.count() if snapshot.blocks is not None else snapshot.table.count_rows()
        # The simple tokenizer splits at whatever is not a letter or digit, so each such piece
        # of a word is one token or none (a stop word).
        words: list[tuple[str, list[tuple[str, str]]]] = []
        for word in text.split():
            pieces = [(piece, tokens(piece)) for piece in _PIECE.findall(word)]
            words.append((word, [(piece, kept[0]) for piece, kept in pieces if kept]))
        held = snapshot.holders(token for _, pieces_of in words for _, token in pieces_of)
        total = 0.0
        missing: set[str] = set()
        for word, pieces_of in words:
            for piece, token in pieces_of:
                if held is None:  # the piece as written: the search stems it once
                    best = self._best_score(snapshot, rows, piece)
                elif held.count[token]:
                    average = held.length / max(1, held.texts)
                    weight = (BM25_K1 + 1) / (
                        1 + BM25_K1 * (1 - BM25_B + BM25_B * held.shortest[token] / average)
                    )
                    best = weight * _idf(rows, held.count[token])
                else:
                    best = 0.0
                total += best or BM25_MOST_PER_IDF * _idf(rows, 0)
                if not best:
                    missing.add(word)
        return Reference(total, frozenset(missing))

    def _best_score(self, snapshot: Snapshot, rows: int, piece: str) -> float:
        """The best BM25 any memory gets for this one piece of a word (one token); 0 if none
        holds it.

        One search of the full-text index per token (half a millisecond), so the answers are
        kept: a token some memory holds keeps its best score while the store stays within
        BEST_SCORE_DRIFT of its size then (the score drifts little with it); that no memory
        holds a token is asked again at every new version, since the next memory may hold it.
        Rows not yet folded into the index are not searched here (each search would read them
        whole): until upkeep folds them (seconds below WORDS_FOLD_ALWAYS_BELOW memories, past it
        once they are WORDS_UNINDEXED_SHARE of the index), their words count as unseen."""
        kept = self._best_scores.get(piece)
        if kept is not None:
            best, version, then = kept
            if version == snapshot.version or (
                best > 0 and abs(rows - then) <= BEST_SCORE_DRIFT * then
            ):
                return best
        try:  # the index only: rows not yet folded into it would be read whole
            found = snapshot.full_text.search(piece, ["_score"], None, 1, fast=True)
        except UNREADABLE as error:
            self._index_failed(snapshot, ["content"], error)
            return 0.0
        best = float(found["_score"][0].as_py()) if found.num_rows else 0.0
        if len(self._best_scores) >= BEST_SCORES_KEPT:
            self._best_scores.clear()
        self._best_scores[piece] = (best, snapshot.version, rows)
        return best

    def _words(
        self, snapshot: Snapshot, text: str, depth: int, where: Filter, sql: str | None
    ) -> Results:
        """The best `depth` memories by BM25. None, if the full-text index cannot be read: the
        search goes on by meaning alone while upkeep builds the index again."""
        try:
            return self._words_searched(snapshot, text, depth, where, sql)
        except UNREADABLE as error:
            self._index_failed(snapshot, ["content"], error)
        if snapshot.blocks is not None:
            return snapshot.none(self.dimension)
        return Found.of(snapshot.table.schema.empty_table(), np.zeros(0))

    def _words_searched(
        self, snapshot: Snapshot, text: str, depth: int, where: Filter, sql: str | None
    ) -> Results:
        # A match query: the words are searched as they are, OR-ed, never parsed as a query
        # language.
        if snapshot.blocks is not None:

            def mirrored(where_sql: str | None) -> Hits:
                return snapshot.words(text, depth, where_sql, self.dimension)

            return self._filtered(mirrored, Hits.in_scope, where, sql, depth, enough=depth)

        def search(where_sql: str | None) -> pa.Table:
            columns = [*MEMORY_COLUMNS, "vector", "chunks", "_score"]
            return snapshot.full_text.search(text, columns, where_sql, depth)

        found = self._filtered(search, _in_scope, where, sql, depth, enough=depth)
        return Found.of(found, found["_score"].to_numpy())

    def _vectors(
        self,
        snapshot: Snapshot,
        vector: npt.NDArray[np.float32],
        limit: int,
        where: Filter,
        sql: str | None,
    ) -> Results:
        if snapshot.blocks is not None:
            return snapshot.nearest(
                vector, limit, where.scope, where.tags, where.since, where.until
            )
        # Ranked by the exact vectors (the best window's, for a long memory), not the index's
        # quantised distances.
        nearest = self._nearest(snapshot.table, vector, limit, where, sql)
        windows = self._nearest_windows(snapshot.table, vector, limit, sql)
        both = pa.concat_tables([nearest.drop_columns("_distance"), windows])
        _, first = np.unique(both["id"].to_numpy(zero_copy_only=False), return_index=True)
        found = Found.of(both.take(np.sort(first)), None)
        exact = found.cosines(vector)
        best = np.argsort(-exact, kind="stable")[:limit]
        return found.take(best, exact[best].astype(np.float64))

    def _nearest_windows(
        self,
        table: Any,
        vector: npt.NDArray[np.float32],
        limit: int,
        sql: str | None,
    ) -> pa.Table:
        """The long memories whose later windows are nearest: an exact search of the `chunks`
        column (Lance scores a list of vectors by its best one), which only long memories fill."""
        query = table.search(vector, vector_column_name="chunks").distance_type("cosine")
        if sql:
            query = query.where(sql, prefilter=True)
        columns = [*MEMORY_COLUMNS, "vector", "chunks", "_distance"]
        found: pa.Table = query.select(columns).limit(limit).to_arrow()
        return found.drop_columns("_distance")

    def existing(self, ids: Sequence[str], snapshot: Snapshot | None = None) -> set[str]:
        """Which of these ids are stored, in `snapshot` or else the latest version."""
        if not ids:
            return set()
        snapshot = snapshot or self._read("id lookup", self._mirror.latest)
        if snapshot.blocks is not None:
            return {key[1] for key in snapshot.find([("id", i) for i in ids])}
        where = col("id").isin(list(ids)).to_sql()
        return set(self._lookup("id lookup", snapshot, where, ["id"])["id"].to_pylist())

    def _lookup(self, what: str, snapshot: Snapshot, where: str, columns: list[str]) -> pa.Table:
        """Rows matching a filter on indexed columns."""

        def run() -> pa.Table:
            found: pa.Table = snapshot.table.search().where(where).select(columns).limit(None)
            return found.to_arrow()

        return self._read(what, run)

    def _matching(self, what: str, where: Filter, columns: list[str]) -> pa.Table:
        """The rows passing the filter: from memory while the rows are mirrored (and with a
        damaged file, only there: a LanceDB scan would read it), else from LanceDB."""

        snapshot = self._read(what, self._mirror.latest)
        if snapshot.blocks is None:
            return self._scan(what, where.sql(), columns, None)
        found = snapshot.matching(where.scope, where.tags, where.since, where.until)
        if found is None:
            return schema(self.model, self.dimension).empty_table().select(columns)
        return found.select(columns)

    def get(self, memory_id: str) -> dict[str, Any] | None:
        snapshot = self._read("get", self._mirror.latest)
        if snapshot.blocks is not None:
            found = snapshot.find([("id", memory_id)]).get(("id", memory_id))
            return None if found is None else {name: found[name] for name in MEMORY_COLUMNS}
        where = (col("id") == lit(memory_id)).to_sql()
        rows: list[dict[str, Any]] = self._scan("get", where, MEMORY_COLUMNS, 1).to_pylist()
        return rows[0] if rows else None

    def recent(self, where: Filter, limit: int) -> list[dict[str, Any]]:
        table = self._matching("list", where, MEMORY_COLUMNS)
        rows: list[dict[str, Any]] = (
            table.sort_by([("created_at", "descending")]).slice(0, limit).to_pylist()
        )
        return rows

    def all_rows(self) -> Iterator[dict[str, Any]]:
        """Every memory, oldest first, in batches so a large store is not one Python list."""
        table = self._matching("export", Filter(), MEMORY_COLUMNS)
        for batch in table.sort_by("created_at").to_batches(max_chunksize=1024):
            yield from batch.to_pylist()

    def count(self) -> int:
        return int(self._read("count", lambda: self._table.count_rows()))

    def count_matching(self, where: Filter) -> int:
        """How many memories pass the filter."""

        def run() -> int:
            snapshot = self._mirror.latest()
            if snapshot.blocks is not None:
                return snapshot.count(where.scope, where.tags, where.since, where.until)
            return int(snapshot.table.count_rows(where.sql()))

        return self._read("count", run)

    def without_windows(self, min_chars: int, limit: int) -> list[tuple[str, str]]:
        """(id, content) of memories of at least `min_chars` characters whose windows were
        never embedded (`chunks` is null): those stored by an earlier subcog."""
        if self._read("windows backlog", self._mirror.latest).unreadable:
            return []  # a scan would read the damaged file: after the repair
        where = f"chunks IS NULL AND character_length(content) >= {int(min_chars)}"
        found = self._scan("windows backlog", where, ["id", "content"], limit)
        return list(zip(found["id"].to_pylist(), found["content"].to_pylist(), strict=True))

    def set_windows(self, windows: dict[str, npt.NDArray[np.float32]]) -> None:
        """Store the later windows' vectors of these memories (an empty array: none)."""
        if not windows:
            return
        update = pa.table(
            {"id": list(windows), "chunks": self._windows_column(list(windows.values()))},
            schema=pa.schema(  # the id is the primary key: merge_insert needs it non-nullable
                [
                    pa.field("id", pa.string(), nullable=False),
                    pa.field("chunks", windows_type(self.dimension)),
                ]
            ),
        )
        with self._upkeep_running:  # close() waits for this write as for upkeep's
            if self.closed:
                return
            with self._locked():
                self._check_model()  # a reindex may have switched the model meanwhile
                self._write("windows", lambda: self._merge(update))
        self._wrote()

    def _merge(self, update: pa.Table) -> None:
        self._table.merge_insert("id").when_matched_update_all().execute(update)

    def _windows_column(self, windows: Sequence[npt.NDArray[np.float32] | None]) -> pa.Array:
        counts = [0 if w is None else len(w) for w in windows]
        kept = [w.reshape(-1, self.dimension) for w in windows if w is not None and len(w)]
        flat = np.concatenate(kept).astype(np.float32).reshape(-1) if kept else np.zeros(0)
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), self.dimension)
        offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
        return pa.ListArray.from_arrays(offsets, vectors, type=windows_type(self.dimension))

    def scopes(self) -> dict[str, int]:
        scopes = self._matching("scopes", Filter(), ["scope"])["scope"]
        counts = pa.compute.value_counts(scopes).to_pylist()
        return {item["values"]: item["counts"] for item in counts}

    def disk_bytes(self) -> int:
        total = 0
        for root, _dirs, files in os.walk(self.data_dir):
            for name in files:
                with suppress(OSError):  # a file removed by upkeep meanwhile
                    total += os.path.getsize(os.path.join(root, name))
        return total

    # Writes: serialised across processes by the lock file, and retried on a commit conflict.

    def _write(self, what: str, action: Callable[[], T]) -> T:
        try:
            return _retrying(WRITE_ATTEMPTS, what, action)
        except Exception as exc:
            if full_disk(exc):
                raise NoSpace(
                    f"No space left on device: free space under {self.data_dir}. Nothing was "
                    "changed."
                ) from exc
            raise

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
        with self._locked():
            # One version for every check and the add: under the lock, nobody else commits.
            snapshot = self._read("write check", self._mirror.latest)
            table_schema = self._table.schema
            self._check_model(table_schema)
            missing = set(replacing) - self.existing(replacing, snapshot)
            if missing:
                raise MissingIds(sorted(missing))
            known = self._known(rows, snapshot)
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
                data = self._arrow(fresh, table_schema)
                written = self._write("add", lambda: self._table.add(data))
                self._mirror.added(data, int(written.version))
            kept = {result["id"] for result in results if result is not None}
            self._delete_locked([i for i in replacing if i not in kept])
        if fresh:
            self._wrote()
        return results

    def while_refreshing(self, work: Callable[[], T]) -> T:
        """work() in a search thread, while this one brings the in-memory copy up to the latest
        version, which the next read needs. A remember embeds its text so (ONNX Runtime
        releases the GIL): 0.45 ms less per remember at 1,000 memories, in-process."""
        pending = self._searches.submit(work)
        with suppress(Exception):  # the read that needs the version tries again, and reports
            self._read("refresh", self._mirror.latest)
        return pending.result()

    def nearest(
        self, vector: npt.NDArray[np.float32], limit: int, where: Filter
    ) -> list[tuple[dict[str, Any], float]]:
        """The closest memories by cosine, with their similarity."""
        sql = where.sql()
        found = self._read(
            "nearest", lambda: self._vectors(self._mirror.latest(), vector, limit, where, sql)
        )
        return list(zip(found.rows(), found.scores.tolist(), strict=True))

    def _nearest(
        self,
        table: Any,
        vector: npt.NDArray[np.float32],
        limit: int,
        where: Filter,
        sql: str | None,
    ) -> pa.Table:
        """At least `limit` (and VECTOR_FETCH_MIN) rows that match `sql`, nearest first."""
        depth = max(limit, VECTOR_FETCH_MIN)

        def search(where_sql: str | None) -> pa.Table:
            query = table.search(vector, vector_column_name="vector").distance_type("cosine")
            query = query.nprobes(NPROBES).ef(HNSW_EF)
            if where_sql:
                query = query.where(where_sql, prefilter=True)
            columns = [*MEMORY_COLUMNS, "vector", "chunks", "_distance"]
            found: pa.Table = query.select(columns).limit(depth).to_arrow()
            return found

        return self._filtered(search, _in_scope, where, sql, depth, enough=limit)

    def _filtered(
        self,
        search: Callable[[str | None], S],
        in_scope: Callable[[S, str], S],
        where: Filter,
        sql: str | None,
        depth: int,
        enough: int,
    ) -> S:
        """search(sql), which finds up to `depth` rows; at least `enough` of them if there are.

        Lance filters before a search of an index (prefilter) by building a mask of the
        matching rows: at 1,000,000 memories that took longer than the vector search itself,
        and a third of the full-text search (a quarter of it at 1,000). So a scope is filtered
        here, after the search, unless that leaves fewer than `enough` rows from a search that
        found `depth`: then the scope is rarer than that, and it is searched again with the
        prefilter, as it will be from then on. Any row of the scope better than the ones kept
        would have been found.
        """
        scope = where.scope
        only_scope = not where.tags and where.since is None and where.until is None
        if not (only_scope and scope and scope not in self._rare_scopes):
            return search(sql)
        found = search(None)
        mine = in_scope(found, scope)
        if len(mine) >= enough or len(found) < depth:
            return mine
        self._rare_scopes.add(scope)
        return search(sql)

    def _known(
        self, rows: Sequence[Row], snapshot: Snapshot
    ) -> dict[tuple[str, ...], dict[str, Any]]:
        """The stored memories that rows could repeat, keyed by id and by (scope, hash)."""
        if snapshot.blocks is not None:
            keys = [("id", row.id) for row in rows]
            return snapshot.find(keys + [("text", row.scope, row.content_hash) for row in rows])
        hashes = sorted({row.content_hash for row in rows})
        ids = sorted({row.id for row in rows})
        where = (col("content_hash").isin(hashes) | col("id").isin(ids)).to_sql()
        columns = ["id", "scope", "content_hash", "created_at"]
        found = self._lookup("duplicate check", snapshot, where, columns).to_pylist()
        known: dict[tuple[str, ...], dict[str, Any]] = {}
        for item in found:
            known[("id", item["id"])] = item
            known[("text", item["scope"], item["content_hash"])] = item
        return known

    def delete(self, ids: Sequence[str]) -> list[str]:
        """Delete the memories with these ids; return the ids that existed.

        The rows stop being returned at once. Their bytes stay in LanceDB's files until upkeep
        erases them, which this schedules straight away (see _compact).
        """
        with self._locked():
            found = self.existing(ids)
            self._delete_locked(sorted(found))
        return [memory_id for memory_id in ids if memory_id in found]

    def delete_matching(self, where: Filter) -> int:
        """Delete every memory that passes the filter; return how many there were."""
        with self._locked():
            count = self.count_matching(where)
            if count:
                condition = where.sql() or "true"  # built from validated values (Filter.sql)
                self._write("delete", lambda: self._table.delete(condition))
                self._mark_erasure(Erasure(uuid.uuid4().hex))
                self._upkeep_soon()
        return count

    def _delete_locked(self, ids: Sequence[str]) -> None:
        """Delete rows that exist, holding the write lock, and have their bytes erased."""
        if not ids:
            return
        self._write("delete", lambda: self._table.delete(col("id").isin(list(ids))))
        self._mark_erasure(Erasure(uuid.uuid4().hex))
        self._upkeep_soon()

    def _arrow(self, rows: Sequence[Row], schema: pa.Schema) -> pa.Table:
        """The rows in the table's schema. Columns a row has no value for (a reindex's, while
        it runs) are null."""
        vectors = np.stack([row.vector for row in rows]).astype(np.float32).reshape(-1)
        columns = {
            "id": [row.id for row in rows],
            "content": [row.content for row in rows],
            "content_hash": [row.content_hash for row in rows],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors), self.dimension),
            "tags": [row.tags for row in rows],
            "scope": [row.scope for row in rows],
            "metadata": [row.metadata for row in rows],
            "created_at": [row.created_at for row in rows],
            "chunks": self._windows_column([row.chunks for row in rows]),
        }
        return pa.table(
            {
                name: columns[name]
                if name in columns
                else pa.nulls(len(rows), schema.field(name).type)
                for name in schema.names
            },
            schema=schema,
        )

    # Model changes

    def reindex(
        self,
        embed: Embed,
        batch_size: int = 256,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Re-embed every memory with this store's model; return how many were re-embedded.

        The new vectors go into a column of their own, batch by batch, while servers keep
        serving from the old one; a row still without a new vector is what is left to do, so an
        interrupted run resumes where it stopped. The switch, filling the last rows and swapping
        the columns and the recorded model, happens under the write lock. From then on, servers
        still running the old model refuse to write or search until restarted.
        """
        with self._locked():
            meta, names = self._meta(), self._table.schema.names
            done = (meta.get("subcog.model"), meta.get("subcog.dimension")) == (
                self.model,
                str(self.dimension),
            )
            if done and NEXT_VECTOR not in names:
                return 0
            if NEXT_VECTOR in names and meta.get("subcog.reindex_to") != self.model:
                # left by a reindex to another model
                self._table.drop_columns([c for c in (NEXT_VECTOR, NEXT_WINDOWS) if c in names])
                names = self._table.schema.names
            added = [
                pa.field(NEXT_VECTOR, pa.list_(pa.float32(), self.dimension), nullable=True),
                pa.field(NEXT_WINDOWS, windows_type(self.dimension), nullable=True),
            ]
            added = [column for column in added if column.name not in names]
            if added:  # NEXT_WINDOWS alone: a reindex an earlier subcog left unfinished
                self._table.add_columns(added)
                self._update_meta({"subcog.reindex_to": self.model})
        total = int(self._table.count_rows())
        while self._fill_next(embed, batch_size, total, progress, locked=False):
            pass
        with self._locked():
            while self._fill_next(embed, batch_size, total, progress, locked=True):
                pass
            for index in self._table.list_indices():
                if index.columns == ["vector"]:
                    self._table.drop_index(index.name)
            self._table.drop_columns(["vector", "chunks"])
            self._table.alter_columns(
                {"path": NEXT_VECTOR, "rename": "vector"},
                {"path": NEXT_WINDOWS, "rename": "chunks"},
            )
            self._update_meta(
                {
                    "subcog.model": self.model,
                    "subcog.dimension": str(self.dimension),
                    "subcog.reindex_to": None,  # removes the key
                }
            )
            self._mirror.forget()
            (self.data_dir / MODEL_MARK).touch()
        self._upkeep_soon()  # builds the vector index again if the store is large
        return total

    def _fill_next(
        self,
        embed: Embed,
        batch_size: int,
        total: int,
        progress: Callable[[int, int], None] | None,
        locked: bool,
    ) -> bool:
        """Embed one batch of rows that have no new vector yet; False when none is left."""
        todo = self._scan("reindex", f"{NEXT_VECTOR} IS NULL", ["id", "content"], batch_size)
        if todo.num_rows == 0:
            return False
        vectors, windows = embed(todo["content"].to_pylist())
        flat = vectors.astype(np.float32).reshape(-1)
        update = pa.table(
            {
                "id": todo["id"],
                NEXT_VECTOR: pa.FixedSizeListArray.from_arrays(pa.array(flat), self.dimension),
                NEXT_WINDOWS: self._windows_column(windows),
            },
            schema=pa.schema(  # the id is the primary key: merge_insert needs it non-nullable
                [
                    pa.field("id", pa.string(), nullable=False),
                    pa.field(NEXT_VECTOR, pa.list_(pa.float32(), self.dimension)),
                    pa.field(NEXT_WINDOWS, windows_type(self.dimension)),
                ]
            ),
        )
        if locked:
            self._write("reindex", lambda: self._merge(update))
        else:
            with self._locked():
                self._write("reindex", lambda: self._merge(update))
        if progress:
            progress(todo.num_rows, total)
        return True

    def _update_meta(self, values: dict[str, str | None]) -> None:
        import lance

        lance.dataset(str(self._uri)).update_schema_metadata(values)
        self._table.checkout_latest()

    # Upkeep: compaction, version cleanup and erasure, one process at a time, never inside a
    # tool call: it runs in a background thread and only when the write lock is free.

    def _wrote(self) -> None:
        """After a commit (one fragment, however many rows): compact every UPKEEP_EVERY commits,
        and once a burst of writes has ended, so that the searches after it do not pay for
        many small fragments."""
        self._writes += 1
        if self._writes >= UPKEEP_EVERY:
            self._writes = 0
            self._upkeep_soon()
        self._later.quiet(QUIET_AFTER_S)

    def _upkeep_soon(self, delay: float = 0.0) -> None:
        if self.asked is not None:
            self.asked.append(delay)
        else:
            self._later.soon(delay)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self, timeout: float = 30.0) -> None:
        """Stop scheduling upkeep and wait for a pass in progress: a process that exits while
        a background thread is inside Lance can abort instead of exiting cleanly."""
        self._closed.set()
        self._later.close()
        self._searches.shutdown(wait=True)
        self._mirror.full_text.close()
        if self._upkeep_running.acquire(timeout=timeout):
            self._upkeep_running.release()

    def warm(self) -> None:
        """Read the rows into memory now rather than in the first search."""
        self._read("warm", self._mirror.latest)

    # Damage (damage.py): a file that cannot be read costs the memories it holds, not the store.

    def _index_failed(self, snapshot: Snapshot, columns: list[str], error: BaseException) -> None:
        """An index on `columns` failed a search: say so once, and have upkeep build it again."""
        parts = [index for index in self._table.list_indices() if index.columns == columns]
        if not parts:
            return
        name, uuids = parts[0].name, frozenset({parts[0].index_uuid})
        if self._broken.get(name, (None,))[0] == uuids:
            return
        self._broken[name] = (uuids, what_lance_said(error))
        log.warning(
            "the index %s of the store in %s cannot be read (%s); searches go on without it "
            "while it is built again. If this repeats, run `subcog repair`.",
            name,
            self.data_dir,
            self._broken[name][1],
        )
        self._upkeep_soon()

    def _index_parts(self) -> dict[str, frozenset[str]]:
        """Each index's name: its uuid, which changes when it is built again."""
        return {index.name: frozenset({index.index_uuid}) for index in self._table.list_indices()}

    def damage(self) -> Damage:
        """What this process found it cannot read in the latest version: the fragments that
        failed to load (with their damaged files named) and the indexes that failed a search.
        Free while nothing failed; `examine` reads every file."""
        snapshot = self._read("damage", self._mirror.latest)
        if not snapshot.unreadable and not self._broken:
            return Damage(snapshot.version)
        files: list[DamagedFile] = []
        if snapshot.unreadable:
            key = tuple(sorted(snapshot.unreadable.items()))
            if key not in self._named:
                self._named[key] = tuple(self._name_damage_aside(dict(snapshot.unreadable)))
            files.extend(self._named[key])
        current = self._index_parts() if self._broken else {}
        for name, (uuids, error) in list(self._broken.items()):
            if current.get(name) != uuids:
                del self._broken[name]  # built again since
                continue
            for uid in sorted(uuids):
                files.append(DamagedFile(f"_indices/{uid}", "index", 0, error, name))
        return Damage(snapshot.version, tuple(files), dict(snapshot.unreadable))

    def _name_damage_aside(self, fragments: dict[int, int]) -> list[DamagedFile]:
        if not self.upkeep_aside:
            return self.name_damage(fragments)
        request = child.Request("name-damage", str(self.data_dir), self.model, self.dimension)
        return child.damaged_files(replace(request, fragments=fragments))

    def name_damage(self, fragments: dict[int, int]) -> list[DamagedFile]:
        """The damaged files of these fragments (id: live memories), read to their end."""
        import lance

        from subcog.damage import examine_fragment

        files: list[DamagedFile] = []
        for fragment in lance.dataset(str(self._uri)).get_fragments():
            if fragment.fragment_id in fragments:
                found = examine_fragment(self._uri, fragment)
                memories = fragments[fragment.fragment_id]
                files.extend(found or [DamagedFile("data", "data", memories, "could not be read")])
        return files

    def examine(self) -> Damage:
        """Read every data, deletion and index file of the latest version to its end."""
        import lance

        from subcog.damage import examine

        return self._read("examine", lambda: examine(self._uri, lance.dataset(str(self._uri))))

    def repair(self, keep_in: Path) -> Repaired:
        """Rebuild what `examine` finds damaged: the damaged files are copied under `keep_in`;
        if a data or deletion file is damaged, the table is written again from every row that
        can be read (old versions and their files dropped at once, a pending erasure with
        them); every index with a damaged file, or lost in the rewrite, is built again.

        Holds both locks throughout, so other processes' writes wait (StoreBusy past
        LOCK_TIMEOUT_S); their searches read the old version until the new one commits."""
        import lance

        from subcog.damage import examine, keep_copies, rewrite

        if not self._compaction_locks(timeout=LOCK_TIMEOUT_S):
            raise StoreBusy(
                f"Another process held the lock on {self.data_dir} for over "
                f"{LOCK_TIMEOUT_S:.0f} s. Try again shortly."
            )
        try:
            with self._upkeep_running:
                dataset = lance.dataset(str(self._uri))
                damage = examine(self._uri, dataset)
                if not damage:
                    return Repaired(damage, None, dataset.count_rows())
                keep_copies(self._uri, damage, keep_in)
                if damage.fragments:
                    counts = rewrite(self._uri, dataset, damage)
                    recovered, lost = counts.recovered, counts.lost
                else:
                    recovered, lost = dataset.count_rows(), 0
                    for name in damage.indexes:
                        self._table.drop_index(name)
                self._table.checkout_latest()
                self._ensure_indexes()
                self._index_vectors()
                self._broken.clear()
                self._mirror.forget()
                if damage.fragments:
                    lance.dataset(str(self._uri)).cleanup_old_versions(
                        older_than=timedelta(0), delete_unverified=True
                    )
                    self._erase_marker.unlink(missing_ok=True)  # nothing forgotten was copied
                log.debug("repaired the store in %s: %d memories kept", self.data_dir, recovered)
                return Repaired(damage, keep_in, recovered, lost)
        finally:
            self._lock.release()
            self._index_lock.release()

    def watch(self) -> None:
        """For long-running processes: look now and then for upkeep that another process left."""

        def poll() -> None:
            while not self._closed.wait(UPKEEP_POLL_S):  # a closed store touches Lance no more
                # Not while a file is damaged: the erasure waits for `subcog repair`, and a
                # server's upkeep process would stay for nothing (upkeep.IDLE_S).
                if self._erase_pending() is not None and not self.damage().unreadable:
                    self.upkeep()

        threading.Thread(target=poll, name="subcog-upkeep-watch", daemon=True).start()

    def _erase_pending(self) -> Erasure | None:
        """The erasure a forget asked for and nobody finished, if any (the marker file)."""
        try:
            text = self._erase_marker.read_text()
        except OSError:
            return None
        return Erasure.read(text)

    def _mark_erasure(self, erasure: Erasure) -> None:
        """Write the marker whole (another process may read it meanwhile)."""
        staging = self._erase_marker.with_name(f".erase-{os.getpid()}-{threading.get_ident()}")
        staging.write_text(erasure.text())
        os.replace(staging, self._erase_marker)

    def erasure_pending(self) -> bool:
        """Whether forgotten memories may still be in the files (see finish_erasure)."""
        return self._erase_pending() is not None

    def upkeep(self) -> bool:
        """Compact small fragments, erase deleted rows from the files, fold new rows into the
        indexes, drop old versions: one pass, here or, for a server, in a child process
        (upkeep.py).

        Returns whether it ran: it never waits for a lock, so a busy store is done later.
        Compaction holds the write lock; indexing holds a lock of its own (see _index).
        """
        if self._closed.is_set() or not self._upkeep_running.acquire(blocking=False):
            return False
        try:
            unreadable = set(self._read("refresh", self._mirror.latest).unreadable)
            broken = {name: sorted(uuids) for name, (uuids, _error) in self._broken.items()}
            if self.upkeep_aside:
                request = child.Request(
                    "upkeep", str(self.data_dir), self.model, self.dimension, self._bulk
                )
                answer = child.run(replace(request, unreadable=sorted(unreadable), broken=broken))
                ran, rewrote, rebuilt = answer.ran, answer.rewrote, answer.rebuilt
                for delay in answer.again_in:
                    self._upkeep_soon(delay)
            else:
                ran, rewrote, rebuilt = self.upkeep_pass(unreadable, broken)
            for name in rebuilt:  # unless a search found the new index failing meanwhile
                if name in self._broken and sorted(self._broken[name][0]) == broken.get(name):
                    del self._broken[name]
            if rewrote:  # the in-memory copy reads (and counts) the new fragments here, not in
                self._read("refresh", self._mirror.latest)  # the next tool call
            return ran
        except Exception:
            log.exception("store upkeep failed; it will be tried again later")
            return False
        finally:
            self._upkeep_running.release()

    def upkeep_pass(
        self, unreadable: set[int], broken: dict[str, list[str]]
    ) -> tuple[bool, bool, list[str]]:
        """One pass of upkeep (see upkeep), leaving alone the fragments in `unreadable` and
        building again the indexes in `broken` (name: the uuids that failed). Returns whether
        it ran, whether a compaction wrote new fragments, and the indexes built again."""
        if self.asked is not None:  # in the child process: the server's findings
            self._broken = {name: (frozenset(uuids), "") for name, uuids in broken.items()}
        before_broken = set(self._broken)
        if not self._compaction_locks(timeout=0):
            if self._erase_pending() is not None:  # erasure must not wait for the next write
                self._upkeep_soon(delay=1.0)
            return False, False, []
        try:
            try:
                erasing = self._erase_pending()
                before = self._table.version
                self._compact(unreadable)
                rewrote = self._table.version != before
            finally:
                self._lock.release()  # the index pass keeps only the index lock
            if unreadable:
                self._upkeep_while_damaged()
            else:
                self._rebuild_broken()
                self._index(rebuild_words=erasing is not None and erasing.rewritten is None)
                if erasing is not None:
                    self._advance(erasing)
        finally:
            self._index_lock.release()
        if rewrote:
            # The versions (and files) this pass replaced are dropped once old enough.
            self._upkeep_soon(delay=KEEP_OLD_VERSIONS.total_seconds() + 0.5)
        return True, rewrote, sorted(before_broken - set(self._broken))

    def _advance(self, erasing: Erasure) -> None:
        """Take a pending erasure one step on, holding the index lock, after a compaction that
        rewrote every fragment with a deleted row (and, in its first step, a new full-text
        index): first record the version from which no data holds the forgotten rows; once
        the versions before it are old enough to be dropped, and dropped, remove the marker.
        A forget meanwhile writes a new marker, which starts again. The marker stays on disk
        until then, so an exit at any point leaves the erasure to the next process."""
        if erasing.rewritten is None:
            done = Erasure(erasing.token, self._table.version, time.time())
            with self._locked():  # forgets write the marker under it
                if self._erase_pending() == erasing:
                    self._mark_erasure(done)
            self._upkeep_soon(delay=KEEP_OLD_VERSIONS.total_seconds() + 0.5)
            return
        waited = time.time() - (erasing.at or 0.0)
        if waited < KEEP_OLD_VERSIONS.total_seconds():
            self._upkeep_soon(delay=KEEP_OLD_VERSIONS.total_seconds() - waited + 0.5)
            return
        oldest = min(v["version"] for v in self._table.list_versions())
        if oldest < erasing.rewritten:  # not dropped yet (the cleanup ran too soon): again
            self._upkeep_soon(delay=KEEP_OLD_VERSIONS.total_seconds() + 0.5)
            return
        with self._locked():
            if self._erase_pending() == erasing:
                self._erase_marker.unlink()

    def _compaction_locks(self, timeout: float) -> bool:
        """The index lock, then the write lock: compaction needs both, since Lance refuses a
        compaction that another process's index commit overtook (and a failed one erases
        nothing). False, holding neither, if one stays taken for `timeout` seconds."""
        try:
            self._index_lock.acquire(timeout=timeout)
        except Timeout:
            return False
        try:
            self._lock.acquire(timeout=timeout)
        except Timeout:
            self._index_lock.release()
            return False
        return True

    def _compact(self, unreadable: set[int]) -> None:
        """One pass of Lance's compaction, with options LanceDB's optimize() does not expose.

        Fragments under FRAGMENT_ROWS rows merge; bigger ones stay, so the cost of a pass does
        not grow with the table. Any fragment with a deleted row is rewritten without it
        (materialize_deletions_threshold=0): LanceDB's delete only marks rows, and a forgotten
        memory must leave the files. Then versions older than KEEP_OLD_VERSIONS are removed,
        with their files. Fragments in `unreadable` (a damaged file) are left as they are, and so
        are old versions: they may still hold those rows, for a better tool than ours.
        """
        import lance  # pylance, the same Lance as inside lancedb; only upkeep needs it
        from lance.optimize import Compaction

        options = {
            "target_rows_per_fragment": FRAGMENT_ROWS,
            "materialize_deletions_threshold": 0.0,
            "num_threads": 1,
        }
        dataset = lance.dataset(str(self._uri))
        if not unreadable:
            dataset.optimize.compact_files(**options)  # type: ignore[arg-type]
        else:
            plan = Compaction.plan(dataset, options)  # type: ignore[arg-type]
            tasks = [t for t in plan.tasks if not {f.id for f in t.fragments} & unreadable]
            if tasks:
                Compaction.commit(dataset, [task.execute(dataset) for task in tasks])
        self._table.checkout_latest()
        if not unreadable:  # while a file is damaged, older versions may still hold its rows
            lance.dataset(str(self._uri)).cleanup_old_versions(older_than=KEEP_OLD_VERSIONS)

    def _index(self, rebuild_words: bool = False) -> None:
        """Fold new rows into the indexes, and build the vector index when it is due; with
        rebuild_words, first build the full-text index again, so that its word lists no longer
        name forgotten words. The caller holds the index lock.

        Not under the write lock: at 1,000,000 memories folding new rows into the full-text
        index takes seconds and building the vector index minutes, and remember would wait
        for them. Lance commits an index beside concurrent adds and deletes; compaction, which
        would conflict, holds the index lock too.
        """
        import lance

        if rebuild_words:
            self._table.create_index("content", config=FTS(**WORDS), replace=True)
        due = [
            index.name
            for index in self._table.list_indices()
            if index.columns != ["vector"]
            and (index.columns != ["content"] or self._words_due(index.name))
        ]
        lance.dataset(str(self._uri)).optimize.optimize_indices(index_names=due)
        self._table.checkout_latest()
        if not self._bulk:
            self._index_vectors()

    def _upkeep_while_damaged(self) -> None:
        """While a data file is damaged, new rows still join the indexes, but nothing that
        reads every row runs (building an index again, finishing an erasure): that waits for
        `subcog repair`, which the server says once."""
        if not self._told_waiting:
            self._told_waiting = True
            log.warning(
                "upkeep of the damaged store in %s waits for `subcog repair`: until then, "
                "forgotten memories stay in its files",
                self.data_dir,
            )
        if self._broken:
            return  # an index that cannot be read cannot take new rows either
        try:
            self._index()
        except UNREADABLE as error:
            log.debug("indexing waits for the repair: %s", error)

    def _rebuild_broken(self) -> None:
        """Build again each index whose search failed (_index_failed), unless another process
        did already. The caller holds the index lock, and no data file is damaged."""
        if not self._broken:
            return
        current = self._index_parts()
        for name, (uuids, _error) in list(self._broken.items()):
            if current.get(name) == uuids:
                self._table.drop_index(name)
            del self._broken[name]
        self._ensure_indexes()
        self._table.checkout_latest()
        log.info("built the store's damaged indexes again")

    def _words_due(self, name: str) -> bool:
        """Whether to fold new rows into the full-text index now. Folding rewrites it, which
        takes longer the bigger it is (4 s at 750,000 memories), so a big store waits until
        new rows are WORDS_UNINDEXED_SHARE of it; until then they are searched unindexed. A
        bulk import leaves it to its final pass."""
        if self._bulk:
            return False
        stats = self._table.index_stats(name)
        if stats is None:
            return True
        unindexed: int = stats.num_unindexed_rows
        indexed: int = stats.num_indexed_rows
        return unindexed > 0 and (
            indexed < WORDS_FOLD_ALWAYS_BELOW or unindexed >= WORDS_UNINDEXED_SHARE * indexed
        )

    @contextmanager
    def bulk(self) -> Iterator[None]:
        """For a bulk import: upkeep leaves the vector and full-text indexes alone until the
        end (upkeep_now). The vector index, rebuilt each time new rows reach
        VECTOR_REBUILD_SHARE of it, would be built over and over as the store grows."""
        self._bulk = True
        try:
            yield
        finally:
            self._bulk = False

    def upkeep_now(self) -> bool:
        """Run upkeep before returning, waiting for the lock or a pass in progress."""
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while not self.upkeep():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def finish_erasure(self, timeout: float = 2 * LOCK_TIMEOUT_S) -> bool:
        """Erase forgotten rows from the files before returning, for a process about to exit
        (about KEEP_OLD_VERSIONS and a second); True when nothing is left to erase. If the
        store stays busy, the marker stays for the next process that opens it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            erasing = self._erase_pending()
            if erasing is None:
                return True
            if self.damage().unreadable:
                log.warning(
                    "the forgotten memories will be erased from the files once "
                    "`subcog repair` has rebuilt the damaged store in %s",
                    self.data_dir,
                )
                return False
            if erasing.at is not None:  # the old versions can go once old enough
                time.sleep(
                    min(max(0.0, erasing.at + KEEP_OLD_VERSIONS.total_seconds() - time.time()), 5.0)
                )
            if not self.upkeep():
                time.sleep(0.2)
        log.warning(
            "the store stayed busy; the forgotten memories will be erased from the files by "
            "the next subcog that opens %s",
            self.data_dir,
        )
        return False


@dataclass(frozen=True)
class Repaired:
    """What `Store.repair` found and did."""

    damage: Damage  # what examine found before the repair
    kept_in: Path | None  # where the damaged files were copied; None when nothing was damaged
    recovered: int  # memories in the store after the repair
    lost: int = 0  # memories of damaged files that could not be read


class Later:
    """Runs one action in one background thread, at each time asked for.

    Upkeep is asked for after every write; a threading.Timer per write would start a thread
    each time (about 1 ms, inside the write's latency). Times that have come when the thread
    looks are served by one run; a later time is still served later (cleanup waits for the
    versions a compaction replaced to grow old).
    """

    def __init__(self, action: Callable[[], object], name: str) -> None:
        self._action = action
        self._name = name
        self._due: list[float] = []  # a heap of the times asked for by soon()
        self._quiet: float | None = None  # pushed back by every quiet()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def soon(self, delay: float = 0.0) -> None:
        """Run in `delay` seconds (one run serves every time that has come by then)."""
        with self._changed:
            heapq.heappush(self._due, time.monotonic() + delay)
            self._wake()

    def quiet(self, delay: float) -> None:
        """Run once `delay` seconds have passed without another call to quiet()."""
        with self._changed:
            self._quiet = time.monotonic() + delay
            self._wake()

    def close(self) -> None:
        """Run nothing more. An action in progress finishes."""
        with self._changed:
            self._closed = True
            self._changed.notify()

    def _wake(self) -> None:
        if self._closed:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._changed.notify()

    def _run(self) -> None:
        while self._next():
            self._action()

    def _next(self) -> bool:
        """Wait until something is due and clear it; False once closed."""
        with self._changed:
            while not self._closed:
                pending = self._due[:1] + ([] if self._quiet is None else [self._quiet])
                now = time.monotonic()
                if pending and min(pending) <= now:
                    while self._due and self._due[0] <= now:
                        heapq.heappop(self._due)
                    if self._quiet is not None and self._quiet <= now:
                        self._quiet = None
                    return True
                self._changed.wait(min(pending) - now if pending else None)
            return False
