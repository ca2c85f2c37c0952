"""Upkeep: compaction, erasure, index folding and version cleanup, one process at a time,
never inside a tool call. It runs in a background thread (scheduler.py) and only when the
locks are free; for a server, each pass runs in a child process (aside.py), since it needs the
`lance` package, which a server does not load (benchmarks/README.md, "One Lance").
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from subcog.storage import aside
from subcog.storage.damage import UNREADABLE
from subcog.storage.erasure import Erasure, Marker
from subcog.storage.health import Health
from subcog.storage.indexes import Indexes
from subcog.storage.mirror import Mirror
from subcog.storage.scheduler import Scheduler
from subcog.storage.table import Table, conflicted

log = logging.getLogger(__name__)


class Upkeep:
    def __init__(
        self,
        table: Table,
        mirror: Mirror,
        health: Health,
        upkeep_aside: bool,
        asked: list[float] | None,
    ) -> None:
        self._table = table
        self._mirror = mirror
        self._health = health
        self._limits = table.limits
        self._aside = upkeep_aside  # each pass in the child process (aside.py)
        # In that child: when upkeep asks to run again, the delay goes here, back to the server.
        self.asked = asked
        self.marker = Marker(table.data_dir)
        self.indexes = Indexes(table)
        self.running = threading.Lock()  # a pass, or a write that close() must wait for
        self.closed = threading.Event()
        self._scheduler = Scheduler(self.run, "subcog-upkeep")
        self._writes = 0

    def wrote(self) -> None:
        """After a commit (one fragment, however many rows): compact every Limits.upkeep_every
        commits, and once a burst of writes has ended, so that the searches after it do not
        pay for many small fragments."""
        self._writes += 1
        if self._writes >= self._limits.upkeep_every:
            self._writes = 0
            self.soon()
        self._scheduler.quiet(self._limits.quiet_after_s)

    def forgot(self) -> None:
        """Rows were deleted: erase them from the files, starting now."""
        self.marker.forgot()
        self.soon()

    def soon(self, delay: float = 0.0) -> None:
        if self.asked is not None:
            self.asked.append(delay)
        else:
            self._scheduler.soon(delay)

    def close(self, timeout: float) -> None:
        """Stop scheduling and wait for a pass in progress: a process that exits while a
        background thread is inside Lance can abort instead of exiting cleanly."""
        self.closed.set()
        self._scheduler.close()
        if self.running.acquire(timeout=timeout):
            self.running.release()

    @contextmanager
    def bulk(self) -> Iterator[None]:
        """For a bulk import: leave the vector and full-text indexes alone until the end."""
        self.indexes.bulk = True
        try:
            yield
        finally:
            self.indexes.bulk = False

    def run(self) -> bool:
        """One pass, here or in the child process. Returns whether it ran: it never waits for
        a lock, so a busy store is done later."""
        if self.closed.is_set() or not self.running.acquire(blocking=False):
            return False
        try:
            unreadable = set(self._table.read("refresh", self._mirror.latest).unreadable)
            broken = self._health.asked_to_rebuild()
            if self._aside:
                table = self._table
                request = aside.Request(
                    "upkeep", str(table.data_dir), table.model, table.dimension, self.indexes.bulk
                )
                request = replace(
                    request,
                    unreadable=sorted(unreadable),
                    broken=broken,
                    store=table.location.db,
                )
                answer = aside.run(replace(request, limits=self._limits.to_dict()))
                ran, rewrote, rebuilt = answer.ran, answer.rewrote, answer.rebuilt
                for delay in answer.again_in:
                    self.soon(delay)
            else:
                ran, rewrote, rebuilt = self.run_pass(unreadable, broken)
            self._health.rebuilt(rebuilt, broken)
            if rewrote:  # the in-memory copy reads (and counts) the new fragments here, not in
                self._table.read("refresh", self._mirror.latest)  # the next tool call
            return ran
        except Exception:
            log.exception("store upkeep failed; it will be tried again later")
            return False
        finally:
            self.running.release()

    def run_pass(
        self, unreadable: set[int], broken: dict[str, list[str]]
    ) -> tuple[bool, bool, list[str]]:
        """One pass, leaving alone the fragments in `unreadable` and building again the indexes
        in `broken` (name: the uuids that failed). Returns whether it ran, whether a compaction
        wrote new fragments, and the indexes built again. Compaction holds both locks; indexing
        the index lock only (Indexes.fold)."""
        if self.asked is not None:  # in the child process: the server's findings
            self._health.broken = {name: (frozenset(uuids), "") for name, uuids in broken.items()}
        before_broken = set(self._health.broken)
        if not self._table.compaction_locks(timeout=0):
            if self.marker.pending() is not None:  # erasure must not wait for the next write
                self.soon(delay=1.0)
            return False, False, []
        try:
            try:
                erasing = self.marker.pending()
                before = self._table.version
                self.indexes.compact(unreadable)
                rewrote = self._table.version != before
            finally:
                self._table.write_lock.release()  # the index pass keeps only the index lock
            if unreadable:
                self._while_damaged()
            else:
                self._rebuild_broken()
                rebuild_words = erasing is not None and erasing.rewritten is None
                try:
                    self.indexes.fold(rebuild_words=rebuild_words)
                except UNREADABLE as error:
                    if not self._words_damaged(error):
                        raise
                    self._rebuild_broken()
                    self.indexes.fold()
                if erasing is not None:
                    self._advance(erasing)
        except Exception as exc:
            if not (self._table.remote and conflicted(exc)):
                raise
            # On object storage another server's commit came first (a delete, its own
            # compaction or index): nothing was changed, and the pass is tried again soon, at
            # a moment of its own so that two servers do not keep colliding.
            log.debug("upkeep gave way to another server's commit: %s", exc)
            self.soon(delay=random.uniform(0.5, 2.0))
            return False, False, []
        finally:
            self._table.index_lock.release()
        if rewrote:
            # The versions (and files) this pass replaced are dropped once old enough.
            self.soon(delay=self._limits.keep_old_versions_s + 0.5)
        return True, rewrote, sorted(before_broken - set(self._health.broken))

    def _advance(self, erasing: Erasure) -> None:
        """Take a pending erasure one step on, holding the index lock, after a compaction that
        rewrote every fragment with a deleted row (and, in its first step, a new full-text
        index): first record the version from which no data holds the forgotten rows; once
        the versions before it are old enough to be dropped, and dropped, remove the marker.
        A forget meanwhile writes a new marker, which starts again. The marker stays on disk
        until then, so an exit at any point leaves the erasure to the next process."""
        keep = self._limits.keep_old_versions_s
        if erasing.rewritten is None:
            done = Erasure(erasing.token, self._table.version, time.time())
            with self._table.locked():  # forgets write the marker under it
                if self.marker.pending() == erasing:
                    self.marker.write(done)
            self.soon(delay=keep + 0.5)
            return
        waited = time.time() - (erasing.at or 0.0)
        if waited < keep:
            self.soon(delay=keep - waited + 0.5)
            return
        oldest = min(v["version"] for v in self._table.handle.list_versions())
        if oldest < erasing.rewritten:  # not dropped yet (the cleanup ran too soon): again
            self.soon(delay=keep + 0.5)
            return
        with self._table.locked():
            if self.marker.pending() == erasing:
                self.marker.remove()

    def _words_damaged(self, error: BaseException) -> bool:
        """Whether folding failed on the full-text index (searches in memory do not read it,
        so upkeep may be the first to find it damaged): it is searched, and if that fails,
        marked for _rebuild_broken."""
        probe = self._table.scan("probe", None, ["content"], 1)
        text = probe["content"][0].as_py()[:200] if probe.num_rows else "memory"
        try:
            self._table.full_text.search(text, ["_score"], None, 1)
        except UNREADABLE as failed:
            self._health.index_failed(["content"], failed)
            index = self._table.index_on(["content"])
            return index is not None and index.name in self._health.broken
        log.debug("folding failed, not on the full-text index: %s", error)
        return False

    def _while_damaged(self) -> None:
        """While a data file is damaged, new rows still join the indexes, but nothing that
        reads every row runs (building an index again, finishing an erasure): that waits for
        `subcog repair`, which the server says once."""
        if not self._health.told_waiting:
            self._health.told_waiting = True
            log.warning(
                "upkeep of the damaged store in %s waits for `subcog repair`: until then, "
                "forgotten memories stay in its files",
                self._table.data_dir,
            )
        if self._health.broken:
            return  # an index that cannot be read cannot take new rows either
        try:
            self.indexes.fold()
        except UNREADABLE as error:
            log.debug("indexing waits for the repair: %s", error)

    def _rebuild_broken(self) -> None:
        """Build again each index whose search failed, unless another process did already.
        The caller holds the index lock, and no data file is damaged."""
        if not self._health.broken:
            return
        current = self._health.index_parts()
        for name, (uuids, _error) in list(self._health.broken.items()):
            if current.get(name) == uuids:
                self._table.handle.drop_index(name)
            del self._health.broken[name]
        self._table.ensure_indexes()
        self._table.handle.checkout_latest()
        log.info("built the store's damaged indexes again")

    def now(self) -> bool:
        """Run a pass before returning, waiting for the lock or a pass in progress."""
        deadline = time.monotonic() + self._limits.lock_timeout_s
        while not self.run():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def watch(self) -> None:
        """For long-running processes: look now and then for upkeep that another process left."""

        def poll() -> None:
            while not self.closed.wait(self._limits.upkeep_poll_s):  # closed: Lance no more
                # Not while a file is damaged: the erasure waits for `subcog repair`, and a
                # server's upkeep process would stay for nothing (aside.IDLE_S).
                if self.marker.pending() is not None and not self._damaged():
                    self.run()

        threading.Thread(target=poll, name="subcog-upkeep-watch", daemon=True).start()

    def _damaged(self) -> bool:
        snapshot = self._table.read("damage", self._mirror.latest)
        return bool(self._health.damage(snapshot).unreadable)

    def finish_erasure(self, timeout: float) -> bool:
        """Erase forgotten rows from the files before returning, for a process about to exit
        (Limits.keep_old_versions_s and a pass of upkeep: benchmarks/README.md, "Faults and
        abuse"); True when nothing is left to erase.
        If the store stays busy, the marker stays for the next process that opens it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            erasing = self.marker.pending()
            if erasing is None:
                return True
            if self._damaged():
                log.warning(
                    "the forgotten memories will be erased from the files once "
                    "`subcog repair` has rebuilt the damaged store in %s",
                    self._table.data_dir,
                )
                return False
            if erasing.at is not None:  # the old versions can go once old enough
                left = erasing.at + self._limits.keep_old_versions_s - time.time()
                time.sleep(min(max(0.0, left), 5.0))
            if not self.run():
                time.sleep(0.2)
        log.warning(
            "the store stayed busy; the forgotten memories will be erased from the files by "
            "the next subcog that opens %s",
            self._table.data_dir,
        )
        return False
