"""The command line. Every command but serve calls the same domain service as the server."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from subcog import __version__
from subcog import validation as check
from subcog.config import Settings
from subcog.errors import (
    InvalidInput,
    InvalidSetting,
    ModelMismatch,
    ModelUnavailable,
    NoSpace,
    NotFound,
    StoreBusy,
    SubcogError,
    full_disk,
)

if TYPE_CHECKING:
    from subcog.memory import Memory, RecalledMemory, StoredMemory

log = logging.getLogger("subcog")

# name -> one-line help; the README's table must document each, with every option (a test).
COMMANDS = {
    "serve": "Serve MCP over stdio (the default), or streamable HTTP with --transport http.",
    "remember": "Store a memory.",
    "recall": "Find memories by meaning.",
    "forget": "Delete memories by id, or preview and delete what a query or tag matches.",
    "show": "Print one memory, with its tags, metadata and date.",
    "list": "Show the most recent memories.",
    "context": "Print a compact block of a scope's recent memories, for an assistant's start.",
    "stats": "Count, scopes, data dir, model and disk size.",
    "doctor": "Check the model, read every file of the store, and print every path used.",
    "repair": "Rebuild a damaged store from every memory that can be read; keep the bad files.",
    "import": "Remember every line of a JSONL file, in batches; importing twice adds nothing.",
    "export": "Write every memory as JSONL: id, content, tags, scope, metadata, created_at.",
    "reindex": "Re-embed every memory with the configured model (SUBCOG_MODEL).",
    "completion": "Print a shell completion script: bash or zsh.",
}
# Commands whose output is a result a script may want as JSON. serve speaks JSON-RPC, export
# writes JSON lines anyway, completion prints a script.
WITHOUT_JSON = {"serve", "export", "completion"}

# Exit codes (README, "Command line"). argparse exits with 2 for a malformed command line too.
EXIT_PARTLY = 1  # it ran, but part of it failed: ids not found, bad lines in an import
EXIT_INVALID = 2  # an argument or input was refused; nothing was changed
EXIT_MODEL = 3  # the embedding model could not be loaded
EXIT_STORE = 4  # the store: held by another process, built with another model, or damaged
EXIT_NO_SPACE = 5  # the disk is full
EXIT_FILE = 6  # a file could not be read or written
EXIT_INTERRUPTED = 130

# `subcog context`: what it prints by default, and how long it waits for a store another
# process holds (a session-start hook must not keep the session waiting).
CONTEXT_LIMIT = 20
CONTEXT_MAX_CHARS = 2000
CONTEXT_LINE_CHARS = 300
CONTEXT_LOCK_WAIT_S = 2.0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: use 1 to 65535")
    return port


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _pair(text: str) -> tuple[str, check.MetadataValue]:
    """K=V for --metadata: a number or true/false when V is exactly one in JSON, else text
    (so 1.10 and 007 stay text)."""
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    try:
        parsed = json.loads(value)
    except ValueError:
        return key, value
    if isinstance(parsed, (bool, int, float)) and json.dumps(parsed) == value:
        return key, parsed
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="subcog", description="Long-term semantic memory for AI assistants, over MCP."
    )
    parser.add_argument("--version", action="version", version=f"subcog {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in COMMANDS.items():
        command = commands.add_parser(name, help=text, description=text)
        if name not in WITHOUT_JSON:
            command.add_argument("--json", action="store_true", help="print JSON")
    sub = commands.choices
    tag: dict[str, Any] = {"action": "append", "default": None, "metavar": "T"}
    since = "ISO-8601, or words: yesterday, 3 days ago, 2026-11"

    sub["serve"].add_argument(
        "--transport", choices=["stdio", "http"], default="stdio", help="default: stdio"
    )
    sub["serve"].add_argument("--host", default="127.0.0.1", help="HTTP only (default 127.0.0.1)")
    sub["serve"].add_argument("--port", type=_port, default=8765, help="HTTP only (default 8765)")

    sub["remember"].add_argument("text", help="the fact to remember")
    sub["remember"].add_argument("--tag", **tag, help="a tag (repeatable)")
    sub["remember"].add_argument("--scope", help="namespace (default: SUBCOG_SCOPE or 'default')")
    sub["remember"].add_argument(
        "--metadata", action="append", type=_pair, default=[], metavar="K=V", help="repeatable"
    )
    sub["remember"].add_argument(
        "--supersedes", action="append", metavar="ID", help="forget this one (repeatable)"
    )

    sub["recall"].add_argument(
        "query", nargs="?", default="", help="leave out to list what passes the filters"
    )
    sub["recall"].add_argument("--limit", type=_whole, default=5, help="1 to 50 (default 5)")
    sub["recall"].add_argument("--tag", **tag, help="required tag (repeatable)")
    sub["recall"].add_argument("--scope", help="namespace, or '*' for all")
    sub["recall"].add_argument("--since", help=since)
    sub["recall"].add_argument("--until", help="as --since")

    forget = sub["forget"]
    forget.add_argument("ids", nargs="*", metavar="ID", help="deleted at once")
    forget.add_argument("--query", help="preview what this matches (delete with --yes)")
    forget.add_argument("--tag", **tag, help="preview the newest with this tag (repeatable)")
    forget.add_argument("--scope", help="with --query or --tag: only this scope; with --all too")
    forget.add_argument("--limit", type=_whole, default=10, help="--query/--tag: 1 to 50")
    forget.add_argument("--dry-run", action="store_true", help="only show what would go")
    forget.add_argument(
        "--yes", action="store_true", help="delete what --query/--tag match; --all without asking"
    )
    forget.add_argument(
        "--all", action="store_true", help="every memory (of --scope if given), after asking"
    )

    sub["show"].add_argument("id", metavar="ID")

    sub["list"].add_argument(
        "--scope", help="namespace, or '*' for all (default: all)", default="*"
    )
    sub["list"].add_argument("--limit", type=_whole, default=20, help="default 20")
    sub["list"].add_argument("--tag", **tag, help="required tag (repeatable)")
    sub["list"].add_argument("--since", help=since)
    sub["list"].add_argument("--until", help="as --since")

    sub["context"].add_argument("--scope", help="namespace, or '*' for all (default: SUBCOG_SCOPE)")
    sub["context"].add_argument(
        "--limit", type=_whole, default=CONTEXT_LIMIT, help=f"default {CONTEXT_LIMIT}"
    )
    sub["context"].add_argument(
        "--max-chars", type=_whole, default=CONTEXT_MAX_CHARS, help=f"default {CONTEXT_MAX_CHARS}"
    )

    sub["import"].add_argument("file", type=Path, help="JSONL: one object per line, with content")
    sub["export"].add_argument("file", type=Path, nargs="?", help="default: standard output")
    sub["completion"].add_argument("shell", choices=["bash", "zsh"])
    return parser


def _print_json(value: object) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


def _big_blocks_back_to_the_system() -> None:
    """glibc serves a block of 128 kB or more with a mapping of its own, returned to the system
    when freed, until a freed one raises that threshold to its size (up to 32 MB): from then on
    such blocks come from the heap, which keeps what is freed. Reading 100,000 memories
    allocates and frees many of them; with the threshold fixed, the peak RSS of that read is
    lower (benchmarks/README.md, "Design figures behind the code"). A no-op elsewhere than on
    glibc."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return  # not glibc
    m_mmap_threshold = -3
    mallopt(m_mmap_threshold, 128 * 1024)


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    """Run a command. `settings`, for a program that runs subcog with settings of its own
    (a test's storage limits); else they come from the environment."""
    args = build_parser().parse_args(argv)
    command = args.command or "serve"
    try:
        return _main(command, args, settings)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except InvalidInput as exc:
        return _fail(str(exc), EXIT_INVALID)
    except InvalidSetting as exc:
        return _fail(str(exc), EXIT_INVALID)
    except ModelUnavailable as exc:
        return _fail(str(exc), EXIT_MODEL)
    except (ModelMismatch, StoreBusy) as exc:
        return _fail(str(exc), EXIT_STORE)
    except NoSpace as exc:
        return _fail(str(exc), EXIT_NO_SPACE)
    except SubcogError as exc:
        return _fail(str(exc), EXIT_PARTLY)
    except Exception as exc:  # a user's situation, not a bug: one sentence, no traceback
        if full_disk(exc):
            where = _written_under(command, args)
            return _fail(f"No space left on device: free space under {where}", EXIT_NO_SPACE)
        if isinstance(exc, OSError):
            return _fail(_os_error(exc), EXIT_FILE)
        log.debug("unexpected error", exc_info=True)
        return _fail(
            f"unexpected error ({type(exc).__name__}: {exc}). Run again with "
            "SUBCOG_LOG_LEVEL=DEBUG to see where, and report it.",
            EXIT_PARTLY,
        )


def _fail(sentence: str, code: int) -> int:
    print(f"subcog: {sentence}", file=sys.stderr)
    return code


def _written_under(command: str, args: argparse.Namespace) -> Path:
    if command == "export" and args.file is not None:
        return Path(args.file).resolve().parent
    return Settings.from_env().data_dir


def _os_error(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    return f"{exc.filename}: {what}" if exc.filename else what


def _checked(command: str, args: argparse.Namespace, settings: Settings) -> None:
    """Check a command's arguments before the model and the store load (seconds), with the
    checks the tools use. Raises InvalidInput, or OSError for a file that cannot be used."""
    if getattr(args, "scope", None) not in (None, check.ALL_SCOPES):
        check.check_scope(args.scope)
    if getattr(args, "tag", None):
        check.check_tags(args.tag, settings.max_tags)
    if getattr(args, "since", None) or getattr(args, "until", None):
        check.check_window(args.since, args.until)
    if command == "remember":
        check.check_content(args.text, settings.max_content_chars)
        check.check_metadata(dict(args.metadata), settings.max_metadata_bytes)
        if args.supersedes:
            check.check_ids(args.supersedes, name="--supersedes")
    elif command == "recall":
        check.check_query(args.query, required=False)
        check.check_limit(args.limit)
    elif command == "forget":
        _checked_forget(args)
    elif command == "show":
        check.check_ids([args.id])
    elif command in ("list", "context") and args.limit < 1:
        raise InvalidInput("--limit must be at least 1.")
    elif command == "context" and args.max_chars < 200:
        raise InvalidInput("--max-chars must be at least 200.")
    elif command == "import":
        with args.file.open(encoding="utf-8"):  # exists, is a file, may be read
            pass
    elif command == "export" and args.file is not None:
        target = Path(args.file)
        if target.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", str(target))
        folder = target.resolve().parent
        if not folder.is_dir():
            raise FileNotFoundError(errno.ENOENT, "no such directory", str(folder))
        if not os.access(folder, os.W_OK):
            raise PermissionError(errno.EACCES, "the directory cannot be written", str(folder))


def _checked_forget(args: argparse.Namespace) -> None:
    by_filter = args.query is not None or args.tag is not None
    if args.all and (args.ids or by_filter):
        raise InvalidInput("--all forgets every memory (of --scope); give no ids, query or tag.")
    if args.ids and (by_filter or args.scope is not None):
        raise InvalidInput("Give either ids, or --query and/or --tag (and --scope), not both.")
    if not (args.all or args.ids or by_filter) and args.scope is not None:
        raise InvalidInput(
            "A scope alone would pick memories by age: add --query or --tag, or run `subcog "
            f"forget --all --scope {args.scope}` to forget all of it."
        )
    if not (args.all or args.ids or by_filter):
        raise InvalidInput(
            "Say what to forget: ids (see `subcog recall`), --query or --tag to preview what "
            "they match, or --all."
        )
    if args.ids:
        check.check_ids(args.ids)
    if args.query is not None:
        check.check_query(args.query)
    check.check_limit(args.limit)


def _main(command: str, args: argparse.Namespace, given: Settings | None) -> int:
    os.umask(0o077)  # whatever subcog creates is readable by its owner only
    # numpy's OpenBLAS spreads even a matrix-vector product over every core, and its threads
    # spin afterwards, in the way of the next embedding and of Lance: one thread is faster here
    # (benchmarks/README.md, "Where the time went" and "Design figures behind the code"). Read
    # when numpy loads, which is later.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # Arrow's own allocator (mimalloc) keeps what the in-memory copy frees when it reads
    # fragments again; glibc's gives it back (benchmarks/README.md, "One Lance"). Read when
    # pyarrow first allocates, which is later.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    _big_blocks_back_to_the_system()
    settings = given or Settings.from_env()
    # subcog's own lines at SUBCOG_LOG_LEVEL; other libraries' only when they warn (ONNX
    # Runtime's quantiser explains every tensor at INFO, on the root logger).
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s subcog %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("subcog").setLevel(settings.log_level)
    _checked(command, args, settings)
    if command == "serve" and getattr(args, "transport", "stdio") == "http":
        from subcog.web import serve_http

        serve_http(settings, args.host, args.port)
        return 0
    if command == "completion":
        print(completion_script(args.shell, build_parser()), end="")
        return 0
    if command == "context":
        return _context(args, settings)
    alone = {"serve": _serve, "doctor": _doctor, "repair": _repair, "reindex": _reindex}
    if command in alone:
        return alone[command](settings, getattr(args, "json", False))
    return _run(command, args, settings)


def _first_start(settings: Settings) -> bool:
    """Whether the model has yet to be copied into the cache (and an int8 copy made)."""
    from subcog.embedder import snapshot_dir

    return settings.model_path is None and snapshot_dir(settings.cache_dir, settings.model) is None


def _serve(settings: Settings, _json: bool = False) -> int:
    from subcog.embedder import Embedder, load_embedder
    from subcog.server import Service, build_server

    prepared: Embedder | None = None
    if _first_start(settings):
        # Else the model loads in the background while the server answers; the first time it
        # is prepared first (seconds), so that the first tool call does not wait for it.
        print(
            f"subcog: first start: preparing the model in {settings.cache_dir} (a few seconds)",
            file=sys.stderr,
        )
        started = time.monotonic()
        try:
            prepared = load_embedder(settings)
            print(f"subcog: model ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
        except SubcogError as exc:  # the tools say so too; `subcog doctor` tells more
            print(f"subcog: {exc}", file=sys.stderr)
    exe = shutil.which("subcog") or sys.argv[0]
    print(
        f"subcog {__version__}: MCP server on stdio; memories in {settings.data_dir}",
        file=sys.stderr,
    )
    if sys.stdin.isatty():
        config = {
            "mcpServers": {"subcog": {"command": str(Path(exe).resolve()), "args": ["serve"]}}
        }
        print(
            "It speaks JSON-RPC on stdin/stdout and is meant to be started by an MCP client.\n"
            "Connect one, for example Claude Desktop's claude_desktop_config.json:\n"
            f"{json.dumps(config, indent=2)}\n"
            f"or Claude Code: claude mcp add subcog -- {Path(exe).resolve()} serve\n"
            "More clients are in README.md. Press Ctrl-C to stop.",
            file=sys.stderr,
        )
    if prepared is None:
        service = Service(settings)
    else:
        model = prepared
        service = Service(settings, load_model=lambda _settings: model)
    try:
        build_server(settings, service).run("stdio")
    finally:
        service.close()  # loading finished, forgotten memories erased, upkeep stopped
    return 0


def _run(command: str, args: argparse.Namespace, settings: Settings) -> int:
    from subcog.memory import open_memory

    memory = open_memory(settings)
    try:
        code = RUN[command](args, memory)
    finally:
        memory.finish_erasure()  # every process that opens the store finishes it
    if code == 0 and memory.damaged():
        # What could be read was done; the warning on stderr said what could not, and what to
        # run. The exit code tells a script.
        return EXIT_STORE
    return code


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _cut(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1].rstrip() + "…"


def _local_time(iso: str) -> str:
    """A stored UTC time as the reader's local time, to the minute."""
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def _memory_line(found: RecalledMemory | StoredMemory, default_scope: str) -> str:
    """One memory on one line: when, id, scope, text, tags (and the score, for recall)."""
    score = getattr(found, "score", None)
    tags = "  " + " ".join(f"#{tag}" for tag in found.tags) if found.tags else ""
    return (
        ("" if score is None else f"{score:.3f}  ")
        + f"{_local_time(found.created_at)}  {found.id}  [{found.scope or default_scope}] "
        + _one_line(found.content)
        + tags
    )


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _aligned(pairs: Sequence[tuple[str, object]]) -> str:
    width = max(len(key) for key, _ in pairs) + 2
    return "\n".join(f"{key + ':' if key else '':<{width}}{value}" for key, value in pairs)


def _remember(args: argparse.Namespace, memory: Memory) -> int:
    result = memory.remember(
        args.text, args.tag, args.scope, dict(args.metadata) or None, args.supersedes
    )
    if args.json:
        _print_json(result.model_dump())
        return 0
    print(f"{result.status}: {result.id} (scope {result.scope})")
    for memory_id in result.superseded:
        print(f"superseded: {memory_id}")
    for similar in result.similar:
        print(f"very similar: {similar.id} ({similar.score:.2f}) {_one_line(similar.content)}")
    return 0


def _recall(args: argparse.Namespace, memory: Memory) -> int:
    recalled = memory.recall(args.query, args.limit, args.tag, args.scope, args.since, args.until)
    if args.json:
        _print_json(recalled.model_dump(exclude_defaults=True))
        return 0
    if not recalled.memories:
        print("No memories found.")
    elif recalled.note:
        print(recalled.note, file=sys.stderr)
    for found in recalled.memories:
        print(_memory_line(found, memory.settings.default_scope))
    return 0


def _forget(args: argparse.Namespace, memory: Memory) -> int:
    if args.all:
        return _forget_all(memory, args.scope, args.yes, args.json)
    if args.ids:
        forgotten = memory.forget(args.ids, dry_run=args.dry_run or None)
    else:
        forgotten = memory.forget(
            None, args.query, args.tag, args.scope, args.limit, not args.yes or args.dry_run
        )
    code = 0 if not forgotten.missing else EXIT_PARTLY
    if forgotten.forgotten:
        print("erasing the forgotten memories from disk...", file=sys.stderr)
    if args.json:
        _print_json(forgotten.model_dump())
        return code
    if forgotten.dry_run:
        if not forgotten.matches:
            print("nothing matches: nothing would be forgotten")
        else:
            more = " (add --yes to forget them)" if not args.ids else ""
            print(f"would forget {len(forgotten.matches)} memories{more}:")
        for match in forgotten.matches:
            score = "" if match.score is None or args.ids else f"{match.score:.3f}  "
            print(f"  {score}{match.id}  {_one_line(match.content)}")
    for memory_id in forgotten.forgotten:
        print(f"forgotten: {memory_id}")
    for memory_id in forgotten.missing:
        print(f"missing: {memory_id}")
    return code


def _forget_all(memory: Memory, scope: str | None, yes: bool, as_json: bool) -> int:
    from subcog.storage.schema import Filter
    from subcog.validation import check_scope

    where = Filter(scope=None if scope in (None, "*") else check_scope(scope))
    count = memory.count(where)
    what = f"in scope {where.scope}" if where.scope else "in every scope"
    if not count:
        if as_json:
            _print_json({"forgotten": 0, "scope": where.scope})
        else:
            print(f"nothing to forget: no memories {what}")
        return 0
    if not yes:
        if not sys.stdin.isatty():
            print(
                f"subcog: this would forget all {count} memories {what}; add --yes to confirm",
                file=sys.stderr,
            )
            return EXIT_INVALID
        answer = input(f"Forget all {count} memories {what}? This cannot be undone. [y/N] ")
        if answer.strip().lower() not in {"y", "yes"}:
            print("nothing forgotten")
            return 1
    gone = memory.forget_all(scope)
    print("erasing the forgotten memories from disk...", file=sys.stderr)
    if as_json:
        _print_json({"forgotten": gone, "scope": where.scope})
    else:
        print(f"forgotten: {gone} memories {what}")
    return 0


def _show(args: argparse.Namespace, memory: Memory) -> int:
    try:
        stored = memory.get(args.id)
    except NotFound:
        print(f"subcog: no memory has the id {args.id} (see `subcog list`)", file=sys.stderr)
        return EXIT_PARTLY
    if args.json:
        _print_json(stored.model_dump())
        return 0
    meta = ", ".join(f"{key}={value}" for key, value in stored.metadata.items())
    fields = [("id", stored.id), ("scope", stored.scope), ("created", stored.created_at)]
    fields += [("tags", ", ".join(stored.tags))] if stored.tags else []
    fields += [("metadata", meta)] if meta else []
    print(_aligned(fields))
    print()
    print(stored.content)
    return 0


def _list(args: argparse.Namespace, memory: Memory) -> int:
    memories = memory.list(args.scope, args.limit, args.tag, args.since, args.until)
    if args.json:
        _print_json([m.model_dump() for m in memories])
    elif not memories:
        print("no memories")
    for stored in memories if not args.json else []:
        print(_memory_line(stored, memory.settings.default_scope))
    return 0


def _stats(args: argparse.Namespace, memory: Memory) -> int:
    stats = memory.stats()
    if args.json:
        _print_json(stats.model_dump(exclude_none=True))
        return 0
    width = max((len(scope) for scope in stats.scopes), default=0)
    scopes = [f"{scope:<{width}}  {count}" for scope, count in sorted(stats.scopes.items())]
    pairs: list[tuple[str, object]] = [("memories", stats.count)]
    pairs += [("scopes" if i == 0 else "", line) for i, line in enumerate(scopes)]
    pairs += [
        ("on disk", _human_bytes(stats.disk_bytes)),
        ("data dir", stats.data_dir),
        ("model", stats.model),
        ("model from", stats.model_source),
    ]
    print(_aligned(pairs))
    if stats.damaged:
        print(f"DAMAGED: {stats.damaged.what_to_do}")
    return 0


def _export(args: argparse.Namespace, memory: Memory) -> int:
    if args.file is None:
        for line in memory.export_jsonl():
            print(line)
    else:
        with args.file.open("w", encoding="utf-8") as out:
            for line in memory.export_jsonl():
                out.write(line + "\n")
    return 0


def _reindex(settings: Settings, as_json: bool = False) -> int:
    from tqdm import tqdm

    from subcog.memory import reindex

    with tqdm(unit="memories", file=sys.stderr, desc="reindex") as bar:

        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done)

        count = reindex(settings, progress=advance)
    if as_json:
        _print_json({"reindexed": count, "model": settings.model})
    elif count:
        print(f"re-embedded {count} memories with {settings.model}")
    else:
        print(f"nothing to do: every memory is embedded with {settings.model}")
    return 0


def _import(args: argparse.Namespace, memory: Memory) -> int:
    from tqdm import tqdm

    path: Path = args.file
    with path.open(encoding="utf-8") as handle:
        total = sum(1 for line in handle if line.strip())
        handle.seek(0)
        bar = tqdm(total=total, unit="memories", file=sys.stderr, desc="import")
        with bar:
            report = memory.import_jsonl(handle, progress=bar.update, bulk=True)
    code = EXIT_PARTLY if report.bad_lines else 0
    if args.json:
        bad = [{"line": number, "problem": problem} for number, problem in report.bad_lines]
        _print_json({"added": report.added, "existing": report.existing, "bad_lines": bad})
        return code
    print(
        f"added {report.added}, already present {report.existing}, "
        f"bad lines {len(report.bad_lines)}"
    )
    for number, problem in report.bad_lines:
        print(f"{path}:{number}: {problem}", file=sys.stderr)
    return code


def _doctor(settings: Settings, as_json: bool = False) -> int:
    from subcog.embedder import bundle_files, snapshot_dir

    def say(line: str) -> None:
        if not as_json:
            print(line, flush=True)

    bundle = bundle_files()
    report: dict[str, Any] = {
        "version": __version__,
        "python": sys.version.split()[0],
        "data_dir": str(settings.data_dir),
        "cache_dir": str(settings.cache_dir),
        "model_path": None if settings.model_path is None else str(settings.model_path),
        "cached_model": str(snapshot_dir(settings.cache_dir) or "") or None,
        "offline_bundle": [str(path) for path in bundle.values()] if bundle else None,
    }
    say(f"subcog {__version__}, Python {report['python']}")
    say(f"data dir (SUBCOG_DATA_DIR):   {settings.data_dir}")
    say(f"cache dir (SUBCOG_CACHE_DIR): {settings.cache_dir}")
    say(f"model path (SUBCOG_MODEL_PATH): {settings.model_path or 'unset'}")
    say(f"cached model:   {report['cached_model'] or 'none'}")
    bundled = ", ".join(report["offline_bundle"]) if bundle else "not installed"
    say(f"offline bundle: {bundled}")
    report["model"] = _doctor_model(settings, say)
    report["store"] = _doctor_store(settings, say)
    code = EXIT_MODEL if not report["model"]["ok"] else 0
    code = code or (EXIT_STORE if not report["store"]["ok"] else 0)
    if as_json:
        _print_json(report)
    return code


def _doctor_model(settings: Settings, say: Callable[[str], None]) -> dict[str, Any]:
    from subcog.embedder import load_embedder

    try:
        embedder = load_embedder(settings)
        vector = embedder.embed(["subcog doctor"])[0]
    except SubcogError as exc:
        say(f"model: FAILED\n{exc}")
        return {"ok": False, "error": str(exc)}
    source, running = embedder.source, embedder.int8 or "the model as provided"
    say(f"model: OK, {embedder.name}, {vector.shape[0]} dimensions")
    say(f"  from {source.kind}: {source.location}")
    say(f"  running: {running}")
    return {
        "ok": True,
        "name": embedder.name,
        "dimensions": int(vector.shape[0]),
        "source": source.kind,
        "location": str(source.location),
        "running": str(running),
    }


def _doctor_store(settings: Settings, say: Callable[[str], None]) -> dict[str, Any]:
    from subcog.memory import open_store

    try:
        store = open_store(settings)
        count, size = store.count(), store.disk_bytes()
        damage = store.examine()  # every data, deletion and index file, read to its end
        found: dict[str, Any] = {"ok": not damage, "memories": count, "disk_bytes": size}
        if damage:
            say(f"store: DAMAGED, {count} memories, {size} bytes in {store.data_dir}")
            for file in damage.files:
                say(f"  cannot read {file.describe()}: {file.error}")
            advice = (
                f"{damage.unreadable} memories cannot be read. Run `subcog repair`: it keeps "
                "a copy of these files, rebuilds the store from every memory that can be read, "
                "and builds the indexes again."
            )
            say(f"  {advice}")
            found["damaged_files"] = [file.describe() for file in damage.files]
            found["what_to_do"] = advice
        else:
            say(f"store: OK, {count} memories, {size} bytes in {store.data_dir}")
            say("  every data and index file reads to its end")
        if store.erasure_pending():
            say("store: erasing memories forgotten earlier from the files...")
            store.finish_erasure()
        return found
    except SubcogError as exc:
        say(f"store: FAILED\n{exc}")
        return {"ok": False, "error": str(exc)}


def _repair(settings: Settings, as_json: bool = False) -> int:
    from subcog.memory import open_store

    store = open_store(settings)  # the model is not needed: the rows keep their vectors
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    repaired = store.repair(settings.data_dir / f"damaged-{stamp}")
    rebuilt = sorted(repaired.damage.indexes) if repaired.damage else []
    if as_json:
        _print_json(
            {
                "damaged": bool(repaired.damage),
                "kept_in": str(repaired.kept_in) if repaired.damage else None,
                "recovered": repaired.recovered,
                "lost": repaired.lost if repaired.damage else 0,
                "rebuilt_indexes": rebuilt,
            }
        )
        return 0
    if not repaired.damage:
        print(
            f"nothing to repair: every file of the store reads to its end ({repaired.recovered}"
            " memories)"
        )
        return 0
    print(f"kept a copy of the damaged files in {repaired.kept_in}")
    if repaired.damage.fragments:
        print(f"rebuilt the store from every row that could be read: {repaired.recovered} memories")
        print(f"could not recover {repaired.lost} memories")
    if rebuilt:
        print(f"built the damaged indexes again: {', '.join(rebuilt)}")
    return 0


def _context(args: argparse.Namespace, settings: Settings) -> int:
    """For an assistant's session start (a Claude Code SessionStart hook): the scope's most
    recent memories, newest first, one line each, within --max-chars. Needs no model. It never
    fails the session: a missing, empty, busy or unreadable store prints nothing on stdout, a
    sentence on stderr, and exits 0."""
    from subcog.memory import open_memory
    from subcog.storage.schema import Filter

    scope = args.scope or settings.default_scope
    hurried = replace(settings, limits=replace(settings.limits, lock_timeout_s=CONTEXT_LOCK_WAIT_S))
    try:
        memory = open_memory(hurried, check_model=False)
        try:
            total = memory.count(Filter(scope=None if scope == check.ALL_SCOPES else scope))
            recent = memory.list(scope, min(args.limit, total)) if total else []
        finally:
            memory.close(timeout=1.0)
    except (SubcogError, OSError) as exc:
        print(f"subcog: no context from the memory store: {exc}", file=sys.stderr)
        return 0
    shown, text = _context_block(recent, scope, total, args.max_chars)
    if args.json:
        _print_json({"scope": scope, "count": total, "memories": shown, "text": text})
    elif text:
        print(text)
    else:
        print(f"subcog: no memories in scope {scope}", file=sys.stderr)
    return 0


def _context_block(
    recent: Sequence[StoredMemory], scope: str, total: int, max_chars: int
) -> tuple[list[dict[str, Any]], str]:
    """The memories that fit, and the block: a header, then one line per memory."""
    if not recent:
        return [], ""
    lines: list[str] = []
    shown: list[dict[str, Any]] = []
    for stored in recent:
        tags = f" [{', '.join(stored.tags)}]" if stored.tags else ""
        where = f" (scope {stored.scope})" if scope == check.ALL_SCOPES else ""
        line = (
            f"- {stored.created_at[:10]}: {_one_line(stored.content)}{tags}{where} (id {stored.id})"
        )
        header = _context_header(scope, len(shown) + 1, total)
        room = max_chars - len(header) - sum(len(kept) + 1 for kept in lines) - 1
        if room < 80:  # too little for a line worth reading
            break
        lines.append(_cut(line, min(room, CONTEXT_LINE_CHARS)))
        shown.append(stored.model_dump())
    return shown, "\n".join([_context_header(scope, len(shown), total), *lines])


def _context_header(scope: str, shown: int, total: int) -> str:
    some = f"the {shown} most recent of {total}" if shown < total else f"all {total}"
    where = "every scope" if scope == check.ALL_SCOPES else f"scope {scope}"
    return (
        f"Long-term memories from subcog, {where}: {some}, newest first. Use the recall tool "
        "for anything else; forget (by id) or remember with supersedes what is wrong."
    )


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Each command's own parser, by name (for completion, and for the README's test)."""
    found = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(found.choices)


def completion_script(shell: str, parser: argparse.ArgumentParser) -> str:
    """A completion script for bash (zsh runs it through bashcompinit): command names, each
    command's options, the choices of an option or argument that has them; files otherwise."""
    commands = subcommands(parser)
    flags: list[str] = []
    values: list[str] = []
    positional: list[str] = []
    for name, command in commands.items():
        names = [flag for action in command._actions for flag in action.option_strings]
        flags.append(f"        {name}) opts='{' '.join(names)}' ;;")
        for action in command._actions:
            if action.choices is None:
                continue
            words = " ".join(map(str, action.choices))
            if action.option_strings:
                values.append(f"        {'|'.join(action.option_strings)}) words='{words}' ;;")
            else:
                positional.append(f"            {name}) words='{words}' ;;")
    script = BASH_COMPLETION.format(
        commands=" ".join(commands),
        flags="\n".join(flags),
        values="\n".join(values),
        positional="\n".join(positional),
    )
    if shell == "zsh":
        return "autoload -U +X bashcompinit && bashcompinit\n" + script
    return script


BASH_COMPLETION = """\
# subcog completion for bash: source <(subcog completion bash), or save it to a file that
# ~/.bashrc sources. zsh: source <(subcog completion zsh).
_subcog() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}} opts= words=
    COMPREPLY=()
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "{commands} --help --version" -- "$cur"))
        return
    fi
    if [[ "$cur" == -* ]]; then
        case "${{COMP_WORDS[1]}}" in
{flags}
        esac
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi
    case "$prev" in
{values}
        -*) ;;
        *)
            case "${{COMP_WORDS[1]}}" in
{positional}
            esac ;;
    esac
    [ -n "$words" ] && COMPREPLY=($(compgen -W "$words" -- "$cur"))
    return 0
}}
complete -o default -F _subcog subcog
"""


RUN: dict[str, Callable[[argparse.Namespace, Memory], int]] = {
    "remember": _remember,
    "recall": _recall,
    "forget": _forget,
    "show": _show,
    "list": _list,
    "stats": _stats,
    "import": _import,
    "export": _export,
}
