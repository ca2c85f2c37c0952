"""Recall that finds the right memory: exact words, meaning, a relevance floor, filters that
exclude even the closest memory, diversity, near-duplicates, supersedes and forget by query."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from mcp import Client

from subcog import ranking
from subcog.memory import Memory
from tests.servers import call

pytestmark = pytest.mark.anyio

BACKGROUND = [
    "The build failed with a timeout on the integration tests.",
    "Deploys to production need a second approval in the release channel.",
    "The staging environment runs on two small virtual machines.",
    "Error codes from the payment provider are logged in the billing dashboard.",
    "Caroline works as a counselor for LGBTQ youth.",
    "Melanie painted a sunset over the lake last summer.",
    "The team retro is every second Friday.",
    "Our on-call rotation changes every Monday at noon.",
]


async def remember_all(client: Client, texts: list[str], **extra: object) -> list[str]:
    return [(await call(client, "remember", content=text, **extra))["id"] for text in texts]


async def test_an_identifier_is_found_by_its_exact_words(client: Client) -> None:
    await remember_all(client, BACKGROUND)
    error = await call(client, "remember", content="ERR-4711 means the card issuer declined it.")
    script = await call(client, "remember", content="Run deploy-staging.sh to ship to staging.")
    for query, wanted in [("ERR-4711", error), ("deploy-staging.sh", script)]:
        found = (await call(client, "recall", query=query, limit=3))["memories"]
        assert found, query
        assert found[0]["id"] == wanted["id"], (query, found)


async def test_a_paraphrase_is_found_by_meaning(client: Client) -> None:
    await remember_all(client, BACKGROUND)
    found = (await call(client, "recall", query="What is Caroline's job?", limit=3))["memories"]
    assert found[0]["content"] == "Caroline works as a counselor for LGBTQ youth."
    assert 0.0 < found[0]["score"] <= 1.0


async def test_an_unrelated_query_returns_nothing_and_says_so(client: Client) -> None:
    await remember_all(client, BACKGROUND)
    for query in ["What is the boiling point of mercury?", "Recommend a Kubernetes ingress"]:
        result = await call(client, "recall", query=query, limit=10)
        assert result["memories"] == [], (query, result)
        assert result["note"] == ranking.NOTHING_FOUND
    related = await call(client, "recall", query="who paints?", limit=10)
    assert related["memories"]
    assert related["note"] == ranking.MEANING


async def test_since_and_until_exclude_even_the_closest_memory(memory: Memory) -> None:
    old = (datetime.now(timezone.utc) - timedelta(days=400)).isoformat()
    lines = [
        json.dumps({"content": "The office wifi password is hunter2.", "created_at": old}),
        json.dumps({"content": "The guest network password is on the fridge."}),
    ]
    assert memory.import_jsonl(lines).added == 2
    query = "office wifi password"
    recent_only = memory.recall(
        query, 10, since=(datetime.now(timezone.utc) - timedelta(days=30)).isoformat()
    )
    assert [m.content for m in recent_only.memories] == [
        "The guest network password is on the fridge."
    ]
    old_only = memory.recall(
        query, 10, until=(datetime.now(timezone.utc) - timedelta(days=30)).isoformat()
    )
    assert [m.content for m in old_only.memories] == ["The office wifi password is hunter2."]


async def test_scope_excludes_even_the_closest_memory(client: Client) -> None:
    await call(client, "remember", content="The Berlin office opens at 8.", scope="work")
    home = await call(client, "remember", content="The Berlin flat has a red door.", scope="home")
    found = await call(client, "recall", query="When does the Berlin office open?", scope="home")
    assert [m["id"] for m in found["memories"]] == [home["id"]]


async def test_near_identical_memories_do_not_crowd_the_results(client: Client) -> None:
    await remember_all(
        client,
        [
            "The cat is called Miso.",
            "The cat is called Miso!",
            "the cat is called miso",
            "The cat likes to sleep on the radiator.",
        ],
    )
    found = (await call(client, "recall", query="What is the cat called?", limit=3))["memories"]
    names = [m["content"] for m in found]
    assert sum("called Miso" in name for name in names) == 1, names
    assert "The cat likes to sleep on the radiator." in names


async def test_remember_names_very_similar_memories_but_stores_the_new_one(client: Client) -> None:
    first = await call(client, "remember", content="The office is in Munich.")
    second = await call(client, "remember", content="Our office is located in Munich.")
    assert second["status"] == "created"
    assert [s["id"] for s in second["similar"]] == [first["id"]]
    assert second["similar"][0]["score"] >= 0.9
    other = await call(client, "remember", content="I had pasta for lunch.")
    assert "similar" not in other


async def test_supersedes_replaces_old_memories_in_one_step(client: Client) -> None:
    old = await call(client, "remember", content="The office is in Munich.")
    new = await call(
        client, "remember", content="The office moved to Berlin.", supersedes=[old["id"]]
    )
    assert new["status"] == "created"
    assert new["superseded"] == [old["id"]]
    found = (await call(client, "recall", query="Where is the office?", limit=10))["memories"]
    assert [m["id"] for m in found] == [new["id"]]
    again = await client.call_tool(
        "remember", {"content": "The office moved to Hamburg.", "supersedes": [old["id"]]}
    )
    assert again.is_error
    # The failed call stored nothing.
    assert [
        m["content"] for m in (await call(client, "recall", query="office", limit=10))["memories"]
    ] == ["The office moved to Berlin."]


async def test_forget_by_query_previews_then_deletes_only_relevant_memories(client: Client) -> None:
    ids = await remember_all(client, BACKGROUND)
    preview = await call(client, "forget", query="Caroline's job")
    assert preview["dry_run"] is True
    assert preview["forgotten"] == []
    assert preview["matches"][0]["content"] == "Caroline works as a counselor for LGBTQ youth."
    assert all(m["score"] >= ranking.MEMBER_FLOOR for m in preview["matches"])
    assert len((await call(client, "recall", query="Caroline's job"))["memories"]) >= 1

    done = await call(client, "forget", query="Caroline's job", limit=1, dry_run=False)
    assert done["forgotten"] == [ids[4]]
    assert (await call(client, "recall", query="What is Caroline's job?"))["memories"] == []

    nothing = await call(client, "forget", query="boiling point of mercury", dry_run=False)
    assert nothing["forgotten"] == []
    listed = json.loads((await client.read_resource("memory://stats")).contents[0].text)  # type: ignore[union-attr]
    assert listed["count"] == len(BACKGROUND) - 1


async def test_forget_by_filter_previews_then_deletes(client: Client) -> None:
    keep = await call(client, "remember", content="Keep this.", tags=["keep"])
    drop = await remember_all(client, ["Temporary note one.", "Temporary note two."], tags=["tmp"])
    preview = await call(client, "forget", tags=["tmp"])
    assert preview["dry_run"] is True
    assert {m["id"] for m in preview["matches"]} == set(drop)
    done = await call(client, "forget", tags=["tmp"], dry_run=False)
    assert set(done["forgotten"]) == set(drop)
    stats = json.loads((await client.read_resource("memory://stats")).contents[0].text)  # type: ignore[union-attr]
    assert stats["count"] == 1
    assert (await call(client, "forget", ids=[keep["id"]], dry_run=True))["matches"][0][
        "id"
    ] == keep["id"]


def unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def candidate(
    text: str, seconds: int, cosine: float, bm25: float = 0.0, scope: str = "s"
) -> ranking.Candidate:
    row = {
        "id": text,
        "content": text,
        "scope": scope,
        "created_at": datetime(2025, 1, 1) + timedelta(seconds=seconds),
    }
    vector = unit(cosine, 1 - cosine, seconds)
    micros = seconds * 1_000_000
    return ranking.Candidate(text, scope, micros, vector, cosine, lambda: row, bm25)


def test_context_lifts_a_memory_stored_next_to_a_strong_match() -> None:
    question = candidate("What book did you like?", 0, cosine=0.8, bm25=5.0)
    answer = candidate("It taught me a lot.", 1, cosine=0.3)
    stranger = candidate("It rained a lot.", 100_000, cosine=0.3)
    ranked = ranking.rank([stranger, answer, question], "book liked", limit=3, diverse=False)
    order = [c.row["content"] for c in ranked.results]
    assert (
        order.index("It taught me a lot.") < order.index("It rained a lot.")
        if "It rained a lot." in order
        else True
    )
    assert answer.score > stranger.score


def test_scores_stay_between_zero_and_one_and_the_floor_empties_weak_answers() -> None:
    strong = [
        candidate("alpha beta", 0, cosine=1.0, bm25=9.0),
        candidate("beta", 1, cosine=1.0, bm25=9.0),
    ]
    ranked = ranking.rank(strong, "alpha beta", limit=5, diverse=False)
    assert all(0.0 <= c.score <= 1.0 for c in ranked.results)
    weak = [candidate("gamma", 0, cosine=0.1)]
    assert ranking.rank(weak, "unrelated words", limit=5).results == []
