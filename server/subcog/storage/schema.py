"""What the table holds: its columns, a row as the domain hands it in, and the filters a read
may apply. Knows nothing of models or MCP: vectors come in as arrays, filters as validated
values."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from lancedb.expr import col, lit

TABLE = "memories"
# 2: the `chunks` column, the later windows of long memories (see embedder.py).
# 3: the `author` column: who stored each memory (a token's name, or the stdio client's).
SCHEMA_VERSION = "3"
# LanceDB compresses strings by default; stored plainly, forgotten text can be shown to be gone
# from every file by scanning the bytes (see README, "Forget means erased").
PLAIN = {"lance-encoding:compression": "none"}
NEXT_VECTOR = "vector_next"  # a reindex in progress writes the new model's vectors here
NEXT_WINDOWS = "chunks_next"  # and the new model's windows here
ROW_COLUMNS = [
    "id",
    "content",
    "content_hash",
    "tags",
    "scope",
    "metadata",
    "created_at",
    "author",
]
MEMORY_COLUMNS = ["id", "content", "tags", "scope", "metadata", "created_at", "author"]
FOUND_COLUMNS = [*MEMORY_COLUMNS, "vector", "chunks"]  # a found row and what ranking needs
_EPOCH = datetime(1970, 1, 1)


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
            pa.field("author", pa.string(), nullable=True),  # null: stored before schema 3
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


def windows_column(windows: Sequence[npt.NDArray[np.float32] | None], dimension: int) -> pa.Array:
    """The `chunks` column of rows with these windows (None or empty: none)."""
    counts = [0 if w is None else len(w) for w in windows]
    kept = [w.reshape(-1, dimension) for w in windows if w is not None and len(w)]
    flat = np.concatenate(kept).astype(np.float32).reshape(-1) if kept else np.zeros(0)
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dimension)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, vectors, type=windows_type(dimension))


def vectors_column(vectors: npt.NDArray[np.float32], dimension: int) -> pa.Array:
    flat = vectors.astype(np.float32).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), dimension)


@dataclass
class Row:
    """A memory as the domain stores it."""

    id: str
    content: str
    content_hash: str
    vector: npt.NDArray[np.float32]
    tags: list[str]
    scope: str
    metadata: str
    created_at: datetime
    chunks: npt.NDArray[np.float32] | None = None  # the later windows' vectors, if any
    author: str | None = None  # who stored it


def rows_table(rows: Sequence[Row], table_schema: pa.Schema, dimension: int) -> pa.Table:
    """The rows in the table's schema. Columns a row has no value for (a reindex's, while it
    runs) are null."""
    columns = {
        "id": [row.id for row in rows],
        "content": [row.content for row in rows],
        "content_hash": [row.content_hash for row in rows],
        "vector": vectors_column(np.stack([row.vector for row in rows]), dimension),
        "tags": [row.tags for row in rows],
        "scope": [row.scope for row in rows],
        "metadata": [row.metadata for row in rows],
        "created_at": [row.created_at for row in rows],
        "chunks": windows_column([row.chunks for row in rows], dimension),
        "author": pa.array([row.author for row in rows], pa.string()),
    }
    return pa.table(
        {
            name: columns[name]
            if name in columns
            else pa.nulls(len(rows), table_schema.field(name).type)
            for name in table_schema.names
        },
        schema=table_schema,
    )


@dataclass(frozen=True)
class Filter:
    """Which memories a read may return. Every value here has been validated."""

    scope: str | None = None  # None: every scope
    tags: Sequence[str] = ()  # all must be present
    since: datetime | None = None
    until: datetime | None = None

    @property
    def only_scope(self) -> bool:
        """Whether the filter is a scope and nothing else."""
        return self.scope is not None and not self.tags and self.since is self.until is None

    def sql(self) -> str | None:
        """The filter as a LanceDB condition, built from expressions (the tags part aside)."""
        parts: list[str] = []
        if self.scope is not None:
            parts.append((col("scope") == lit(self.scope)).to_sql())
        if self.tags:
            # lancedb.expr has no list functions, so this one part is written as SQL. The tags
            # were validated to letters, digits and . _ : / @ + # -, which cannot end a literal.
            quoted = ", ".join(f"'{tag}'" for tag in self.tags)
            parts.append(f"array_has_all(tags, [{quoted}])")
        if self.since is not None:
            parts.append((col("created_at") >= lit(naive_utc(self.since))).to_sql())
        if self.until is not None:
            parts.append((col("created_at") <= lit(naive_utc(self.until))).to_sql())
        return " AND ".join(parts) or None


def naive_utc(moment: datetime) -> datetime:
    """The moment in UTC, without a zone (naive datetimes are taken as UTC)."""
    offset = moment.utcoffset()
    return (moment - offset if offset else moment).replace(tzinfo=None)


def micros(moment: datetime) -> int:
    """Microseconds since the epoch, in UTC (naive datetimes are taken as UTC)."""
    return (naive_utc(moment) - _EPOCH) // timedelta(microseconds=1)
