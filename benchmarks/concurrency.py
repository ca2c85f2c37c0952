"""Growth, concurrent writers and forget-erasure of real ``subcog serve`` processes over stdio.

Usage::

    .venv/bin/python benchmarks/concurrency.py [--growth] [--writers] [--harness]
        [--growth-count 10000] [--checkpoints 1000,5000] [--queries 200] [--settle 10]
        [--per-writer 100] [--harness-per-writer 250] [--logs DIR] [--keep] [--json OUT]

With no section flag every section runs, in the order below. Each section uses a fresh,
throwaway ``SUBCOG_DATA_DIR`` (``--keep`` keeps it); ``SUBCOG_CACHE_DIR``, the model cache, is
inherited, so run ``subcog doctor`` first to put the model in place. Every server is a
``subcog serve`` subprocess driven by the MCP Python client, with ``SUBCOG_LOAD_TIMEOUT=120``;
each first makes one untimed warm-up ``recall`` that waits for the model and store to load.
Latencies are per ``call_tool`` as the client sees it (``time.perf_counter`` around the call),
so unlike benchmarks/startup.py they include the MCP client library. Memory texts are distinct
sentences built deterministically from fixed word lists; the harness's markers are random.

Sections and what each figure means:

``growth``
    One server on a fresh data dir makes ``--growth-count`` single ``remember`` calls, one
    memory per call, one after another. At each checkpoint (``--checkpoints`` and the end):
    ``remember p50/p95`` over the calls since the previous checkpoint; ``size now``, the sum of
    the sizes of every file under the data dir right after the last write (MB = 10^6 bytes), and
    ``settled``, the same ``--settle`` seconds later, with ``files`` the file count then; and
    ``recall p50/p95`` over ``--queries`` distinct questions (limit 5) made after settling.
    ``remember wall`` is the time spent in the remember calls, checkpoints excluded. Targets:
    settled size <= 30 MB and recall p50 <= 15 ms at the end; ``subcog stats`` must count
    every memory.

``writers``
    Four servers on ONE data dir, each making ``--per-writer`` ``remember`` calls of its own
    distinct memories, one after another, the four at once (they start together once all four
    have loaded). Per writer: remember p50/p95/max; ``worst p95`` is the largest of the four p95s.
    Then every server recalls the exact text of every memory with limit 1, which must return
    that memory's id (``exact-text misses``). After the servers exit, ``subcog stats --json``
    must count 4 x per-writer memories and ``subcog list --json`` must hold every id a writer
    got back (``lost``), no content twice (``duplicated``) and nothing else (``unexpected``).
    Tool errors, and ``exists`` answers to a distinct text, must be 0.

``harness``
    Five servers on one data dir. Four write ``--harness-per-writer`` distinct memories each, as
    in ``writers``. The fifth, the prober, loops while they write: remember a marker
    ``secret marker <uuid4 hex>``; recall its exact text, which must return it first
    (``not visible``); forget it by id, which must report it forgotten; recall it again, which
    must no longer return it (``still recalled``); and one plain recall. When the writers have
    exited, the prober's server keeps running (erasure is the upkeep of running servers) while
    the data dir is scanned every 0.5 s, two ways. Byte for byte: every byte of every file is
    searched for every forgotten marker text, its uuid on its own (a full-text index keeps
    words) and its id. LanceDB can compress strings, so a sample of live memory texts is
    searched for too (``controls``): when they do not show, a byte search cannot see text on
    disk. So, also: LanceDB never rewrites a .lance file (data or index), and subcog writes
    only under its lock, so a marker can only be in a .lance file written between its remember
    and its forget's reply; such a file in which no memory text shows byte for byte (its
    strings may be compressed) is a ``suspect`` and must be gone too. ``erased after`` is the
    time from the last forget's reply to the first scan with neither a marker's bytes nor a
    suspect file (target <= 60 s; the scan gives up at 90 s). Then the prober exits and, as for
    ``writers``, stats and list must show exactly 4 x per-writer memories, none lost, none
    duplicated, no marker left, and no tool error from any client.

Because the figures mean little on a busy machine, each section also reports how many cores
processes other than this script and its children used meanwhile (from /proc, Linux only), and a
hash of subcog's source at its start and end (servers load the source when they start, so an
edit during a run would mix versions).

Every server's stderr goes to its own file under ``--logs`` (a new temporary directory by
default, kept); lines with Traceback, ERROR, WARN or CRITICAL in them, and in the CLI commands'
stderr, are printed per section. ``--json OUT`` writes every figure, including each call's
latency, to OUT.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import re
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

sys.path.insert(0, str(Path(__file__).parent))
from common import percentile, subcog_command

SECTIONS = ("growth", "writers", "harness")
WRITERS = 4
GROWTH_MAX_MB = 30.0
GROWTH_RECALL_P50_MS = 15.0
ERASE_TARGET_S = 60.0
ERASE_GIVE_UP_S = 90.0
ERASE_POLL_S = 0.5
CONTROL_SAMPLE = 20
LIST_LIMIT = 100_000
LOAD_TIMEOUT_S = "120"
LOADING_HINT = "Retry this call"
LOADING_RETRIES = 60
LOG_PROBLEM = re.compile(r"Traceback|\bERROR\b|\bWARN|\bCRITICAL\b")
SHOWN_LOG_LINES = 40
MARKER_PREFIX = "secret marker "
MARKER_ON_DISK = re.compile(rb"secret marker ([0-9a-f]{32})")
HEX_ID_ON_DISK = re.compile(rb"[0-9a-f]{32}")
HEX_HASH_ON_DISK = re.compile(rb"[0-9a-f]{64}")
# B-tree index files (on id and content_hash) hold ids and content hashes only, never text:
# the byte search checks both, so such a file is never a suspect. Nor is the bitmap index on
# scope, which holds scope names.
BTREE_FILE = re.compile(r"_indices/[^/]+/(?:page_(?:data|lookup)|bitmap_page_lookup)\.lance$")
MB = 1_000_000
CPU_SAMPLE_S = 5.0

SUBJECTS = [
    "Ana", "Our team lead", "My sister Jo", "The staging cluster", "Grandpa Walter",
    "The billing service", "Tom's cat Miso", "The Berlin office", "Our landlord",
    "The nightly build", "Priya from finance", "The mobile app", "Dr. Okafor",
    "The search index", "My neighbour Luis", "The payments API", "Coach Rivera",
    "The home router", "Aunt Margit", "The data warehouse",
]  # fmt: skip
FACTS = [
    "keeps the spare key in locker {n}", "owes the library {n} euros",
    "has a standing meeting in room {n}", "needs the deploy script at version {n}",
    "was upgraded to release {n}", "reported ticket #{n} about slow logins",
    "runs the backup job at {n} minutes past midnight", "booked seat {n} on the train to Lyon",
    "set the thermostat to {n} percent", "ordered {n} boxes of printer paper",
    "has {n} open pull requests", "allows at most {n} database connections",
    "walked {n} kilometres for charity", "wants the report trimmed to {n} pages",
    "parks in bay {n} of the garage", "scored {n} points at the quiz night",
    "pinned the base image to tag {n}", "renewed the TLS certificate for {n} days",
    "asked for {n} vegetarian meals", "keeps {n} days of logs",
    "paid invoice {n} by bank transfer", "is reading chapter {n} of the manual",
    "times out after {n} seconds", "moved to apartment {n} on Elm Street",
    "borrowed {n} folding chairs for the party",
]  # fmt: skip
WHEN = [
    "on Monday mornings", "since last spring", "every other Friday",
    "before the March release", "after the holidays", "during the audit",
    "until further notice", "as of yesterday", "at the end of each quarter",
    "on weekends only", "since the office move", "when it rains", "for the Q3 planning",
    "since the outage in May", "ahead of the board meeting", "on the first of every month",
    "after lunch on Tuesdays", "while Sam is on leave", "for the rest of the year",
    "starting next week",
]  # fmt: skip
TOPICS = [
    "the spare key", "money owed", "meetings", "deployments", "upgrades", "support tickets",
    "backups", "travel", "the heating", "office supplies", "code review", "database limits",
    "charity events", "reports", "parking", "quiz night", "container images", "certificates",
    "catering", "log retention",
]  # fmt: skip


# Any memory text of ours, as it shows in a file that stores strings uncompressed.
PLAIN_MEMORY_TEXT = re.compile(
    "(?:{}) (?:{}) ".format(
        "|".join(re.escape(subject) for subject in SUBJECTS),
        "|".join(sorted({re.escape(fact.split()[0]) for fact in FACTS})),
    ).encode()
)


def sentence(index: int) -> str:
    """The index-th memory text: a different sentence for every index, the same on every run."""
    subject, rest = index % len(SUBJECTS), index // len(SUBJECTS)
    fact, rest = rest % len(FACTS), rest // len(FACTS)
    when, cycle = rest % len(WHEN), rest // len(WHEN)
    # Within one (subject, fact, when) the number tells the cycles apart: n // 97 == cycle.
    n = cycle * 97 + (7 * subject + 11 * fact + 13 * when) % 97 + 1
    return f"{SUBJECTS[subject]} {FACTS[fact].format(n=n)} {WHEN[when]}."


def sentences(start: int, count: int) -> list[str]:
    texts = [sentence(i) for i in range(start, start + count)]
    # The model is uncased and subcog ignores whitespace: distinct must survive both.
    assert len({" ".join(t.lower().split()) for t in texts}) == count, "texts are not distinct"
    return texts


def question(index: int) -> str:
    subject = SUBJECTS[index % len(SUBJECTS)]
    if subject.split()[0] in {"The", "Our", "My"}:
        subject = subject[0].lower() + subject[1:]
    topic = TOPICS[(index // len(SUBJECTS)) % len(TOPICS)]
    return f"What do we know about {subject} and {topic}?"


SUBCOG = subcog_command()


def server_env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "SUBCOG_DATA_DIR": str(data_dir), "SUBCOG_LOAD_TIMEOUT": LOAD_TIMEOUT_S}


# Figures


def latency(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": percentile(values, 50),
        "p95_ms": percentile(values, 95),
        "max_ms": max(values, default=math.nan),
    }


def p50_p95(values: Sequence[float]) -> str:
    return f"{percentile(values, 50):.1f}/{percentile(values, 95):.1f} ms"


@dataclass
class Check:
    """One figure against its target; ok is None for a figure without a target."""

    name: str
    value: str
    target: str
    ok: bool | None

    def verdict(self) -> str:
        return "info" if self.ok is None else "PASS" if self.ok else "FAIL"


def none_of(name: str, items: Sequence[Any] | dict[str, Any]) -> Check:
    """A check that passes when there are no such items."""
    return Check(name, str(len(items)), "== 0", not items)


def print_checks(checks: Sequence[Check]) -> None:
    width = max(len(c.name) for c in checks)
    print(f"  {'check':<{width}}  {'value':>16}  {'target':>12}  result")
    for c in checks:
        print(f"  {c.name:<{width}}  {c.value:>16}  {c.target:>12}  {c.verdict()}")


def checks_json(checks: Sequence[Check]) -> list[dict[str, Any]]:
    return [
        {"name": c.name, "value": c.value, "target": c.target, "result": c.verdict()}
        for c in checks
    ]


def disk_usage(path: Path) -> tuple[int, int]:
    """Bytes (apparent sizes) and number of files under path."""
    total = files = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += os.path.getsize(os.path.join(root, name))
                files += 1
            except OSError:  # removed by upkeep meanwhile
                pass
    return total, files


def content_hash(text: str) -> str:
    """The hash subcog keeps of a memory's text (SHA-256 of the whitespace-normalised text)."""
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()


def read_all_files(path: Path) -> Iterator[tuple[Path, float, bytes]]:
    """(path, mtime, content) of every file under path."""
    for root, _dirs, names in os.walk(path):
        for name in names:
            file = Path(root, name)
            try:
                yield file, file.stat().st_mtime, file.read_bytes()
            except OSError:  # removed by upkeep meanwhile
                continue


@dataclass
class Scan:
    markers: set[str]  # forgotten marker texts found byte for byte, or their uuid alone
    ids: set[str]  # forgotten marker ids found byte for byte
    hashes: set[str]  # forgotten marker content hashes (SHA-256 hex) found byte for byte
    in_window: list[str]  # data files written while a forgotten marker was live
    suspects: list[str]  # those of them in which no memory text shows byte for byte
    controls: int  # live texts found byte for byte
    seconds: float

    def clean(self) -> bool:
        return not self.markers and not self.suspects

    def as_json(self) -> dict[str, Any]:
        return {
            "markers": sorted(self.markers),
            "ids": sorted(self.ids),
            "content_hashes": sorted(self.hashes),
            "data_files_written_while_a_marker_was_live": self.in_window,
            "suspect_data_files": self.suspects,
            "controls": self.controls,
            "seconds": self.seconds,
        }


def scan_disk(
    path: Path,
    forgotten: dict[str, tuple[str, float, float]],
    controls: Sequence[str],
) -> Scan:
    """Look for forgotten markers in every file under path, two ways.

    forgotten: id -> (marker text, wall time before its remember, wall time after its forget).
    Byte for byte: the marker texts, their uuids on their own (as a full-text index keeps
    words), their memory ids and, as a control, live memory texts. LanceDB may compress
    strings, so a text can be on disk without its bytes showing. Hence also: LanceDB never
    changes a .lance file (data or index) once written, so a marker can only be in a .lance
    file written between its remember and its forget's reply (or, for index files, by an
    index pass under way at the forget, which this window misses; the byte search still
    sees such a file's words if they are stored plainly). Such a file in which no memory text
    shows byte for byte (its strings may be compressed, so the byte search cannot clear it) is
    a suspect until it is gone. B-tree index files are not: they hold ids and content hashes,
    never text, and both are searched byte for byte (reported, not failed: neither is the
    forgotten text).
    """
    started = time.perf_counter()
    markers = {text for text, _, _ in forgotten.values()}
    windows = sorted((born, gone) for _, born, gone in forgotten.values())
    found_markers: set[str] = set()
    found_hex: set[str] = set()
    found_hashes: set[str] = set()
    hashes = {content_hash(text): text for text, _, _ in forgotten.values()}
    in_window: list[str] = []
    suspects: list[str] = []
    wanted_controls = {text.encode() for text in controls}
    found_controls: set[bytes] = set()
    for file, mtime, data in read_all_files(path):
        found_markers.update(
            MARKER_PREFIX + match.group(1).decode() for match in MARKER_ON_DISK.finditer(data)
        )
        found_hex.update(match.group(0).decode() for match in HEX_ID_ON_DISK.finditer(data))
        found_hashes.update(match.group(0).decode() for match in HEX_HASH_ON_DISK.finditer(data))
        found_controls.update(text for text in wanted_controls - found_controls if text in data)
        if file.suffix == ".lance" and any(born <= mtime <= gone for born, gone in windows):
            in_window.append(str(file.relative_to(path)))
            text_shows = PLAIN_MEMORY_TEXT.search(data) or MARKER_ON_DISK.search(data)
            if not text_shows and not BTREE_FILE.search(in_window[-1]):
                suspects.append(in_window[-1])
    return Scan(
        markers=(found_markers & markers)
        | {text for text in markers if text.removeprefix(MARKER_PREFIX) in found_hex},
        ids=found_hex & set(forgotten),
        hashes=found_hashes & set(hashes),
        in_window=sorted(in_window),
        suspects=sorted(suspects),
        controls=len(found_controls),
        seconds=time.perf_counter() - started,
    )


# Servers and the command line


@dataclass
class Session:
    """One `subcog serve` process and everything its client saw."""

    name: str
    client: Client
    log_path: Path
    errors: list[str] = field(default_factory=list)
    broken: bool = False
    ready_s: float = 0.0

    async def warm_up(self) -> None:
        """One untimed recall that waits for the model and the store to load."""
        started = time.perf_counter()
        for _ in range(LOADING_RETRIES):
            result = await self.client.call_tool("recall", {"query": "warm up", "limit": 1})
            if not result.is_error:
                self.ready_s = time.perf_counter() - started
                return
            message = text_of(result)
            if LOADING_HINT not in message:
                raise RuntimeError(f"{self.name}: the warm-up recall failed: {message}")
            await anyio.sleep(1.0)
        raise RuntimeError(f"{self.name}: still loading after {LOADING_RETRIES} tries")

    async def call(
        self, tool: str, arguments: dict[str, Any], times: list[float] | None = None
    ) -> dict[str, Any] | None:
        """Call a tool and time it; None, with the error recorded, if it failed."""
        started = time.perf_counter()
        try:
            result = await self.client.call_tool(tool, arguments)
        except Exception as exc:  # the process died or the pipe broke: no reply at all
            self.errors.append(f"{self.name} {tool}: no reply, {type(exc).__name__}: {exc}")
            self.broken = True
            return None
        if times is not None:
            times.append((time.perf_counter() - started) * 1000)
        if result.is_error or result.structured_content is None:
            message = text_of(result) or "no structured content"
            self.errors.append(f"{self.name} {tool}: {message}")
            return None
        content: dict[str, Any] = result.structured_content
        return content


def text_of(result: Any) -> str:
    return " ".join(getattr(part, "text", str(part)) for part in result.content)


class ServerFailed(RuntimeError):
    """A `subcog serve` process that did not get through the MCP handshake."""


@asynccontextmanager
async def serve(data_dir: Path, logs: Path, name: str) -> AsyncIterator[Session]:
    """A `subcog serve` subprocess on data_dir, its stderr in logs/<name>.log."""
    log_path = logs / f"{name}.log"
    params = StdioServerParameters(command=SUBCOG, args=["serve"], env=server_env(data_dir))
    async with AsyncExitStack() as stack:
        errlog = stack.enter_context(log_path.open("w", encoding="utf-8"))
        try:
            client = await stack.enter_async_context(Client(stdio_client(params, errlog=errlog)))
        except Exception as exc:
            reasons = "; ".join(f"{type(e).__name__}: {e}" for e in leaves(exc))
            tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            raise ServerFailed(
                f"{name}: `subcog serve` failed to start ({reasons}); its stderr ends with: "
                + " | ".join(tail[-3:])
            ) from exc
        yield Session(name=name, client=client, log_path=log_path)


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or exc itself."""
    inner = getattr(exc, "exceptions", None)
    if isinstance(inner, tuple):
        return [leaf for nested in inner for leaf in leaves(nested)]
    return [exc]


class Gate:
    """Lets tasks through once `parties` of them have arrived."""

    def __init__(self, parties: int) -> None:
        self._left = parties
        self._open = anyio.Event()

    async def arrive(self) -> None:
        self._left -= 1
        if self._left <= 0:
            self._open.set()
        await self._open.wait()


def log_problems(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        return [f"cannot read {path}: {exc}"]
    return [f"{path.name}: {line}" for line in lines if LOG_PROBLEM.search(line)]


async def cli(data_dir: Path, logs: Path, name: str, *args: str) -> Any:
    """Run `subcog ARGS` on data_dir; its parsed JSON stdout. Its stderr goes to logs/<name>.log."""
    done = await anyio.run_process([SUBCOG, *args], env=server_env(data_dir), check=False)
    (logs / f"{name}.log").write_bytes(done.stderr)
    if done.returncode != 0:
        raise RuntimeError(
            f"subcog {' '.join(args)} exited with {done.returncode}: "
            f"{done.stderr.decode(errors='replace').strip()}"
        )
    return json.loads(done.stdout)


@dataclass
class Audit:
    """What the store holds once the servers are gone, against the ids the clients got."""

    count: int
    listed: int
    lost: list[str]
    duplicated: dict[str, int]
    unexpected: list[dict[str, Any]]
    disk_bytes: int

    def as_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "listed": self.listed,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "unexpected": self.unexpected,
            "disk_bytes": self.disk_bytes,
        }


async def audit(data_dir: Path, logs: Path, section: str, given: dict[str, str]) -> Audit:
    """given: id -> text of every memory a client was told is stored."""
    stats = await cli(data_dir, logs, f"{section}-cli-stats", "stats", "--json")
    rows: list[dict[str, Any]] = await cli(
        data_dir,
        logs,
        f"{section}-cli-list",
        "list",
        "--json",
        "--limit",
        str(LIST_LIMIT),
        "--scope",
        "*",
    )
    listed_ids = {row["id"] for row in rows}
    contents = Counter(row["content"] for row in rows)
    return Audit(
        count=int(stats["count"]),
        listed=len(rows),
        lost=sorted(set(given) - listed_ids),
        duplicated={text: n for text, n in contents.items() if n > 1},
        unexpected=[row for row in rows if row["id"] not in given],
        disk_bytes=int(stats["disk_bytes"]),
    )


def audit_checks(found: Audit, expected: int) -> list[Check]:
    target = f"== {expected}"
    return [
        Check("count (subcog stats)", str(found.count), target, found.count == expected),
        Check("rows listed (subcog list)", str(found.listed), target, found.listed == expected),
        none_of("lost memories", found.lost),
        none_of("duplicated contents", found.duplicated),
        none_of("unexpected rows", found.unexpected),
    ]


def print_problems(what: str, problems: Sequence[str]) -> None:
    if not problems:
        print(f"  {what}: none")
        return
    print(f"  {what}: {len(problems)}")
    for line in problems[:SHOWN_LOG_LINES]:
        print(f"    {line[:300]}")
    if len(problems) > SHOWN_LOG_LINES:
        print(f"    ... {len(problems) - SHOWN_LOG_LINES} more in the JSON and the log files")


@contextmanager
def data_directory(prefix: str, keep: bool) -> Iterator[Path]:
    if keep:
        kept = Path(tempfile.mkdtemp(prefix=prefix))
        print(f"  data dir (kept): {kept}")
        yield kept
    else:
        with tempfile.TemporaryDirectory(prefix=prefix) as throwaway:
            yield Path(throwaway)


# Writers, shared by the writers and harness sections


@dataclass
class Writer:
    name: str
    texts: list[str]
    remember_ms: list[float] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)  # id -> text
    exists: list[str] = field(default_factory=list)  # distinct texts answered "exists"
    errors: list[str] = field(default_factory=list)
    verify_ms: list[float] = field(default_factory=list)
    verify_misses: list[str] = field(default_factory=list)
    write_s: float = 0.0
    ready_s: float = 0.0

    async def write(self, session: Session) -> None:
        started = time.perf_counter()
        for text in self.texts:
            stored = await session.call("remember", {"content": text}, self.remember_ms)
            if session.broken:
                break
            if stored is None:
                continue
            self.ids[stored["id"]] = text
            if stored["status"] != "created":
                self.exists.append(text)
        self.write_s = time.perf_counter() - started

    def row(self) -> str:
        return (
            f"  {self.name:<9}{len(self.remember_ms):>7}{len(self.errors):>8}"
            f"{percentile(self.remember_ms, 50):>10.1f}{percentile(self.remember_ms, 95):>10.1f}"
            f"{max(self.remember_ms, default=math.nan):>10.1f}{self.write_s:>9.1f}"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "memories": len(self.texts),
            "stored": len(self.ids),
            "remember_latency": latency(self.remember_ms),
            "write_s": self.write_s,
            "ready_s": self.ready_s,
            "exists": self.exists,
            "errors": self.errors,
            "exact_text_recall_latency": latency(self.verify_ms),
            "exact_text_misses": self.verify_misses,
            "remember_ms": [round(t, 3) for t in self.remember_ms],
        }


WRITER_HEADER = (
    f"  {'writer':<9}{'calls':>7}{'errors':>8}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}"
    f"{'wall s':>9}"
)


def make_writers(prefix: str, per_writer: int) -> list[Writer]:
    return [
        Writer(f"{prefix}{w + 1}", sentences(w * per_writer, per_writer)) for w in range(WRITERS)
    ]


# Section 1: growth


async def growth(args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    count: int = args.growth_count
    marks = sorted({c for c in args.checkpoints if 0 < c < count} | {count})
    texts = sentences(0, count)
    questions = [question(i) for i in range(args.queries)]
    print(f"\n== growth: one server, {count} sequential single remembers ==")
    section_started = time.perf_counter()
    points: list[dict[str, Any]] = []
    remember_ms: list[float] = []
    given: dict[str, str] = {}
    exists = 0
    with data_directory("subcog-growth-", args.keep) as data_dir:
        async with serve(data_dir, logs, "growth-server") as session:
            await session.warm_up()
            print(f"  server ready in {session.ready_s:.1f} s; data dir {data_dir}")
            print(
                f"  {'memories':>8}  {'remember p50/p95':>18}  {'size now':>9}  {'settled':>9}"
                f"  {'files':>6}  {'recall p50/p95':>17}"
            )
            remember_s = 0.0
            segment_start, segment_started = 0, time.perf_counter()
            for done, text in enumerate(texts, 1):
                stored = await session.call("remember", {"content": text}, remember_ms)
                if session.broken:
                    break
                if stored is not None:
                    given[stored["id"]] = text
                    exists += stored["status"] != "created"
                if done not in marks:
                    continue
                remember_s += time.perf_counter() - segment_started
                size_now, _ = await anyio.to_thread.run_sync(disk_usage, data_dir)
                await anyio.sleep(args.settle)
                size, files = await anyio.to_thread.run_sync(disk_usage, data_dir)
                recall_ms: list[float] = []
                for query in questions:
                    await session.call("recall", {"query": query, "limit": 5}, recall_ms)
                segment = remember_ms[segment_start:]
                point = {
                    "memories": done,
                    "remember_latency_since_last": latency(segment),
                    "bytes_right_after_last_write": size_now,
                    "bytes_settled": size,
                    "files_settled": files,
                    "recall_latency": latency(recall_ms),
                    "remember_s_so_far": remember_s,
                }
                points.append(point)
                print(
                    f"  {done:>8}  {p50_p95(segment):>18}  {size_now / MB:>6.1f} MB"
                    f"  {size / MB:>6.1f} MB  {files:>6}  {p50_p95(recall_ms):>17}",
                    flush=True,
                )
                segment_start, segment_started = len(remember_ms), time.perf_counter()
        errors = session.errors
        found = await audit(data_dir, logs, "growth", given)
    wall_s = time.perf_counter() - section_started
    problems = [p for path in sorted(logs.glob("growth-*.log")) for p in log_problems(path)]

    last = points[-1] if points else None
    print(
        f"  remember wall {remember_s:.1f} s for {len(remember_ms)} calls "
        f"({len(remember_ms) / remember_s if remember_s else math.nan:.1f}/s); "
        f"remember p50/p95 overall {p50_p95(remember_ms)}, "
        f"max {max(remember_ms, default=math.nan):.1f} ms; "
        f"section wall {wall_s:.1f} s"
    )
    reached = last is not None and last["memories"] == count
    settled_mb = last["bytes_settled"] / MB if reached and last else math.nan
    recall_p50 = last["recall_latency"]["p50_ms"] if reached and last else math.nan
    checks = [
        Check(
            f"data dir after {count} (settled)",
            f"{settled_mb:.1f} MB",
            f"<= {GROWTH_MAX_MB:.0f} MB",
            settled_mb <= GROWTH_MAX_MB,
        ),
        Check(
            f"recall p50 after {count}",
            f"{recall_p50:.1f} ms",
            f"<= {GROWTH_RECALL_P50_MS:.0f} ms",
            recall_p50 <= GROWTH_RECALL_P50_MS,
        ),
        Check("remember p95 overall", f"{percentile(remember_ms, 95):.1f} ms", "-", None),
        none_of("tool errors", errors),
        Check("'exists' for a distinct text", str(exists), "== 0", exists == 0),
        *audit_checks(found, count),
        Check("disk bytes (subcog stats)", f"{found.disk_bytes / MB:.1f} MB", "-", None),
    ]
    print_checks(checks)
    print_problems("tool errors", errors)
    print_problems("server/CLI stderr lines with Traceback/ERROR/WARN", problems)
    return {
        "count": count,
        "checkpoints": points,
        "remember_wall_s": remember_s,
        "section_wall_s": wall_s,
        "remember_latency": latency(remember_ms),
        "errors": errors,
        "exists": exists,
        "audit": found.as_json(),
        "checks": checks_json(checks),
        "log_problems": problems,
        "remember_ms": [round(t, 3) for t in remember_ms],
    }


# Section 2: writers


async def writers(args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    per_writer: int = args.per_writer
    expected = WRITERS * per_writer
    print(
        f"\n== writers: {WRITERS} servers on one data dir, {per_writer} remembers each, at once =="
    )
    section_started = time.perf_counter()
    crew = make_writers("writer", per_writer)
    loaded, written = Gate(WRITERS), Gate(WRITERS)
    given: dict[str, str] = {}

    with data_directory("subcog-writers-", args.keep) as data_dir:

        async def run(writer: Writer) -> None:
            async with serve(data_dir, logs, f"writers-{writer.name}") as session:
                await session.warm_up()
                writer.ready_s = session.ready_s
                await loaded.arrive()
                await writer.write(session)
                given.update(writer.ids)
                await written.arrive()
                for memory_id, text in list(given.items()):
                    found = await session.call(
                        "recall", {"query": text, "limit": 1}, writer.verify_ms
                    )
                    if session.broken:
                        break
                    top = found["memories"] if found is not None else []
                    if not top or top[0]["id"] != memory_id:
                        got = top[0]["id"] if top else "nothing"
                        writer.verify_misses.append(f"{memory_id} ({text!r}) -> {got}")
            writer.errors = session.errors

        write_started = time.perf_counter()
        async with anyio.create_task_group() as group:
            for writer in crew:
                group.start_soon(run, writer)
        run_s = time.perf_counter() - write_started
        found = await audit(data_dir, logs, "writers", given)
    wall_s = time.perf_counter() - section_started
    problems = [p for path in sorted(logs.glob("writers-*.log")) for p in log_problems(path)]

    print(WRITER_HEADER + f"{'exact-text misses':>19}")
    for writer in crew:
        print(writer.row() + f"{len(writer.verify_misses):>19}")
    errors = [e for w in crew for e in w.errors]
    exists = [t for w in crew for t in w.exists]
    misses = [m for w in crew for m in w.verify_misses]
    worst = max(crew, key=lambda w: percentile(w.remember_ms, 95))
    worst_p95 = percentile(worst.remember_ms, 95)
    verify_ms = [t for w in crew for t in w.verify_ms]
    print(
        f"  the worst remember p95 while {WRITERS} processes write at once: {worst_p95:.1f} ms "
        f"({worst.name}); exact-text recalls ({len(verify_ms)}) p50/p95 {p50_p95(verify_ms)}; "
        f"servers up {run_s:.1f} s, section wall {wall_s:.1f} s"
    )
    checks = [
        Check("worst remember p95", f"{worst_p95:.1f} ms", "-", None),
        none_of("tool errors", errors),
        none_of("'exists' for a distinct text", exists),
        none_of("exact-text recall misses", misses),
        *audit_checks(found, expected),
    ]
    print_checks(checks)
    print_problems("tool errors", errors)
    print_problems("exact-text recall misses", misses)
    print_problems("server/CLI stderr lines with Traceback/ERROR/WARN", problems)
    return {
        "writers": [w.as_json() for w in crew],
        "per_writer": per_writer,
        "worst_remember_p95_ms": worst_p95,
        "exact_text_recall_latency": latency(verify_ms),
        "servers_up_s": run_s,
        "section_wall_s": wall_s,
        "audit": found.as_json(),
        "checks": checks_json(checks),
        "log_problems": problems,
    }


# Section 3: harness


@dataclass
class Prober:
    """The fifth server's client: markers remembered, recalled, forgotten and checked."""

    cycles: int = 0
    remember_ms: list[float] = field(default_factory=list)
    marker_recall_ms: list[float] = field(default_factory=list)
    forget_ms: list[float] = field(default_factory=list)
    after_forget_recall_ms: list[float] = field(default_factory=list)
    plain_recall_ms: list[float] = field(default_factory=list)
    remembered: dict[str, str] = field(default_factory=dict)  # id -> marker text
    # id -> (marker text, wall time before remember, wall time after forget)
    forgotten: dict[str, tuple[str, float, float]] = field(default_factory=dict)
    last_forget: float | None = None  # perf_counter when the last forget returned
    not_visible: list[str] = field(default_factory=list)
    not_forgotten: list[str] = field(default_factory=list)
    still_recalled: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    probe_s: float = 0.0

    async def cycle(self, session: Session, index: int) -> None:
        marker = f"{MARKER_PREFIX}{uuid.uuid4().hex}"
        born = time.time()
        stored = await session.call("remember", {"content": marker}, self.remember_ms)
        if stored is None:
            return
        memory_id = stored["id"]
        self.remembered[memory_id] = marker
        found = await session.call("recall", {"query": marker, "limit": 1}, self.marker_recall_ms)
        if found is not None and [m["id"] for m in found["memories"]] != [memory_id]:
            self.not_visible.append(memory_id)
        gone = await session.call("forget", {"ids": [memory_id]}, self.forget_ms)
        if gone is None or gone["forgotten"] != [memory_id]:
            self.not_forgotten.append(f"{memory_id}: {gone}")
            return
        self.last_forget = time.perf_counter()
        self.forgotten[memory_id] = (marker, born, time.time())
        after = await session.call(
            "recall", {"query": marker, "limit": 5}, self.after_forget_recall_ms
        )
        if after is not None and memory_id in [m["id"] for m in after["memories"]]:
            self.still_recalled.append(memory_id)
        await session.call("recall", {"query": question(index), "limit": 5}, self.plain_recall_ms)

    def as_json(self) -> dict[str, Any]:
        return {
            "cycles": self.cycles,
            "probe_s": self.probe_s,
            "markers_remembered": len(self.remembered),
            "markers_forgotten": len(self.forgotten),
            "remember_latency": latency(self.remember_ms),
            "marker_recall_latency": latency(self.marker_recall_ms),
            "forget_latency": latency(self.forget_ms),
            "after_forget_recall_latency": latency(self.after_forget_recall_ms),
            "plain_recall_latency": latency(self.plain_recall_ms),
            "not_visible": self.not_visible,
            "not_forgotten": self.not_forgotten,
            "still_recalled": self.still_recalled,
            "errors": self.errors,
        }


@dataclass
class Erasure:
    # (s after the last forget, markers found byte for byte, suspect data files)
    polls: list[tuple[float, int, int]] = field(default_factory=list)
    bytes_gone_after_s: float | None = None  # no marker found byte for byte
    erased_after_s: float | None = None  # that, and no suspect data file either
    first: Scan | None = None
    last: Scan | None = None


async def wait_for_erasure(
    data_dir: Path, prober: Prober, controls: Sequence[str], give_up_s: float
) -> Erasure:
    """Scan the data dir until no forgotten marker is in any file, or give_up_s has passed."""
    result = Erasure()
    if prober.last_forget is None:
        return result
    while True:
        scan = await anyio.to_thread.run_sync(scan_disk, data_dir, prober.forgotten, controls)
        elapsed = time.perf_counter() - prober.last_forget
        result.first = result.first or scan
        result.last = scan
        result.polls.append((round(elapsed, 3), len(scan.markers), len(scan.suspects)))
        if not scan.markers and result.bytes_gone_after_s is None:
            result.bytes_gone_after_s = elapsed
        if scan.clean():
            result.erased_after_s = elapsed
            return result
        if elapsed >= give_up_s:
            return result
        await anyio.sleep(ERASE_POLL_S)


async def harness(args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    per_writer: int = args.harness_per_writer
    expected = WRITERS * per_writer
    print(
        f"\n== harness: {WRITERS} writers x {per_writer} remembers and a prober "
        "(remember, recall, forget, recall a marker) on one data dir =="
    )
    section_started = time.perf_counter()
    crew = make_writers("writer", per_writer)
    controls = [w.texts[i] for w in crew for i in range(0, per_writer, per_writer // 5 or 1)]
    controls = controls[:CONTROL_SAMPLE]
    prober = Prober()
    loaded = Gate(WRITERS + 1)
    writing = WRITERS
    writers_done = anyio.Event()
    erasure = Erasure()

    with data_directory("subcog-harness-", args.keep) as data_dir:

        async def run_writer(writer: Writer) -> None:
            nonlocal writing
            try:
                async with serve(data_dir, logs, f"harness-{writer.name}") as session:
                    await session.warm_up()
                    writer.ready_s = session.ready_s
                    await loaded.arrive()
                    await writer.write(session)
                writer.errors = session.errors
            finally:  # the writer's server has exited here
                writing -= 1
                if writing == 0:
                    writers_done.set()

        async def run_prober() -> None:
            nonlocal erasure
            async with serve(data_dir, logs, "harness-prober") as session:
                await session.warm_up()
                await loaded.arrive()
                started = time.perf_counter()
                while not writers_done.is_set() and not session.broken:
                    await prober.cycle(session, prober.cycles)
                    prober.cycles += 1
                prober.probe_s = time.perf_counter() - started
                # The prober's server keeps running: erasure is done by running servers.
                erasure = await wait_for_erasure(data_dir, prober, controls, ERASE_GIVE_UP_S)
            prober.errors = session.errors

        async with anyio.create_task_group() as group:
            for writer in crew:
                group.start_soon(run_writer, writer)
            group.start_soon(run_prober)
        given = {memory_id: text for w in crew for memory_id, text in w.ids.items()}
        found = await audit(data_dir, logs, "harness", given)
        final = await anyio.to_thread.run_sync(scan_disk, data_dir, prober.forgotten, controls)
    wall_s = time.perf_counter() - section_started
    problems = [p for path in sorted(logs.glob("harness-*.log")) for p in log_problems(path)]

    print(WRITER_HEADER)
    for writer in crew:
        print(writer.row())
    worst = max(crew, key=lambda w: percentile(w.remember_ms, 95))
    worst_p95 = percentile(worst.remember_ms, 95)
    print(
        f"  the worst remember p95 while {WRITERS} processes write (and one probes): "
        f"{worst_p95:.1f} ms ({worst.name})"
    )
    print(
        f"  prober: {prober.cycles} cycles in {prober.probe_s:.1f} s, "
        f"{len(prober.forgotten)} markers forgotten; p50/p95 remember "
        f"{p50_p95(prober.remember_ms)}, exact recall {p50_p95(prober.marker_recall_ms)}, "
        f"forget {p50_p95(prober.forget_ms)}, recall after forget "
        f"{p50_p95(prober.after_forget_recall_ms)}, plain recall {p50_p95(prober.plain_recall_ms)}"
    )
    first, last = erasure.first, erasure.last
    if first is not None and last is not None:
        print(
            f"  erasure scan: {len(erasure.polls)} scans ({last.seconds * 1000:.0f} ms each); "
            f"at the first, byte for byte {len(first.markers)} of {len(prober.forgotten)} "
            f"forgotten markers, {len(first.ids)} of their ids and {first.controls} of "
            f"{len(controls)} live control texts; {len(first.in_window)} data files written "
            f"while a forgotten marker was live, {len(first.suspects)} of them with no text "
            f"showing (suspects); at the last, {len(last.markers)} markers, {len(last.ids)} "
            f"ids, {last.controls} controls, {len(last.in_window)} files written while a marker "
            f"was live, {len(last.suspects)} suspects"
        )
        changes = [erasure.polls[0]] + [
            poll
            for before, poll in zip(erasure.polls, erasure.polls[1:], strict=False)
            if poll[1:] != before[1:]
        ]
        print(
            "  (markers found byte for byte, suspect data files) by time since the last forget: "
            + ", ".join(f"({found}, {files}) at {at:.1f} s" for at, found, files in changes)
        )
    print(
        f"  after every process exited: byte for byte {len(final.markers)} forgotten markers, "
        f"{len(final.ids)} of their ids, {len(final.hashes)} of their content hashes, "
        f"{final.controls}/{len(controls)} control texts; "
        f"{len(final.suspects)} suspect data files; section wall {wall_s:.1f} s"
    )

    errors = [e for w in crew for e in w.errors] + prober.errors
    exists = [t for w in crew for t in w.exists]
    markers_listed = [row for row in found.unexpected if row["id"] in prober.remembered]
    erased, bytes_gone = erasure.erased_after_s, erasure.bytes_gone_after_s
    gave_up = "never scanned" if erasure.first is None else f"> {ERASE_GIVE_UP_S:.0f} s"
    erase_value = gave_up if erased is None else f"{erased:.1f} s"
    bytes_value = gave_up if bytes_gone is None else f"{bytes_gone:.1f} s"
    checks = [
        Check("worst remember p95 (writers)", f"{worst_p95:.1f} ms", "-", None),
        none_of("tool errors (all clients)", errors),
        none_of("'exists' for a distinct text", exists),
        Check("markers forgotten", str(len(prober.forgotten)), "> 0", bool(prober.forgotten)),
        none_of("marker not recalled after remember", prober.not_visible),
        none_of("forget did not forget", prober.not_forgotten),
        none_of("marker recalled after forget", prober.still_recalled),
        *audit_checks(found, expected),
        none_of("markers left in the table", markers_listed),
        Check(
            "live texts visible byte for byte",
            f"{first.controls if first else 0}/{len(controls)}",
            "-",
            None,
        ),
        Check("last forget to no marker bytes", bytes_value, "-", None),
        Check(
            "last forget to no marker on disk",
            erase_value,
            f"<= {ERASE_TARGET_S:.0f} s",
            erased is not None and erased <= ERASE_TARGET_S,
        ),
        none_of("marker bytes after all exited", sorted(final.markers)),
        none_of("suspect data files after all exited", final.suspects),
        Check("forgotten ids on disk after all exited", str(len(final.ids)), "-", None),
        Check(
            "forgotten content hashes on disk after all exited",
            str(len(final.hashes)),
            "-",
            None,
        ),
    ]
    print_checks(checks)
    print_problems("tool errors", errors)
    print_problems("server/CLI stderr lines with Traceback/ERROR/WARN", problems)
    if last is not None and not last.clean():
        print_problems("forgotten markers still on disk at the last scan", sorted(last.markers))
        print_problems("suspect data files at the last scan", last.suspects)
    return {
        "writers": [w.as_json() for w in crew],
        "per_writer": per_writer,
        "worst_remember_p95_ms": worst_p95,
        "prober": prober.as_json(),
        "erasure": {
            "erased_after_s": erased,
            "bytes_gone_after_s": bytes_gone,
            "polls": erasure.polls,
            "first_scan": first.as_json() if first else None,
            "last_scan": last.as_json() if last else None,
            "after_exit_scan": final.as_json(),
            "controls": controls,
        },
        "section_wall_s": wall_s,
        "audit": found.as_json(),
        "checks": checks_json(checks),
        "log_problems": problems,
    }


# The machine while a section runs


def source_fingerprint() -> str:
    """A short hash of the subcog package's source, which servers load when they start."""
    spec = importlib.util.find_spec("subcog")
    if spec is None or not spec.submodule_search_locations:
        return "unknown"
    digest = hashlib.sha256()
    for path in sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def processes() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, start time, CPU ticks so far) of every process; {} off Linux."""
    table: dict[int, tuple[int, int, int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            pid = int(stat.parent.name)
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        table[pid] = (int(fields[1]), int(fields[19]), int(fields[11]) + int(fields[12]))
    return table


def descendants(table: dict[int, tuple[int, int, int]], root: int) -> set[int]:
    ours, grew = {root}, True
    while grew:
        more = {pid for pid, (parent, _, _) in table.items() if parent in ours} - ours
        ours |= more
        grew = bool(more)
    return ours


@dataclass
class ForeignCpu:
    """How much CPU processes other than this script and its children used: contamination."""

    samples: list[float] = field(default_factory=list)  # cores busy, per sample interval
    seconds: float = 0.0

    async def run(self) -> None:
        ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        before = await anyio.to_thread.run_sync(processes)
        while before:
            started = time.perf_counter()
            await anyio.sleep(CPU_SAMPLE_S)
            after = await anyio.to_thread.run_sync(processes)
            ours = descendants(after, os.getpid()) | descendants(before, os.getpid())
            used = 0
            for pid, (_, start, cpu) in after.items():
                if pid in ours:
                    continue
                old = before.get(pid)
                used += cpu - old[2] if old is not None and old[1] == start else cpu
            interval = time.perf_counter() - started
            self.seconds += used / ticks
            self.samples.append(used / ticks / interval)
            before = after

    def summary(self) -> dict[str, float]:
        return {
            "cpu_s": self.seconds,
            "mean_cores": sum(self.samples) / len(self.samples) if self.samples else math.nan,
            "max_cores": max(self.samples, default=math.nan),
        }


async def run_section(
    name: str, runner: Callable[[argparse.Namespace, Path], Any], args: argparse.Namespace
) -> dict[str, Any]:
    """Run one section, noting what else used the CPU and whether subcog's source changed."""
    foreign = ForeignCpu()
    source_before = source_fingerprint()
    async with anyio.create_task_group() as group:
        group.start_soon(foreign.run)
        try:
            result: dict[str, Any] = await runner(args, args.logs)
        except Exception as exc:
            reasons = [f"{type(e).__name__}: {e}" for e in leaves(exc)]
            result = {"crashed": reasons, "traceback": traceback.format_exc()}
            result["checks"] = checks_json([Check("section ran", "crashed", "completes", False)])
            print(f"\n{name} CRASHED:")
            for reason in reasons:
                print(f"  {reason}")
            problems = [
                p for path in sorted(args.logs.glob(f"{name}-*.log")) for p in log_problems(path)
            ]
            result["log_problems"] = problems
            print_problems("server/CLI stderr lines with Traceback/ERROR/WARN", problems)
        finally:
            group.cancel_scope.cancel()
    source_after = source_fingerprint()
    cpu = foreign.summary()
    result["foreign_cpu"] = cpu
    result["subcog_source"] = {"before": source_before, "after": source_after}
    busy = "not measured"
    if foreign.samples:
        busy = (
            f"{cpu['mean_cores']:.2f} of {os.cpu_count()} cores on average "
            f"(max {cpu['max_cores']:.2f} over {CPU_SAMPLE_S:.0f} s)"
        )
    print(
        f"  other processes on the machine used {busy} during {name}; "
        f"subcog source {source_before}"
        + (
            f", CHANGED to {source_after} during the section"
            if source_after != source_before
            else ""
        )
    )
    return result


# Main


def checkpoint_list(value: str) -> list[int]:
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("expected whole numbers separated by commas") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    for name in SECTIONS:
        parser.add_argument(f"--{name}", action="store_true", help=f"run the {name} section")
    parser.add_argument("--growth-count", type=int, default=10_000, help="growth: memories")
    parser.add_argument(
        "--checkpoints", type=checkpoint_list, default=[1000, 5000], help="growth: e.g. 1000,5000"
    )
    parser.add_argument("--queries", type=int, default=200, help="growth: recalls per checkpoint")
    parser.add_argument("--settle", type=float, default=10.0, help="growth: seconds to settle")
    parser.add_argument("--per-writer", type=int, default=100, help="writers: memories each")
    parser.add_argument("--harness-per-writer", type=int, default=250, help="harness: each")
    parser.add_argument("--logs", type=Path, help="where server stderr goes (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the data directories")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write every figure to OUT")
    args = parser.parse_args(argv)
    for name in ("growth_count", "queries", "per_writer", "harness_per_writer"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


async def main(args: argparse.Namespace) -> None:
    chosen = [name for name in SECTIONS if getattr(args, name)] or list(SECTIONS)
    args.logs = args.logs or Path(tempfile.mkdtemp(prefix="subcog-concurrency-logs-"))
    logs: Path = args.logs
    logs.mkdir(parents=True, exist_ok=True)
    print(f"subcog concurrency benchmark: {', '.join(chosen)}; {os.cpu_count()} cores; {SUBCOG}")
    print(f"server stderr in {logs}")
    started = time.perf_counter()
    runners: dict[str, Callable[[argparse.Namespace, Path], Any]] = {
        "growth": growth,
        "writers": writers,
        "harness": harness,
    }
    report: dict[str, Any] = {"sections": chosen, "logs": str(logs), "subcog": SUBCOG}
    failed: list[str] = []
    for name in chosen:
        report[name] = await run_section(name, runners[name], args)
        if any(check["result"] == "FAIL" for check in report[name]["checks"]):
            failed.append(name)
    report["total_wall_s"] = time.perf_counter() - started
    report["failed_sections"] = failed
    print(
        f"\ntotal wall time {report['total_wall_s']:.0f} s; "
        + (f"FAIL in {', '.join(failed)}" if failed else "every check passed")
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    anyio.run(main, parse_args())
