"""Model changes: the store records its model, refuses another one with a message naming
`subcog reindex`, and reindex re-embeds everything, resumably."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import numpy as np
import pytest
from mcp import Client

from subcog.cli import main
from subcog.config import Settings
from subcog.embedder import Embedder
from subcog.errors import ModelMismatch
from subcog.memory import content_hash, open_memory, reindex
from subcog.server import build_server
from subcog.store import Row, Store

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
    settings: Settings, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_built_with_an_old_model(settings)
    with pytest.raises(ModelMismatch, match="Run `subcog reindex`"):
        open_memory(settings)
    monkeypatch.setattr("subcog.server.load_embedder", lambda _settings: embedder)
    async with Client(build_server(settings)) as client:
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

    partial = Store(settings.data_dir, settings.model, 384, check_model=False)
    with pytest.raises(KeyboardInterrupt):
        partial.reindex(embedder.embed_memories, batch_size=5, progress=interrupt)
    with pytest.raises(ModelMismatch):
        open_memory(settings)  # not switched yet: the old model is still the store's

    assert main(["reindex"]) == 0
    assert "re-embedded 24 memories" in capsys.readouterr().out
    memory = open_memory(settings)
    assert memory.store._table.schema.field("vector").type.list_size == 384
    assert sorted(m.id for m in memory.list("*", 100)) == sorted(ids)
    found = memory.recall("What is Caroline's job?", limit=1).memories
    assert found[0].content == "Caroline works as a counselor for LGBTQ youth."
    assert found[0].tags == ["old"]
    assert reindex(settings) == 0  # nothing left to do
