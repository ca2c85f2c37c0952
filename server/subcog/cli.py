"""The command line. Every command but serve calls the same domain service as the server."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from subcog import __version__
from subcog import validation as check
from subcog.config import Settings
from subcog.errors import (
    InvalidInput,
    InvalidSetting,
    ModelMismatch,
    ModelUnavailable,
    NoSpace,
    StoreBusy,
    SubcogError,
    full_disk,
)

if TYPE_CHECKING:
    from subcog.memory import Memory

log = logging.getLogger("subcog")

# name -> one-line help; the README must document each (checked by a test).
COMMANDS = {
    "serve": "Serve MCP over stdio (the default), or streamable HTTP with --transport http.",
    "remember": "Store a memory.",
    "recall": "Find memories by meaning.",
    "forget": "Delete memories by id.",
    "list": "Show the most recent memories.",
    "stats": "Count, scopes, data dir, model and disk size.",
    "doctor": "Check the model, read every file of the store, and print every path used.",
    "repair": "Rebuild a damaged store from every memory that can be read; keep the bad files.",
    "import": "Remember every line of a JSONL file, in batches; importing twice adds nothing.",
    "export": "Write every memory as JSONL: id, content, tags, scope, metadata, created_at.",
    "reindex": "Re-embed every memory with the configured model (SUBCOG_MODEL).",
}

# Exit codes (README, "Command line"). argparse exits with 2 for a malformed command line too.
EXIT_PARTLY = 1  # it ran, but part of it failed: ids not found, bad lines in an import
EXIT_INVALID = 2  # an argument or input was refused; nothing was changed
EXIT_MODEL = 3  # the embedding model could not be loaded
EXIT_STORE = 4  # the store: held by another process, built with another model, or damaged
EXIT_NO_SPACE = 5  # the disk is full
EXIT_FILE = 6  # a file could not be read or written
EXIT_INTERRUPTED = 130


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: use 1 to 65535")
    return port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="subcog", description="Long-term semantic memory for AI assistants, over MCP."
    )
    parser.add_argument("--version", action="version", version=f"subcog {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in COMMANDS.items():
        commands.add_parser(name, help=text, description=text)
    sub = commands.choices

    sub["serve"].add_argument(
        "--transport", choices=["stdio", "http"], default="stdio", help="default: stdio"
    )
    sub["serve"].add_argument("--host", default="127.0.0.1", help="HTTP only (default 127.0.0.1)")
    sub["serve"].add_argument("--port", type=_port, default=8765, help="HTTP only (default 8765)")

    sub["remember"].add_argument("text", help="the fact to remember")
    sub["remember"].add_argument("--tag", action="append", default=[], help="a tag (repeatable)")
    sub["remember"].add_argument("--scope", help="namespace (default: SUBCOG_SCOPE or 'default')")

    sub["recall"].add_argument(
        "query", nargs="?", default="", help="leave out to list what passes the filters"
    )
    sub["recall"].add_argument("--limit", type=int, default=5, help="1 to 50 (default 5)")
    sub["recall"].add_argument("--tag", action="append", default=None, help="required tag")
    sub["recall"].add_argument("--scope", help="namespace, or '*' for all")
    sub["recall"].add_argument("--since", help="ISO-8601, or words: yesterday, 3 days ago, 2026-11")
    sub["recall"].add_argument("--until", help="as --since")
    sub["recall"].add_argument("--json", action="store_true", help="print JSON")

    sub["forget"].add_argument("ids", nargs="*", metavar="ID")
    sub["forget"].add_argument(
        "--all", action="store_true", help="every memory (of --scope if given), after asking"
    )
    sub["forget"].add_argument("--scope", help="with --all: only this scope")
    sub["forget"].add_argument("--yes", action="store_true", help="with --all: do not ask")

    sub["list"].add_argument(
        "--scope", help="namespace, or '*' for all (default: all)", default="*"
    )
    sub["list"].add_argument("--limit", type=int, default=20)
    sub["list"].add_argument("--json", action="store_true", help="print JSON")

    sub["stats"].add_argument("--json", action="store_true", help="print JSON")

    sub["import"].add_argument("file", type=Path, help="JSONL: one object per line, with content")
    sub["export"].add_argument("file", type=Path, nargs="?", help="default: standard output")
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
    args = _parser().parse_args(argv)
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
    if command == "remember":
        check.check_content(args.text, settings.max_content_chars)
    elif command == "recall":
        check.check_query(args.query, required=False)
        check.check_limit(args.limit)
        check.check_window(args.since, args.until)
    elif command == "forget" and args.ids:
        check.check_ids(args.ids)
    elif command == "list" and args.limit < 1:
        raise InvalidInput("--limit must be at least 1.")
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
    if command == "serve":
        return _serve(settings)
    if command == "doctor":
        return _doctor(settings)
    if command == "repair":
        return _repair(settings)
    if command == "reindex":
        return _reindex(settings)
    return _run(command, args, settings)


def _serve(settings: Settings) -> int:
    from subcog.server import Service, build_server

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
    service = Service(settings)
    try:
        build_server(settings, service).run("stdio")
    finally:
        service.close()  # loading finished, forgotten memories erased, upkeep stopped
    return 0


def _run(command: str, args: argparse.Namespace, settings: Settings) -> int:
    from subcog.memory import open_memory

    memory = open_memory(settings)
    try:
        code = _command(command, args, settings, memory)
    finally:
        memory.finish_erasure()  # every process that opens the store finishes it
    if code == 0 and memory.damaged():
        # What could be read was done; the warning on stderr said what could not, and what to
        # run. The exit code tells a script.
        return EXIT_STORE
    return code


def _command(command: str, args: argparse.Namespace, settings: Settings, memory: Memory) -> int:
    if command == "remember":
        result = memory.remember(args.text, args.tag, args.scope)
        print(f"{result.status}: {result.id} (scope {result.scope})")
    elif command == "recall":
        recalled = memory.recall(
            args.query, args.limit, args.tag, args.scope, args.since, args.until
        )
        if args.json:
            _print_json(recalled.model_dump(exclude_defaults=True))
        elif not recalled.memories:
            print("No memories found.")
        elif recalled.note:
            print(recalled.note, file=sys.stderr)
        for found in recalled.memories if not args.json else []:
            scope = found.scope or settings.default_scope
            score = "" if found.score is None else f"{found.score:.3f}  "
            print(f"{score}{found.id}  [{scope}] {found.content}")
    elif command == "forget" and args.all:
        return _forget_all(memory, args.scope, args.yes)
    elif command == "forget":
        if not args.ids:
            print("subcog: give the ids to forget (see `subcog recall`), or --all", file=sys.stderr)
            return EXIT_INVALID
        forgotten = memory.forget(args.ids)
        if forgotten.forgotten:
            print("erasing the forgotten memories from disk...", file=sys.stderr)
        for memory_id in forgotten.forgotten:
            print(f"forgotten: {memory_id}")
        for memory_id in forgotten.missing:
            print(f"missing: {memory_id}")
        return 0 if not forgotten.missing else 1
    elif command == "list":
        memories = memory.list(args.scope, args.limit)
        if args.json:
            _print_json([m.model_dump() for m in memories])
        for stored in memories if not args.json else []:
            tags = f" #{' #'.join(stored.tags)}" if stored.tags else ""
            print(f"{stored.created_at}  {stored.id}  [{stored.scope}] {stored.content}{tags}")
    elif command == "import":
        return _import(memory, args.file)
    elif command == "export":
        if args.file is None:
            for line in memory.export_jsonl():
                print(line)
        else:
            with args.file.open("w", encoding="utf-8") as out:
                for line in memory.export_jsonl():
                    out.write(line + "\n")
    elif command == "stats":
        stats = memory.stats()
        if args.json:
            _print_json(stats.model_dump(exclude_none=True))
        else:
            for key, value in stats.model_dump(exclude_none=True).items():
                print(f"{key}: {value}")
    return 0


def _forget_all(memory: Memory, scope: str | None, yes: bool) -> int:
    from subcog.storage.schema import Filter
    from subcog.validation import check_scope

    where = Filter(scope=None if scope in (None, "*") else check_scope(scope))
    count = memory.count(where)
    what = f"in scope {where.scope}" if where.scope else "in every scope"
    if not count:
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
    print(f"forgotten: {gone} memories {what}")
    return 0


def _reindex(settings: Settings) -> int:
    from tqdm import tqdm

    from subcog.memory import reindex

    with tqdm(unit="memories", file=sys.stderr, desc="reindex") as bar:

        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done)

        count = reindex(settings, progress=advance)
    print(
        f"re-embedded {count} memories with {settings.model}"
        if count
        else f"nothing to do: every memory is embedded with {settings.model}"
    )
    return 0


def _import(memory: Memory, path: Path) -> int:
    from tqdm import tqdm

    with path.open(encoding="utf-8") as handle:
        total = sum(1 for line in handle if line.strip())
        handle.seek(0)
        bar = tqdm(total=total, unit="memories", file=sys.stderr, desc="import")
        with bar:
            report = memory.import_jsonl(handle, progress=bar.update, bulk=True)
    bad = len(report.bad_lines)
    print(f"added {report.added}, already present {report.existing}, bad lines {bad}")
    for number, problem in report.bad_lines:
        print(f"{path}:{number}: {problem}", file=sys.stderr)
    return 1 if report.bad_lines else 0


def _doctor(settings: Settings) -> int:
    from subcog.embedder import bundle_files, load_embedder, snapshot_dir
    from subcog.memory import open_store

    code = 0
    print(f"subcog {__version__}, Python {sys.version.split()[0]}")
    print(f"data dir (SUBCOG_DATA_DIR):   {settings.data_dir}")
    print(f"cache dir (SUBCOG_CACHE_DIR): {settings.cache_dir}")
    print(f"model path (SUBCOG_MODEL_PATH): {settings.model_path or 'unset'}")
    print(f"cached model:   {snapshot_dir(settings.cache_dir) or 'none'}")
    bundle = bundle_files()
    print(f"offline bundle: {', '.join(map(str, bundle.values())) if bundle else 'not installed'}")
    try:
        embedder = load_embedder(settings)
        vector = embedder.embed(["subcog doctor"])[0]
        source = embedder.source
        print(f"model: OK, {embedder.name}, {vector.shape[0]} dimensions")
        print(f"  from {source.kind}: {source.location}")
        print(f"  running: {embedder.int8 or 'the model as provided'}")
    except SubcogError as exc:
        code = EXIT_MODEL
        print(f"model: FAILED\n{exc}")
    try:
        store = open_store(settings)
        count, size = store.count(), store.disk_bytes()
        damage = store.examine()  # every data, deletion and index file, read to its end
        if damage:
            code = EXIT_STORE
            print(f"store: DAMAGED, {count} memories, {size} bytes in {store.data_dir}")
            for file in damage.files:
                print(f"  cannot read {file.describe()}: {file.error}")
            print(
                f"  {damage.unreadable} memories cannot be read. Run `subcog repair`: it keeps "
                "a copy of these files, rebuilds the store from every memory that can be read, "
                "and builds the indexes again."
            )
        else:
            print(f"store: OK, {count} memories, {size} bytes in {store.data_dir}")
            print("  every data and index file reads to its end")
        if store.erasure_pending():
            print("store: erasing memories forgotten earlier from the files...")
            store.finish_erasure()
    except SubcogError as exc:
        code = EXIT_STORE
        print(f"store: FAILED\n{exc}")
    return code


def _repair(settings: Settings) -> int:
    from subcog.memory import open_store

    store = open_store(settings)  # the model is not needed: the rows keep their vectors
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    repaired = store.repair(settings.data_dir / f"damaged-{stamp}")
    if not repaired.damage:
        print(
            f"nothing to repair: every file of the store reads to its end ({repaired.recovered}"
            " memories)"
        )
        return 0
    print(f"kept a copy of the damaged files in {repaired.kept_in}")
    rebuilt = sorted(repaired.damage.indexes)
    if repaired.damage.fragments:
        print(f"rebuilt the store from every row that could be read: {repaired.recovered} memories")
        print(f"could not recover {repaired.lost} memories")
    if rebuilt:
        print(f"built the damaged indexes again: {', '.join(rebuilt)}")
    return 0
