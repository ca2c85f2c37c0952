"""The LanceDB table: schema, ownership, model records and reopening."""

from __future__ import annotations

import json
import stat
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from subcog.config import Settings
from subcog.embedder import DIMENSION, MODEL_NAME, Embedder
from subcog.errors import ModelMismatch
from subcog.memory import Memory, open_store
from subcog.storage.limits import Limits
from subcog.storage.scheduler import Scheduler
from subcog.storage.schema import Filter
from subcog.storage.store import Store


def tuned(memory: Memory, **limits: Any) -> Memory:
    """The same data dir, through a store with these limits."""
    memory.store.close()
    settings = replace(memory.settings, limits=Limits(**limits))
    return Memory(open_store(settings), memory.embedder, settings)


def test_the_table_has_the_documented_schema_and_records_the_model(settings: Settings) -> None:
    store = open_store(settings)
    schema = store.schema()
    assert schema.field("id").type == pa.string()
    assert not schema.field("id").nullable
    assert schema.field("vector").type == pa.list_(pa.float32(), DIMENSION)
    assert schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    for name in ("tags", "scope", "metadata", "content_hash", "content"):
        assert name in schema.names
    assert schema.metadata[b"subcog.model"] == MODEL_NAME.encode()
    assert schema.metadata[b"subcog.dimension"] == str(DIMENSION).encode()


def test_the_data_dir_is_private_to_its_owner(settings: Settings) -> None:
    open_store(settings)
    assert stat.S_IMODE(settings.data_dir.stat().st_mode) == 0o700


def test_a_store_built_with_another_model_is_refused_with_a_clear_error(
    settings: Settings,
) -> None:
    Store(settings.data_dir, "BAAI/bge-small-en-v1.5", DIMENSION)
    with pytest.raises(ModelMismatch, match=r"BAAI/bge-small-en-v1\.5.*all-MiniLM-L6-v2"):
        open_store(settings)


def test_memories_are_there_after_reopening(settings: Settings, embedder: Embedder) -> None:
    first = Memory(open_store(settings), embedder, settings)
    stored = first.remember("The boiler was serviced in March.", tags=["home"])
    second = Memory(open_store(settings), embedder, settings)
    found = second.recall("When was the boiler serviced?", limit=1).memories
    assert [m.id for m in found] == [stored.id]
    assert found[0].tags == ["home"]


def test_a_write_in_one_handle_is_seen_by_another_at_once(
    settings: Settings, embedder: Embedder
) -> None:
    reader = Memory(open_store(settings), embedder, settings)
    assert reader.recall("greenhouse tomatoes").memories == []
    writer = Memory(open_store(settings), embedder, settings)
    stored = writer.remember("The greenhouse tomatoes need water daily.")
    assert [m.id for m in reader.recall("greenhouse tomatoes").memories] == [stored.id]
    # Once the store has been quiet a while, the reader stops asking LanceDB for the version
    # while the versions directory keeps its stamp (storage/mirror.py): a write still shows.
    time.sleep(2.2)
    assert [m.id for m in reader.recall("greenhouse tomatoes").memories] == [stored.id]
    assert reader.recall("greenhouse tomatoes").memories  # the stamp is trusted now
    later = writer.remember("The greenhouse roof vents open above 25 degrees.")
    found = reader.recall("greenhouse roof vents", limit=1).memories
    assert [m.id for m in found] == [later.id]
    writer.forget(ids=[later.id])
    assert later.id not in {m.id for m in reader.recall("greenhouse roof vents").memories}


def test_list_and_stats_describe_the_store(memory: Memory, settings: Settings) -> None:
    memory.remember("first", scope="a")
    memory.remember("second", scope="b", tags=["x"])
    newest_first = memory.list("*", 10)
    assert [m.content for m in newest_first] == ["second", "first"]
    assert [m.content for m in memory.list("a", 10)] == ["first"]
    stats = memory.stats()
    assert stats.count == 2
    assert stats.scopes == {"a": 1, "b": 1}
    assert stats.data_dir == str(settings.data_dir)
    assert stats.model == MODEL_NAME
    assert stats.disk_bytes > 0


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_forget_erases_the_text_from_every_file_and_keeps_the_rest(memory: Memory) -> None:
    marker = "zebra-marker-5f1e2c"
    ids = [memory.remember(f"Fact number {i} about compaction.").id for i in range(12)]
    secret = memory.remember(f"The alarm code is {marker}.").id
    memory.store.upkeep()  # one compacted fragment: the hard case, a lone fragment
    assert files_containing(memory.settings.data_dir, marker.encode())

    assert memory.forget([secret, ids[0]]).forgotten == [secret, ids[0]]
    memory.store.finish_erasure()

    assert files_containing(memory.settings.data_dir, marker.encode()) == []
    assert memory.store.count() == 11
    assert {m.id for m in memory.list("*", 50)} == set(ids[1:])
    assert not (memory.settings.data_dir / ".erase-pending").exists()


def test_data_dir_env_is_respected(tmp_path: Path, settings: Settings) -> None:
    assert settings.data_dir == tmp_path / "data"


def test_past_a_size_searches_use_one_vector_index_rebuilt_as_the_store_grows(
    memory: Memory,
) -> None:
    # Past mirror_rows, searches go to LanceDB and its index.
    memory = tuned(memory, vector_index_rows=300, mirror_rows=300, vector_deltas_max=3)
    texts = [f"Note {i}: box {i} on shelf {i % 7} holds {i * 3} screws." for i in range(300)]
    assert memory.import_jsonl(json.dumps({"content": t}) for t in texts).added == 300
    assert memory.store.upkeep()
    assert vector_index_deltas(memory) == ([300], 0)
    memory.remember("The spare house key is taped under the blue flowerpot.")
    assert memory.store.upkeep()
    assert vector_index_deltas(memory) == ([300, 1], 0)  # new rows join at once, on their own
    found = memory.recall("Where is the spare key hidden?", limit=1).memories
    assert found[0].content == "The spare house key is taped under the blue flowerpot."
    memory.remember("The bike lock code is written inside the toolbox lid.")
    assert memory.store.upkeep()
    memory.remember("The gas meter is read on the first Monday of the month.")
    assert memory.store.upkeep()
    assert vector_index_deltas(memory) == ([300, 3], 0)  # at VECTOR_DELTAS_MAX they merge

    more = [f"Later note {i}: crate {i} went to the attic in week {i}." for i in range(80)]
    memory.import_jsonl(json.dumps({"content": t}) for t in more)
    assert memory.store.upkeep()
    assert vector_index_deltas(memory) == ([383], 0)  # past VECTOR_REBUILD_SHARE: built again


def test_lance_caches_grow_with_a_store_while_it_runs(memory: Memory) -> None:
    # A server that grows past the vector index size must not keep caches sized for a small
    # store: the index would be read from disk at every search.
    memory = tuned(memory, vector_index_rows=100, cache_step_rows=64)
    store = memory.store

    def grow_to(count: int) -> None:
        have = memory.store.count()
        memory.import_jsonl(
            json.dumps({"content": f"Shelf {i} holds box {i * 3} of spare parts."})
            for i in range(have, count)
        )
        memory.store.warm()

    grow_to(60)
    assert store.cache_sized_for == 0  # within the first step the caches keep their size
    grow_to(100)
    assert store.cache_sized_for == 100  # past it (and past vector_index_rows): bigger
    assert store.limits.cache_bytes(100)[0] > store.limits.cache_bytes(60)[0]
    grow_to(120)
    assert store.cache_sized_for == 100  # not opened again for every new row
    grow_to(130)
    assert store.cache_sized_for == 130
    reopened = Store(store.data_dir, store.model, store.dimension, limits=store.limits)
    assert reopened.cache_sized_for == 130  # sized when it opens, not at its first read
    reopened.close()
    found = memory.recall("Which shelf holds box 300?", limit=1).memories
    assert found[0].content == "Shelf 100 holds box 300 of spare parts."


def vector_index_deltas(memory: Memory) -> tuple[list[int], int]:
    """Rows in each part of the vector index, and rows outside it."""
    import lance

    table = memory.store.data_dir / "lancedb" / "memories.lance"
    stats = lance.dataset(str(table)).stats.index_stats("vector_idx")
    return stats["num_indexed_rows_per_delta"], stats["num_unindexed_rows"]


def test_with_a_vector_index_a_rare_scope_still_gets_its_own_nearest_memories(
    memory: Memory,
) -> None:
    # The main scope is filtered after the index search; a rare one finds nothing that way
    # and must be searched again with the filter first.
    memory = tuned(memory, vector_index_rows=300, mirror_rows=300)
    texts = [f"Note {i}: the parcel {i} left depot {i % 9} on day {i}." for i in range(300)]
    assert memory.import_jsonl(json.dumps({"content": t}) for t in texts).added == 300
    memory.remember("The boat's spare propeller is in the garage loft.", scope="boat")
    memory.remember("Anchor chain was replaced in May.", scope="boat")
    assert memory.store.upkeep()
    assert vector_index_deltas(memory) == ([302], 0)

    vector = memory.embedder.embed(["Where did the parcels leave from?"])[0]
    searched = memory.store.search("parcels depot", 100, Filter("default")).finish(vector)
    lexical, semantic = searched.lexical, searched.semantic
    depth = Limits().lance_depth
    assert len(semantic.ids()) == len(lexical.ids()) == depth  # not 100 past the mirror
    found = memory.recall("Where did the parcels leave from?", limit=5).memories
    assert len(found) == 5
    assert all(m.scope is None for m in found)  # the default scope
    assert "default" not in memory.store.rare_scopes
    found = memory.recall("Where is the propeller kept?", limit=5, scope="boat").memories
    assert found[0].content == "The boat's spare propeller is in the garage loft."
    assert {m.scope for m in found} == {"boat"}
    assert memory.store.rare_scopes == {"boat"}
    found = memory.recall("When was the anchor chain replaced?", limit=5, scope="boat").memories
    assert found[0].content == "Anchor chain was replaced in May."


SHELF = [
    ("The red kettle is on the top shelf.", ["kitchen"], "home", "2024-01-05T10:00:00Z"),
    ("The blue kettle broke last winter.", ["kitchen", "broken"], "home", "2024-03-01T10:00:00Z"),
    ("Kettle descaling uses citric acid.", ["kitchen"], "chores", "2024-06-10T10:00:00Z"),
    ("The office kettle is shared with floor two.", [], "work", "2025-02-01T10:00:00Z"),
    ("Tea bags are in the tin next to the kettle.", ["kitchen"], "home", "2025-05-20T10:00:00Z"),
]


def test_in_memory_a_rare_scope_still_gets_its_own_full_text_matches(memory: Memory) -> None:
    # The in-memory copy scores BM25 over the rows passing the filter: a rare scope needs no
    # second search (past Limits.counted_rows, LanceDB's search does; the test above).
    notes = [f"Parcel {i} left depot {i % 9}." for i in range(120)]
    assert memory.import_jsonl(json.dumps({"content": t}) for t in notes).added == 120
    boat = memory.remember(
        "After the regatta the club sent the spare propeller, a new anchor chain, two fenders "
        "and a parcel of charts to the marina office.",
        scope="boat",
    )
    store = memory.store
    vector = memory.embedder.embed(["parcel"])[0]
    lexical = store.search("parcel", 100, Filter("default")).finish(vector).lexical
    assert len(lexical.ids()) == 100
    assert set(lexical.scopes()) == {"default"}
    lexical = store.search("parcel", 100, Filter("boat")).finish(vector).lexical
    assert lexical.ids() == [boat.id]
    assert store.rare_scopes == set()


def shelf_memory(memory: Memory) -> Memory:
    lines = [
        json.dumps({"content": c, "tags": t, "scope": s, "created_at": at}) for c, t, s, at in SHELF
    ]
    assert memory.import_jsonl(lines).added == len(SHELF)
    return memory


def test_the_in_memory_search_and_lancedb_give_the_same_results_under_every_filter(
    memory: Memory,
) -> None:
    store = shelf_memory(memory).store
    vector = memory.embedder.embed(["Where is the kettle?"])[0]
    filters = [
        Filter(),
        Filter(scope="home"),
        Filter(tags=("kitchen",)),
        Filter(tags=("kitchen", "broken")),
        Filter(scope="home", since=datetime(2024, 2, 1, tzinfo=timezone.utc)),
        Filter(until=datetime(2024, 6, 10, 10, tzinfo=timezone.utc)),
        Filter(scope="nowhere"),
    ]
    lancedb_only = replace(memory.settings, limits=Limits(mirror_rows=0))
    by_lance = open_store(lancedb_only)  # the same searches, by LanceDB
    for where in filters:
        in_memory = store.nearest(vector, 10, where)
        by_lancedb = by_lance.nearest(vector, 10, where)
        assert [row["id"] for row, _ in in_memory] == [row["id"] for row, _ in by_lancedb]
        assert [round(s, 4) for _, s in in_memory] == [round(s, 4) for _, s in by_lancedb]
        assert in_memory == [] or in_memory[0][0] == by_lancedb[0][0]
    by_lance.close()


def test_the_in_memory_copy_follows_deletes_compaction_and_other_handles(
    memory: Memory, settings: Settings, embedder: Embedder
) -> None:
    shelf_memory(memory)
    other = Memory(open_store(settings), embedder, settings)
    query, everywhere = "Which kettle broke?", "*"
    broken = memory.recall(query, limit=1, scope=everywhere).memories[0]
    assert broken.content == "The blue kettle broke last winter."
    assert other.recall(query, limit=1, scope=everywhere).memories[0].id == broken.id

    other.forget(ids=[broken.id])
    found = memory.recall(query, limit=10, scope=everywhere).memories
    assert broken.id not in {m.id for m in found}
    added = other.remember("The green kettle broke this morning.", scope="home").id
    assert memory.recall(query, limit=1, scope=everywhere).memories[0].id == added

    memory.store.finish_erasure()  # compaction rewrites the fragments
    assert memory.recall(query, limit=1, scope=everywhere).memories[0].id == added
    assert len(memory.list(everywhere, 50)) == len(SHELF)
    again = memory.remember("The green kettle broke this morning.", scope="home")
    assert again.status == "exists"


def test_upkeep_asked_for_later_still_runs_after_an_earlier_run() -> None:
    """A compaction asks for cleanup seconds later; an earlier request must not swallow it."""
    runs: list[float] = []
    done = threading.Event()

    def action() -> None:
        runs.append(time.monotonic())
        if len(runs) == 1:
            later.soon(0.05)  # asked for during a run, like the cleanup after a compaction
            later.soon(0.4)
        if len(runs) == 3:
            done.set()

    later = Scheduler(action, "test-later")
    started = time.monotonic()
    later.quiet(0.01)
    assert done.wait(10), f"ran {len(runs)} times"
    later.close()
    assert runs[2] - started >= 0.4


def test_an_import_in_many_batches_keeps_order_duplicates_and_bad_lines(memory: Memory) -> None:
    # Each batch is embedded while the one before it is written (memory.import_jsonl).
    lines = [
        json.dumps({"content": f"Jar {i} on the pantry shelf holds {i} beans."}) for i in range(23)
    ]
    lines[5] = "not json"
    lines[17] = lines[2]  # a repeat, three batches after the first one
    seen: list[int] = []
    report = memory.import_jsonl(lines, batch_size=4, progress=seen.append)
    assert (report.added, report.existing) == (21, 1)
    assert [number for number, _ in report.bad_lines] == [6]
    assert sum(seen) == 23
    table = lancedb.connect(memory.settings.data_dir / "lancedb").open_table("memories")
    rows = table.search().select(["content", "vector"]).limit(None).to_arrow().to_pylist()
    stored = {row["content"]: np.asarray(row["vector"], dtype=np.float32) for row in rows}
    assert len(stored) == 21
    text = "Jar 9 on the pantry shelf holds 9 beans."  # embedded among others, and alone
    assert np.array_equal(stored[text], memory.embedder.embed([text])[0])


def test_a_big_full_text_index_takes_new_rows_in_bulk_and_still_finds_them(
    memory: Memory,
) -> None:
    # As if the index were big: new rows wait until they are a tenth of it.
    memory = tuned(memory, words_fold_always_below=0, words_unindexed_share=0.1)
    lines = [
        json.dumps({"content": f"Crate {i} in the cellar holds {i} apples."}) for i in range(50)
    ]
    memory.import_jsonl(lines)
    assert memory.store.upkeep()

    def unindexed() -> int:
        return memory.store.indexes()["content"][1]

    memory.remember("The zeppelin tickets are in the blue folder.")
    assert memory.store.upkeep()
    assert unindexed() == 1  # searched unindexed meanwhile
    assert memory.recall("zeppelin", limit=1).memories[0].content.startswith("The zeppelin")
    for i in range(5):
        memory.remember(f"Shelf {i} of the garage holds paint tins.")
    assert memory.store.upkeep()
    assert unindexed() == 0


def test_the_lexical_reference_weighs_rare_and_unseen_words_most(memory: Memory) -> None:
    memory.remember("ERR-4711 means the card issuer declined the payment.")
    for n in range(20):
        memory.remember(f"Note {n}: the payment run finished on time.")
    reference = memory.store.lexical_reference
    assert "ERR-4711" not in reference("What does ERR-4711 mean?").unseen
    assert "ERR-9999" in reference("What does ERR-9999 mean?").unseen  # "does" is, too
    assert reference("payment").total < reference("issuer").total < reference("zebra").total
    assert reference("issuer issuer").total == pytest.approx(2 * reference("issuer").total)
    assert reference("the of and").total == 0.0


def test_the_lexical_reference_is_the_same_counted_or_searched(memory: Memory) -> None:
    """Small stores count tokens in memory; bigger ones ask the full-text index, which stems
    what it is given: it must be given the words as written, not their stems (coffee ->
    coffe -> coff)."""
    for text in ["The user drinks coffee black.", "The database agreed to review it.", "Note"]:
        memory.remember(text)
    assert memory.store.upkeep_now()
    query = "coffee agreed database"
    counted = memory.store.lexical_reference(query)
    store = memory.store
    searched = Store(store.data_dir, store.model, store.dimension, limits=Limits(counted_rows=0))
    try:
        assert searched.lexical_reference(query).unseen == counted.unseen == frozenset()
        assert searched.lexical_reference(query).total == pytest.approx(counted.total, rel=0.01)
    finally:
        searched.close()


def test_bm25_in_memory_gives_lances_scores_once_its_index_holds_every_row(
    memory: Memory,
) -> None:
    """Up to Limits.counted_rows, BM25 is scored from the rows held in memory
    (search.InMemory); past it, LanceDB's full-text index scores it. Both give the same."""
    texts = [
        "The kettle kettle is on the top shelf of the kitchen.",
        "Descale the kettle with citric acid every month.",
        "The garden shed key hangs by the back door.",
        "ERR-4711 means the card issuer declined the payment.",
        "Tea bags are in the tin next to the kettle, the coffee in the jar.",
        "The office coffee machine is descaled on Fridays.",
    ]
    for text in texts:
        memory.remember(text, scope="home" if "kettle" in text else None)
    assert memory.store.upkeep_now()  # every row folded into the index
    store = memory.store
    by_lance = Store(store.data_dir, store.model, store.dimension, limits=Limits(counted_rows=0))
    vector = memory.embedder.embed(["kettle"])[0]
    try:
        for query in ("kettle", "descale kettle kettle", "ERR-4711", "coffee shelf", "zebra"):
            for where in (Filter(), Filter(scope="home"), Filter(scope="default")):
                ours = store.search(query, 100, where).finish(vector).lexical
                theirs = by_lance.search(query, 100, where).finish(vector).lexical
                assert sorted(ours.ids()) == sorted(theirs.ids()), (query, where)
                mine = dict(zip(ours.ids(), ours.scores.tolist(), strict=True))
                for memory_id, score in zip(theirs.ids(), theirs.scores.tolist(), strict=True):
                    assert mine[memory_id] == pytest.approx(score, rel=1e-5), (query, where)
    finally:
        by_lance.close()


def test_a_stamp_is_trusted_only_if_it_was_old_when_read() -> None:
    """A commit in the same tick of the file system's clock as the stamp leaves it unchanged:
    the stamp is trusted only if it was already RACY_NS old at the stat, however long the read
    after the stat took."""
    from subcog.storage.mirror import RACY_NS, trusted_stamp

    mtime = 1_000_000_000_000
    assert trusted_stamp((mtime, 7), stat_at=mtime + RACY_NS - 1) is None
    assert trusted_stamp((mtime, 7), stat_at=mtime + RACY_NS + 1) == (mtime, 7)
    assert trusted_stamp(None, stat_at=mtime + 10 * RACY_NS) is None


def test_a_store_of_stop_words_only_is_searched_without_error(memory: Memory) -> None:
    """No row holds a token: BM25's average length is 0 (a division the scoring avoids)."""
    memory.remember("the")
    memory.remember("?!")
    for query in ("the of and", "where?"):
        lexical = memory.store.search(query, 100, Filter()).finish(
            memory.embedder.embed([query])[0]
        )
        assert lexical.lexical.ids() == []  # by meaning only
        memory.recall(query)


def test_int8_vectors_in_memory_still_rank_by_exact_cosines(memory: Memory) -> None:
    """A large store keeps int8 vectors in memory; a search rescores its best candidates from
    the exact ones, so results and scores are those of float32, under every filter."""
    things = ["the kettle", "a desk lamp", "the spare keys", "my passport", "the bike pump"]
    lines = [
        json.dumps(
            {
                "content": f"Note {n}: {things[n % 5]} is in room {n % 37}, since week {n % 11}.",
                "tags": ["even" if n % 2 == 0 else "odd"],
                "scope": "home" if n % 3 else "work",
                "created_at": f"2024-{1 + n % 12:02d}-10T10:00:00Z",
            }
        )
        for n in range(700)
    ]
    assert memory.import_jsonl(lines).added == 700
    exact = tuned(memory, int8_rows=10**9)
    assert exact.store.held_as_int8() == 0
    queries = ["Where is the kettle?", "room 5 lamp", "What did I note in week 3?"]
    filters = [
        Filter(),
        Filter(scope="work"),
        Filter(tags=("odd",)),
        Filter(scope="home", since=datetime(2024, 6, 1, tzinfo=timezone.utc)),
    ]
    vectors = exact.embedder.embed(queries)
    expected = [
        [(row["id"], round(s, 5)) for row, s in exact.store.nearest(v, limit, where)]
        for v in vectors
        for where in filters
        for limit in (1, 5, 100, 700)
    ]
    small = tuned(exact, int8_rows=1)
    assert small.store.held_as_int8() == 700
    found = [
        [(row["id"], round(s, 5)) for row, s in small.store.nearest(v, limit, where)]
        for v in vectors
        for where in filters
        for limit in (1, 5, 100, 700)
    ]
    assert found == expected
    question = "Where is the kettle?"
    recalled = [(m.id, m.score) for m in small.recall(question, limit=5, scope="*").memories]
    again = tuned(small, int8_rows=10**9).recall(question, limit=5, scope="*").memories
    assert recalled == [(m.id, m.score) for m in again]


def test_int8_vectors_of_a_store_elsewhere_spill_into_the_data_dir(
    tmp_path: Path, embedder: Embedder
) -> None:
    """A SUBCOG_STORE outside the data directory, in a directory nobody may write beside:
    the exact vectors still have a place (the data directory), and searches work."""
    parent = tmp_path / "shared"
    parent.mkdir()
    store_dir = parent / "memories"
    store_dir.mkdir()
    env = {"SUBCOG_DATA_DIR": str(tmp_path / "data"), "SUBCOG_STORE": str(store_dir)}
    settings = replace(Settings.from_env(env), limits=Limits(int8_rows=1))
    parent.chmod(0o500)  # the store's own directory stays writable; its parent does not
    try:
        memory = Memory(open_store(settings), embedder, settings)
        lines = [json.dumps({"content": f"Shelf {n} holds box {n * 7}."}) for n in range(40)]
        assert memory.import_jsonl(lines).added == 40
        memory.store.close()
        memory = Memory(open_store(settings), embedder, settings)  # its rows read from disk
        assert memory.store.held_as_int8() == 40
        found = memory.recall("Which shelf holds box 70?", limit=1).memories
        assert [m.content for m in found] == ["Shelf 10 holds box 70."]
        memory.store.close()
    finally:
        parent.chmod(0o700)
