"""LanceDB's full-text search, through its async API.

The sync query builder makes each query a pydantic model; the async API does not, and a search
through it is faster (benchmarks/README.md, "One Lance"). Each calling thread runs its searches
on an event loop of its own.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

import lancedb
import pyarrow as pa

from subcog.storage.location import Location

T = TypeVar("T")


class FullText:
    """The full-text search of one table, reading its latest version."""

    def __init__(self, table: Any) -> None:
        self._table = table  # a lancedb AsyncTable, reading the latest version
        self._local = threading.local()
        self._loops: list[asyncio.AbstractEventLoop] = []
        self._lock = threading.Lock()
        weakref.finalize(self, _close_loops, self._loops)  # a store dropped without close()

    def search(
        self, text: str, columns: list[str], where: str | None, limit: int, fast: bool = False
    ) -> pa.Table:
        """The `limit` best rows by BM25 for the words of `text` (a match query: never parsed
        as a query language), with `columns`, `_score` and `_rowid`; `fast`: the index only,
        not the rows added since it was last folded."""

        async def run() -> pa.Table:
            query = self._table.query().nearest_to_text(text, columns=["content"])
            if where:
                query = query.where(where)  # before the search (prefilter)
            if fast:
                query = query.fast_search()
            found: pa.Table = await query.select(columns).with_row_id().limit(limit).to_arrow()
            return found

        return self.run(run)

    def run(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run the coroutine work() makes to its end: on this thread's own event loop, or, in
        a thread whose event loop is running (an async caller), on a thread of its own."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            return _aside(work)
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        if loop is None:
            loop = self._local.loop = asyncio.new_event_loop()
            with self._lock:
                self._loops.append(loop)
        return loop.run_until_complete(work())

    def close(self) -> None:
        """Close the threads' event loops (their threads no longer search)."""
        with self._lock:
            _close_loops(self._loops)


def open_full_text(
    location: Location, table: str, session: Any, refresh: timedelta = timedelta(0)
) -> FullText:
    """The full-text search of this table, sharing the caches of `session`."""

    async def open_table() -> Any:
        db = await lancedb.connect_async(
            location.db,
            read_consistency_interval=refresh,
            session=session,
            storage_options=dict(location.options) or None,
        )
        return await db.open_table(table)

    return FullText(_aside(open_table))


def _aside(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine work() makes on a thread of its own (the caller may be inside a
    running event loop, where it could not)."""
    with ThreadPoolExecutor(1) as aside:
        return aside.submit(lambda: asyncio.run(work())).result()


def _close_loops(loops: list[asyncio.AbstractEventLoop]) -> None:
    while loops:
        loop = loops.pop()
        if not loop.is_running():
            loop.close()
