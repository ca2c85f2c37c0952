"""A server's store upkeep, in a short-lived child process.

Upkeep needs the `lance` package for what LanceDB does not expose: compaction into fragments
of FRAGMENT_ROWS with every deleted row rewritten out, folding new rows into chosen indexes,
dropping old versions, and naming a damaged file. Loaded in a server, that second build of
Lance stays resident for the server's life (benchmarks/README.md, "One Lance"), and
every client window starts a server. So a server runs each upkeep pass here: a child opens
the store, runs the pass as a CLI command would (the same locks, the same code in upkeep.py),
and answers on stdout. It stays while passes keep coming, and exits IDLE_S after the last.

    python -m subcog.storage.aside      # one JSON Request a line on stdin, one Answer a line out
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import subprocess
import sys
import threading
from contextlib import nullcontext, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from subcog.storage.damage import DamagedFile
from subcog.storage.limits import Limits

if TYPE_CHECKING:
    from subcog.storage.store import Store

log = logging.getLogger(__name__)

TIMEOUT_S = 60.0  # how long stopping the child waits for it to exit, before killing it
IDLE_S = 30.0  # the child exits once no request came for this long
# A pass that has not answered in this long is taken for hung, and its process stopped
# (building the vector index of 1,000,000 memories takes minutes: benchmarks/README.md, "Speed
# at each size").
ANSWER_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class Request:
    """What the server asks of the child."""

    task: str  # "upkeep" or "name-damage"
    data_dir: str
    model: str
    dimension: int
    bulk: bool = False
    unreadable: list[int] = field(default_factory=list)  # fragment ids the server cannot read
    # index name: the parts (uuids) of it whose search failed in the server
    broken: dict[str, list[str]] = field(default_factory=dict)
    fragments: dict[int, int] = field(default_factory=dict)  # name-damage: id: live memories
    limits: dict[str, Any] = field(default_factory=dict)  # the server's Limits
    store: str = ""  # SUBCOG_STORE, if set (the storage options come from the environment)


@dataclass
class Answer:
    """What the child did."""

    ran: bool = False
    rewrote: bool = False  # a compaction wrote new fragments
    again_in: list[float] = field(default_factory=list)  # upkeep asked to run again after these
    rebuilt: list[str] = field(default_factory=list)  # indexes built again
    files: list[dict[str, Any]] = field(default_factory=list)  # name-damage: DamagedFile fields


class Child:
    """The child process, started on the first request and kept while requests keep coming:
    starting one costs CPU time (Python, pyarrow, LanceDB and Lance load: benchmarks/README.md,
    "One Lance"). It exits once IDLE_S pass without a request, or with the server."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._idle: threading.Timer | None = None
        self._asked = 0  # requests so far: an idle timer stops the child only if none came since

    def run(self, request: Request) -> Answer:
        with self._lock:
            if self._idle is not None:
                self._idle.cancel()
            self._asked += 1
            try:
                return self._ask(request)
            except Exception:
                self._stop()
                raise
            finally:
                self._idle = threading.Timer(IDLE_S, self._stop_if_idle, (self._asked,))
                self._idle.daemon = True
                self._idle.start()

    def _stop_if_idle(self, asked: int) -> None:
        with self._lock:
            if self._asked == asked:
                self._stop()

    def _ask(self, request: Request) -> Answer:
        process = self._process
        if process is None or process.poll() is not None:
            process = self._process = subprocess.Popen(  # the environment is the server's
                [sys.executable, "-m", "subcog.storage.aside"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                **_DETACHED,
            )
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(json.dumps(asdict(request)) + "\n")
        process.stdin.flush()
        line = read_answer(process, ANSWER_TIMEOUT_S)
        if not line:
            raise RuntimeError(f"the upkeep process exited with {process.wait()}")
        data = json.loads(line)
        if "error" in data:
            raise RuntimeError(f"the upkeep process failed: {data['error']}")
        return Answer(**data)

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
        try:
            process.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def let_go(self) -> None:
        """At exit: close the child's input without waiting for a pass in hand, which the
        child finishes (it holds the store's locks, not ours) before it exits."""
        process = self._process
        if process is not None and process.stdin is not None:
            with suppress(OSError, ValueError):
                process.stdin.close()


def read_answer(process: subprocess.Popen[str], timeout: float) -> str:
    """The child's next line, read in a thread of its own so that a hung child is stopped
    after `timeout` seconds rather than waited for with the upkeep of this server."""
    assert process.stdout is not None
    stdout = process.stdout
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        process.kill()
        process.wait()
        raise RuntimeError(f"the upkeep process gave no answer in {timeout:.0f} s; stopped it")
    return lines[0] if lines else ""


# The child in a process group of its own (a Ctrl-C to the server does not cut a pass short),
# and on Windows without a console window of its own.
_DETACHED: dict[str, Any]
if sys.platform == "win32":
    _DETACHED = {"creationflags": subprocess.CREATE_NO_WINDOW | subprocess.CREATE_NEW_PROCESS_GROUP}
else:
    _DETACHED = {"start_new_session": True}
_CHILD = Child()
atexit.register(_CHILD.let_go)


def run(request: Request) -> Answer:
    """Run the request in the child process and wait for it. Its log lines go to our stderr."""
    return _CHILD.run(request)


def damaged_files(request: Request) -> list[DamagedFile]:
    """The damaged files of these fragments, named by a child process."""
    return [DamagedFile(**fields) for fields in run(request).files]


def _serve(request: Request, stores: dict[tuple[str, str, int], Store]) -> Answer:
    from subcog.storage.location import location_of
    from subcog.storage.store import Store

    key = (request.data_dir + "|" + request.store, request.model, request.dimension)
    limits = Limits(**request.limits)
    if key not in stores or stores[key].limits != limits:
        if key in stores:
            stores.pop(key).close()
        asked: list[float] = []  # upkeep's requests to run again go back to the server
        data_dir = Path(request.data_dir)
        location = location_of(request.store or None, data_dir, os.environ)
        stores[key] = Store(
            data_dir,
            request.model,
            request.dimension,
            False,
            limits,
            asked=asked,
            location=location,
        )
    store = stores[key]
    assert store.asked is not None
    store.asked.clear()  # opening asks for upkeep when an erasure is pending: the server knows
    if request.task == "name-damage":
        files = store.name_damage(request.fragments)
        return Answer(ran=True, files=[asdict(file) for file in files])
    with store.bulk() if request.bulk else nullcontext():
        ran, rewrote, rebuilt = store.upkeep_pass(set(request.unreadable), request.broken)
    return Answer(ran, rewrote, list(store.asked), rebuilt)


def main() -> int:
    """The child: read one Request a line on stdin, answer each on a line of stdout, log to
    stderr; exit at the end of stdin."""
    logging.basicConfig(  # as the server logs (subcog/cli/__init__.py)
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s subcog %(levelname)s %(name)s: %(message)s",
    )
    level = os.environ.get("SUBCOG_LOG_LEVEL", "").strip().upper() or "INFO"
    logging.getLogger("subcog").setLevel(level)
    # The answers go to a copy of stdout; whatever else writes to fd 1 (a library, native code)
    # goes to stderr, as in a server (stdio.py).
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    stores: dict[tuple[str, str, int], Store] = {}
    try:
        for line in sys.stdin:
            try:
                data = json.loads(line)
                data["fragments"] = {int(k): v for k, v in data.get("fragments", {}).items()}
                reply: dict[str, Any] = asdict(_serve(Request(**data), stores))
            except Exception as exc:
                log.exception("upkeep failed in the child process")
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            answers.write(json.dumps(reply) + "\n")
            answers.flush()
    finally:
        for store in stores.values():
            store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
