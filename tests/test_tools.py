"""Every tool path and every validation error, through the in-process MCP client."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client

pytestmark = pytest.mark.anyio


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def error(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    text = result.content[0].text  # type: ignore[union-attr]
    assert isinstance(text, str)
    return text


async def test_tools_are_listed_with_annotations(client: Client) -> None:
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == {"remember", "recall", "forget"}
    assert tools["recall"].annotations is not None
    assert tools["recall"].annotations.read_only_hint is True
    assert tools["forget"].annotations is not None
    assert tools["forget"].annotations.destructive_hint is True
    assert tools["remember"].annotations is not None
    assert tools["remember"].annotations.destructive_hint is True  # supersedes deletes
    assert all(tool.output_schema for tool in tools.values())
    assert all(len(tool.description or "") < 120 for tool in tools.values())


async def test_remember_then_recall_finds_a_paraphrase(client: Client) -> None:
    stored = await call(client, "remember", content="Our team standup is at 9:30 every weekday.")
    await call(client, "remember", content="The cat's vet appointment is on Friday.")
    assert stored["status"] == "created"
    assert stored["scope"] == "default"
    assert len(stored["id"]) == 32
    assert stored["created_at"].endswith("Z")

    found = await call(client, "recall", query="When is the daily team meeting?", limit=1)
    (best,) = found["memories"]
    assert best["id"] == stored["id"]
    assert best["content"] == "Our team standup is at 9:30 every weekday."
    assert 0.0 <= best["score"] <= 1.0
    assert set(best) == {"id", "content", "score", "created_at"}  # no tags, metadata or scope


async def test_recall_results_are_best_first_with_scores_in_unit_range(client: Client) -> None:
    for text in ["I love hiking in the Alps.", "Python 3.12 is installed.", "We hiked Mont Blanc."]:
        await call(client, "remember", content=text)
    found = (await call(client, "recall", query="mountain hiking trips", limit=3))["memories"]
    scores = [m["score"] for m in found]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert [m["content"] for m in found] == ["I love hiking in the Alps.", "We hiked Mont Blanc."]


async def test_remember_same_content_with_other_whitespace_returns_existing_id(
    client: Client,
) -> None:
    first = await call(client, "remember", content="Deploys happen on Tuesdays.")
    again = await call(client, "remember", content="  Deploys   happen on\nTuesdays. ")
    assert again == {**first, "status": "exists"}
    found = await call(client, "recall", query="deploy day", limit=10)
    assert [m["id"] for m in found["memories"]] == [first["id"]]


async def test_same_content_in_another_scope_is_a_separate_memory(client: Client) -> None:
    a = await call(client, "remember", content="Uses PostgreSQL 16.", scope="project-a")
    b = await call(client, "remember", content="Uses PostgreSQL 16.", scope="project-b")
    assert a["id"] != b["id"]
    assert b["status"] == "created"


async def test_remember_keeps_tags_and_metadata(client: Client) -> None:
    stored = await call(
        client,
        "remember",
        content="The staging deploy command is ./deploy-staging.sh",
        tags=["ops", "deploy"],
        metadata={"source": "chat", "confidence": 0.9, "turn": 3, "verified": True},
    )
    (found,) = (await call(client, "recall", query="staging deploy command", limit=1))["memories"]
    assert found["id"] == stored["id"]
    assert found["tags"] == ["ops", "deploy"]
    assert found["metadata"] == {"source": "chat", "confidence": 0.9, "turn": 3, "verified": True}


async def test_recall_with_tags_excludes_closer_memories_without_them(client: Client) -> None:
    await call(client, "remember", content="The staging deploy command is ./deploy-staging.sh")
    tagged = await call(
        client,
        "remember",
        content="The production deploy command is ./deploy-prod.sh",
        tags=["ops", "prod"],
    )
    found = await call(client, "recall", query="staging deploy command", tags=["ops"])
    assert [m["id"] for m in found["memories"]] == [tagged["id"]]
    found = await call(client, "recall", query="deploy command", tags=["ops", "missing"])
    assert found["memories"] == []


async def test_recall_is_limited_to_the_scope_and_star_searches_all(client: Client) -> None:
    a = await call(client, "remember", content="The office is in Berlin.", scope="work")
    b = await call(client, "remember", content="My flat is in Berlin.", scope="home")
    in_work = await call(client, "recall", query="Berlin", scope="work", limit=10)
    assert [m["id"] for m in in_work["memories"]] == [a["id"]]
    in_default = await call(client, "recall", query="Berlin", limit=10)
    assert in_default["memories"] == []
    everywhere = await call(client, "recall", query="Berlin", scope="*", limit=10)
    assert {m["id"] for m in everywhere["memories"]} == {a["id"], b["id"]}


async def test_recall_since_and_until_filter_by_creation_time(client: Client) -> None:
    stored = await call(client, "remember", content="The release train leaves on Thursdays.")
    query = "release train day"
    assert (await call(client, "recall", query=query, since="2000-01-01"))["memories"]
    assert (await call(client, "recall", query=query, until="2999-01-01T00:00:00Z"))["memories"]
    assert (await call(client, "recall", query=query, since="2999-01-01"))["memories"] == []
    assert (await call(client, "recall", query=query, until="2000-01-01"))["memories"] == []
    around = await call(
        client, "recall", query=query, since=stored["created_at"], until="2999-12-31T23:59:59+02:00"
    )
    assert [m["id"] for m in around["memories"]] == [stored["id"]]


async def test_forget_deletes_and_reports_missing_ids(client: Client) -> None:
    kept = await call(client, "remember", content="Keep: the wifi password is on the fridge.")
    gone = await call(client, "remember", content="Forget: the wifi is named Skynet.")
    unknown = "0" * 32
    result = await call(client, "forget", ids=[gone["id"], unknown])
    assert result == {"forgotten": [gone["id"]], "missing": [unknown]}
    found = await call(client, "recall", query="wifi", limit=10)
    assert [m["id"] for m in found["memories"]] == [kept["id"]]
    assert await call(client, "forget", ids=[gone["id"]]) == {
        "forgotten": [],
        "missing": [gone["id"]],
    }


async def test_forgotten_content_can_be_remembered_again(client: Client) -> None:
    first = await call(client, "remember", content="Lunch is at noon.")
    await call(client, "forget", ids=[first["id"]])
    second = await call(client, "remember", content="Lunch is at noon.")
    assert second["status"] == "created"
    assert second["id"] != first["id"]


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        ("remember", {"content": ""}, "content is empty"),
        ("remember", {"content": "   \n\t "}, "content is empty"),
        ("remember", {"content": "x" * 1_000_000}, "the limit is 8000"),
        (
            "remember",
            {"content": "ok", "tags": [f"t{i}" for i in range(10_000)]},
            "at most 20 are allowed",
        ),
        ("remember", {"content": "ok", "tags": ["has space"]}, "tag 'has space' is not allowed"),
        ("remember", {"content": "ok", "tags": ["it's"]}, "is not allowed"),
        ("remember", {"content": "ok", "tags": [""]}, "is not allowed"),
        ("remember", {"content": "ok", "scope": "a'b"}, 'scope "a\'b" is not allowed'),
        ("remember", {"content": "ok", "scope": "*"}, "is not allowed"),
        (
            "remember",
            {"content": "ok", "metadata": {"k": {"nested": 1}}},
            "metadata['k'] must be a string, number or boolean, not an object",
        ),
        ("remember", {"content": "ok", "metadata": {"k": "v" * 5000}}, "the limit is 4096"),
        ("remember", {"content": "bad\x00byte"}, "NUL"),
        ("remember", {"content": 42}, "content"),
        ("recall", {"query": "x" * 5000}, "the limit is 2000"),
        ("recall", {"query": "x", "limit": 0}, "limit is 0; use at least 1"),
        ("recall", {"query": "x", "limit": 1000}, "limit is 1000; use at most 50"),
        ("recall", {"query": "x", "limit": "5"}, 'not the string "5"'),
        ("recall", {"query": "x", "limit": True}, "not true"),
        ("recall", {"query": "x", "limt": 3}, "did you mean 'limit'?"),
        (
            "remember",
            {"content": "ok", "tag": ["a"], "scopes": "work"},
            "'scopes' (did you mean 'scope'?), 'tag' (did you mean 'tags'?)",
        ),
        ("recall", {"query": "x", "since": "around teatime-ish"}, "not a time subcog can read"),
        ("recall", {"query": "x", "until": "2025-13-45"}, "3 days ago"),
        ("recall", {"query": "x", "since": "9999-12-31T23:59:59-14:00"}, "out of range"),
        ("recall", {"query": "x", "since": "2025-02-01", "until": "2025-01-01"}, "since is later"),
        ("recall", {"query": "x", "tags": ["a' OR 1=1 --"]}, "is not allowed"),
        ("recall", {"query": "x", "scope": "x' OR scope != '"}, "is not allowed"),
        ("forget", {"ids": []}, "Say what to forget: ids from recall"),
        ("forget", {}, "Say what to forget"),
        ("forget", {"ids": ["0" * 32], "query": "x"}, "either ids, or a query"),
        ("forget", {"query": "x", "limit": 0}, "use at least 1"),
        ("forget", {"scope": "*", "dry_run": False}, "subcog forget --all"),
        ("forget", {"scope": "default"}, "subcog forget --all"),
        ("remember", {"content": "ok", "supersedes": ["0" * 32]}, "No memory has the id"),
        ("remember", {"content": "ok", "supersedes": ["bad"]}, "is not a memory id"),
        ("forget", {"ids": ["not-an-id"]}, "'not-an-id' is not a memory id"),
        ("forget", {"ids": ["abc' OR 1=1 --"]}, "is not a memory id"),
        ("forget", {"ids": ["A" * 32]}, "is not a memory id"),
        ("forget", {"ids": "0" * 32}, "ids"),
    ],
)
async def test_bad_input_is_a_tool_error_and_changes_nothing(
    client: Client, tool: str, arguments: dict[str, Any], expected: str
) -> None:
    kept = await call(client, "remember", content="A memory that must survive bad input.")
    message = await error(client, tool, **arguments)
    assert expected in message
    assert "pydantic" not in message
    assert len(message) < 300
    found = await call(client, "recall", query="memory that must survive", scope="*", limit=50)
    assert [m["id"] for m in found["memories"]] == [kept["id"]]


async def test_default_scope_comes_from_subcog_scope(
    monkeypatch: pytest.MonkeyPatch, embedder: Any
) -> None:
    from subcog.config import Settings
    from subcog.server import Service, build_server

    monkeypatch.setenv("SUBCOG_SCOPE", "my-project")
    settings = Settings.from_env()
    service = Service(settings, load_model=lambda _settings: embedder)
    async with Client(build_server(settings, service)) as client:
        stored = await call(client, "remember", content="Scoped by the environment.")
        assert stored["scope"] == "my-project"
        found = await call(client, "recall", query="scoped environment")
        assert found["memories"][0]["id"] == stored["id"]
        assert "scope" not in found["memories"][0]  # the default scope is not repeated
        other = await call(client, "remember", content="Scoped apart.", scope="elsewhere")
        found = await call(client, "recall", query="scoped apart", scope="*")
        assert found["memories"][0] == {**found["memories"][0], "scope": "elsewhere"}
        assert found["memories"][0]["id"] == other["id"]


async def test_list_arguments_are_plain_arrays_and_null_means_not_given(client: Client) -> None:
    # Clients that build arguments from a schema (the Inspector's --tool-arg ids=[...]) send a
    # list as an array only when the schema says "array", not "array or null".
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    lists = [("remember", "tags"), ("remember", "supersedes"), ("recall", "tags")]
    for tool, name in [*lists, ("forget", "ids"), ("forget", "tags")]:
        assert tools[tool].input_schema["properties"][name]["type"] == "array", (tool, name)
    stored = await call(
        client, "remember", content="The spare key is under the blue pot.", supersedes=None
    )
    found = await call(client, "recall", query="where is the spare key?", tags=None, scope=None)
    assert found["memories"][0]["id"] == stored["id"]
    await call(client, "forget", ids=[stored["id"]], query=None, tags=None)
    assert not (await call(client, "recall", query="where is the spare key?"))["memories"]
