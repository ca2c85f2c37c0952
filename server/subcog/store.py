"""The LanceDB table of memories: schema, add, search, delete, locking and upkeep.

Knows nothing of models or MCP: vectors come in as arrays, filters as validated values.
Writes from every process on one data directory are serialised by a lock file, and every
read sees the latest committed version (read_consistency_interval=0), so several servers
and CLI commands can share a store.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
from filelock import FileLock, Timeout
from lancedb.expr import col, lit

from subcog.errors import ModelMismatch, StoreBusy

log = logging.getLogger(__name__)

TABLE = "memories"
SCHEMA_VERSION = "1"
LOCK_TIMEOUT_S = 30.0
# Every add or delete makes a LanceDB version and, for adds, a fragment. Compacting after this
# many writes by one process keeps the table small and searches fast.
UPKEEP_EVERY = 50
# Old versions are kept this long after compaction, so a reader in another process that is
# in the middle of a query does not find its files gone.
KEEP_OLD_VERSIONS = timedelta(seconds=10)
MEMORY_COLUMNS = ["id", "content", "tags", "scope", "metadata", "created_at"]


def schema(model: str, dimension: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("content", pa.string(), nullable=False),
            pa.field("content_hash", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dimension), nullable=False),
            pa.field("tags", pa.list_(pa.string()), nullable=False),
            pa.field("scope", pa.string(), nullable=False),
            pa.field("metadata", pa.string(), nullable=False),
            pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        ],
        metadata={
            "subcog.model": model,
            "subcog.dimension": str(dimension),
            "subcog.schema": SCHEMA_VERSION,
        },
    )


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
class Row:
    id: str
    content: str
    content_hash: str
    vector: npt.NDArray[np.float32]
    tags: list[str]
    scope: str
    metadata: str
    created_at: datetime


@dataclass
class Store:
    """One data directory: the LanceDB table plus its lock file."""

    data_dir: Path
    model: str
    dimension: int
    _table: Any = field(init=False, repr=False)
    _lock: FileLock = field(init=False, repr=False)
    _writes: int = field(init=False, default=0)
    _upkeep_running: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        self._lock = FileLock(self.data_dir / ".write.lock", timeout=LOCK_TIMEOUT_S)
        db = lancedb.connect(str(self.data_dir / "lancedb"), read_consistency_interval=timedelta(0))
        with self._locked():
            if TABLE in db.list_tables().tables:
                self._table = db.open_table(TABLE)
            else:
                self._table = db.create_table(TABLE, schema=schema(self.model, self.dimension))
                self._table.set_unenforced_primary_key("id")
        self._check_model()

    def _check_model(self) -> None:
        meta = {k.decode(): v.decode() for k, v in (self._table.schema.metadata or {}).items()}
        built_with = (meta.get("subcog.model"), meta.get("subcog.dimension"))
        if built_with != (self.model, str(self.dimension)):
            raise ModelMismatch(
                f"The store in {self.data_dir} was built with the embedding model "
                f"{built_with[0]} ({built_with[1]} dimensions), but {self.model} "
                f"({self.dimension} dimensions) is loaded. Use the model the store was built "
                "with, or point SUBCOG_DATA_DIR at another directory."
            )

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

    # Reads

    def find_by_hash(self, scope: str, content_hash: str) -> dict[str, Any] | None:
        where = ((col("scope") == lit(scope)) & (col("content_hash") == lit(content_hash))).to_sql()
        rows = self._table.search().where(where).select(["id", "created_at"]).limit(1).to_list()
        return rows[0] if rows else None

    def search(
        self, vector: npt.NDArray[np.float32], limit: int, where: Filter
    ) -> list[dict[str, Any]]:
        """The nearest memories by cosine distance, exact, with the filter applied first."""
        query = self._table.search(vector).distance_type("cosine")
        sql = where.sql()
        if sql:
            query = query.where(sql, prefilter=True)
        result: list[dict[str, Any]] = (
            query.select([*MEMORY_COLUMNS, "_distance"]).limit(limit).to_list()
        )
        return result

    def existing(self, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        rows = self._table.search().where(col("id").isin(list(ids)).to_sql()).select(["id"])
        return {row["id"] for row in rows.limit(len(ids)).to_list()}

    def recent(self, where: Filter, limit: int) -> list[dict[str, Any]]:
        query = self._table.search()
        sql = where.sql()
        if sql:
            query = query.where(sql)
        table = query.select(MEMORY_COLUMNS).limit(None).to_arrow()
        table = table.sort_by([("created_at", "descending")]).slice(0, limit)
        rows: list[dict[str, Any]] = table.to_pylist()
        return rows

    def count(self) -> int:
        return int(self._table.count_rows())

    def scopes(self) -> dict[str, int]:
        scopes = self._table.search().select(["scope"]).limit(None).to_arrow()["scope"]
        counts = pa.compute.value_counts(scopes).to_pylist()
        return {item["values"]: item["counts"] for item in counts}

    def disk_bytes(self) -> int:
        total = 0
        for root, _dirs, files in os.walk(self.data_dir):
            for name in files:
                with suppress(OSError):  # a file removed by upkeep meanwhile
                    total += os.path.getsize(os.path.join(root, name))
        return total

    # Writes

    def add_unless_duplicate(self, row: Row) -> dict[str, Any] | None:
        """Add row, unless its content already exists in its scope: then return that memory.

        The check and the add happen under the cross-process write lock, so two processes
        remembering the same text at once still store it once.
        """
        with self._locked():
            existing = self.find_by_hash(row.scope, row.content_hash)
            if existing is not None:
                return existing
            self._table.add(self._arrow([row]))
        self._wrote(1)
        return None

    def delete(self, ids: Sequence[str]) -> list[str]:
        """Delete the memories with these ids; return the ids that existed."""
        with self._locked():
            found = self.existing(ids)
            if found:
                self._table.delete(col("id").isin(sorted(found)))
        if found:
            self._wrote(len(found))
        return [memory_id for memory_id in ids if memory_id in found]

    def _arrow(self, rows: Sequence[Row]) -> pa.Table:
        vectors = np.stack([row.vector for row in rows]).astype(np.float32).reshape(-1)
        return pa.table(
            {
                "id": [row.id for row in rows],
                "content": [row.content for row in rows],
                "content_hash": [row.content_hash for row in rows],
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors), self.dimension),
                "tags": [row.tags for row in rows],
                "scope": [row.scope for row in rows],
                "metadata": [row.metadata for row in rows],
                "created_at": [row.created_at for row in rows],
            },
            schema=self._table.schema,
        )

    # Upkeep

    def _wrote(self, count: int) -> None:
        self._writes += count
        if self._writes >= UPKEEP_EVERY:
            self._writes = 0
            threading.Thread(target=self.upkeep, name="subcog-upkeep", daemon=True).start()

    def upkeep(self) -> bool:
        """Compact fragments and drop old versions, unless another process is writing.

        Returns whether it ran. It never waits for the lock: a busy store is compacted later.
        """
        if not self._upkeep_running.acquire(blocking=False):
            return False
        try:
            try:
                self._lock.acquire(timeout=0)
            except Timeout:
                return False
            try:
                self._table.optimize(cleanup_older_than=KEEP_OLD_VERSIONS)
            finally:
                self._lock.release()
            return True
        except Exception:
            log.exception("store upkeep failed; it will be tried again after later writes")
            return False
        finally:
            self._upkeep_running.release()
