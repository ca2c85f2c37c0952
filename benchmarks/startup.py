"""Start-up and latency of a real `subcog serve` over stdio, as a client sees them.

    .venv/bin/python benchmarks/startup.py [--runs 5] [--memories 500] [--queries 200] [--json OUT]

Prints:
- spawn to the `initialize` reply, and spawn to the first successful `remember`
  (median and worst over --runs fresh processes, each on a fresh data directory);
- `remember` and `recall` p50/p95 over --memories distinct memories in one process.

It speaks JSON-RPC line by line over the pipes, so the figures include the process's
own protocol handling but no client library overhead. The model cache is taken from
SUBCOG_CACHE_DIR as usual; run `subcog doctor` first so the model is in place.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import percentile, subcog_command

SUBJECTS = [
    "Ana", "The build server", "Our team", "My sister", "The staging cluster", "Grandpa",
    "The billing service", "Tom's cat", "The Berlin office", "Our landlord",
]  # fmt: skip
FACTS = [
    "moved to a new place in {n}", "prefers green tea over coffee since {n}",
    "has a standup at 9:{n:02d} on weekdays", "needs the deploy script version {n}",
    "was upgraded to PostgreSQL {n}", "has a dentist appointment on the {n}th",
    "is allergic to peanuts, noted in {n}", "keeps the spare key in box {n}",
    "runs the backup job at {n} minutes past midnight", "owes the library {n} euros",
]  # fmt: skip
QUESTIONS = [
    "Where does Ana live now?", "What does the build server need?", "When is our standup?",
    "What is my sister allergic to?", "Which database version does staging run?",
    "When is the dentist appointment?", "Where is the spare key?", "When do backups run?",
    "What does the billing service need?", "What does Grandpa drink?",
]  # fmt: skip


def sentences(count: int) -> list[str]:
    """Distinct, realistic sentences, the same on every run."""
    out = []
    for n, (subject, fact) in zip(
        itertools.count(1), itertools.cycle(itertools.product(SUBJECTS, FACTS))
    ):
        out.append(f"{subject} {fact.format(n=n % 60)} (note {n}).")
        if len(out) == count:
            break
    return out


class Server:
    """A `subcog serve` process driven by raw JSON-RPC lines."""

    def __init__(self, data_dir: str) -> None:
        env = {**os.environ, "SUBCOG_DATA_DIR": data_dir, "SUBCOG_LOAD_TIMEOUT": "120"}
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [subcog_command(), "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self._ids = itertools.count(1)

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        request_id = next(self._ids)
        message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the server closed stdout")
            reply: dict[str, Any] = json.loads(line)
            if reply.get("id") == request_id:
                return reply

    def notify(self, method: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", "method": method}).encode() + b"\n")
        self.proc.stdin.flush()

    def initialize(self) -> None:
        self.request(
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "subcog-bench", "version": "1"},
            },
        )
        self.notify("notifications/initialized")

    def tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        reply = self.request("tools/call", {"name": name, "arguments": arguments})
        result: dict[str, Any] = reply["result"]
        if result.get("isError"):
            raise RuntimeError(result["content"][0]["text"])
        structured: dict[str, Any] = result["structuredContent"]
        return structured

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream:
                stream.close()


def cold_starts(runs: int) -> dict[str, list[float]]:
    to_init, to_remember = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="subcog-bench-") as data_dir:
            server = Server(data_dir)
            try:
                server.initialize()
                to_init.append(time.perf_counter() - server.started)
                server.tool("remember", {"content": "The first memory of a cold start."})
                to_remember.append(time.perf_counter() - server.started)
            finally:
                server.close()
    return {"spawn_to_initialize_s": to_init, "spawn_to_first_remember_s": to_remember}


def latencies(memories: int, queries: int) -> dict[str, list[float]]:
    texts = sentences(memories)
    with tempfile.TemporaryDirectory(prefix="subcog-bench-") as data_dir:
        server = Server(data_dir)
        try:
            server.initialize()
            server.tool("recall", {"query": "warm up"})  # wait for loading to finish
            remember_ms = []
            for text in texts:
                start = time.perf_counter()
                result = server.tool("remember", {"content": text})
                remember_ms.append((time.perf_counter() - start) * 1000)
                assert result["status"] == "created", result
            recall_ms = []
            for question in itertools.islice(itertools.cycle(QUESTIONS), queries):
                start = time.perf_counter()
                server.tool("recall", {"query": question, "limit": 5})
                recall_ms.append((time.perf_counter() - start) * 1000)
        finally:
            server.close()
    return {"remember_ms": remember_ms, "recall_ms": recall_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--memories", type=int, default=500)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    starts = cold_starts(args.runs)
    timings = latencies(args.memories, args.queries)
    rows = [
        ("spawn to initialize", starts["spawn_to_initialize_s"], "s"),
        ("spawn to first remember", starts["spawn_to_first_remember_s"], "s"),
        (f"remember ({args.memories} memories)", timings["remember_ms"], "ms"),
        (f"recall (over {args.memories} memories)", timings["recall_ms"], "ms"),
    ]
    print(f"subcog stdio benchmark on {machine}")
    print(f"{'what':<34}{'p50':>10}{'p95':>10}{'max':>10}  unit")
    summary: dict[str, Any] = {"machine": machine}
    for name, values, unit in rows:
        p50, p95 = statistics.median(values), percentile(values, 95)
        print(f"{name:<34}{p50:>10.3f}{p95:>10.3f}{max(values):>10.3f}  {unit}")
        summary[name] = {"p50": p50, "p95": p95, "max": max(values), "unit": unit, "n": len(values)}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
