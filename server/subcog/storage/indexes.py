"""What an upkeep pass does to the table: compaction (which erases deleted rows from the
files), folding new rows into the indexes, and the vector index once the store is big enough.

These need Lance's compaction and index options, which LanceDB does not expose, so they load
the `lance` package: a CLI command does it in-process, a server in its upkeep child (aside.py).
"""

from __future__ import annotations

import logging
from typing import Any

from lancedb.index import FTS, HnswSq

from subcog.storage.analysis import WORDS
from subcog.storage.table import Table

log = logging.getLogger(__name__)


class Indexes:
    def __init__(self, table: Table) -> None:
        self._table = table
        self._limits = table.limits
        self.bulk = False  # a bulk import: the big indexes wait for its final pass
        self.vector_builds = 0  # vector indexes this process built over the whole table

    def compact(self, unreadable: set[int]) -> None:
        """One pass of Lance's compaction. The caller holds both locks.

        Fragments under Limits.fragment_rows rows merge; bigger ones stay, so the cost of a
        pass does not grow with the table. Any fragment with a deleted row is rewritten
        without it (materialize_deletions_threshold=0): LanceDB's delete only marks rows, and
        a forgotten memory must leave the files. Then versions older than
        Limits.keep_old_versions are removed, with their files. Fragments in `unreadable` (a
        damaged file) are left as they are, and so are old versions: they may still hold those
        rows, for a better tool than ours.
        """
        from lance.optimize import Compaction

        options: Any = {
            "target_rows_per_fragment": self._limits.fragment_rows,
            "materialize_deletions_threshold": 0.0,
            "num_threads": 1,
        }
        dataset = self._table.dataset()
        if not unreadable and not self._table.remote:
            dataset.optimize.compact_files(**options)
        else:
            plan = Compaction.plan(dataset, options)
            tasks = [t for t in plan.tasks if not {f.id for f in t.fragments} & unreadable]
            if tasks:
                rewritten = [task.execute(dataset) for task in tasks]
                try:
                    Compaction.commit(dataset, rewritten)
                except Exception:
                    self._drop_files(rewritten)
                    raise
        self._table.handle.checkout_latest()
        if not unreadable:  # while a file is damaged, older versions may still hold its rows
            older_than = self._limits.keep_old_versions
            self._table.dataset().cleanup_old_versions(older_than=older_than)

    def _drop_files(self, rewritten: list[Any]) -> None:
        """After a compaction whose commit failed (on object storage: another server's delete,
        compaction or index came first), delete the files it wrote. No version refers to them,
        and Lance leaves such files for a week, since it cannot tell them from another
        process's write in progress; these may hold memories forgotten meanwhile."""
        from lance.file import LanceFileSession

        location = self._table.location
        data = LanceFileSession(f"{location.table}/data", dict(location.options) or None)
        for result in rewritten:
            for fragment in result.new_fragments:
                for file in fragment.files:
                    try:
                        data.delete_file(file.path)
                    except OSError:
                        log.debug("could not delete %s after a failed compaction", file.path)

    def fold(self, rebuild_words: bool = False) -> None:
        """Fold new rows into the indexes, and build the vector index when it is due; with
        rebuild_words, first build the full-text index again, so that its word lists no longer
        name forgotten words. The caller holds the index lock.

        Not under the write lock: at 1,000,000 memories folding new rows into the full-text
        index takes seconds and building the vector index minutes, and remember would wait
        for them. Lance commits an index beside concurrent adds and deletes; compaction, which
        would conflict, holds the index lock too.
        """
        table = self._table.handle
        if rebuild_words:
            table.create_index("content", config=FTS(**WORDS), replace=True)
        due = [
            index.name
            for index in self._table.indexes()
            if index.columns != ["vector"]
            and (index.columns != ["content"] or self._words_due(index.name))
        ]
        self._table.dataset().optimize.optimize_indices(index_names=due)
        table.checkout_latest()
        if not self.bulk:
            self.vectors()

    def vectors(self) -> None:
        """Exact search reads every vector; past Limits.vector_index_rows an HNSW index
        answers the same (recall@10 against exact search is measured by
        benchmarks/bench.py).

        New rows join the index at every pass, as a small graph of their own (a delta): while
        any row is outside the index, Lance searches the graph with a filter, several times
        slower at 1,000,000 memories (benchmarks/README.md, "Where the time went"). Every
        search walks every delta, so once there are Limits.vector_deltas_max the small ones
        merge into one; once they hold Limits.vector_rebuild_share of the rows, the index is
        built again over everything.
        """
        limits = self._limits
        index = self._table.index_on(["vector"])
        rows = self._table.handle.count_rows()
        if rows < limits.vector_index_rows:
            return
        if index is not None:
            dataset = self._table.dataset()
            stats = dataset.stats.index_stats(index.name)
            unindexed: int = stats["num_unindexed_rows"]
            deltas: list[int] = stats["num_indexed_rows_per_delta"]
            if unindexed == 0:
                return
            if sum(deltas[1:]) + unindexed <= limits.vector_rebuild_share * rows:
                merge = 0 if len(deltas) < limits.vector_deltas_max else len(deltas) - 1
                dataset.optimize.optimize_indices(
                    index_names=[index.name], num_indices_to_merge=merge
                )
                self._table.handle.checkout_latest()
                return
        partitions = max(1, rows // limits.hnsw_rows_per_graph)
        config = HnswSq(distance_type="cosine", num_partitions=partitions)
        self._table.handle.create_index("vector", config=config, replace=True)
        self.vector_builds += 1
        log.info("built the vector index over %d memories", rows)

    def _words_due(self, name: str) -> bool:
        """Whether to fold new rows into the full-text index now. Folding rewrites it, which
        takes longer the bigger it is (seconds at 750,000 memories: benchmarks/README.md,
        "Where the time went"), so a big store waits until new rows are
        Limits.words_unindexed_share of it; until then they are searched unindexed. A bulk
        import leaves it to its final pass."""
        if self.bulk:
            return False
        stats = self._table.handle.index_stats(name)
        if stats is None:
            return True
        unindexed: int = stats.num_unindexed_rows
        indexed: int = stats.num_indexed_rows
        return unindexed > 0 and (
            indexed < self._limits.words_fold_always_below
            or unindexed >= self._limits.words_unindexed_share * indexed
        )
