"""The storage layer's tuning values, as one value passed in.

Each says why it has the value it has; the measurements behind them are in
benchmarks/README.md ("Speed at each size", "Where the time went", "One Lance"). A store takes
a `Limits`, so a test that wants a vector index at 300 memories builds
`Limits(vector_index_rows=300)` instead of changing a module's globals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any


@dataclass(frozen=True)
class Limits:
    # Up to this many memories, their rows and vectors are held in memory and searched exactly
    # there (mirror.py); past it, LanceDB and its vector index search them.
    mirror_rows: int = 150_000
    # Up to this many memories, the in-memory copy counts which memories hold each token, so a
    # query's lexical reference costs no search; upkeep pays the counting, not a tool call.
    counted_rows: int = 5_000
    # From this many memories, the in-memory copy holds vectors as int8 (a quarter of the
    # memory) and reads the exact ones of a search's best candidates from a file, so rankings
    # stay exact (blocks.py; benchmarks/README.md, "Memory at 100,000").
    int8_rows: int = 20_000
    # LanceDB's vector search is exact below this many memories, then an HNSW index with scalar
    # quantisation; built before the mirror stops, so it is ready when needed.
    vector_index_rows: int = 120_000
    # One HNSW graph per so many rows (at least one): a search visits every graph.
    hnsw_rows_per_graph: int = 1_000_000
    nprobes: int = 64
    hnsw_ef: int = 300
    # A LanceDB vector search takes at least this many rows and orders them by their exact
    # vectors, read with them anyway (refine_factor would read them again).
    vector_fetch_min: int = 30
    # A recall's two searches take ranking.DEPTH from memory, but at most this many from
    # LanceDB, where reading each row's columns is most of a search's time.
    lance_depth: int = 50
    # New rows join the vector index as small graphs of their own (deltas); past this many
    # deltas the small ones merge, and once they hold this share of the rows it is rebuilt.
    vector_deltas_max: int = 8
    vector_rebuild_share: float = 0.15
    # New rows fold into the full-text index at every upkeep below this many memories, past it
    # once they are this share of the index (a fold rewrites the whole index).
    words_fold_always_below: int = 100_000
    words_unindexed_share: float = 0.01
    # Compaction after this many writes by one process, and once writes have been quiet for
    # this long.
    upkeep_every: int = 50
    quiet_after_s: float = 1.0
    # Compaction merges fragments smaller than this into fragments of about this size, so a
    # pass rewrites at most this many rows however large the table is.
    fragment_rows: int = 4096
    # Old versions are kept this long after compaction: a reader in another process in the
    # middle of a query rarely finds its files gone (and when it does, the read is retried).
    keep_old_versions_s: float = 4.0
    # How often a long-running process looks for upkeep that another process left.
    upkeep_poll_s: float = 10.0
    lock_timeout_s: float = 30.0
    read_attempts: int = 5
    write_attempts: int = 8
    # Lance's caches, sized for the table's rows rounded up to cache_step_rows times a power of
    # two: so many bytes a row, at least cache_min_bytes, at most the maximum; plus the whole
    # vector index once there is one (a smaller cache reads it from disk on every search).
    cache_step_rows: int = 4096
    cache_min_bytes: int = 4 * 2**20
    meta_cache_bytes: int = 32 * 2**20
    meta_cache_bytes_per_row: int = 256
    index_cache_bytes: int = 128 * 2**20
    index_cache_bytes_per_row: int = 1024
    vector_index_bytes_per_row: int = 768
    # Tokens whose best BM25 score a store remembers (lexical.py), and how far the store may
    # grow or shrink before a remembered score is asked again.
    best_scores_kept: int = 4096
    best_score_drift: float = 0.1

    @property
    def keep_old_versions(self) -> timedelta:
        return timedelta(seconds=self.keep_old_versions_s)

    def cache_bytes(self, rows: int) -> tuple[int, int]:
        """Lance's index and metadata caches for a table of `rows` memories."""
        sized = self.cache_step_rows
        while sized < rows:
            sized *= 2
        index = min(
            self.index_cache_bytes,
            max(self.cache_min_bytes, sized * self.index_cache_bytes_per_row),
        )
        meta = min(
            self.meta_cache_bytes, max(self.cache_min_bytes, sized * self.meta_cache_bytes_per_row)
        )
        if rows >= self.vector_index_rows:
            index += sized * self.vector_index_bytes_per_row
        return index, meta

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
