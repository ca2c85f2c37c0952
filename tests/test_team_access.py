"""A team server: named tokens with read and write scopes, enforced by every tool, resource
and path; who stored each memory."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from subcog.access import OWNER, Access
from subcog.config import Settings
from subcog.embedder import Embedder
from subcog.errors import MissingIds, NotAllowed, NotFound
from subcog.memory import Memory, open_store
from tests.servers import call, subcog_command
from tests.test_http import start

BOB = Access("bob", read=frozenset({"team"}), write=frozenset())
ALICE = Access("alice", read=frozenset({"team", "alice"}), write=frozenset({"alice", "team"}))


@pytest.fixture
def team(settings: Settings, embedder: Embedder) -> Iterator[dict[str, Any]]:
    """A store with a team memory and a private one of alice's, stored by the owner."""
    memory = Memory(open_store(settings), embedder, settings)
    shared = memory.acting_as(ALICE).remember("Deploys go out on Tuesdays.", scope="team")
    private = memory.acting_as(ALICE).remember("Alice's locker code is 5521.", scope="alice")
    yield {"memory": memory, "shared": shared.id, "private": private.id}
    memory.close()


def test_a_reader_recalls_only_the_scopes_it_may_read(team: dict[str, Any]) -> None:
    bob = team["memory"].acting_as(BOB)
    found = bob.recall("locker code deploys", scope="*", limit=10)
    assert [m.id for m in found.memories] == [team["shared"]]
    assert found.memories[0].author == "alice"  # someone else's: named
    assert [m.id for m in bob.recall(scope="*", limit=10).memories] == [team["shared"]]
    assert [m.id for m in bob.list("*", 10)] == [team["shared"]]
    with pytest.raises(NotAllowed, match=r"bob may not read the scope 'alice'.*team"):
        bob.recall("locker", scope="alice")
    with pytest.raises(NotAllowed, match="'default'"):
        bob.recall("locker")  # the default scope is not one of bob's
    stats = bob.stats()
    assert (stats.count, stats.scopes) == (1, {"team": 1})


def test_an_unreadable_memory_is_not_found_by_id(team: dict[str, Any]) -> None:
    bob = team["memory"].acting_as(BOB)
    with pytest.raises(NotFound):
        bob.get(team["private"])
    assert bob.get(team["shared"]).author == "alice"


def test_forget_and_supersede_outside_the_write_scopes_are_refused(team: dict[str, Any]) -> None:
    memory = team["memory"]
    bob = memory.acting_as(BOB)
    with pytest.raises(NotAllowed, match=r"bob may not forget memories of the scope 'team'"):
        bob.forget(ids=[team["shared"]])
    with pytest.raises(NotAllowed):
        bob.forget(ids=[team["shared"]], dry_run=True)
    unseen = bob.forget(ids=[team["private"]])  # not readable: as if it did not exist
    assert (unseen.forgotten, unseen.missing) == ([], [team["private"]])
    with pytest.raises(NotAllowed, match="write to the scope 'team'"):
        bob.remember("Deploys go out on Wednesdays now.", scope="team")
    with pytest.raises(NotAllowed, match="write to the scope 'team'"):
        bob.forget(query="deploys", scope="team", dry_run=False)
    assert bob.forget(query="deploys", scope="*", dry_run=False).forgotten == []
    carol = memory.acting_as(Access("carol", frozenset({"carol"}), frozenset({"carol"})))
    with pytest.raises(MissingIds):  # alice's memory is not carol's to see
        carol.remember("My locker is 1.", scope="carol", supersedes=[team["private"]])
    dave = memory.acting_as(Access("dave", frozenset({"team", "dave"}), frozenset({"dave"})))
    with pytest.raises(NotAllowed, match="dave may not supersede memories of the scope 'team'"):
        dave.remember("Deploys: Wednesdays.", scope="dave", supersedes=[team["shared"]])
    # nothing changed
    assert memory.count() == 2


def test_a_writer_keeps_to_its_scopes_and_is_the_author(team: dict[str, Any]) -> None:
    alice = team["memory"].acting_as(ALICE)
    new = alice.remember(
        "Deploys go out on Wednesdays now.", scope="team", supersedes=[team["shared"]]
    )
    assert new.superseded == [team["shared"]]
    mine = alice.recall("when do deploys go out?", scope="team").memories[0]
    assert (mine.id, mine.author) == (new.id, None)  # one's own: left out
    assert team["memory"].get(new.id).author == "alice"
    assert alice.forget(query="locker", scope="*", dry_run=False).forgotten == [team["private"]]


def test_the_owner_reads_and_writes_every_scope(team: dict[str, Any]) -> None:
    owner = team["memory"].acting_as(OWNER)
    assert len(owner.recall(scope="*", limit=10).memories) == 2
    assert owner.forget(ids=[team["private"]]).forgotten == [team["private"]]


def test_an_earlier_store_without_authors_opens_and_gains_the_column(
    settings: Settings, embedder: Embedder
) -> None:
    import lancedb

    memory = Memory(open_store(settings), embedder, settings)
    old = memory.remember("The printer is on the second floor.")
    memory.close()
    table = lancedb.connect(settings.data_dir / "lancedb").open_table("memories")
    table.drop_columns(["author"])  # as subcog wrote it before schema 3
    reopened = Memory(open_store(settings), embedder, settings)
    try:
        assert reopened.store.schema().metadata[b"subcog.schema"] == b"3"
        assert reopened.get(old.id).author is None
        new = reopened.acting_as(Access("erin")).remember("The fax is gone.")
        assert reopened.get(new.id).author == "erin"
        assert reopened.recall("where is the printer?").memories[0].id == old.id
    finally:
        reopened.close()


def add_token(env: dict[str, str], name: str, *scopes: str) -> str:
    done = subprocess.run(
        [subcog_command(), "token", "add", name, *scopes, "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    token: str = json.loads(done.stdout)["token"]
    return token


@asynccontextmanager
async def as_token(url: str, token: str) -> AsyncIterator[Client]:
    """An MCP client of the HTTP server at `url`, sending this bearer token."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        yield client


@pytest.mark.anyio
async def test_every_tool_and_resource_over_http_keeps_to_the_token_scopes() -> None:
    env = {**os.environ, "SUBCOG_TOKEN": "owner-token-" + "o" * 30, "SUBCOG_LOAD_TIMEOUT": "120"}
    bob = add_token(env, "bob", "--read", "team")
    alice = add_token(env, "alice", "--read", "team", "--write", "alice,team")
    listed = subprocess.run(
        [subcog_command(), "token", "list", "--json"], capture_output=True, text=True, env=env
    )
    assert [entry["name"] for entry in json.loads(listed.stdout)] == ["alice", "bob"]
    assert bob not in listed.stdout  # only hashes are kept
    assert alice not in listed.stdout
    proc, url = start(env)
    try:
        async with as_token(url, alice) as as_alice:
            shared = await call(as_alice, "remember", content="Standup is at 9:15.", scope="team")
            private = await call(
                as_alice, "remember", content="Alice's PIN is 8812.", scope="alice"
            )
        async with as_token(url, bob) as as_bob:
            found = await call(as_bob, "recall", query="standup PIN", scope="*", limit=10)
            assert [(m["id"], m["author"]) for m in found["memories"]] == [(shared["id"], "alice")]
            for arguments in (
                {"name": "recall", "arguments": {"query": "PIN", "scope": "alice"}},
                {"name": "forget", "arguments": {"ids": [shared["id"]]}},
                {"name": "remember", "arguments": {"content": "x", "scope": "team"}},
                {
                    "name": "remember",
                    "arguments": {"content": "y", "scope": "bob", "supersedes": [shared["id"]]},
                },
            ):
                refused = await as_bob.call_tool(arguments["name"], arguments["arguments"])
                assert refused.is_error, arguments
                assert "bob may not" in refused.content[0].text, refused.content  # type: ignore[union-attr]
            hidden = await call(as_bob, "forget", ids=[private["id"]])
            assert hidden == {"forgotten": [], "missing": [private["id"]]}
            with pytest.raises(MCPError):
                await as_bob.read_resource(f"memory://{private['id']}")
            seen = await as_bob.read_resource(f"memory://{shared['id']}")
            assert json.loads(seen.contents[0].text)["author"] == "alice"  # type: ignore[union-attr]
            stats = json.loads((await as_bob.read_resource("memory://stats")).contents[0].text)  # type: ignore[union-attr]
            assert stats["scopes"] == {"team": 1}
            recent = json.loads((await as_bob.read_resource("memory://recent")).contents[0].text)  # type: ignore[union-attr]
            assert [m["id"] for m in recent] == [shared["id"]]
        async with as_token(url, env["SUBCOG_TOKEN"]) as as_owner:  # every scope
            everything = await call(as_owner, "recall", scope="*", limit=10)
            assert len(everything["memories"]) == 2
        revoked = subprocess.run([subcog_command(), "token", "revoke", "bob"], env=env)
        assert revoked.returncode == 0
        answer = httpx2.post(url, headers={"Authorization": f"Bearer {bob}"}, json={}, timeout=30)
        assert answer.status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.mark.anyio
async def test_over_stdio_the_author_is_the_client_name(settings: Settings) -> None:
    from mcp.client.stdio import stdio_client

    from tests.servers import server_params

    async with Client(stdio_client(server_params())) as client:
        stored = await call(client, "remember", content="The wiki moved to Notion.")
    memory = Memory(open_store(settings), None, settings, load_model=lambda _s: None)  # type: ignore[arg-type,return-value]
    try:
        assert memory.get(stored["id"]).author == "mcp"
    finally:
        memory.close()
