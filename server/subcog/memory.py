"""The domain service: the rules of remember, recall and forget. No MCP in here.

The CLI and the MCP server both call these methods, and both get the same checks,
results and errors (subclasses of SubcogError).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from subcog import ranking
from subcog import validation as check
from subcog.access import OWNER, Access, author_name
from subcog.config import Settings
from subcog.errors import InvalidInput, MissingIds, NotAllowed, NotFound

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from subcog.embedder import Embedder
    from subcog.storage.browse import Tallies
    from subcog.storage.damage import Damage
    from subcog.storage.results import Reference
    from subcog.storage.schema import Filter, Row
    from subcog.storage.store import Store

log = logging.getLogger(__name__)

IMPORT_BATCH = 256


class SimilarMemory(BaseModel):
    id: str
    score: float = Field(
        description="Cosine similarity to the new memory (a long one's best part)."
    )
    content: str


class Remembered(BaseModel):
    id: str
    status: Literal["created", "exists"] = Field(
        description="created: stored now; exists: the same text was already in this scope."
    )
    scope: str
    created_at: str
    similar: list[SimilarMemory] = Field(
        default_factory=list,
        description="Very similar memories already in this scope. If the new one replaces "
        "them, forget them or remember again with supersedes.",
    )
    superseded: list[str] = Field(default_factory=list, description="Ids replaced by this one.")


class RecalledMemory(BaseModel):
    id: str
    content: str
    score: float | None = Field(
        default=None, description=ranking.MEANING + " Absent when no query was given."
    )
    tags: list[str] = Field(default_factory=list, description="Absent when there are none.")
    scope: str | None = Field(default=None, description="Absent for the default scope.")
    created_at: str
    metadata: dict[str, check.MetadataValue] | None = Field(
        default=None, description="Absent when empty."
    )
    author: str | None = Field(
        default=None, description="Who stored it; absent when it was you, or is not known."
    )


class Recalled(BaseModel):
    memories: list[RecalledMemory] = Field(
        description="Best match first; newest first when no query was given."
    )
    note: str | None = Field(
        default=None,
        description="Only when the list is empty, or holds weaker matches because of filters.",
    )


class Match(BaseModel):
    id: str
    content: str
    score: float | None = Field(default=None, description="Relevance to the query, 0 to 1.")


class Forgotten(BaseModel):
    forgotten: list[str] = Field(description="Ids that were deleted.")
    missing: list[str] = Field(description="Ids that matched no memory.")
    dry_run: bool = Field(default=False, description="True: nothing was deleted, see matches.")
    matches: list[Match] = Field(
        default_factory=list, description="What the query or filter matched, best first."
    )


class StoredMemory(BaseModel):
    id: str
    content: str
    tags: list[str]
    scope: str
    created_at: str
    metadata: dict[str, check.MetadataValue]
    author: str | None = None


class Imported(BaseModel):
    added: int = 0
    existing: int = 0
    bad_lines: list[tuple[int, str]] = Field(default_factory=list)


class Damaged(BaseModel):
    """A store with files that cannot be read (see `subcog doctor`)."""

    unreadable_memories: int
    damaged_files: list[str]
    what_to_do: str


class Stats(BaseModel):
    count: int
    scopes: dict[str, int]
    data_dir: str
    store: str = Field(description="Where the memories live (SUBCOG_STORE), without secrets.")
    model: str
    model_source: str
    disk_bytes: int
    damaged: Damaged | None = Field(
        default=None, description="Present only when a file of the store cannot be read."
    )


class Page(BaseModel):
    """One page of memories, newest first, and where the next one starts (None: the end)."""

    memories: list[StoredMemory]
    next: str | None = None


class Health(BaseModel):
    """What `subcog doctor` reports of a store, as far as a running server knows it."""

    model: str
    model_source: str
    memories: int
    disk_bytes: int
    erasure_pending: bool
    damaged: Damaged | None = None


# Memories shorter than this many characters cannot exceed the model's window (a word piece
# has at least one character), so they have no later windows to embed.
WINDOWED_FROM_CHARS = 255


def _read_rows(found: Sequence[ranking.Candidate]) -> None:
    """Read the stored columns of these candidates together, search by search: one read per
    search rather than one per memory."""
    by_search: dict[int, tuple[Any, list[tuple[ranking.Candidate, int]]]] = {}
    for c in found:
        if c.origin is not None:
            search, i = c.origin
            by_search.setdefault(id(search), (search, []))[1].append((c, i))
    for search, wanted in by_search.values():
        for (c, _), row in zip(wanted, search.rows_at([i for _, i in wanted]), strict=True):
            c.given(row)


def content_hash(content: str) -> str:
    return hashlib.sha256(check.normalise_whitespace(content).encode()).hexdigest()


def _stored(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "content": row["content"],
        "tags": list(row["tags"] or []),
        "scope": row["scope"],
        "created_at": check.iso(row["created_at"]),
        "metadata": json.loads(row["metadata"] or "{}"),
        "author": row.get("author"),
    }


class Memory:
    """Long-term memory over one store and one embedding model."""

    def __init__(
        self,
        store: Store,
        embedder: Embedder | None,
        settings: Settings,
        load_model: Callable[[Settings], Embedder] | None = None,
        access: Access = OWNER,
    ) -> None:
        """Without `embedder`, `load_model` loads the model when a method first needs it: a
        command that only reads the store (list, show, context) never waits for it."""
        if embedder is None and load_model is None:
            raise TypeError("Memory needs an embedder or a way to load one")
        self.store = store
        self._embedder = embedder
        self._load_model = load_model
        self.settings = settings
        self.access = access  # who is calling: every method keeps to their scopes

    def acting_as(self, access: Access) -> Memory:
        """The same memory, for this caller: their name is each new memory's author, and every
        method keeps to the scopes they may read and write."""
        view = copy.copy(self)
        view.access = access
        return view

    def _covered(self, scope: str | None, writing: bool = False) -> list[str] | None:
        """The scopes a call naming `scope` covers for this caller: None when it may stand as
        it is (every scope is theirs, or one scope they may use); for "*", the scopes they
        may read (or write) that hold memories. NotAllowed for one scope they may not use."""
        allowed = self.access.write if writing else self.access.read
        if scope == check.ALL_SCOPES:
            if allowed is None:
                return None
            return sorted(found for found in self.store.scopes() if found in allowed)
        wanted = self._scope(scope)
        if allowed is not None and wanted not in allowed:
            raise self._refused("write to" if writing else "read", wanted)
        return None

    def _refused(self, what: str, scope: str) -> NotAllowed:
        allowed = self.access.write if what != "read" else self.access.read
        mine = ", ".join(sorted(allowed or ())) or "none"
        return NotAllowed(
            f"{self.access.name} may not {what} the scope {scope!r}; nothing was changed. "
            f"Scopes {self.access.name} may {'read' if what == 'read' else 'write'}: {mine}."
        )

    def _visible(self, row: dict[str, Any] | None) -> dict[str, Any] | None:
        """The row, if this caller may read its scope: one they may not is as if not there."""
        return row if row is not None and self.access.reads(row["scope"]) else None

    def _writable(self, ids: Sequence[str], what: str) -> list[str]:
        """Of these ids, those this caller may not see (as missing); NotAllowed if one is in
        a scope they may read but not write."""
        if self.access.everything:
            return []
        hidden = []
        for memory_id in ids:
            row = self._visible(self.store.get(memory_id))
            if row is None:
                hidden.append(memory_id)
            elif not self.access.writes(row["scope"]):
                raise self._refused(what, row["scope"])
        return hidden

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            assert self._load_model is not None
            self._embedder = self._load_model(self.settings)
        return self._embedder

    def _scope(self, scope: str | None) -> str:
        return self.settings.default_scope if scope is None else check.check_scope(scope)

    def remember(
        self,
        content: str,
        tags: Sequence[str] | None = None,
        scope: str | None = None,
        metadata: dict[str, Any] | None = None,
        supersedes: Sequence[str] | None = None,
    ) -> Remembered:
        from subcog.storage.schema import Row

        settings = self.settings
        text = check.check_content(content, settings.max_content_chars)
        tag_list = check.check_tags(tags, settings.max_tags)
        where = self._scope(scope)
        meta = check.check_metadata(metadata, settings.max_metadata_bytes)
        replacing = check.check_ids(supersedes, name="supersedes") if supersedes else []
        if not self.access.writes(where):
            raise self._refused("write to", where)
        hidden = self._writable(replacing, "supersede memories of")
        if hidden:
            raise MissingIds(sorted(hidden))
        # The store brings its in-memory copy up to date, which the write needs, meanwhile.
        refreshed = self.store.refreshing()
        vectors, windows = self.embedder.embed_memories([text])
        refreshed.result()
        row = Row(
            id=uuid.uuid4().hex,
            content=text,
            content_hash=content_hash(text),
            vector=vectors[0],
            tags=tag_list,
            scope=where,
            metadata=json.dumps(meta, ensure_ascii=False, separators=(",", ":")),
            created_at=datetime.now(timezone.utc),
            chunks=windows[0],
            author=self.access.name,
        )
        similar = self._similar(row, replacing) if self.access.reads(where) else []
        (existing,) = self.store.add_new([row], replacing=replacing)
        if existing is not None:
            return Remembered(
                id=existing["id"],
                status="exists",
                scope=where,
                created_at=check.iso(existing["created_at"]),
                superseded=[i for i in replacing if i != existing["id"]],
            )
        return Remembered(
            id=row.id,
            status="created",
            scope=where,
            created_at=check.iso(row.created_at),
            similar=similar,
            superseded=replacing,
        )

    def _similar(self, row: Row, replacing: Sequence[str]) -> list[SimilarMemory]:
        """Memories in the row's scope at least SUBCOG_NEAR_DUPLICATE similar, but not the same
        text and not being replaced: the assistant decides whether they say the same thing."""
        from subcog.storage.schema import Filter

        threshold = self.settings.near_duplicate
        near = self.store.nearest(row.vector, 3, Filter(scope=row.scope), at_least=threshold)
        return [
            SimilarMemory(id=found["id"], score=round(cosine, 4), content=found["content"])
            for found, cosine in near
            if content_hash(found["content"]) != row.content_hash and found["id"] not in replacing
        ]

    def _filter(
        self,
        tags: Sequence[str] | None,
        scope: str | None,
        since: str | None = None,
        until: str | None = None,
    ) -> Filter:
        from subcog.storage.schema import Filter

        start, end = check.check_window(since, until)
        return Filter(
            scope=None if scope == check.ALL_SCOPES else self._scope(scope),
            tags=check.check_tags(tags, self.settings.max_tags),
            since=start,
            until=end,
        )

    def recall(
        self,
        query: str | None = None,
        limit: int = 5,
        tags: Sequence[str] | None = None,
        scope: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> Recalled:
        """The memories that answer the query, best first, with calibrated scores.

        Filters are intent: without a query they list what passes them, newest first; with a
        query, filters that leave at most `limit` memories return them all, ranked; and when
        nothing clears the relevance floor, the best of what passes them comes back with a note
        saying so. Without filters, an empty list means nothing relevant is remembered."""
        top = check.check_limit(limit)
        text = check.check_query(query, required=False)
        narrowed = bool(tags or since or until or (scope not in (None, check.ALL_SCOPES)))
        scopes = self._covered(scope)
        if scopes is None:
            return self._recall(text, top, self._filter(tags, scope, since, until), narrowed)
        # "*" for a caller who may read some scopes: each searched, the best of all kept
        # (scores are on one scale: ranking.py).
        parts = [
            self._recall(text, top, self._filter(tags, one, since, until), narrowed)
            for one in scopes
        ]
        memories = [found for part in parts for found in part.memories]
        if text:
            memories.sort(key=lambda found: -(found.score or 0.0))
        else:
            memories.sort(key=lambda found: found.created_at, reverse=True)
        memories = memories[:top]
        note = None
        if not memories:
            note = ranking.NOTHING_FOUND if text else ranking.NOTHING_PASSES
        elif any(part.note == ranking.RELAXED for part in parts):
            note = ranking.RELAXED
        return Recalled(memories=memories, note=note)

    def _recall(self, text: str, top: int, where: Filter, narrowed: bool) -> Recalled:
        if not text:
            rows = self.store.recent(where, top)
            return Recalled(
                memories=[self._recalled(row) for row in rows],
                note=None if rows else ranking.NOTHING_PASSES,
            )
        few = narrowed and self.store.count_matching(where) <= top
        candidates, reference = self._candidates(text, where)
        total, unseen = reference.total, reference.unseen
        ranked = ranking.rank(candidates, text, top, total, unseen, floor=not few)
        note = None
        if not ranked.results and narrowed and candidates:
            ranked = ranking.rank(candidates, text, top, total, unseen, floor=False)
            note = ranking.RELAXED
        _read_rows(ranked.results)
        memories = [self._recalled(c.row, c.relevance) for c in ranked.results]
        if not memories:
            note = ranking.NOTHING_FOUND
        return Recalled(memories=memories, note=note)

    def _recalled(self, row: dict[str, Any], score: float | None = None) -> RecalledMemory:
        """A result as the tool shows it: empty tags and metadata, and the default scope, left
        out, so that a short answer stays short."""
        stored = _stored(row)
        return RecalledMemory(
            id=stored["id"],
            content=stored["content"],
            score=None if score is None else round(score, 3),
            tags=stored["tags"],
            scope=None if stored["scope"] == self.settings.default_scope else stored["scope"],
            created_at=stored["created_at"],
            metadata=stored["metadata"] or None,
            author=None if stored["author"] == self.access.name else stored["author"],
        )

    def _ranked(
        self, text: str, limit: int, where: Filter, diverse: bool = True
    ) -> ranking.Ranking:
        candidates, reference = self._candidates(text, where)
        return ranking.rank(candidates, text, limit, reference.total, reference.unseen, diverse)

    def _candidates(self, text: str, where: Filter) -> tuple[list[ranking.Candidate], Reference]:
        """Both searches' finds, each once, and the query's lexical reference."""
        started = time.perf_counter()
        # The full-text searches run while the query is embedded.
        searching = self.store.search(text, ranking.WEIGHTS.depth, where)
        vector: npt.NDArray[np.float32] = self.embedder.embed([text])[0]
        embedding = time.perf_counter() - started
        searched = searching.finish(vector)
        vector, lexical, semantic = searched.vector, searched.lexical, searched.semantic
        found: dict[str, ranking.Candidate] = {}
        lexical_cosines = lexical.cosines(vector)  # BM25-only finds need their cosine too
        for search, cosines in ((semantic, semantic.scores), (lexical, lexical_cosines)):
            columns = zip(search.ids(), search.scopes(), search.created(), strict=True)
            for i, (memory_id, scope, created) in enumerate(columns):
                if memory_id not in found:
                    found[memory_id] = ranking.Candidate(
                        memory_id,
                        scope,
                        created,
                        search.vectors[i],
                        float(cosines[i]),
                        partial(search.row, i),
                        origin=(search, i),
                    )
        for memory_id, bm25 in zip(lexical.ids(), lexical.scores.tolist(), strict=True):
            found[memory_id].bm25 = bm25
        done = time.perf_counter()
        log.debug(  # the searches overlap the embedding: search_ms is the rest of the time
            "recall timing embed_ms=%.3f search_ms=%.3f",
            embedding * 1000,
            (done - started - embedding) * 1000,
        )
        return list(found.values()), searched.reference

    def forget(
        self,
        ids: Sequence[str] | None = None,
        query: str | None = None,
        tags: Sequence[str] | None = None,
        scope: str | None = None,
        limit: int = 10,
        dry_run: bool | None = None,
    ) -> Forgotten:
        """Forget memories by id, or those matching a query and/or a filter.

        By id, the memories go at once unless dry_run is True. By query or filter, dry_run is
        True unless set to False: the call only shows what matches. A query deletes only
        memories above the relevance floor, best first; a filter alone, the most recent. Either
        way at most `limit` (1 to 50).
        """
        by_filter = query is not None or tags is not None or scope is not None
        if ids is not None and by_filter:
            raise InvalidInput("Pass either ids, or a query and/or tags and scope, not both.")
        if ids is not None:
            wanted = check.check_ids(ids)
            hidden = set(self._writable(wanted, "forget memories of"))
            if dry_run:
                rows = {i: self._visible(self.store.get(i)) for i in wanted}
                return Forgotten(
                    forgotten=[],
                    missing=[i for i, row in rows.items() if row is None],
                    dry_run=True,
                    matches=[self._match(row) for row in rows.values() if row is not None],
                )
            gone = self.store.delete([i for i in wanted if i not in hidden])
            deleted = set(gone)
            return Forgotten(forgotten=gone, missing=[i for i in wanted if i not in deleted])
        if query is None and tags is None:
            raise InvalidInput(
                "Say what to forget: ids from recall, a query, or tags (preview with dry_run). "
                "A scope alone would pick memories by age; to forget all of one, run "
                "`subcog forget --all --scope S` on the command line."
            )
        top = check.check_limit(limit)
        # A query searches the default scope unless told otherwise; tags alone, every scope.
        named = scope if query is not None else (scope or check.ALL_SCOPES)
        scopes = self._covered(named, writing=True)
        matches: list[Match] = []
        for one in [named] if scopes is None else scopes:
            if query is not None:
                text = check.check_query(query)
                where = self._filter(tags, one)
                ranked = self._ranked(text, top, where, diverse=False)
                matches += [self._match(c.row, c.relevance) for c in ranked.results]
            else:
                matches += [self._match(m) for m in self.list(one, top, tags)]
        if scopes is not None:  # several scopes searched: the best (or newest) of all
            if query is not None:
                matches.sort(key=lambda match: -(match.score or 0.0))
            matches = matches[:top]
        if dry_run is not False:
            return Forgotten(forgotten=[], missing=[], dry_run=True, matches=matches)
        gone = self.store.delete([m.id for m in matches])
        return Forgotten(forgotten=gone, missing=[], matches=matches)

    def forget_all(self, scope: str | None = None) -> int:
        """Forget every memory of a scope ("*" or None: of every scope); how many there were.
        For `subcog forget --all`, which asks first: the tool never does this."""
        where = self._filter(None, check.ALL_SCOPES if scope is None else scope)
        return self.store.delete_matching(where)

    @staticmethod
    def _match(memory: StoredMemory | dict[str, Any], score: float | None = None) -> Match:
        if isinstance(memory, StoredMemory):
            return Match(id=memory.id, content=memory.content, score=score)
        return Match(id=memory["id"], content=memory["content"], score=round(score or 0.0, 4))

    def import_jsonl(
        self,
        lines: Iterable[str],
        batch_size: int = IMPORT_BATCH,
        progress: Callable[[int], None] | None = None,
        bulk: bool = False,
    ) -> Imported:
        """Remember one JSON object per line: content, and optionally id, tags, scope, metadata
        and created_at (as `export` writes them). Embeds and writes in batches; a line whose
        content (in its scope) or id is already stored adds nothing, so importing twice is
        harmless. Bad lines are reported by number and the good ones still imported.

        `bulk`, for a large import by a command: the store's big indexes wait for the end,
        where the store is compacted and indexed before this returns, ready for searches."""
        if not bulk:
            return self._import(lines, batch_size, progress)
        with self.store.bulk():
            report = self._import(lines, batch_size, progress)
        self.store.upkeep_now()
        return report

    def _import(
        self, lines: Iterable[str], batch_size: int, progress: Callable[[int], None] | None
    ) -> Imported:
        from concurrent.futures import Future, ThreadPoolExecutor

        from subcog.storage.schema import Row

        report = Imported()
        pending: list[dict[str, Any]] = []  # Row fields but the vector
        # One batch is embedded while the one before it is written: a write can wait seconds
        # for the lock (upkeep holds it while it compacts), and the embedding need not.
        embedding = ThreadPoolExecutor(1, thread_name_prefix="subcog-import")
        embedded: tuple[list[dict[str, Any]], Future[Any]] | None = None

        def write(batch: list[dict[str, Any]], embedded: Any) -> None:
            vectors, windows = embedded
            rows = [
                Row(vector=vector, chunks=chunks, **fields)
                for fields, vector, chunks in zip(batch, vectors, windows, strict=True)
            ]
            results = self.store.add_new(rows)
            added = sum(result is None for result in results)
            report.added += added
            report.existing += len(results) - added
            if progress:
                progress(len(batch))

        def flush() -> None:
            nonlocal embedded
            if pending:
                batch = pending.copy()
                pending.clear()
                texts = [fields["content"] for fields in batch]
                ready, embedded = (
                    embedded,
                    (
                        batch,
                        embedding.submit(self.embedder.embed_memories, texts),
                    ),
                )
            else:
                ready, embedded = embedded, None
            if ready is not None:
                write(ready[0], ready[1].result())

        with embedding:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    pending.append(self._import_fields(line))
                except (ValueError, InvalidInput) as exc:
                    report.bad_lines.append((number, str(exc)))
                    if progress:
                        progress(1)
                if len(pending) >= batch_size:
                    flush()
            while pending or embedded is not None:
                flush()
        return report

    def _import_fields(self, line: str) -> dict[str, Any]:
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(item, dict):
            raise InvalidInput('each line must be a JSON object such as {"content": "..."}')
        text = check.check_content(item.get("content"), self.settings.max_content_chars)
        memory_id = item.get("id")
        created = check.check_time("created_at", item.get("created_at"))
        return {
            "id": uuid.uuid4().hex if memory_id is None else check.check_ids([memory_id])[0],
            "content": text,
            "content_hash": content_hash(text),
            "tags": check.check_tags(item.get("tags"), self.settings.max_tags),
            "scope": self._scope(item.get("scope")),
            "metadata": json.dumps(
                check.check_metadata(item.get("metadata"), self.settings.max_metadata_bytes),
                ensure_ascii=False,
                separators=(",", ":"),
            ),
            "created_at": created or datetime.now(timezone.utc),
            "author": author_name(item.get("author")),  # invalid: made valid, not refused
        }

    def backfill_windows(self, batch: int = 64) -> int:
        """Embed the later windows of long memories stored by an earlier subcog, which searched
        only their first 256 word pieces; returns how many memories were looked at. Safe to run
        in several processes at once (they write the same vectors)."""
        done = 0
        while not self.store.closed:
            todo = self.store.without_windows(WINDOWED_FROM_CHARS, batch)
            if not todo:
                return done
            _, windows = self.embedder.embed_memories([content for _, content in todo])
            self.store.set_windows(
                {memory_id: chunks for (memory_id, _), chunks in zip(todo, windows, strict=True)}
            )
            done += len(todo)
        return done

    def page(
        self,
        scope: str | None = None,
        tags: Sequence[str] | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 50,
        after: str | None = None,
    ) -> Page:
        """Memories passing the filters, newest first, `limit` at a time: `after` is the
        `next` of the page before (keyset paging: the 2,000th page costs what the first does).
        """
        from subcog.storage.browse import Key

        top = check.check_limit(limit)
        where = self._filter(tags, scope, since, until)
        start = None
        if after:
            when, _, memory_id = after.partition(".")
            broken = InvalidInput("That page link is broken: start again from the first page.")
            if not (when.isascii() and when.isdigit() and len(when) <= 18):
                raise broken
            start = Key(int(when), check.check_ids([memory_id])[0])
            try:
                start.moment  # noqa: B018 (a time a datetime can hold)
            except OverflowError:
                raise broken from None
        from subcog.storage.schema import micros

        rows = self.store.page(where, top + 1, start)
        memories = [StoredMemory(**_stored(row)) for row in rows[:top]]
        if len(rows) <= top:
            return Page(memories=memories)
        last = rows[top - 1]
        return Page(memories=memories, next=f"{micros(last['created_at'])}.{last['id']}")

    def similar_to(self, memory_id: str, limit: int = 5) -> list[SimilarMemory]:
        """The memories of its scope that are very similar to this one (SUBCOG_NEAR_DUPLICATE),
        most similar first: what remember reports as `similar` when it is stored."""
        from subcog.storage.schema import Filter

        stored = self.get(memory_id)
        vectors, _ = self.embedder.embed_memories([stored.content])
        near = self.store.nearest(
            vectors[0], limit + 1, Filter(scope=stored.scope), at_least=self.settings.near_duplicate
        )
        return [
            SimilarMemory(id=found["id"], score=round(cosine, 4), content=found["content"])
            for found, cosine in near
            if found["id"] != stored.id
        ][:limit]

    def set_tags(self, memory_id: str, tags: Sequence[str]) -> StoredMemory:
        """Replace a memory's tags; recall's tag filter sees them at once."""
        (wanted,) = check.check_ids([memory_id])
        if not self.store.set_tags(wanted, check.check_tags(tags, self.settings.max_tags)):
            raise NotFound(f"No memory has the id {wanted}: it may have been forgotten.")
        return self.get(wanted)

    def tallies(self) -> Tallies:
        """Memories per scope, per tag and per week."""
        return self.store.tallies()

    def health(self) -> Health:
        """Model, size, pending erasure and damage: `subcog doctor`'s report, without reading
        every file again (that is `subcog doctor`'s job; the damage is what this process met)."""
        return Health(
            model=self.embedder.name,
            model_source=f"{self.embedder.source.kind}: {self.embedder.source.location}",
            memories=self.store.count(),
            disk_bytes=self.store.disk_bytes(),
            erasure_pending=self.store.erasure_pending(),
            damaged=_damaged(self.store.damage()),
        )

    def export_jsonl(self) -> Iterator[str]:
        """Every memory as one JSON line, oldest first; `import_jsonl` reads them back."""
        for row in self.store.all_rows():
            stored = _stored(row)
            if stored["author"] is None:  # stored before authors were kept, or imported
                del stored["author"]
            yield json.dumps(stored, ensure_ascii=False)

    def get(self, memory_id: str) -> StoredMemory:
        (wanted,) = check.check_ids([memory_id])
        row = self._visible(self.store.get(wanted))
        if row is None:
            raise NotFound(f"No memory has the id {wanted}. Call recall to find ids.")
        return StoredMemory(**_stored(row))

    def list(
        self,
        scope: str | None = None,
        limit: int = 20,
        tags: Sequence[str] | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> list[StoredMemory]:
        """The most recent memories that pass the filters, newest first; `since` and `until`
        take what recall's do."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidInput("limit must be a whole number of at least 1.")
        scopes = self._covered(scope)
        if scopes is None:
            where = self._filter(tags, scope, since, until)
            return [StoredMemory(**_stored(row)) for row in self.store.recent(where, limit)]
        rows = [
            row
            for one in scopes
            for row in self.store.recent(self._filter(tags, one, since, until), limit)
        ]
        rows.sort(key=lambda row: row["created_at"], reverse=True)
        return [StoredMemory(**_stored(row)) for row in rows[:limit]]

    def count(self, where: Filter | None = None) -> int:
        """How many memories pass the filter (all, without one)."""
        return self.store.count() if where is None else self.store.count_matching(where)

    def damaged(self) -> Damage:
        """What this process found it cannot read in the store (falsy when all is well)."""
        return self.store.damage()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the store's upkeep and wait for a pass in progress, at most `timeout` seconds:
        for a process about to exit."""
        self.store.close(timeout)

    def finish_erasure(self) -> bool:
        """Erase forgotten memories from the files before returning, for a process about to
        exit; True when nothing is left to erase (else the next process finishes it)."""
        return not self.store.erasure_pending() or self.store.finish_erasure()

    def stats(self) -> Stats:
        scopes = self.store.scopes()
        if self.access.read is not None:  # only what this caller may read is counted
            scopes = {scope: n for scope, n in scopes.items() if self.access.reads(scope)}
        return Stats(
            count=self.store.count() if self.access.read is None else sum(scopes.values()),
            scopes=scopes,
            data_dir=str(self.settings.data_dir),
            store=self.settings.store.shown,
            model=self.embedder.name,
            model_source=f"{self.embedder.source.kind}: {self.embedder.source.location}",
            disk_bytes=self.store.disk_bytes(),
            damaged=_damaged(self.store.damage()),
        )


def _damaged(damage: Damage) -> Damaged | None:
    if not damage:
        return None
    return Damaged(
        unreadable_memories=damage.unreadable,
        damaged_files=[file.describe() for file in damage.files],
        what_to_do=damage.summary(),
    )


def open_memory(settings: Settings, check_model: bool = True) -> Memory:
    """Open the store; the model loads when a method first needs it (seconds on a cold
    start). `check_model=False`, for a reader that compares no vectors (`subcog context`):
    a store built with another model is read all the same."""
    from subcog.embedder import load_embedder

    return Memory(open_store(settings, check_model), None, settings, load_model=load_embedder)


def open_store(settings: Settings, check_model: bool = True, server: bool = False) -> Store:
    """The store; for a server, with upkeep in child processes (storage/aside.py)."""
    from subcog.embedder import model_spec
    from subcog.storage.store import Store

    dimension = model_spec(settings.model)[0]
    return Store(
        settings.data_dir,
        settings.model,
        dimension,
        check_model=check_model,
        limits=settings.limits,
        upkeep_aside=server,
        location=settings.store,
        refresh_s=settings.refresh_s,
    )


def reindex(
    settings: Settings,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = 256,
) -> int:
    """Re-embed every memory with the configured model; how many were re-embedded (see
    storage/reindex.py). An interrupted run resumes where it stopped."""
    from subcog.embedder import load_embedder

    embedder = load_embedder(settings)
    store = open_store(settings, check_model=False)
    job = store.reindexing()
    if not job.start():
        return 0
    total = store.count()

    def fill() -> None:
        while True:
            ids, texts = job.todo(batch_size)
            if not ids:
                return
            vectors, windows = embedder.embed_memories(texts)
            job.write(ids, vectors, windows)
            if progress:
                progress(len(ids), total)

    fill()  # while servers keep serving
    with job.switching():  # the rows added meanwhile, and the switch
        fill()
    return total
