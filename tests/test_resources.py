"""Resources and prompts, through the in-process MCP client."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import Client, MCPError

from tests.servers import call

pytestmark = pytest.mark.anyio


async def read_json(client: Client, uri: str) -> Any:
    result = await client.read_resource(uri)
    text = result.contents[0].text  # type: ignore[union-attr]
    return json.loads(text)


async def test_stats_resource_describes_the_store(client: Client) -> None:
    await call(client, "remember", content="Stats count this one.", scope="alpha")
    stats = await read_json(client, "memory://stats")
    assert stats["count"] == 1
    assert stats["scopes"] == {"alpha": 1}
    assert stats["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert stats["disk_bytes"] > 0
    assert stats["data_dir"]


async def test_recent_resource_lists_newest_first_compactly(client: Client) -> None:
    for text in ["oldest note", "middle note", "newest note"]:
        await call(client, "remember", content=text)
    recent = await read_json(client, "memory://recent")
    assert [m["content"] for m in recent] == ["newest note", "middle note", "oldest note"]
    assert "vector" not in recent[0]


async def test_one_memory_by_id_and_unknown_ids_are_not_found(client: Client) -> None:
    stored = await call(client, "remember", content="Readable as a resource.", tags=["r"])
    memory = await read_json(client, f"memory://{stored['id']}")
    assert memory["content"] == "Readable as a resource."
    assert memory["tags"] == ["r"]
    for unknown in ("0" * 32, "not-an-id"):
        with pytest.raises(MCPError) as raised:
            await client.read_resource(f"memory://{unknown}")
        assert raised.value.error.code == -32602


async def test_resources_and_templates_are_listed(client: Client) -> None:
    uris = {str(r.uri) for r in (await client.list_resources()).resources}
    assert {"memory://stats", "memory://recent"} <= uris
    templates = {
        t.uri_template for t in (await client.list_resource_templates()).resource_templates
    }
    assert "memory://{memory_id}" in templates


async def test_prompts_help_put_memory_to_work(client: Client) -> None:
    names = {p.name for p in (await client.list_prompts()).prompts}
    assert {"recall_first", "remember_conversation"} <= names
    prompt = await client.get_prompt("recall_first", {"question": "What is my cat called?"})
    text = prompt.messages[0].content.text  # type: ignore[union-attr]
    assert "recall" in text
    assert "What is my cat called?" in text
