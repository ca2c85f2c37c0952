"""What subcog does when things go wrong: a damaged file, an exit right after forget, and HTTP
clients that abandon sessions or send slowly. Real `subcog` processes, real files; figures only.

Usage::

    .venv/bin/python benchmarks/faults.py [--damaged] [--forget-exit] [--http]
        [--memories 2000] [--sessions 5000] [--slow 1100] [--json OUT]

With no section flag every section runs. Each uses a fresh, throwaway SUBCOG_DATA_DIR; the
model cache (SUBCOG_CACHE_DIR) is inherited, so run `subcog doctor` first. Linux only (RSS is
read from /proc).

``damaged``
    `subcog import` of --memories memories (compacted into one data file), then 20 more
    remembered one by one (files of their own). The largest data file and the biggest file of
    the full-text index are cut to half their size. Then: `subcog doctor` (its exit code, and
    whether it names both files), a `subcog serve` asked to list everything and to recall one
    of the 20 by paraphrase (how many memories it serves, whether its stderr names the
    repair), `subcog repair` (seconds, memories recovered and lost), and `subcog doctor`
    again.

``forget-exit``
    What a one-shot client does: a server remembers a marker, forgets it, and its stdin is
    closed one second later. Figures: the server's exit seconds and code, and the seconds
    until no file under the data dir holds the marker's bytes (a new server is started if the
    first left any; target: within 60 s).

``http``
    `subcog serve --transport http`: its RSS before and after --sessions clients that each
    send `initialize` and nothing more (with the 2025 handshake, which made a session each in
    a stateful server), and after 30 s more; then --slow connections that send nothing, or a
    byte a second: how many are still open READ_TIMEOUT_S + 2 s later.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import subcog_command

SUBCOG = subcog_command()
RECENT = 20
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "faults", "version": "1"},
    },
}


def env_for(data_dir: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "SUBCOG_DATA_DIR": str(data_dir), "SUBCOG_LOAD_TIMEOUT": "120", **extra}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(env: dict[str, str], *args: str) -> tuple[int, str, str, float]:
    started = time.perf_counter()
    done = subprocess.run([SUBCOG, *args], env=env, capture_output=True, text=True, check=False)
    return done.returncode, done.stdout, done.stderr, time.perf_counter() - started


class Stdio:
    """A `subcog serve` on stdio, spoken to line by line."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [SUBCOG, "serve"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.next_id = 0
        self.call("initialize", INITIALIZE["params"])
        self.notify("notifications/initialized")

    def notify(self, method: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", "method": method}).encode() + b"\n")
        self.proc.stdin.flush()

    def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.next_id += 1
        message = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()
        while True:
            reply: dict[str, Any] = json.loads(self.proc.stdout.readline())
            if reply.get("id") == self.next_id:
                return reply

    def tool(self, name: str, **arguments: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.call("tools/call", {"name": name, "arguments": arguments})[
            "result"
        ]
        structured: dict[str, Any] = result.get("structuredContent") or {}
        return structured

    def close(self, timeout: float = 60) -> tuple[int, float, str]:
        """Close stdin; the exit code, the seconds it took, and stderr."""
        assert self.proc.stdin is not None
        assert self.proc.stderr is not None
        started = time.perf_counter()
        self.proc.stdin.close()
        code = self.proc.wait(timeout=timeout)
        return code, time.perf_counter() - started, self.proc.stderr.read().decode()


def damaged(work: Path, memories: int) -> dict[str, Any]:
    import lance

    env = env_for(work)
    source = work / "old.jsonl"
    source.write_text(
        "\n".join(
            json.dumps({"content": f"Old note {i} on subject {i % 17}."}) for i in range(memories)
        )
    )
    assert run(env, "import", str(source))[0] == 0
    for n in range(RECENT):
        assert run(env, "remember", f"Recent note {n}: the bike lock code is {4400 + n}.")[0] == 0
    table = work / "lancedb" / "memories.lance"
    dataset = lance.dataset(str(table))
    data = max(
        (
            table / "data" / str(f.path)
            for frag in dataset.get_fragments()
            for f in frag.data_files()
        ),
        key=lambda p: p.stat().st_size,
    )
    (words,) = [i for i in dataset.describe_indices() if i.field_names == ["content"]]
    folder = table / "_indices" / str(words.segments[0].uuid)
    index = max(folder.iterdir(), key=lambda p: p.stat().st_size)
    for path in (data, index):
        with path.open("r+b") as handle:
            handle.truncate(path.stat().st_size // 2)

    code, out, _, doctor_s = run(env, "doctor")
    figures: dict[str, Any] = {
        "memories": memories + RECENT,
        "doctor_exit": code,
        "doctor_s": round(doctor_s, 2),
        "doctor_names_both": data.name in out and index.name in out,
    }
    server = Stdio(env)
    listed = server.tool("recall", limit=50)["memories"]
    found = server.tool("recall", query="what opens my bicycle lock", limit=5)["memories"]
    stats = json.loads(
        server.call("resources/read", {"uri": "memory://stats"})["result"]["contents"][0]["text"]
    )
    exit_code, _, stderr = server.close()
    figures |= {
        "serve_listed": len(listed),
        "serve_found_paraphrase": bool(found) and "bike lock" in found[0]["content"],
        "serve_stats_unreadable": stats.get("damaged", {}).get("unreadable_memories"),
        "serve_stderr_names_repair": "subcog repair" in stderr,
        "serve_exit": exit_code,
    }
    code, out, _, repair_s = run(env, "repair")
    figures |= {
        "repair_exit": code,
        "repair_s": round(repair_s, 2),
        "repair_said": " / ".join(out.split("\n")).strip(" /"),
    }
    code, out, _, _ = run(env, "doctor")
    figures |= {"doctor_after_exit": code, "doctor_after_ok": "store: OK" in out}
    return figures


def holding(data_dir: Path, marker: bytes) -> int:
    count = 0
    for root, _dirs, files in os.walk(data_dir):
        for name in files:
            try:
                count += marker in (Path(root) / name).read_bytes()
            except OSError:
                continue
    return count


def forget_exit(work: Path) -> dict[str, Any]:
    env = env_for(work)
    marker = uuid.uuid4().hex
    server = Stdio(env)
    for n in range(5):
        server.tool("remember", content=f"An ordinary note, number {n}.")
    stored = server.tool("remember", content=f"The secret is {marker}.")
    server.tool("forget", ids=[stored["id"]])
    started = time.perf_counter()
    time.sleep(1)
    code, exit_s, _ = server.close()
    left_at_exit = holding(work, marker.encode())
    second = Stdio(env) if left_at_exit else None
    while holding(work, marker.encode()) and time.perf_counter() - started < 90:
        time.sleep(0.25)
    erased_s = time.perf_counter() - started
    if second is not None:
        second.close()
    return {
        "exit_code": code,
        "exit_s": round(exit_s, 2),
        "files_holding_it_after_exit": left_at_exit,
        "erased_after_s": round(erased_s, 2),
        "erased": not holding(work, marker.encode()),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http(work: Path, sessions: int, slow: int) -> dict[str, Any]:
    import httpx2

    from subcog.web import READ_TIMEOUT_S

    token = uuid.uuid4().hex
    port = free_port()
    proc = subprocess.Popen(
        [SUBCOG, "serve", "--transport", "http", "--port", str(port)],
        env=env_for(work, SUBCOG_TOKEN=token),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "Authorization": f"Bearer {token}",
    }
    try:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        with httpx2.Client(headers=headers) as client:  # load the model and store, warm up
            call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call"}
            recall = {"name": "recall", "arguments": {"query": "warm up"}}
            client.post(url, json={**call, "params": recall}, timeout=120)
            for _ in range(200):
                client.post(url, json=INITIALIZE)
        before = rss_mb(proc.pid)
        started = time.perf_counter()
        session_ids = 0
        with httpx2.Client(headers=headers) as client:
            for _ in range(sessions):
                answer = client.post(url, json=INITIALIZE)
                session_ids += "mcp-session-id" in answer.headers
        took = time.perf_counter() - started
        after = rss_mb(proc.pid)
        time.sleep(30)
        later = rss_mb(proc.pid)

        sockets = []
        for n in range(slow):
            sock = socket.create_connection(("127.0.0.1", port))
            if n % 2:
                sock.sendall(b"POST /mcp HTTP/1.1\r\n")
            sockets.append(sock)
        opened = time.perf_counter()
        while time.perf_counter() - opened < READ_TIMEOUT_S + 2:
            for n, sock in enumerate(sockets):
                if n % 2:
                    with contextlib.suppress(OSError):
                        sock.sendall(b"X")
            time.sleep(1)
        still_open = 0
        for sock in sockets:
            sock.settimeout(0.05)
            try:
                still_open += sock.recv(1) != b""
            except TimeoutError:
                still_open += 1
            except OSError:
                pass
            sock.close()
        return {
            "sessions": sessions,
            "session_ids_handed_out": session_ids,
            "sessions_per_s": round(sessions / took),
            "rss_before_mb": round(before, 1),
            "rss_after_mb": round(after, 1),
            "growth_mb": round(after - before, 1),
            "rss_30s_later_mb": round(later, 1),
            "slow_connections": slow,
            "still_open_after_s": READ_TIMEOUT_S + 2,
            "still_open": still_open,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--damaged", action="store_true")
    parser.add_argument("--forget-exit", action="store_true")
    parser.add_argument("--http", action="store_true")
    parser.add_argument("--memories", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--slow", type=int, default=1100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    chosen = [s for s in ("damaged", "forget_exit", "http") if getattr(args, s)] or [
        "damaged",
        "forget_exit",
        "http",
    ]
    results: dict[str, Any] = {}
    for section in chosen:
        work = Path(tempfile.mkdtemp(prefix=f"subcog-faults-{section}-"))
        try:
            if section == "damaged":
                results[section] = damaged(work, args.memories)
            elif section == "forget_exit":
                results[section] = forget_exit(work)
            else:
                results[section] = http(work, args.sessions, args.slow)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"{section}:")
        for key, value in results[section].items():
            print(f"  {key:28} {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
