"""Hostile arguments for every tool: each call gets a result or a ToolError, never a crash or a
hang, and the store stays intact and readable."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client

from subcog.config import Settings
from subcog.embedder import Embedder
from subcog.server import Service, build_server

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.text(alphabet=st.characters(codec="utf-8", categories=["Cc", "Cs", "Zs", "So"]))
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=25,
)
HUGE = st.sampled_from(["x" * 200_000, "\x00" * 5000, "🧠" * 50_000, " " * 100_000, "'" * 9000])
TEXT = st.text(max_size=300) | HUGE | st.sampled_from(["", " ", "\n\t", "a' OR 1=1 --", "*"])
NAMES = st.lists(TEXT | SCALARS, max_size=30) | st.lists(st.just("t"), min_size=100, max_size=200)
DEEP: Any = {"a": 1}
for _ in range(200):
    DEEP = {"a": DEEP}
METADATA = (
    st.dictionaries(st.text(max_size=70), SCALARS, max_size=40)
    | st.just({"nan": math.nan, "inf": math.inf})
    | st.just(DEEP)
    | st.just({f"k{i}": "v" * 100 for i in range(5000)})
    | JSON
)
TIMES = TEXT | SCALARS | st.sampled_from(["2025-01-31", "2025-02-30", "9999-99-99T99:99", "Z"])
IDS = st.lists(TEXT | SCALARS, max_size=10) | TEXT | st.just(["0" * 32] * 2000)


CALLS = st.one_of(
    st.tuples(
        st.just("remember"),
        st.fixed_dictionaries(
            {"content": TEXT | SCALARS},
            optional={"tags": NAMES | SCALARS, "scope": TEXT | SCALARS, "metadata": METADATA},
        ),
    ),
    st.tuples(
        st.just("recall"),
        st.fixed_dictionaries(
            {"query": TEXT | SCALARS},
            optional={
                "limit": st.integers(min_value=-(2**65), max_value=2**65) | SCALARS,
                "tags": NAMES | SCALARS,
                "scope": TEXT | SCALARS,
                "since": TIMES,
                "until": TIMES,
            },
        ),
    ),
    st.tuples(st.just("forget"), st.fixed_dictionaries({"ids": IDS | SCALARS | JSON})),
    st.tuples(
        st.sampled_from(["remember", "recall", "forget"]),
        st.dictionaries(
            st.sampled_from(["content", "query", "ids", "tags", "limit", "extra"]) | st.text(),
            JSON,
            max_size=5,
        ),
    ),
)


@pytest.fixture
def portal_client(
    settings: Settings, embedder: Embedder
) -> Iterator[tuple[BlockingPortal, Client]]:
    service = Service(settings, load_model=lambda _settings: embedder)
    client = Client(build_server(settings, service))
    with (
        start_blocking_portal(backend="asyncio") as portal,
        portal.wrap_async_context_manager(client) as connected,
    ):
        yield portal, connected


def test_hostile_arguments_get_a_result_or_a_tool_error_and_the_store_survives(
    portal_client: tuple[BlockingPortal, Client],
) -> None:
    portal, client = portal_client
    keeper = portal.call(client.call_tool, "remember", {"content": "The fuzzing keeper survives."})
    assert keeper.structured_content is not None
    keeper_id = keeper.structured_content["id"]

    async def guarded(tool: str, arguments: Any) -> Any:
        with anyio.fail_after(60):  # a hang fails the test
            return await client.call_tool(tool, arguments)

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(CALLS)
    def fuzz(call: tuple[str, Any]) -> None:
        tool, arguments = call
        if arguments.get("ids") == [keeper_id]:
            return
        result = portal.call(guarded, tool, arguments)
        if result.is_error:
            assert result.content
            text = result.content[0].text  # type: ignore[union-attr]
            assert text
            assert "unexpectedly" not in text, text  # only anticipated, explained errors
        else:
            assert result.structured_content is not None

    fuzz()

    found = portal.call(client.call_tool, "recall", {"query": "fuzzing keeper", "scope": "*"})
    assert not found.is_error
    assert found.structured_content is not None
    assert keeper_id in [m["id"] for m in found.structured_content["memories"]]
    stats = portal.call(client.read_resource, "memory://stats")
    assert stats.contents
