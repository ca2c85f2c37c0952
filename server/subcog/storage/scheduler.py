"""One action run in one background thread, at the times asked for (upkeep.py)."""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable


class Scheduler:
    """Runs one action in one background thread, at each time asked for.

    Upkeep is asked for after every write; a threading.Timer per write would start a thread
    each time, inside the write's latency (benchmarks/README.md, "Where the time went"). Times
    that have come when the thread looks are served by one run; a later time is still served
    later (cleanup waits for the versions a compaction replaced to grow old).
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
