"""remember and recall on a store on object storage, against moto_server on loopback, beside
the same on a local store; and what the time went to.

    .venv/bin/python benchmarks/s3.py [--memories 200] [--queries 200]

Starts its own moto_server (the dev extra's `moto[server]`) on a free loopback port, and runs
the domain service in this process (no MCP client): so the figures are the store's and the
model's, with no protocol around them. For each store it prints p50 and p95 of remember and
of recall, the model's share (one embedding of the same texts), and on S3 the requests each
call made to the bucket (from moto_server's request log), by kind. SUBCOG_REFRESH_S is the
default (1 s on S3): recalls in a burst ask for the latest version at most once a second.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import percentile

TEXTS = [
    "{who} moved the {thing} to room {n}.",
    "The {thing} of {who} needs version {n} of the deploy script.",
    "{who} prefers the {thing} on floor {n}.",
    "Ticket {n} about the {thing} was closed by {who}.",
]
WHO = ["Ana", "Tom", "the build server", "Grandpa", "the Berlin office", "our landlord"]
THINGS = ["printer", "staging cluster", "billing service", "coffee machine", "VPN", "wiki"]
QUERIES = [
    "where is the {thing}?",
    "who closed the ticket about the {thing}?",
    "what does {who} prefer?",
    "which deploy script does the {thing} need?",
]


def texts(count: int) -> list[str]:
    return [
        TEXTS[n % len(TEXTS)].format(
            who=WHO[n % len(WHO)], thing=THINGS[(n // 3) % len(THINGS)], n=n
        )
        for n in range(count)
    ]


def queries(count: int) -> list[str]:
    return [
        QUERIES[n % len(QUERIES)].format(
            who=WHO[(n // 2) % len(WHO)], thing=THINGS[(n // 5) % len(THINGS)]
        )
        for n in range(count)
    ]


def start_moto(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    moto = Path(sys.executable).parent / "moto_server"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out
        )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                return process, endpoint
        except OSError:
            time.sleep(0.1)
    process.kill()
    sys.exit(f"moto_server did not start: {log.read_text()[-1000:]}")


def requests(log: Path) -> list[str]:
    text = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace"))  # moto's colours
    return [line for line in text.splitlines() if "HTTP/" in line]


def kind(line: str) -> str:
    """A request's kind: LIST, or the method and what part of the table it touched."""
    method = line.split('"')[1].split()[0] if '"' in line else "?"
    path = line.split('"')[1].split()[1] if '"' in line else ""
    if "list-type=2" in path:
        return "LIST"
    for part in ("_versions", "_indices", "_deletions", "_transactions", "data"):
        if f"/{part}/" in path:
            return f"{method} {part}"
    return "DELETE objects" if method == "POST" and "delete" in path else f"{method} other"


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def run(label: str, env: dict[str, str], args: argparse.Namespace, log: Path | None) -> None:
    from subcog.config import Settings
    from subcog.embedder import load_embedder
    from subcog.memory import Memory, open_store

    settings = Settings.from_env(env)
    embedder = load_embedder(settings)
    memory = Memory(open_store(settings), embedder, settings)
    try:
        notes, asked = texts(args.memories), queries(args.queries)
        memory.remember("warm up: the model and the store are loaded")
        memory.recall("warm up")
        embed = [timed(lambda text=text: embedder.embed_memories([text])) for text in notes[:50]]
        before = len(requests(log)) if log else 0
        remember = [timed(lambda text=text: memory.remember(text)) for text in notes]
        middle = len(requests(log)) if log else 0
        time.sleep(1.5)  # upkeep after the burst, as between a user's calls
        middle_after = len(requests(log)) if log else 0
        recall = [timed(lambda q=q: memory.recall(q)) for q in asked]
        after = len(requests(log)) if log else 0
    finally:
        memory.close()
    print(f"\n{label}: {args.memories} remembers, then {args.queries} recalls")
    print(
        f"  remember  p50 {percentile(remember, 50):6.1f} ms   p95 {percentile(remember, 95):6.1f}"
        f" ms   (embedding alone p50 {statistics.median(embed):.1f} ms)"
    )
    print(
        f"  recall    p50 {percentile(recall, 50):6.1f} ms   p95 {percentile(recall, 95):6.1f} ms"
    )
    if log:
        seen = requests(log)
        for what, lines in (
            ("remember", seen[before:middle]),
            ("recall", seen[middle_after:after]),
        ):
            calls = args.memories if what == "remember" else args.queries
            kinds = collections.Counter(kind(line) for line in lines)
            shown = ", ".join(f"{k} {n / calls:.2f}" for k, n in kinds.most_common())
            print(f"  requests per {what}: {len(lines) / calls:.2f} ({shown})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--memories", type=int, default=200)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        log = root / "moto.log"
        moto, endpoint = start_moto(log)
        try:
            import boto3

            client = boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name="us-east-1",
                aws_access_key_id="bench",
                aws_secret_access_key="bench",
            )
            client.create_bucket(Bucket="subcog-bench")
            base = {k: v for k, v in os.environ.items() if not k.startswith("SUBCOG_STORE")}
            local = {**base, "SUBCOG_DATA_DIR": str(root / "local")}
            s3 = {
                **base,
                "SUBCOG_DATA_DIR": str(root / "s3"),
                "SUBCOG_STORE": "s3://subcog-bench/memories",
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
            }
            run("local store", local, args, None)
            run("s3:// store on moto_server (loopback)", s3, args, log)
        finally:
            moto.terminate()
            moto.wait()


if __name__ == "__main__":
    main()
