"""Many real servers, each with its own data and cache directories, on one s3:// store on a
real moto_server: nothing lost, nothing duplicated, no errors, forget seen by all."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
import lancedb
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client

from subcog.config import Settings
from subcog.embedder import assemble_bundle
from tests.s3 import S3
from tests.servers import call, subcog_command
from tests.test_http import start
from tests.test_team_access import as_token

pytestmark = [pytest.mark.anyio, pytest.mark.s3]


def server_on(store_env: dict[str, str], home: Path) -> StdioServerParameters:
    """A `subcog serve` with data and cache directories of its own, on the shared store."""
    cache = home / "cache"
    assert assemble_bundle(cache) is not None
    env = {
        **os.environ,
        **store_env,
        "SUBCOG_DATA_DIR": str(home / "data"),
        "SUBCOG_CACHE_DIR": str(cache),
        # Four servers start at once on two shared cores, and open one new store together.
        "SUBCOG_LOAD_TIMEOUT": "300",
    }
    return StdioServerParameters(command=subcog_command(), args=["serve"], env=env)


def stored_rows(settings: Settings) -> list[dict[str, Any]]:
    """Every row, read by LanceDB itself from the bucket."""
    db = lancedb.connect(settings.store.db, storage_options=dict(settings.store.options))
    table = db.open_table("memories")
    rows: list[dict[str, Any]] = table.search().select(["id", "content"]).limit(None).to_list()
    return rows


async def test_four_servers_on_one_s3_store_lose_duplicate_and_fail_nothing(
    s3_env: dict[str, str], tmp_path: Path
) -> None:
    writers, per_writer, shared = 4, 24, 6
    ids: dict[str, str] = {}  # text: id, of memories that should stay
    forgotten: dict[str, str] = {}
    same: dict[str, set[str]] = {}  # shared text: the ids each server answered

    async def writer(number: int, client: Client) -> None:
        mine: list[tuple[str, str]] = []
        for i in range(per_writer):
            text = f"Server {number} noted fact {i}: crate {number * 1000 + i} is on shelf {i}."
            stored = await call(client, "remember", content=text)
            assert stored["status"] == "created"
            mine.append((text, stored["id"]))
            if i % 4 == 3:  # forget one we wrote earlier, while the others keep writing
                old_text, old_id = mine.pop(0)
                done = await call(client, "forget", ids=[old_id])
                assert done["forgotten"] == [old_id]
                forgotten[old_text] = old_id
        ids.update(mine)

    async def same_text(k: int, client: Client, start: anyio.Event) -> None:
        await start.wait()
        text = f"The team decided on the {k}th retro that deploys happen on Tuesdays."
        stored = await call(client, "remember", content=text)
        same.setdefault(text, set()).add(stored["id"])

    params = [server_on(s3_env, tmp_path / f"server{n}") for n in range(writers)]
    async with (
        Client(stdio_client(params[0])) as c0,
        Client(stdio_client(params[1])) as c1,
        Client(stdio_client(params[2])) as c2,
        Client(stdio_client(params[3])) as c3,
    ):
        clients = [c0, c1, c2, c3]
        async with anyio.create_task_group() as group:
            for number, client in enumerate(clients):
                group.start_soon(writer, number, client)
        for k in range(shared):  # the same text, by every server at the same moment
            start = anyio.Event()
            async with anyio.create_task_group() as group:
                for client in clients:
                    group.start_soon(same_text, k, client, start)
                start.set()
        for text, answered in same.items():
            assert len(answered) == 1, (text, answered)  # every server names the one memory
            ids[text] = answered.pop()

        await anyio.sleep(Settings.from_env().refresh_s + 0.2)  # SUBCOG_REFRESH_S

        async def reader(client: Client) -> None:
            for text, memory_id in ids.items():
                found = await call(client, "recall", query=text, limit=1)
                assert [m["id"] for m in found["memories"]] == [memory_id], text
            for text, memory_id in forgotten.items():
                found = await call(client, "recall", query=text, limit=3)
                assert memory_id not in [m["id"] for m in found["memories"]], text
                with pytest.raises(MCPError) as gone:
                    await client.read_resource(f"memory://{memory_id}")
                assert gone.value.error.code == -32602  # not found

        async with anyio.create_task_group() as group:
            for client in clients:
                group.start_soon(reader, client)

    rows = stored_rows(Settings.from_env())
    assert len(ids) == writers * (per_writer - per_writer // 4) + shared
    assert sorted(row["id"] for row in rows) == sorted(ids.values())
    assert len({row["content"] for row in rows}) == len(rows)


async def test_a_forgotten_memory_leaves_every_object_under_the_prefix_within_60_s(
    s3: S3, s3_env: dict[str, str], tmp_path: Path
) -> None:
    """Two servers write on; one forgets. Every object under the store's prefix is listed and
    read until none holds the forgotten text."""
    secret = "Zq7-erasure-probe: the vault code is 4417-2291"
    bucket, prefix = s3_env["SUBCOG_STORE"].removeprefix("s3://").split("/", 1)
    params = [server_on(s3_env, tmp_path / f"server{n}") for n in range(2)]
    async with Client(stdio_client(params[0])) as one, Client(stdio_client(params[1])) as two:
        kept = await call(one, "remember", content="The office plants are watered on Fridays.")
        stored = await call(one, "remember", content=secret)
        await call(two, "remember", content="Lunch orders go in before eleven.")
        assert any(secret.encode() in body for body in s3.objects(bucket, prefix).values())
        forgotten = await call(two, "forget", ids=[stored["id"]])
        assert forgotten["forgotten"] == [stored["id"]]
        deadline = time.monotonic() + 60
        n = 0
        while True:
            n += 1  # the other server keeps writing meanwhile
            await call(one, "remember", content=f"Visitor {n} signed in at the front desk.")
            holding = [
                k for k, body in s3.objects(bucket, prefix).items() if secret.encode() in body
            ]
            if not holding:
                break
            assert time.monotonic() < deadline, f"still in {holding}"
            await anyio.sleep(1)
        found = await call(two, "recall", query="office plants", limit=1)
        assert [m["id"] for m in found["memories"]] == [kept["id"]]


async def recalled_within(client: Client, query: str, seconds: float) -> list[str]:
    """The ids recall finds, asked again until something is found or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while True:
        found = await call(client, "recall", query=query, scope="team", limit=3)
        ids = [m["id"] for m in found["memories"]]
        if ids or time.monotonic() > deadline:
            return ids
        await anyio.sleep(0.05)


async def test_two_http_replicas_on_one_s3_store_behave_as_one(
    s3_env: dict[str, str], tmp_path: Path
) -> None:
    refresh = Settings.from_env().refresh_s
    base = {**os.environ, **s3_env, "SUBCOG_LOAD_TIMEOUT": "300"}
    envs = [{**base, "SUBCOG_DATA_DIR": str(tmp_path / f"replica{n}" / "data")} for n in range(2)]
    made = subprocess.run(
        [subcog_command(), "token", "add", "agent", "--write", "team", "--json"],
        capture_output=True,
        text=True,
        env=envs[0],
        check=True,
    )
    token = json.loads(made.stdout)["token"]  # made on one machine, known to both
    servers = [start(env) for env in envs]
    try:
        (_, one), (_, two) = servers
        async with as_token(one, token) as first, as_token(two, token) as second:
            await call(first, "recall", query="warm up", scope="team")
            await call(second, "recall", query="warm up", scope="team")
            stored = await call(
                first, "remember", content="The on-call phone is in the red drawer.", scope="team"
            )
            started = time.monotonic()
            seen = await recalled_within(second, "where is the on-call phone?", refresh + 2)
            assert seen == [stored["id"]]
            assert time.monotonic() - started <= refresh + 2
            again = await call(
                second, "remember", content="The on-call phone is in the red drawer.", scope="team"
            )
            assert (again["status"], again["id"]) == ("exists", stored["id"])
            assert (await call(second, "forget", ids=[stored["id"]]))["forgotten"] == [stored["id"]]
            await anyio.sleep(refresh + 0.2)
            found = await call(first, "recall", query="where is the on-call phone?", scope="team")
            assert found["memories"] == []
        revoked = subprocess.run([subcog_command(), "token", "revoke", "agent"], env=envs[1])
        assert revoked.returncode == 0
        await anyio.sleep(refresh + 0.2)
        for url in (one, two):
            answer = httpx2.post(url, headers={"Authorization": f"Bearer {token}"}, json={})
            assert answer.status_code == 401
    finally:
        for proc, _ in servers:
            proc.terminate()
            proc.wait(timeout=60)
            if proc.stderr is not None:
                proc.stderr.close()
