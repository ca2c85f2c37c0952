"""Model changes: the store records its model, refuses another one with a message naming
`subcog reindex`, and reindex re-embeds everything, resumably."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import lance
import numpy as np
import pyarrow as pa
import pytest
from mcp import Client

from subcog.cli import main
from subcog.config import Settings
from subcog.embedder import Embedder
from subcog.errors import ModelMismatch
from subcog.memory import content_hash, open_memory, reindex
from subcog.server import Service, build_server
from subcog.storage.schema import Row
from subcog.storage.store import Store

OLD_MODEL, OLD_DIMENSION = "test/old-model", 8
FACTS = [f"Fact {i}: the blue folder on shelf {i} holds the {i}th tax return." for i in range(23)]
FACTS.append("Caroline works as a counselor for LGBTQ youth.")


def store_built_with_an_old_model(settings: Settings) -> list[str]:
    store = Store(settings.data_dir, OLD_MODEL, OLD_DIMENSION)
    rng = np.random.default_rng(0)
    rows = [
        Row(
            id=uuid.uuid4().hex,
            content=text,
            content_hash=content_hash(text),
            vector=rng.random(OLD_DIMENSION, dtype=np.float32),
            tags=["old"],
            scope="default",
            metadata="{}",
            created_at=datetime.now(timezone.utc),
        )
        for text in FACTS
    ]
    store.add_new(rows)
    return [row.id for row in rows]


@pytest.mark.anyio
async def test_a_store_of_another_model_is_refused_with_the_command_to_run(
    settings: Settings, embedder: Embedder
) -> None:
    store_built_with_an_old_model(settings)
    with pytest.raises(ModelMismatch, match="Run `subcog reindex`"):
        open_memory(settings)
    service = Service(settings, load_model=lambda _settings: embedder)
    async with Client(build_server(settings, service)) as client:
        result = await client.call_tool("recall", {"query": "tax return"})
        assert result.is_error
        text = result.content[0].text  # type: ignore[union-attr]
        assert "subcog reindex" in text
        assert "SUBCOG_MODEL=test/old-model" in text


def test_reindex_re_embeds_every_memory_and_resumes_after_an_interruption(
    settings: Settings, embedder: Embedder, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = store_built_with_an_old_model(settings)
    seen: list[int] = []

    def interrupt(done: int, total: int) -> None:
        seen.append(done)
        if len(seen) == 2:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-way

    with pytest.raises(KeyboardInterrupt):
        reindex(settings, progress=interrupt, batch_size=5)
    with pytest.raises(ModelMismatch):
        open_memory(settings)  # not switched yet: the old model is still the store's

    assert main(["reindex"]) == 0
    assert "re-embedded 24 memories" in capsys.readouterr().out
    memory = open_memory(settings)
    assert memory.store.schema().field("vector").type.list_size == 384
    assert sorted(m.id for m in memory.list("*", 100)) == sorted(ids)
    found = memory.recall("What is Caroline's job?", limit=1).memories
    assert found[0].content == "Caroline works as a counselor for LGBTQ youth."
    assert found[0].tags == ["old"]
    assert reindex(settings) == 0  # nothing left to do


def test_an_old_model_server_still_writes_while_a_reindex_runs(
    settings: Settings, embedder: Embedder
) -> None:
    """A reindex adds columns for the new model's vectors; a server of the old model, still
    running, writes its rows with those columns left empty."""
    store_built_with_an_old_model(settings)

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reindex(settings, progress=interrupt, batch_size=5)
    old = Store(settings.data_dir, OLD_MODEL, OLD_DIMENSION)
    text = "Written by the old model's server during the reindex."
    row = Row(
        id=uuid.uuid4().hex,
        content=text,
        content_hash=content_hash(text),
        vector=np.ones(OLD_DIMENSION, dtype=np.float32) / np.sqrt(OLD_DIMENSION),
        tags=[],
        scope="default",
        metadata="{}",
        created_at=datetime.now(timezone.utc),
        chunks=np.ones((1, OLD_DIMENSION), dtype=np.float32),
    )
    assert old.add_new([row]) == [None]
    old.close()
    assert reindex(settings) == len(FACTS) + 1
    assert open_memory(settings).recall("the old model's server", 1).memories[0].content == text


def test_a_reindex_left_by_an_earlier_subcog_resumes_and_upgrades_at_the_old_size(
    settings: Settings,
) -> None:
    """An earlier subcog's store has no windows column, and its unfinished reindex only the
    new vectors' column: the windows column is added at the size of the store's vectors, and
    the reindex resumes."""
    import lancedb

    store_built_with_an_old_model(settings)
    table = lancedb.connect(settings.data_dir / "lancedb").open_table("memories")
    table.drop_columns(["chunks"])
    table.add_columns(pa.field("vector_next", pa.list_(pa.float32(), 384), nullable=True))
    lance.dataset(str(settings.data_dir / "lancedb" / "memories.lance")).update_schema_metadata(
        {"subcog.reindex_to": settings.model}
    )
    Store(settings.data_dir, OLD_MODEL, OLD_DIMENSION).close()  # the old model's server opens it
    table.checkout_latest()
    assert table.schema.field("chunks").type.value_type.list_size == OLD_DIMENSION
    assert reindex(settings) == len(FACTS)
    found = open_memory(settings).recall("What is Caroline's job?", limit=1).memories
    assert found[0].content == "Caroline works as a counselor for LGBTQ youth."
