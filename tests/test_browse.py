"""What the web page asks of the domain: pages newest first, tags edited, counts, similar
memories and health. Real model, real LanceDB under tmp_path."""

from __future__ import annotations

import json

import pytest

from subcog.errors import InvalidInput, NotFound
from subcog.memory import Memory


def imported(memory: Memory, *lines: dict[str, object]) -> None:
    report = memory.import_jsonl(json.dumps(line) for line in lines)
    assert report.added == len(lines), report


def every_page(memory: Memory, limit: int, **filters: object) -> list[list[str]]:
    pages, after = [], None
    while True:
        page = memory.page(limit=limit, after=after, **filters)  # type: ignore[arg-type]
        pages.append([m.content for m in page.memories])
        if page.next is None:
            return pages
        after = page.next


def test_pages_are_newest_first_and_ties_in_time_are_neither_repeated_nor_lost(
    memory: Memory,
) -> None:
    imported(
        memory, *({"content": f"tied {n}", "created_at": "2025-05-05T05:05:05Z"} for n in range(7))
    )
    imported(memory, {"content": "older", "created_at": "2020-01-01T00:00:00Z"})
    imported(memory, {"content": "newest"})
    pages = every_page(memory, 3, scope="*")
    assert [len(page) for page in pages] == [3, 3, 3]
    flat = [text for page in pages for text in page]
    assert flat[0] == "newest"
    assert flat[-1] == "older"
    assert sorted(flat[1:-1]) == sorted(f"tied {n}" for n in range(7))


def test_pages_take_the_filters_of_recall(memory: Memory) -> None:
    imported(
        memory,
        {"content": "a trip to Porto", "tags": ["travel"], "created_at": "2024-06-01T00:00:00Z"},
        {"content": "a trip to Oslo", "tags": ["travel"], "scope": "other"},
        {"content": "a dentist visit", "tags": ["health"]},
    )
    assert every_page(memory, 5, scope="*", tags=["travel"]) == [
        ["a trip to Oslo", "a trip to Porto"]
    ]
    assert every_page(memory, 5, scope="*", since="30 days ago") == [
        ["a dentist visit", "a trip to Oslo"]
    ]
    assert every_page(memory, 5) == [["a dentist visit", "a trip to Porto"]]  # default scope


ID = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    "after",
    [
        "nonsense",
        "12.not-an-id",
        ".abc",
        f"99999999999999999999.{ID}",  # past any date
        f"999999999999999999.{ID}",  # 18 digits, still past the year 9999
        f"\u00b2.{ID}",  # a digit to str.isdigit, not to int()
        "9" * 5000 + f".{ID}",
    ],
)
def test_a_broken_page_link_is_refused_in_our_words(memory: Memory, after: str) -> None:
    with pytest.raises(InvalidInput):
        memory.page(scope="*", after=after)


def test_tags_are_replaced_and_recall_filters_by_them_at_once(memory: Memory) -> None:
    stored = memory.remember("The standup is at 9:30.", tags=["work"])
    assert memory.set_tags(stored.id, ["work", "meetings"]).tags == ["work", "meetings"]
    found = memory.recall("when is the standup", tags=["meetings"])
    assert [m.id for m in found.memories] == [stored.id]
    with pytest.raises(InvalidInput):
        memory.set_tags(stored.id, ["no spaces allowed"])
    assert memory.get(stored.id).tags == ["work", "meetings"]  # a bad edit loses nothing
    memory.forget(ids=[stored.id])
    with pytest.raises(NotFound):
        memory.set_tags(stored.id, ["late"])


def test_tallies_count_scopes_tags_and_weeks(memory: Memory) -> None:
    imported(
        memory,
        {"content": "one", "tags": ["a", "b"], "created_at": "2026-11-02T10:00:00Z"},
        {"content": "two", "tags": ["a"], "created_at": "2026-11-08T23:00:00Z"},
        {"content": "three", "scope": "s", "created_at": "2026-11-09T00:30:00Z"},
    )
    tallies = memory.tallies()
    assert tallies.scopes == {"default": 2, "s": 1}
    assert tallies.tags == {"a": 2, "b": 1}
    assert tallies.weeks == {"2026-11-02": 2, "2026-11-09": 1}  # weeks start on Monday


def test_similar_memories_are_those_of_its_scope_that_remember_would_name(
    memory: Memory,
) -> None:
    first = memory.remember("My sister Anna lives in Berlin.")
    second = memory.remember("Anna, my sister, lives in Berlin.")
    memory.remember("Anna, my sister, lives in Berlin!", scope="elsewhere")
    memory.remember("The car needs new tyres.")
    assert [m.id for m in second.similar] == [first.id]
    assert [m.id for m in memory.similar_to(first.id)] == [second.id]


def test_health_says_model_size_erasure_and_damage(memory: Memory) -> None:
    memory.remember("something")
    health = memory.health()
    assert health.model.endswith("all-MiniLM-L6-v2")
    assert health.memories == 1
    assert health.disk_bytes > 0
    assert health.damaged is None
