"""Many real server processes on one data directory: nothing lost, duplicated or hidden,
nothing left behind after forget, and a store that survives SIGKILL."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import lancedb
import pytest
from mcp import Client
from mcp.client.stdio import stdio_client

from subcog.config import Settings
from subcog.memory import open_store
from tests.servers import JsonRpc, call, serve, server_params, subcog_command

pytestmark = pytest.mark.anyio


def all_rows(settings: Settings) -> list[dict[str, Any]]:
    """Every row, read by LanceDB itself."""
    table = lancedb.connect(settings.data_dir / "lancedb").open_table("memories")
    rows: list[dict[str, Any]] = table.search().select(["id", "content"]).limit(None).to_list()
    return rows


async def test_four_servers_writing_at_once_lose_and_duplicate_nothing(settings: Settings) -> None:
    writers, per_writer = 4, 100
    ids: dict[str, str] = {}

    async def writer(number: int, client: Client) -> None:
        for i in range(per_writer):
            text = f"Writer {number} noted fact {i}: the {i}th shelf holds box {number * 1000 + i}."
            stored = await call(client, "remember", content=text)
            assert stored["status"] == "created"
            ids[text] = stored["id"]

    async with (
        Client(stdio_client(server_params())) as c0,
        Client(stdio_client(server_params())) as c1,
        Client(stdio_client(server_params())) as c2,
        Client(stdio_client(server_params())) as c3,
    ):
        clients = [c0, c1, c2, c3]
        async with anyio.create_task_group() as group:
            for number, client in enumerate(clients):
                group.start_soon(writer, number, client)

        assert len(ids) == writers * per_writer

        async def reader(client: Client) -> None:
            for text, memory_id in ids.items():
                found = await call(client, "recall", query=text, limit=1)
                assert [m["id"] for m in found["memories"]] == [memory_id], text

        async with anyio.create_task_group() as group:
            for client in clients:
                group.start_soon(reader, client)

    rows = all_rows(settings)
    assert len(rows) == writers * per_writer
    assert {row["id"] for row in rows} == set(ids.values())
    assert len({row["content"] for row in rows}) == len(rows)


def test_sigkill_mid_write_loses_no_acknowledged_memory_and_duplicates_none(
    settings: Settings,
) -> None:
    rng = random.Random(7)
    acknowledged: dict[str, str] = {}  # id -> content, for remembers that returned
    forgotten: set[str] = set()
    sent = 0
    for round_number in range(4):
        proc = subprocess.Popen(
            [subcog_command(), "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "SUBCOG_LOAD_TIMEOUT": "60"},
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        try:
            rpc = JsonRpc(proc)
            rpc.initialize()
            kill_after = rng.randint(3, 25)
            for step in range(kill_after):
                sent += 1
                text = (
                    f"Round {round_number} fact {step}: the code for locker {sent} is {sent * 7}."
                )
                result = rpc.tool("remember", {"content": text})
                acknowledged[result["id"]] = text
                if step % 5 == 4:
                    victim = rng.choice(sorted(set(acknowledged) - forgotten))
                    assert rpc.tool("forget", {"ids": [victim]})["forgotten"] == [victim]
                    forgotten.add(victim)
            # One more write in flight, then SIGKILL at a random moment inside it.
            rpc.send("remember", {"content": f"In flight when killed, round {round_number}."})
            time.sleep(rng.uniform(0.0, 0.05))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            proc.kill()
            proc.wait()
            proc.stdin.close()
            proc.stdout.close()

    rows = all_rows(settings)
    present = {row["id"]: row["content"] for row in rows}
    assert len(present) == len(rows), "an id appears twice"
    assert len(set(present.values())) == len(rows), "a memory appears twice"
    for memory_id, text in acknowledged.items():
        if memory_id in forgotten:
            assert memory_id not in present
        else:
            assert present.get(memory_id) == text
    unexpected = set(present) - set(acknowledged)
    assert all(present[i].startswith("In flight") for i in unexpected)
    # And the store still works for a new process.
    store = open_store(settings)
    assert store.count() == len(rows)


async def test_forget_through_a_server_erases_the_text_from_disk_within_a_minute(
    settings: Settings,
) -> None:
    marker = "okapi-marker-71c9d0"
    async with Client(stdio_client(server_params())) as client:
        for i in range(30):
            await call(client, "remember", content=f"Filler memory {i} about the garden shed.")
        secret = await call(client, "remember", content=f"The safe combination is {marker}.")
        await call(client, "forget", ids=[secret["id"]])
        found = await call(client, "recall", query=f"safe combination {marker}", limit=50)
        assert secret["id"] not in [m["id"] for m in found["memories"]]

        deadline = time.monotonic() + 60
        while files_containing(settings.data_dir, marker.encode()):
            assert time.monotonic() < deadline, "the forgotten text is still on disk after 60 s"
            await anyio.sleep(0.5)
        stats = await client.read_resource("memory://stats")
        assert json.loads(stats.contents[0].text)["count"] == 30  # type: ignore[union-attr]


async def test_the_data_dir_and_its_files_are_readable_by_the_owner_only(
    settings: Settings,
) -> None:
    async with Client(stdio_client(server_params())) as client:
        await call(client, "remember", content="Private by default.")
    paths = [settings.data_dir, *settings.data_dir.rglob("*")]
    assert len(paths) > 3
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} has mode {oct(mode)}"


def test_a_memory_remembered_by_the_cli_is_recalled_by_a_running_server(
    settings: Settings,
) -> None:
    with serve() as proc:
        rpc = JsonRpc(proc)
        rpc.initialize()
        assert rpc.tool("recall", {"query": "pottery class"})["memories"] == []
        out = subprocess.run(
            [subcog_command(), "remember", "The pottery class is on Wednesdays."],
            capture_output=True,
            check=True,
        ).stdout.decode()
        memory_id = out.split()[1]
        found = rpc.tool("recall", {"query": "pottery class", "limit": 1})["memories"]
        assert [m["id"] for m in found] == [memory_id]
        proc.kill()


def files_containing(root: Path, needle: bytes) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        try:
            if path.is_file() and needle in path.read_bytes():
                found.append(path)
        except OSError:  # removed by upkeep while we looked
            continue
    return found
