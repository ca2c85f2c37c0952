"""The table's rows and vectors held in memory, for exact vector search in a millisecond.

LanceDB's exact search reads every vector from disk on each query; a matrix product over vectors
held in memory takes a fraction of that (benchmarks/README.md, "Where the time went"). The copy
follows the table's latest version: each read asks LanceDB for it, and when it changed, lists the
row ids of the new version (each names its fragment and its place there, internals.py) and reads
only the fragments whose rows changed. An add makes one new fragment, a delete takes rows out of
one, and compaction rewrites a few; the others are kept as they are (blocks.py).

Everything here goes through LanceDB: the server process loads one Lance (benchmarks/README.md,
"One Lance"). Past `Limits.mirror_rows` live rows no copy is kept: searches go to LanceDB and
its vector index instead (search.py chooses).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from subcog.internals import fragment_of, offset_in_fragment, versions_stamp
from subcog.storage.blocks import Block, Moved
from subcog.storage.damage import UNREADABLE, what_lance_said
from subcog.storage.fulltext import FullText
from subcog.storage.limits import Limits

READ_ATTEMPTS = 5  # reads of a new version, when other processes' commits keep moving it
# A file system stamps a change with a coarse clock (a few ms on Linux, 2 s on FAT), so two
# commits that close together can leave the directory's time as it was. A stamp is trusted only
# once it is older than this when read: any commit after that read moves the time on.
RACY_NS = 2_000_000_000
log = logging.getLogger(__name__)


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

    def places(
        self, rowids: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Each row id's block and row in it; -1 for a row id that is not in the snapshot."""
        assert self.blocks is not None
        fragments = fragment_of(rowids).tolist()
        which = np.array([self.fragments.get(f, -1) for f in fragments], np.int64)
        local = np.full(len(rowids), -1, dtype=np.int64)
        for index in np.unique(which[which >= 0]).tolist():
            chosen = np.flatnonzero(which == index)
            offsets = self.blocks[index].offsets
            wanted = offset_in_fragment(rowids[chosen])
            at = np.minimum(np.searchsorted(offsets, wanted), len(offsets) - 1)
            hit = offsets[at] == wanted
            local[chosen[hit]] = at[hit]
            which[chosen[~hit]] = -1
        return which, local


class Mirror:
    """The latest snapshot of one LanceDB table, kept in step by reading what changed."""

    def __init__(
        self,
        table: Any,
        limits: Limits,
        full_text: FullText,
        resized: Callable[[int], tuple[Any, FullText] | None] = lambda rows: None,
        table_dir: Path | None = None,
        spill_dir: Path | None = None,
    ) -> None:
        self._table = table
        # The table's directory on local disk: while its versions directory's stamp stays as
        # it was (internals.versions_stamp), no version is asked for. None: always asked.
        self._table_dir = table_dir
        self._seen: tuple[int, int] | None = None  # the stamp the snapshot is known latest at
        self.full_text = full_text
        # For a table of so many rows, the table and its full-text search opened again with
        # Lance's caches sized for it, or None to keep these (table.Table.resized).
        self._resized = resized
        self.max_rows = limits.mirror_rows
        # Up to this many rows, each block also counts its rows' tokens (search.InMemory
        # .holders), which the lexical reference needs; past it, each query asks the index.
        self.counted_rows = limits.counted_rows
        # From so many rows, blocks read keep int8 vectors, their exact ones in a file in
        # spill_dir (blocks._held): the data directory, local and ours whatever SUBCOG_STORE
        # is, never a tmpfs /tmp. None: float32 always.
        self.int8_rows = limits.int8_rows
        self._spill_dir = spill_dir
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

    def _latest(self, ours: int | None = None) -> Snapshot:
        """`ours`: the version our own add made, holding the write lock (nothing to ask)."""
        # The stamp before the version, the version before the rows: a commit in between is
        # read again next time.
        # The time of the stat, not of the end of the read: a commit after the stat, in the
        # same tick of the file system's clock, must not go unseen (RACY_NS).
        stat_at = time.time_ns()
        stamp = None if self._table_dir is None else versions_stamp(self._table_dir)
        if stamp is not None and stamp == self._seen and self._snapshot is not None:
            return self._snapshot
        version = int(self._table.version) if ours is None else ours
        if self._snapshot is not None and self._snapshot.version == version:
            self._seen = trusted_stamp(stamp, stat_at)
            return self._snapshot
        if ours is not None and self._added is not None:
            rows = self._rows + self._added[1].num_rows
        else:
            rows = int(self._table.count_rows())
        reopened = self._resized(rows)
        if reopened is not None:
            # The old search's loops close once no snapshot holds it (FullText's finalizer).
            self._table, self.full_text = reopened
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
        self._seen = None if ours is not None else trusted_stamp(stamp, stat_at)  # once read whole
        return self._snapshot

    def _after_our_add(self, version: int, rows: int) -> dict[int, Block] | None:
        """The blocks after our own add (added()), if it made this version right after the
        last one read, with nothing read: the rows we wrote, in one new fragment. Its id is
        not known (LanceDB does not say), so the block goes under a key of its own below zero,
        and a full-text hit in an unknown fragment is looked up there by its memory id
        (search.InMemory.words); the next full refresh reads the fragment under its id. None if
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
        spill = self._spill_dir if rows >= self.int8_rows else None
        for fragment, rowids in _by_fragment(self._rowids()).items():
            block = self._block(fragment, rowids, spill)
            if block is None:
                unreadable[fragment] = rowids
                continue
            kept[fragment] = block
            if rows <= self.counted_rows:
                block.counted()
        self._unreadable = unreadable
        return kept

    def _rowids(self) -> npt.NDArray[np.int64]:
        """Every live row's id: LanceDB reads the fragments' row counts and deletions only, not
        the rows (benchmarks/README.md, "One Lance")."""
        found = self._table.search().select(["_rowid"]).with_row_id(True).to_arrow()
        rowids: npt.NDArray[np.int64] = found["_rowid"].to_numpy().astype(np.int64)
        return rowids

    def _block(
        self, fragment: int, rowids: npt.NDArray[np.int64], spill: Path | None
    ) -> Block | None:
        """The fragment's block: kept if its rows are the same, else read again; None if one
        of its files cannot be read. A fragment's rows never change in place (an add or an
        update writes a new fragment, a delete takes rows out), so the row ids tell."""
        offsets = offset_in_fragment(rowids)
        known = self._blocks.get(fragment)
        if known is not None and np.array_equal(known.offsets, offsets):
            return known
        failed = self._unreadable.get(fragment)
        if failed is not None and np.array_equal(failed, rowids):
            return None
        try:
            return Block.read(self._table, fragment, rowids, spill)
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
        the next refresh need not read from disk (if no other commit came in between). The
        caller holds the write lock: if the last snapshot is the version before, this one
        becomes the latest at once, and the next read pays nothing for it."""
        with self._lock:
            self._added = (version, table)
            last = self._snapshot
            if last is not None and last.blocks is not None and last.version == version - 1:
                try:
                    self._latest(ours=version)
                except Exception:  # the add is committed: the next read takes it the long way
                    log.debug("the snapshot after our add was not made", exc_info=True)

    def forget(self) -> None:
        """Drop the copy: the next read builds it again (after the vectors were replaced)."""
        with self._lock:
            self._blocks, self._snapshot, self._unreadable, self._added = {}, None, {}, None
            self._seen = None


def trusted_stamp(stamp: tuple[int, int] | None, stat_at: int) -> tuple[int, int] | None:
    """The stamp, if it was old enough when read (at `stat_at`) that any later commit must
    change it (RACY_NS)."""
    if stamp is None or stat_at - stamp[0] <= RACY_NS:
        return None
    return stamp


def _by_fragment(rowids: npt.NDArray[np.int64]) -> dict[int, npt.NDArray[np.int64]]:
    """The row ids of each fragment, ascending."""
    rowids = np.sort(rowids)
    fragments = fragment_of(rowids)
    cuts = np.flatnonzero(np.diff(fragments)) + 1
    parts = zip(np.split(fragments, cuts), np.split(rowids, cuts), strict=True)
    return {int(ids[0]): part for ids, part in parts if len(part)}
