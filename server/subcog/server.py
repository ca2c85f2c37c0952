"""The MCP edge: three tools over the domain service, and the background start-up.

The server answers ``initialize`` at once. lancedb, fastembed and the model load in
background threads; a tool call that comes before they are ready waits at most
SUBCOG_LOAD_TIMEOUT seconds and then gets a ToolError that says what is loading.
"""

# No "from __future__ import annotations": the SDK evaluates the tool signatures, which
# refer to this call's settings.

import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar, cast

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.types import CallToolResult, TextContent, Tool, ToolAnnotations
from pydantic import BaseModel, Field

from subcog import __version__
from subcog import validation as check
from subcog.access import CALLER, OWNER, Access, author_name
from subcog.config import Settings
from subcog.embedder import Embedder, load_embedder
from subcog.errors import InvalidInput, NotAllowed, NotFound, NotReady, SubcogError
from subcog.internals import lowlevel_server
from subcog.memory import Forgotten, Memory, Recalled, Remembered, open_store

if TYPE_CHECKING:
    from subcog.storage.store import Store  # imports lancedb: never at start-up

log = logging.getLogger(__name__)
T = TypeVar("T")

INSTRUCTIONS = (
    "Long-term memory that persists across conversations. Call recall before answering "
    "questions that may depend on what the user told you earlier. Call remember for durable "
    "facts, preferences and decisions, one self-contained fact per memory. Call forget with "
    "ids from recall when the user asks you to forget something or a fact is wrong."
)


class Loading(Generic[T]):
    """A value built by a background thread; ``wait`` waits for it a bounded time."""

    def __init__(self, what: str, build: Callable[[], T]) -> None:
        self.what = what
        self._build = build
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._value: T | None = None
        self._error: BaseException | None = None
        self._started_at: float | None = None

    def start(self) -> None:
        with self._lock:
            if self._started_at is not None:
                return
            self._started_at = time.monotonic()
            threading.Thread(target=self._run, name=f"subcog-load-{self.what}", daemon=True).start()

    def _run(self) -> None:
        try:
            self._value = self._build()
            log.info("%s ready in %.2f s", self.what, time.monotonic() - (self._started_at or 0))
        except BaseException as exc:
            self._error = exc
            if not isinstance(exc, SubcogError):
                log.error("loading %s failed", self.what, exc_info=exc)
        finally:
            self._done.set()

    def wait(self, deadline: float) -> bool:
        """Wait until the value is built or failed, or the deadline passes; True if done."""
        self.start()
        return self._done.wait(max(0.0, deadline - time.monotonic()))

    @property
    def started(self) -> bool:
        return self._started_at is not None

    def ready(self) -> bool:
        """Whether the value is built (and did not fail)."""
        return self._done.is_set() and self._error is None and self._value is not None

    def seconds_so_far(self) -> float:
        started = self._started_at
        return 0.0 if started is None else time.monotonic() - started

    def get(self) -> T:
        """The value, once wait() returned True. A failure is raised, and the next call retries."""
        if self._error is not None:
            error = self._error
            self._retry()
            if isinstance(error, SubcogError):
                raise error
            raise SubcogError(f"Loading {self.what} failed: {error}") from error
        assert self._value is not None
        return self._value

    def _retry(self) -> None:
        """Forget a failure, so the next call tries again (the user may have fixed it)."""
        with self._lock:
            if self._done.is_set() and self._error is not None:
                self._done.clear()
                self._error = None
                self._started_at = None


# At exit, how long a server waits for loading to finish and a pending erasure to complete
# (Limits.keep_old_versions_s and a pass or two of upkeep; minutes only on huge stores, which
# then leave it to the next process).
EXIT_WAIT_S = 20.0


class Service:
    """Starts loading the store and the model, and hands out the Memory once both are ready.
    `load_model` is how the model loads (a test hands out the one it loaded already)."""

    def __init__(
        self,
        settings: Settings,
        load_model: Callable[[Settings], Embedder] = load_embedder,
    ) -> None:
        self.settings = settings
        self.store = Loading(
            "the memory store", lambda: _watched(open_store(settings, server=True))
        )
        self.embedder = Loading("the embedding model", lambda: load_model(settings))
        self._memory: Memory | None = None
        self._making = threading.Lock()

    def start(self) -> None:
        self.store.start()
        self.embedder.start()

    def close(self, timeout: float = EXIT_WAIT_S) -> None:
        """For a server about to exit: let what is loading finish (a thread inside ONNX Runtime
        or Lance when the interpreter shuts down can abort the process), erase what was
        forgotten and not yet erased (or leave it to the next process, if the store stays
        busy), and stop the store's upkeep."""
        deadline = time.monotonic() + timeout
        for part in (self.embedder, self.store):
            if part.started:
                part.wait(deadline)
        if self.store.ready():
            store = self.store.get()
            if store.erasure_pending():
                store.finish_erasure(timeout=max(0.0, deadline - time.monotonic()))
            store.close()

    def memory(self) -> Memory:
        with self._making:  # two first calls at once make one Memory, one backfill
            return self._memory_now()

    def _memory_now(self) -> Memory:
        if self._memory is None:
            deadline = time.monotonic() + self.settings.load_timeout
            loading = [part for part in (self.store, self.embedder) if not part.wait(deadline)]
            if loading:
                waited = max(part.seconds_so_far() for part in loading)
                raise NotReady(
                    f"subcog is still loading {' and '.join(part.what for part in loading)} "
                    f"({waited:.0f} s so far). Retry this call in a few seconds."
                )
            self._memory = Memory(self.store.get(), self.embedder.get(), self.settings)
            threading.Thread(
                target=_backfill, args=(self._memory,), name="subcog-windows", daemon=True
            ).start()
        return self._memory


def _backfill(memory: Memory) -> None:
    """Long memories stored by an earlier subcog get their later windows embedded."""
    try:
        done = memory.backfill_windows()
    except Exception:
        log.exception("embedding the windows of earlier long memories failed")
        return
    if done:
        log.info("embedded the later windows of %d earlier memories", done)


def _watched(store: "Store") -> "Store":
    store.watch()  # a server lives long: it also finishes upkeep that others asked for
    # Rows are read into memory while loading, not in the first recall (what that read takes:
    # benchmarks/README.md, "Design figures behind the code").
    store.warm()
    return store


@contextmanager
def _tool_errors(tool: str) -> Iterator[None]:
    """Map domain errors to ToolError; other failures are logged with a traceback."""
    try:
        yield
    except SubcogError as exc:
        raise ToolError(str(exc)) from exc
    except ToolError:
        raise
    except Exception as exc:
        log.exception("%s failed", tool)
        raise ToolError(
            f"{tool} failed unexpectedly ({type(exc).__name__}: {str(exc)[:200]}). "
            "The details are in subcog's log on stderr."
        ) from exc


def _result(value: BaseModel) -> CallToolResult:
    """Structured content plus the same JSON, compact, as text: the model's context is dear.
    Optional fields at their defaults (no similar memories, not a dry run) are left out."""
    return CallToolResult(
        content=[TextContent(type="text", text=value.model_dump_json(exclude_defaults=True))],
        structured_content=value.model_dump(mode="json", exclude_defaults=True),
    )


Tags = Annotated[
    list[str],
    Field(description="Labels, each 1-64 letters, digits or . _ : / @ + # -"),
]
Scope = Annotated[
    str | None,
    Field(description="Namespace, e.g. a project name. Omit for the default scope."),
]


def compact_schema(schema: dict[str, Any], descriptions: bool = True) -> dict[str, Any]:
    """A JSON schema as the tool list sends it, meaning the same for what the tools take and
    return, in fewer bytes: without pydantic's titles (the property names again); an optional
    parameter as its type alone, not "that or null" (a null argument counts as not given, and
    results leave out what is null); and without descriptions where `descriptions` is false
    (the results: what a model must know of them is in the tool's description)."""
    return cast("dict[str, Any]", _compact(schema, descriptions))


def _compact(node: Any, descriptions: bool) -> Any:
    if isinstance(node, list):
        return [_compact(item, descriptions) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, str) and (
            key == "title" or (key == "description" and not descriptions)
        ):
            continue
        if key == "properties" and isinstance(value, dict):  # names here are not keywords
            out[key] = {name: _compact(spec, descriptions) for name, spec in value.items()}
        else:
            out[key] = _compact(value, descriptions)
    forms = out.get("anyOf")
    if isinstance(forms, list):
        others = [form for form in forms if form != {"type": "null"}]
        if len(others) == 1 < len(forms) and out.get("default", ...) is None:
            del out["anyOf"], out["default"]
            out = {**others[0], **out}
        elif all(isinstance(form, dict) and set(form) == {"type"} for form in forms):
            del out["anyOf"]
            out["type"] = [form["type"] for form in forms]
    return out


class SubcogServer(MCPServer):
    """MCPServer, on stdio through subcog.stdio's transport, whose tools take exactly the
    arguments their schemas name: others are refused, and so are values of another type ("5"
    for a number), which the SDK would coerce. The errors are in subcog's words."""

    _schemas: dict[str, dict[str, Any]] | None = None

    async def list_tools(self) -> list[Tool]:
        """The tools as clients see them. Every conversation pays for this list in context, so
        the schemas are sent compact (`compact_schema`); arguments are checked against the full
        ones."""
        return [
            tool.model_copy(
                update={
                    "input_schema": compact_schema(tool.input_schema),
                    "output_schema": compact_schema(tool.output_schema, descriptions=False)
                    if tool.output_schema is not None
                    else None,
                }
            )
            for tool in await self._strict_tools()
        ]

    async def _strict_tools(self) -> list[Tool]:
        tools = await super().list_tools()
        for tool in tools:
            tool.input_schema = {**tool.input_schema, "additionalProperties": False}
        return tools

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        if self._schemas is None:
            self._schemas = {tool.name: tool.input_schema for tool in await self._strict_tools()}
        schema = self._schemas.get(name)
        if schema is not None and isinstance(arguments, dict):
            # An optional argument sent as null is an argument not sent: its default applies
            # (the list parameters are plain arrays in the schemas, not "array or null").
            required = set(schema.get("required", ()))
            arguments = {k: v for k, v in arguments.items() if v is not None or k in required}
        if schema is not None:
            try:
                check.check_arguments(name, schema, arguments)
            except InvalidInput as exc:
                raise ToolError(str(exc)) from None
        return await super().call_tool(name, arguments, context)

    async def run_stdio_async(self) -> None:
        lowlevel = lowlevel_server(self)
        if lowlevel is None:  # an SDK laid out otherwise: its own transport
            await super().run_stdio_async()
            return
        from subcog.stdio import serve_stdio

        async with serve_stdio() as (read_stream, write_stream):
            await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())


def _client_name(ctx: Context | None) -> str | None:
    """The name the client gave in `initialize` (clientInfo), made fit to be an author
    ("Visual Studio Code": "Visual-Studio-Code"), if any."""
    try:
        params = None if ctx is None else ctx.session.client_params
    except (ValueError, AttributeError):  # outside a request
        return None
    return None if params is None else author_name(params.client_info.name)


def build_server(
    settings: Settings | None = None, service: Service | None = None, http: bool = False
) -> MCPServer:
    """The MCP server. `http`: every call must come through web.BearerAuth, which names its
    caller; over stdio (and in-process) the caller is the owner, named by their client."""
    settings = settings or Settings.from_env()
    service = service or Service(settings)

    def caller(ctx: Context | None) -> Access:
        found = CALLER.get()
        if found is not None:
            return found
        if http:  # fail closed: a call that no token named may do nothing
            raise NotAllowed("This call carries no valid token.")
        return OWNER.named(_client_name(ctx))

    def memory_for(ctx: Context | None) -> Memory:
        return service.memory().acting_as(caller(ctx))

    @asynccontextmanager
    async def lifespan(_server: MCPServer) -> AsyncIterator[None]:
        service.start()  # returns at once: the handshake never waits for the model
        yield

    server = SubcogServer(
        "subcog",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
    )

    @server.tool(
        description="Store one fact; the same text is stored once per scope. similar names "
        "near-duplicates: supersede outdated ones.",
        # Destructive: supersedes deletes the memories it names. Not idempotent for the same
        # reason (a second call finds them gone).
        annotations=ToolAnnotations(
            title="Remember", read_only_hint=False, destructive_hint=True, idempotent_hint=False
        ),
    )
    def remember(
        content: Annotated[
            str,
            Field(
                description="The fact to store, self-contained and verbatim.",
                min_length=1,
                max_length=settings.max_content_chars,
            ),
        ],
        tags: Annotated[Tags, Field(max_length=settings.max_tags)] = [],  # noqa: B006
        scope: Scope = None,
        metadata: Annotated[
            dict[str, str | int | float | bool] | None,
            Field(description='Small key-value details, e.g. {"source": "chat"}.'),
        ] = None,
        supersedes: Annotated[
            list[str],
            Field(
                description="Ids of memories this one replaces (a fact that changed); they are "
                "deleted in the same step.",
                max_length=check.MAX_IDS,
            ),
        ] = [],  # noqa: B006
        ctx: Context = None,  # type: ignore[assignment]  # the SDK passes it
    ) -> Annotated[CallToolResult, Remembered]:
        # Lists are plain arrays in the schemas, never "array or null": clients that build
        # arguments from a schema (the Inspector's --tool-arg) then send them as arrays.
        with _tool_errors("remember"):
            memory = memory_for(ctx)
            return _result(memory.remember(content, tags, scope, metadata, supersedes or None))

    @server.tool(
        description="Find memories by meaning and exact words, best first; score 0.6+ is "
        "strong, 0.4-0.6 related.",
        annotations=ToolAnnotations(title="Recall", read_only_hint=True, open_world_hint=False),
    )
    def recall(
        query: Annotated[
            str,
            Field(
                description="What to look for, in words. Leave it out to list what passes the "
                "filters, newest first.",
                max_length=check.MAX_QUERY_CHARS,
            ),
        ] = "",
        limit: Annotated[
            int,
            Field(
                description="How many memories to return.", ge=check.MIN_LIMIT, le=check.MAX_LIMIT
            ),
        ] = 5,
        tags: Annotated[
            Tags,
            Field(description="Only memories with all these tags.", max_length=settings.max_tags),
        ] = [],  # noqa: B006
        scope: Annotated[
            str | None,
            Field(description='Namespace to search; "*" searches all. Omit for the default.'),
        ] = None,
        since: Annotated[
            str | None,
            Field(
                description="Only memories stored since then: ISO-8601 (2025-01-31) or words "
                "(yesterday, last week, 3 days ago, 2026-11, Monday)."
            ),
        ] = None,
        until: Annotated[
            str | None, Field(description="Only memories stored until then; as since.")
        ] = None,
        ctx: Context = None,  # type: ignore[assignment]
    ) -> Annotated[CallToolResult, Recalled]:
        with _tool_errors("recall"):
            memory = memory_for(ctx)
            return _result(memory.recall(query, limit, tags or None, scope, since, until))

    @server.tool(
        description="Delete memories for good: by ids at once, or by query or tags after a "
        "preview (matches) unless dry_run is false.",
        annotations=ToolAnnotations(
            title="Forget", read_only_hint=False, destructive_hint=True, idempotent_hint=True
        ),
    )
    def forget(
        ids: Annotated[
            list[str],
            Field(
                description="Ids of memories to delete, as returned by remember or recall.",
                max_length=check.MAX_IDS,
            ),
        ] = [],  # noqa: B006
        query: Annotated[
            str | None,
            Field(
                description="Instead of ids: forget memories relevant to this query.",
                max_length=check.MAX_QUERY_CHARS,
            ),
        ] = None,
        tags: Annotated[
            Tags,
            Field(description="Instead of ids: only memories with all these tags."),
        ] = [],  # noqa: B006
        scope: Annotated[
            str | None,
            Field(description='Instead of ids: only this scope ("*" for all).'),
        ] = None,
        limit: Annotated[
            int,
            Field(description="Most memories a query or filter forgets.", ge=1, le=check.MAX_LIMIT),
        ] = 10,
        dry_run: Annotated[
            bool | None,
            Field(
                description="Preview without deleting. Defaults to true for a query or filter, "
                "false for ids."
            ),
        ] = None,
        ctx: Context = None,  # type: ignore[assignment]
    ) -> Annotated[CallToolResult, Forgotten]:
        with _tool_errors("forget"):
            memory = memory_for(ctx)
            return _result(memory.forget(ids or None, query, tags or None, scope, limit, dry_run))

    @server.resource(
        "memory://stats",
        name="stats",
        description="How many memories, in which scopes; the model, data dir and disk size.",
        mime_type="application/json",
    )
    def stats() -> str:
        with _resource_errors("memory://stats"):
            return memory_for(None).stats().model_dump_json(exclude_none=True)

    @server.resource(
        "memory://recent",
        name="recent",
        description=f"The {RECENT} most recent memories in every scope, newest first.",
        mime_type="application/json",
    )
    def recent() -> str:
        with _resource_errors("memory://recent"):
            memories = memory_for(None).list(check.ALL_SCOPES, RECENT)
            return json.dumps([m.model_dump() for m in memories], ensure_ascii=False)

    @server.resource(
        "memory://{memory_id}",
        name="memory",
        description="One memory by id.",
        mime_type="application/json",
    )
    def one_memory(memory_id: str, ctx: Context = None) -> str:  # type: ignore[assignment]
        uri = f"memory://{memory_id}"
        with _resource_errors(uri):
            try:
                return memory_for(ctx).get(memory_id).model_dump_json()
            except (NotFound, InvalidInput) as exc:
                raise ResourceNotFoundError(f"{uri}: {exc}") from exc

    @server.prompt(
        name="recall_first",
        title="Recall before answering",
        description="Answer a question after recalling what is remembered about its topic.",
    )
    def recall_first(question: str) -> str:
        return (
            "Before you answer, call the recall tool with a short query about the topic of the "
            "question below, and again with other wording if nothing relevant comes back. Use "
            "what you find, say which remembered facts you relied on, and say so plainly if "
            "nothing relevant is remembered. If the answer reveals a lasting fact or "
            f"preference, offer to remember it.\n\nQuestion: {question}"
        )

    @server.prompt(
        name="remember_conversation",
        title="Remember this conversation",
        description="Store the lasting facts, preferences and decisions from this conversation.",
    )
    def remember_conversation() -> str:
        return (
            "Review our conversation so far. For each lasting fact, preference, decision or "
            "commitment worth knowing in a future conversation, call remember once, with one "
            "self-contained sentence that names who or what it is about. Skip small talk and "
            "anything already remembered (call recall first if unsure). If something remembered "
            "earlier is now wrong, forget it by id. Then list what you stored."
        )

    return server


RECENT = 20


@contextmanager
def _resource_errors(uri: str) -> Iterator[None]:
    """Resource reads report loading and store problems as the protocol's resource errors."""
    try:
        yield
    except ResourceError:
        raise
    except SubcogError as exc:
        raise ResourceError(f"{uri}: {exc}") from exc
