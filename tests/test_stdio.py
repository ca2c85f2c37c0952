"""The real `subcog serve` process over stdio: persistence across restarts and a clean stdout."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import stdio_client

from subcog.config import Settings
from subcog.embedder import Embedder
from subcog.memory import Memory, open_store
from subcog.storage.limits import Limits
from tests.servers import INITIALIZE, JsonRpc, call, serve, server_params, subcog_command

pytestmark = pytest.mark.anyio


async def test_memory_survives_a_restart_and_forget_removes_it() -> None:
    async with Client(stdio_client(server_params())) as client:
        stored = await call(
            client,
            "remember",
            content="The quarterly planning offsite is in Lisbon.",
            tags=["work"],
        )
        await call(client, "remember", content="My favourite tea is genmaicha.")

    async with Client(stdio_client(server_params())) as client:
        found = await call(client, "recall", query="Where is the planning offsite?", limit=1)
        assert [m["id"] for m in found["memories"]] == [stored["id"]]
        assert found["memories"][0]["tags"] == ["work"]
        assert await call(client, "forget", ids=[stored["id"]]) == {
            "forgotten": [stored["id"]],
            "missing": [],
        }
        after = await call(client, "recall", query="Where is the planning offsite?", limit=10)
        assert stored["id"] not in [m["id"] for m in after["memories"]]

    async with Client(stdio_client(server_params())) as client:
        after = await call(client, "recall", query="planning offsite Lisbon", limit=10)
        assert stored["id"] not in [m["id"] for m in after["memories"]]


async def test_recall_over_stdio_understands_the_question() -> None:
    """Recall's paths through a real server: a paraphrase with a time in words, a listing by
    filter alone, and an unrelated question answered with nothing."""
    async with Client(stdio_client(server_params())) as client:
        boss = await call(
            client,
            "remember",
            content="The user's manager is Dana Kim, who runs the platform team.",
            tags=["work"],
        )
        await call(client, "remember", content="The user is allergic to peanuts.")
        found = await call(client, "recall", query="who's my boss?", since="yesterday")
        assert found["memories"][0]["id"] == boss["id"]
        assert set(found["memories"][0]) == {"id", "content", "score", "tags", "created_at"}
        listed = await call(client, "recall", tags=["work"])
        assert [m["id"] for m in listed["memories"]] == [boss["id"]]
        nothing = await call(client, "recall", query="What's the capital of France?")
        assert nothing["memories"] == []
        assert nothing["note"]


async def test_bad_input_over_stdio_is_a_tool_error() -> None:
    async with Client(stdio_client(server_params())) as client:
        result = await client.call_tool("forget", {"ids": ["x' OR '1'='1"]})
        assert result.is_error
        assert "is not a memory id" in result.content[0].text  # type: ignore[union-attr]


@pytest.mark.parametrize("cache", ["made", "empty"])
def test_every_byte_on_stdout_is_a_json_rpc_message(cache: str, tmp_path: Path) -> None:
    """Also from an empty model cache: the offline bundle is assembled and the int8 copy
    made (quantize.py) while the server runs, and neither may print to stdout."""
    requests: list[dict[str, Any]] = [
        INITIALIZE,
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "remember", "arguments": {"content": "stdout stays clean"}},
        },
        {
            "jsonrpc": "2.0",
            "id": 4,
            "method": "tools/call",
            "params": {"name": "recall", "arguments": {"query": "clean stdout"}},
        },
        {
            "jsonrpc": "2.0",
            "id": 5,
            "method": "tools/call",
            "params": {"name": "recall", "arguments": {"query": "x", "since": "never"}},
        },
        {
            "jsonrpc": "2.0",
            "id": 6,
            "method": "tools/call",
            "params": {"name": "forget", "arguments": {"ids": ["0" * 32]}},
        },
    ]
    env = {**os.environ, "SUBCOG_LOAD_TIMEOUT": "60"}
    if cache == "empty":
        env["SUBCOG_CACHE_DIR"] = str(tmp_path / "empty-cache")
    seen: list[dict[str, Any]] = []
    lines: queue.Queue[bytes] = queue.Queue()
    with serve(env, stderr=subprocess.PIPE) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        stdout = proc.stdout
        threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
        try:
            for request in requests:
                proc.stdin.write(json.dumps(request).encode() + b"\n")
                proc.stdin.flush()
                while "id" in request and request["id"] not in {m.get("id") for m in seen}:
                    line = lines.get(timeout=60)
                    assert line.endswith(b"\n")
                    message = json.loads(line)  # every line must be one JSON-RPC message
                    assert message["jsonrpc"] == "2.0"
                    seen.append(message)
            proc.stdin.close()
            assert proc.wait(timeout=30) == 0
        finally:
            proc.kill()
        stderr = proc.stderr.read()
    while not lines.empty():
        assert json.loads(lines.get())["jsonrpc"] == "2.0"
    results = {m["id"]: m for m in seen if "id" in m}
    assert set(results) == {1, 2, 3, 4, 5, 6}
    assert results[5]["result"]["isError"] is True
    assert results[3]["result"]["structuredContent"]["status"] == "created"
    assert b"subcog" in stderr  # the start-up note went to stderr, not stdout
    if cache == "empty":
        assert list((tmp_path / "empty-cache" / "subcog-int8").glob("*/model.onnx"))


def test_the_example_client_remembers_and_recalls_by_paraphrase() -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "client.py"
    proc = subprocess.run(
        [sys.executable, str(example)], capture_output=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    out = proc.stdout.decode()
    assert out.count("remembered:") == 3
    recalled = json.loads(out.split("):\n", 1)[1])
    assert "deploy-staging.sh" in recalled["memories"][0]["content"]


async def test_supersedes_and_forget_by_query_over_stdio() -> None:
    async with Client(stdio_client(server_params())) as client:
        old = await call(client, "remember", content="The team offsite is in Porto.")
        new = await call(
            client, "remember", content="The team offsite moved to Seville.", supersedes=[old["id"]]
        )
        assert new["superseded"] == [old["id"]]
        preview = await call(client, "forget", query="Where is the team offsite?")
        assert preview["dry_run"] is True
        assert [m["id"] for m in preview["matches"]] == [new["id"]]
        done = await call(client, "forget", query="Where is the team offsite?", dry_run=False)
        assert done["forgotten"] == [new["id"]]
        empty = await call(client, "recall", query="Where is the team offsite?")
        assert empty["memories"] == []


# The server as `subcog serve` runs it, with the in-memory limit and the vector index size
# lowered from 150,000 and 120,000 to 100: its searches go to Lance and the HNSW index.
PAST_THE_MIRROR = (
    "import sys; from dataclasses import replace; from subcog.cli import main; "
    "from subcog.config import Settings; from subcog.storage.limits import Limits; "
    "limits = Limits(mirror_rows=100, vector_index_rows=100); "
    "sys.exit(main(['serve'], replace(Settings.from_env(), limits=limits)))"
)


async def test_a_store_past_the_in_memory_limit_over_stdio(
    settings: Settings, embedder: Embedder
) -> None:
    tuned = replace(settings, limits=Limits(vector_index_rows=100))
    memory = Memory(open_store(tuned), embedder, tuned)
    texts = [f"Note {i}: the parcel {i} left depot {i % 9} on day {i}." for i in range(150)]
    memory.import_jsonl(json.dumps({"content": t}) for t in texts)
    memory.store.upkeep_now()  # the vector index, before the server starts
    assert "vector" in memory.store.indexes()
    memory.store.close()
    params = server_params()
    params.command, params.args = sys.executable, ["-c", PAST_THE_MIRROR]
    async with Client(stdio_client(params)) as client:
        content = (
            "On Monday the parcel with the boat's spare propeller, the new anchor chain and "
            "two fenders left the marina depot by van."
        )
        boat = await call(client, "remember", content=content, scope="boat")
        found = await call(client, "recall", query="Which depot did parcel 42 leave?", limit=3)
        assert found["memories"][0]["content"].startswith("Note 42:")
        assert all("scope" not in m for m in found["memories"])  # the default scope
        # Every note is nearer this query than the boat's memory: searched unfiltered, the
        # boat scope would find nothing, so it is searched again with its filter first.
        query = "Which depot did the parcel leave from?"
        found = await call(client, "recall", query=query, scope="boat")
        assert [m["id"] for m in found["memories"]] == [boat["id"]]
        assert await call(client, "forget", ids=[boat["id"]]) == {
            "forgotten": [boat["id"]],
            "missing": [],
        }
        found = await call(client, "recall", query=query, scope="boat")
        assert found["memories"] == []
    store = open_store(settings)
    try:
        assert "vector" in store.indexes()
    finally:
        store.close()


def test_requests_from_a_file_are_answered(tmp_path: Path) -> None:
    """asyncio cannot watch a regular file: the SDK's own transport serves it instead."""
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        json.dumps(INITIALIZE)
        + "\n"
        + json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
        + "\n"
    )
    with requests.open("rb") as stdin:
        proc = subprocess.run(
            [subcog_command(), "serve"],
            stdin=stdin,
            capture_output=True,
            timeout=60,
            check=False,
            env=dict(os.environ),
        )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    first = json.loads(proc.stdout.splitlines()[0])
    assert first["id"] == INITIALIZE["id"]
    assert first["result"]["serverInfo"]["name"] == "subcog"


# `subcog serve` with the stdio transport's line limit lowered from 64 MiB to 1,000 bytes.
SHORT_LINES = (
    "import sys, subcog.stdio as stdio; stdio.LINE_LIMIT = 10_000; "
    "from subcog.cli import main; sys.exit(main(['serve']))"
)


BAD_MESSAGES = [
    (b"hello there", -32700, None),
    (b'{"jsonrpc": "2.0", "id": 7}', -32600, 7),
    (b"[]", -32600, None),
    (b'[{"jsonrpc": "2.0", "id": 8, "method": "ping"}]', -32600, None),
    (b'{"jsonrpc": "2.0", "id": "s", "method": "ping", "params": {"x": "\\ud800"}}', -32600, "s"),
    (
        b'{"jsonrpc": "2.0", "id": 9, "method": "ping", "params": {"x": ' + b"9" * 5000 + b"}}",
        -32700,
        None,
    ),
    (b'{"id": 10, "method": "ping"}', -32600, 10),
    (b"42", -32600, None),
    (
        b'{"jsonrpc": "2.0", "id": 11, "method": "ping", "x": "' + b"a" * 12_000 + b'"}',
        -32600,
        None,
    ),
]


def test_every_malformed_message_is_answered_and_the_server_goes_on() -> None:
    """Each line gets the error JSON-RPC requires, with the id when it can be read, and the
    next request is answered as usual. The line limit is lowered to 10,000 bytes here."""
    with subprocess.Popen(
        [sys.executable, "-c", SHORT_LINES],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ),
    ) as proc:
        try:
            rpc = JsonRpc(proc)
            rpc.initialize()
            assert proc.stdin is not None
            assert proc.stdout is not None
            for line, code, request_id in BAD_MESSAGES:
                proc.stdin.write(line[:7000])  # a long line arrives in parts
                proc.stdin.flush()
                proc.stdin.write(line[7000:] + b"\n")
                proc.stdin.flush()
                reply = json.loads(proc.stdout.readline())
                assert reply["jsonrpc"] == "2.0", line[:60]
                assert reply["error"]["code"] == code, (line[:60], reply)
                assert reply["id"] == request_id, (line[:60], reply)
                assert rpc.wait(rpc.send("ping", {}))["result"] == {}
            assert rpc.tool("recall", {"query": "anything at all"})["memories"] == []
        finally:
            proc.kill()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_a_client_that_never_reads_replies_does_not_grow_the_server() -> None:
    """20,000 recalls sent at once by a client that reads no reply: at most a few are handled
    at a time, the rest wait as bytes. Without the bound the server grew by 400 MB."""

    def rss_mb(pid: int) -> int:
        status = Path(f"/proc/{pid}/status").read_text()
        return int(status.split("VmRSS:")[1].split()[0]) // 1024

    with serve() as proc:
        try:
            rpc = JsonRpc(proc)
            rpc.initialize()
            rpc.tool("recall", {"query": "the first one loads everything"})
            before = rss_mb(proc.pid)
            assert proc.stdin is not None
            requests = b"".join(
                b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"recall",'
                b'"arguments":{"query":"where is office %d"}}}\n' % (1000 + n, n)
                for n in range(20_000)
            )
            threading.Thread(target=proc.stdin.write, args=(requests,), daemon=True).start()
            time.sleep(8)
            assert proc.poll() is None
            assert rss_mb(proc.pid) - before < 100
        finally:
            proc.kill()


async def test_a_session_writes_nothing_outside_the_data_and_cache_dirs(tmp_path: Path) -> None:
    """HOME and the XDG directories point at an empty folder (conftest): after a session of
    every tool and a few commands, it is still empty. ONNX Runtime, for one, would keep a
    telemetry queue under ~/.cache/Microsoft unless told not to."""
    home = Path(os.environ["HOME"])
    assert list(home.rglob("*")) == []
    async with Client(stdio_client(server_params())) as client:
        stored = await call(client, "remember", content="The spare key is under the blue pot.")
        await call(client, "recall", query="Where is the spare key?")
        await call(client, "forget", ids=[stored["id"]])
    for command in (["doctor"], ["remember", "A second note."], ["stats"]):
        subprocess.run([subcog_command(), *command], check=True, capture_output=True)
    assert list(home.rglob("*")) == []
    assert {p.name for p in tmp_path.iterdir()} == {"home", "data"}
