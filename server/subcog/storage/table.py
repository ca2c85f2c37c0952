"""The one LanceDB handle on the table of memories: opening it, its schema and model, its
indexes, and reads and writes with their locks and retries.

Writes from every process on one data directory are serialised by a lock file, and every read
sees the latest committed version (read_consistency_interval=0), so several servers and CLI
commands can share a store. A commit that conflicts with another process's, or a read whose
files another process's cleanup removed, succeeds on a fresh try.

On object storage (location.py) no file lock can reach the other machines: the locks are this
process's own, commits are made safe by LanceDB's conflict checks and our retries alone, and
a read asks for the latest version at most every `refresh_s` seconds (README, "Team and
multi-machine").
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import lancedb
import pyarrow as pa
from filelock import FileLock, Timeout
from lancedb.index import FTS, Bitmap, BTree

from subcog.errors import ModelMismatch, NoSpace, StoreBusy, SubcogError, full_disk
from subcog.storage.analysis import WORDS
from subcog.storage.fulltext import FullText, open_full_text
from subcog.storage.limits import Limits
from subcog.storage.location import Location
from subcog.storage.schema import SCHEMA_VERSION, TABLE, schema, windows_type

log = logging.getLogger(__name__)
T = TypeVar("T")


def retrying(
    attempts: int, what: str, action: Callable[[], T], again: Callable[[], None] | None = None
) -> T:
    """Run action, retrying with backoff: LanceDB commits can conflict with another process's,
    and a read can lose files to another process's cleanup. Both succeed on a fresh try, after
    `again` (if given) has run."""
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
            if again is not None:
                with suppress(Exception):
                    again()
    raise AssertionError("unreachable")


def conflicted(error: BaseException) -> bool:
    """Whether Lance refused a commit because another came first (it says "retry")."""
    said = str(error).lower()
    return "commit conflict" in said or "preempted by concurrent" in said


class ProcessLock:
    """A lock of this process only, with FileLock's acquire(timeout)/release: on object
    storage, where no lock file reaches the other machines (their commits are checked by
    LanceDB instead). Re-entrant in a thread, as FileLock is."""

    def __init__(self, timeout: float = -1) -> None:
        self._lock = threading.RLock()
        self._timeout = timeout

    def acquire(self, timeout: float | None = None) -> None:
        wait = self._timeout if timeout is None else timeout
        if not self._lock.acquire(timeout=-1 if wait < 0 else wait):
            raise Timeout("subcog's process lock")

    def release(self) -> None:
        self._lock.release()


class Table:
    """The table in one data directory, with its write lock and its index lock."""

    def __init__(
        self,
        data_dir: Path,
        model: str,
        dimension: int,
        limits: Limits,
        check_model: bool,
        location: Location | None = None,
        refresh_s: float = 0.0,
    ) -> None:
        self.data_dir = data_dir
        self.location = location or Location(str(data_dir / "lancedb"))
        self.remote = self.location.remote
        self.refresh = timedelta(seconds=refresh_s)
        self.model = model
        self.dimension = dimension
        self.limits = limits
        self.checks_model = check_model  # False only for `subcog reindex`, which changes it
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
        self.write_lock: FileLock | ProcessLock
        self.index_lock: FileLock | ProcessLock
        if self.remote:
            self.write_lock = ProcessLock(limits.lock_timeout_s)
            self.index_lock = ProcessLock()
        else:
            locks = self.lock_dir
            self.write_lock = FileLock(locks / ".write.lock", timeout=limits.lock_timeout_s)
            self.index_lock = FileLock(locks / ".index.lock")
        self.sized_for = 0  # the rows Lance's caches are sized for (see resized)
        self._session: Any = None
        with self.locked():
            # Several servers may open a new store on object storage at once: the one whose
            # table or index commit lost finds the winner's on a fresh try.
            retrying(self.limits.write_attempts, "open", self._open_checked)
        self.full_text = self._full_text()

    @property
    def lock_dir(self) -> Path:
        """Where a local store's lock files are, the same for every process using the store
        whatever its data directory: for the default store (DATA_DIR/lancedb) the data
        directory, as before; for a SUBCOG_STORE elsewhere, the store's own directory (made if
        missing). A SUBCOG_STORE naming some data directory's default store (a `lancedb`
        directory with a writable parent) takes that data directory's locks, so it and the
        server using that directory shut each other out."""
        store = Path(self.location.db)
        if store.resolve() == (self.data_dir / "lancedb").resolve():
            return self.data_dir
        store.mkdir(mode=0o700, parents=True, exist_ok=True)
        if store.name == "lancedb" and os.access(store.parent, os.W_OK):
            return store.parent
        return store

    def _open_checked(self) -> None:
        self.sized_for = 0
        self.handle: Any = self._open(0)
        self.resized(self.handle.count_rows())  # room for the vector index in the cache
        self.check_model()
        self._upgrade()
        self.ensure_indexes()

    @property
    def uri(self) -> Path:
        """The table's directory, for a local store (damage.py and repair.py read its files);
        on object storage, see `location`."""
        return Path(self.location.table)

    def dataset(self) -> Any:
        """The latest version as a pylance dataset (upkeep, a CLI command)."""
        return self.location.dataset()

    def resized(self, rows: int) -> tuple[Any, FullText] | None:
        """For a store grown to `rows`, the table and its full-text search opened again with
        Lance's caches sized for it; None if they need not grow (they grow in steps,
        Limits.cache_bytes)."""
        cache_bytes = self.limits.cache_bytes
        if rows <= self.sized_for or cache_bytes(rows) == cache_bytes(self.sized_for):
            return None
        self.sized_for = rows
        self.handle = self._open(rows)
        if getattr(self, "full_text", None) is None:  # while the table opens: made after
            return None
        self.full_text = self._full_text()
        return self.handle, self.full_text

    def _full_text(self) -> FullText:
        return open_full_text(self.location, TABLE, self._session, self.refresh)

    def _open(self, rows: int) -> Any:
        """The table, created if new, with Lance's caches sized for `rows` memories. The
        caller holds the write lock."""
        index_cache, metadata_cache = self.limits.cache_bytes(rows)
        self._session = lancedb.Session(
            index_cache_size_bytes=index_cache, metadata_cache_size_bytes=metadata_cache
        )
        db = lancedb.connect(
            self.location.db,
            read_consistency_interval=self.refresh,
            session=self._session,
            storage_options=dict(self.location.options) or None,
        )
        if TABLE in db.list_tables().tables:
            return db.open_table(TABLE)
        table: Any = db.create_table(TABLE, schema=schema(self.model, self.dimension))
        table.set_unenforced_primary_key("id")
        return table

    def _upgrade(self) -> None:
        """A store made by an earlier subcog gets what this one expects: the `chunks` column
        (null until Memory.backfill_windows fills it), and the `author` column (null: stored
        before authors were kept). The caller holds the write lock; on object storage another
        server may upgrade at once, and the loser's retry finds the column there."""
        names = self.handle.schema.names
        if "chunks" in names and "author" in names:
            return
        if "chunks" not in names:
            # The windows have the size of the store's vectors, which a reindex (opening the
            # store set to another model) has not changed yet.
            dimension = int(self.meta().get("subcog.dimension", self.dimension))
            self.handle.add_columns(pa.field("chunks", windows_type(dimension), nullable=True))
        if "author" not in self.handle.schema.names:
            self.handle.add_columns(pa.field("author", pa.string(), nullable=True))
        self.update_meta({"subcog.schema": SCHEMA_VERSION})
        log.info("upgraded the store in %s to schema %s", self.location.shown, SCHEMA_VERSION)

    def meta(self, table_schema: pa.Schema | None = None) -> dict[str, str]:
        """The table's metadata, from `table_schema` or else the latest version's."""
        table_schema = self.handle.schema if table_schema is None else table_schema
        return {k.decode(): v.decode() for k, v in (table_schema.metadata or {}).items()}

    def update_meta(self, values: dict[str, str | None]) -> None:
        """Set (None: remove) keys of the table's metadata. LanceDB has no table-level metadata
        call, so this one loads pylance (a CLI's reindex or an old store's upgrade)."""
        self.dataset().update_schema_metadata(values)
        self.handle.checkout_latest()

    def check_model(self, table_schema: pa.Schema | None = None) -> None:
        """Vectors of two models cannot be compared: refuse to mix them. Checked when the store
        opens and before every write, since `subcog reindex` may change the model meanwhile."""
        if not self.checks_model:
            return
        meta = self.meta(table_schema)
        built_with = (meta.get("subcog.model"), meta.get("subcog.dimension"))
        if built_with != (self.model, str(self.dimension)):
            raise ModelMismatch(
                f"The store in {self.data_dir} holds vectors of the embedding model "
                f"{built_with[0]} ({built_with[1]} dimensions), but this subcog uses "
                f"{self.model} ({self.dimension} dimensions). Run `subcog reindex` to re-embed "
                f"every memory with {self.model}, or set SUBCOG_MODEL={built_with[0]} to keep "
                "the model the store was built with."
            )

    def indexes(self) -> list[Any]:
        """LanceDB's descriptions of the table's indexes (name, columns, index_uuid)."""
        indexes: list[Any] = self.handle.list_indices()
        return indexes

    def index_on(self, columns: list[str]) -> Any | None:
        return next((index for index in self.indexes() if index.columns == columns), None)

    def ensure_indexes(self) -> None:
        """BM25 on content; B-trees on id and content_hash for the duplicate check; a bitmap
        on scope, which every search filters on (past the in-memory limit, LanceDB's searches
        would read the whole scope column for it, several times slower at 1,000,000 memories:
        benchmarks/README.md, "Where the time went"). Rows added later are searched too,
        unindexed, until upkeep folds them into the indexes."""
        indexed = {column for index in self.indexes() for column in index.columns}
        if "content" not in indexed:
            self.handle.create_index("content", config=FTS(**WORDS))
        for column in ("id", "content_hash"):
            if column not in indexed:
                self.handle.create_index(column, config=BTree())
        if "scope" not in indexed:
            self.handle.create_index("scope", config=Bitmap())

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the write lock (re-entrant in a thread): StoreBusy past Limits.lock_timeout_s."""
        try:
            self.write_lock.acquire()
        except Timeout:
            raise StoreBusy(
                f"Another process held the write lock on {self.data_dir} for over "
                f"{self.limits.lock_timeout_s:.0f} s. Try again shortly."
            ) from None
        try:
            yield
        finally:
            self.write_lock.release()

    def compaction_locks(self, timeout: float) -> bool:
        """The index lock, then the write lock: compaction needs both, since Lance refuses a
        compaction that another process's index commit overtook (and a failed one erases
        nothing). False, holding neither, if one stays taken for `timeout` seconds."""
        try:
            self.index_lock.acquire(timeout=timeout)
        except Timeout:
            return False
        try:
            self.write_lock.acquire(timeout=timeout)
        except Timeout:
            self.index_lock.release()
            return False
        return True

    def read(self, what: str, action: Callable[[], T]) -> T:
        """Run a read, retried if it fails. On object storage the retry reads the latest
        version: the one this process last saw (at most SUBCOG_REFRESH_S old) may have lost its
        files to another server's cleanup."""
        latest = (lambda: self.handle.checkout_latest()) if self.remote else None
        return retrying(self.limits.read_attempts, what, action, latest)

    def latest(self) -> None:
        """On object storage, before a write that depends on what is stored (a forget, a
        supersede): read the latest version now, not the one seen up to SUBCOG_REFRESH_S ago.
        Locally every read is the latest already."""
        if self.remote:
            self.read("latest", lambda: self.handle.checkout_latest())

    def write(self, what: str, action: Callable[[], T]) -> T:
        """Run a commit, retried on a conflict; NoSpace when the disk is full."""
        try:
            return retrying(self.limits.write_attempts, what, action)
        except Exception as exc:
            if full_disk(exc):
                raise NoSpace(
                    f"No space left on device: free space under {self.data_dir}. Nothing was "
                    "changed."
                ) from exc
            raise

    def scan(self, what: str, where: str | None, columns: list[str], limit: int | None) -> pa.Table:
        """Rows matching a filter, without a search, as an Arrow table."""

        def run() -> pa.Table:
            query = self.handle.search()
            if where:
                query = query.where(where)
            found: pa.Table = query.select(columns).limit(limit).to_arrow()
            return found

        return self.read(what, run)

    def merge(self, update: pa.Table) -> None:
        """Update the rows with the ids in `update` (its other columns replace theirs)."""
        self.handle.merge_insert("id").when_matched_update_all().execute(update)

    def count(self) -> int:
        return int(self.read("count", lambda: self.handle.count_rows()))

    @property
    def version(self) -> int:
        return int(self.handle.version)

    def close(self) -> None:
        self.full_text.close()
