"""Speed at every size: a real `subcog serve` over stdio, driven by the mcp client.

    .venv/bin/python benchmarks/bench.py [--sizes 1000,10000,100000] [--json OUT]
    .venv/bin/python benchmarks/bench.py --sizes 1000000 --calls 100    # the big one

For each size it builds a fresh store with `subcog import` (that is the bulk-import
throughput), then starts `subcog serve` on it and measures, as the client sees them:
- spawn to the `initialize` reply, and spawn to the first successful `remember`;
- `remember` p50/p95 (new, distinct memories) and `recall` p50/p95;
- for `recall`, how the server's own time splits between embedding the query and searching
  (from its DEBUG timing log lines on stderr);
- the server process's peak RSS (VmHWM);
- past the size where searches leave the in-memory copy for LanceDB's HNSW index, that
  index's recall@10 against exact search, on real MiniLM vectors of memories and questions.

Texts are made here, deterministically: sentences built from a few hundred real words, so
every memory is distinct and reads like a note a person would keep. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

sys.path.insert(0, str(Path(__file__).parent))
from common import percentile, subcog_command

PEOPLE = [
    "Ana",
    "Ben",
    "Chloe",
    "Dev",
    "Elif",
    "Farid",
    "Gwen",
    "Hugo",
    "Ines",
    "Jon",
    "Kai",
    "Lena",
    "Mateo",
    "Nadia",
    "Omar",
    "Priya",
]
PLACES = [
    "Lisbon",
    "Berlin",
    "Oslo",
    "Kyoto",
    "Lagos",
    "Lima",
    "Austin",
    "Dublin",
    "Porto",
    "Seoul",
    "Quito",
    "Hanoi",
    "Turin",
    "Perth",
    "Cork",
    "Bergen",
    "Krakow",
    "Malaga",
    "Nantes",
    "Leeds",
    "Graz",
    "Aarhus",
    "Ghent",
    "Bologna",
    "Tartu",
    "Riga",
    "Brno",
    "Basel",
]
THINGS = [
    "bicycle",
    "camera",
    "guitar",
    "laptop",
    "kettle",
    "umbrella",
    "notebook",
    "passport",
    "telescope",
    "violin",
    "backpack",
    "lantern",
    "compass",
    "tripod",
    "scooter",
    "microscope",
    "typewriter",
    "sewing-machine",
    "drone",
    "harmonica",
]
ACTIONS = [
    "bought a {thing} in {place}",
    "lent the {thing} to {other} before the trip to {place}",
    "keeps the {thing} in the hall cupboard since moving to {place}",
    "is saving for a new {thing} after the one from {place} broke",
    "fixed {other}'s {thing} at the workshop in {place}",
    "wants to sell the old {thing} before leaving {place}",
]
WHEN = [
    "on Monday",
    "last spring",
    "in {year}",
    "during the holidays",
    "after the conference",
    "in June",
]
QUERIES = [
    "Who borrowed a camera?",
    "What did Ana buy in Lisbon?",
    "Which instrument needs repairing?",
    "Where is the spare umbrella kept?",
    "Who is saving up for a new laptop?",
    "What is for sale before the move?",
    "trip to Kyoto",
    "broken telescope",
]


def memory_text(n: int) -> str:
    """The n-th distinct memory: every index gives another sentence."""
    person, rest = PEOPLE[n % len(PEOPLE)], n // len(PEOPLE)
    action, rest = ACTIONS[rest % len(ACTIONS)], rest // len(ACTIONS)
    thing, rest = THINGS[rest % len(THINGS)], rest // len(THINGS)
    place, rest = PLACES[rest % len(PLACES)], rest // len(PLACES)
    when = WHEN[rest % len(WHEN)].format(year=1990 + rest % 35)
    other = PEOPLE[(n * 7 + 3) % len(PEOPLE)]
    sentence = action.format(thing=thing, place=place, other=other)
    return f"{person} {sentence} {when} (note {n})."


def write_jsonl(path: Path, start: int, count: int) -> None:
    with path.open("w") as out:
        for n in range(start, start + count):
            out.write(json.dumps({"content": memory_text(n)}) + "\n")


def bulk_import(data_dir: str, count: int) -> float:
    """Import `count` memories with `subcog import`; return memories per second."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as handle:
        path = Path(handle.name)
    try:
        write_jsonl(path, 0, count)
        env = {**os.environ, "SUBCOG_DATA_DIR": data_dir}
        started = time.perf_counter()
        subprocess.run(
            [subcog_command(), "import", str(path)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,  # its progress bar stays on stderr
        )
        return count / (time.perf_counter() - started)
    finally:
        path.unlink()


def server_pids() -> list[int]:
    """Our `subcog serve` children, found through /proc (the mcp client hides the Popen)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"serve" in cmdline:
            pids.append(int(entry.name))
    return pids


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


TIMING = re.compile(r"recall timing embed_ms=([\d.]+) search_ms=([\d.]+)")


async def measure(data_dir: str, start: int, calls: int) -> dict[str, Any]:
    """Time a server on the store in data_dir, whose memories are memory_text(n) for n below
    start: it remembers new ones from there."""
    env = {
        **os.environ,
        "SUBCOG_DATA_DIR": data_dir,
        "SUBCOG_LOAD_TIMEOUT": "300",
        "SUBCOG_LOG_LEVEL": "DEBUG",
    }
    params = StdioServerParameters(command=subcog_command(), args=["serve"], env=env)
    with tempfile.TemporaryFile("w+") as errlog:
        started = time.perf_counter()
        async with Client(stdio_client(params, errlog=errlog)) as client:
            to_initialize = time.perf_counter() - started
            first = await client.call_tool("remember", {"content": memory_text(start)})
            assert not first.is_error, first.content
            to_remember = time.perf_counter() - started
            (pid,) = server_pids()

            remember_ms = []
            for n in range(start + 1, start + 1 + calls):
                began = time.perf_counter()
                result = await client.call_tool("remember", {"content": memory_text(n)})
                remember_ms.append((time.perf_counter() - began) * 1000)
                assert not result.is_error, result.content
            recall_ms = []
            for query in itertools.islice(itertools.cycle(QUERIES), calls):
                began = time.perf_counter()
                result = await client.call_tool("recall", {"query": query, "limit": 10})
                recall_ms.append((time.perf_counter() - began) * 1000)
                assert not result.is_error, result.content
            rss = peak_rss_mb(pid)
        errlog.seek(0)
        split = [tuple(map(float, m.groups())) for m in TIMING.finditer(errlog.read())]
    embed_ms = statistics.median(s[0] for s in split) if split else float("nan")
    search_ms = statistics.median(s[1] for s in split) if split else float("nan")
    return {
        "spawn_to_initialize_s": to_initialize,
        "spawn_to_first_remember_s": to_remember,
        "remember_p50_ms": statistics.median(remember_ms),
        "remember_p95_ms": percentile(remember_ms, 95),
        "recall_p50_ms": statistics.median(recall_ms),
        "recall_p95_ms": percentile(recall_ms, 95),
        "recall_embed_p50_ms": embed_ms,
        "recall_search_p50_ms": search_ms,
        "peak_rss_mb": rss,
    }


def index_recall(data_dir: str, queries: int) -> float | None:
    """recall@10 of the search a server runs (the HNSW index, as storage/limits.py configures
    it) against exact search, over memory texts and questions; None when searches are exact."""
    import lancedb

    from subcog.config import Settings
    from subcog.embedder import load_embedder
    from subcog.memory import open_store
    from subcog.storage.schema import Filter

    settings = Settings.from_env({**os.environ, "SUBCOG_DATA_DIR": data_dir})
    store = open_store(settings)
    rows = store.count()
    if rows <= store.limits.mirror_rows:
        return None
    table = lancedb.connect(Path(data_dir) / "lancedb").open_table("memories")
    step = max(1, rows // queries)
    texts = [*QUERIES, *(memory_text(n).split(" (note")[0] for n in range(0, rows, step))]
    vectors = load_embedder(settings).embed(texts[:queries])
    found = 0
    for vector in vectors:
        indexed = {row["id"] for row, _ in store.nearest(vector, 10, Filter())}
        exact = (
            table.search(vector)
            .distance_type("cosine")
            .bypass_vector_index()
            .select(["id", "_distance"])
            .limit(10)
            .to_arrow()
        )
        found += len(indexed & set(exact["id"].to_pylist()))
    return found / (10 * len(vectors))


def stored(data_dir: str) -> int:
    import lance

    return int(lance.dataset(str(Path(data_dir) / "lancedb" / "memories.lance")).count_rows())


def disk_mb(path: str) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e6


async def run(sizes: list[int], calls: int, keep: Path | None) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        with contextlib.ExitStack() as stack:
            if keep is None:
                data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="subcog-bench-"))
            else:
                data_dir = str(keep / str(size))
            # A kept store is measured again as it is (its import rate is not known then).
            reuse = keep is not None and (Path(data_dir) / "lancedb").exists()
            per_second = math.nan if reuse else bulk_import(data_dir, size)
            start = stored(data_dir) if reuse else size
            timings = await measure(data_dir, start, calls)
            row = {"size": size, "import_per_s": per_second, **timings}
            row["disk_mb"] = disk_mb(data_dir)
            row["index_recall_at_10"] = index_recall(data_dir, queries=100)
            rows.append(row)
            print_row(row)
    return rows


COLUMNS = [
    ("size", "memories", "{:>9,}"),
    ("import_per_s", "import/s", "{:>9.0f}"),
    ("spawn_to_initialize_s", "init s", "{:>7.2f}"),
    ("spawn_to_first_remember_s", "1st rem s", "{:>9.2f}"),
    ("remember_p50_ms", "rem p50", "{:>8.1f}"),
    ("remember_p95_ms", "rem p95", "{:>8.1f}"),
    ("recall_p50_ms", "rec p50", "{:>8.1f}"),
    ("recall_p95_ms", "rec p95", "{:>8.1f}"),
    ("recall_embed_p50_ms", "embed", "{:>6.1f}"),
    ("recall_search_p50_ms", "search", "{:>7.1f}"),
    ("peak_rss_mb", "RSS MB", "{:>7.0f}"),
    ("disk_mb", "disk MB", "{:>8.1f}"),
    ("index_recall_at_10", "ANN R@10", "{:>8}"),
]


def print_header() -> None:
    print(
        " ".join(f"{title:>{len(fmt.format(0)) if 'f' in fmt else 9}}" for _, title, fmt in COLUMNS)
    )


def print_row(row: dict[str, Any]) -> None:
    shown = {**row, "index_recall_at_10": _exact_or(row["index_recall_at_10"])}
    print(" ".join(fmt.format(shown[key]) for key, _, fmt in COLUMNS), flush=True)


def _exact_or(share: float | None) -> str:
    return "exact" if share is None else f"{share:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--calls", type=int, default=200, help="remember and recall calls each")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--keep",
        type=Path,
        help="keep each store in KEEP/SIZE, and measure a store already there without importing",
    )
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
        f"Python {platform.python_version()}"
    )
    print(f"subcog benchmark on {machine}; times in ms unless marked s")
    print_header()
    rows = anyio.run(run, sizes, args.calls, args.keep)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
