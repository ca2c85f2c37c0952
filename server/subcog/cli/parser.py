"""The command line's grammar: each command's one-line help, and its arguments."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from subcog import __version__
from subcog import validation as check
from subcog.cli.context import CONTEXT_LIMIT, CONTEXT_MAX_CHARS

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
    "token": "Add, list or revoke the named tokens of a team server, with their scopes.",
    "ui": "Browse, search and forget memories in a web page on 127.0.0.1.",
}
# Commands whose output is a result a script may want as JSON. serve speaks JSON-RPC, export
# writes JSON lines anyway, completion prints a script.
WITHOUT_JSON = {"serve", "export", "completion", "ui"}

_TAG: dict[str, Any] = {"action": "append", "default": None, "metavar": "T"}
_SINCE = "ISO-8601, or words: yesterday, 3 days ago, 2026-11"


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


def _serve(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--transport", choices=["stdio", "http"], default="stdio", help="default: stdio"
    )
    command.add_argument("--host", default="127.0.0.1", help="HTTP only (default 127.0.0.1)")
    command.add_argument("--port", type=_port, default=8765, help="HTTP only (default 8765)")


def _ui(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--port", type=_port_or_free, default=0, help="default: a free one (0 picks one)"
    )
    command.add_argument("--no-browser", action="store_true", help="only print the URL")


def _port_or_free(text: str) -> int:
    return 0 if text.strip() == "0" else _port(text)


def _remember(command: argparse.ArgumentParser) -> None:
    command.add_argument("text", help="the fact to remember")
    command.add_argument("--tag", **_TAG, help="a tag (repeatable)")
    command.add_argument("--scope", help="namespace (default: SUBCOG_SCOPE or 'default')")
    command.add_argument(
        "--metadata", action="append", type=_pair, default=[], metavar="K=V", help="repeatable"
    )
    command.add_argument(
        "--supersedes", action="append", metavar="ID", help="forget this one (repeatable)"
    )


def _recall(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "query", nargs="?", default="", help="leave out to list what passes the filters"
    )
    command.add_argument("--limit", type=_whole, default=5, help="1 to 50 (default 5)")
    command.add_argument("--tag", **_TAG, help="required tag (repeatable)")
    command.add_argument("--scope", help="namespace, or '*' for all")
    command.add_argument("--since", help=_SINCE)
    command.add_argument("--until", help="as --since")


def _forget(command: argparse.ArgumentParser) -> None:
    command.add_argument("ids", nargs="*", metavar="ID", help="deleted at once")
    command.add_argument("--query", help="preview what this matches (delete with --yes)")
    command.add_argument("--tag", **_TAG, help="preview the newest with this tag (repeatable)")
    command.add_argument("--scope", help="with --query or --tag: only this scope; with --all too")
    command.add_argument("--limit", type=_whole, default=10, help="--query/--tag: 1 to 50")
    command.add_argument("--dry-run", action="store_true", help="only show what would go")
    command.add_argument(
        "--yes", action="store_true", help="delete what --query/--tag match; --all without asking"
    )
    command.add_argument(
        "--all", action="store_true", help="every memory (of --scope if given), after asking"
    )


def _show(command: argparse.ArgumentParser) -> None:
    command.add_argument("id", metavar="ID")


def _list(command: argparse.ArgumentParser) -> None:
    command.add_argument("--scope", help="namespace, or '*' for all (default: all)", default="*")
    command.add_argument("--limit", type=_whole, default=20, help="default 20")
    command.add_argument("--tag", **_TAG, help="required tag (repeatable)")
    command.add_argument("--since", help=_SINCE)
    command.add_argument("--until", help="as --since")


def _context(command: argparse.ArgumentParser) -> None:
    command.add_argument("--scope", help="namespace, or '*' for all (default: SUBCOG_SCOPE)")
    command.add_argument(
        "--limit", type=_whole, default=CONTEXT_LIMIT, help=f"default {CONTEXT_LIMIT}"
    )
    command.add_argument(
        "--max-chars", type=_whole, default=CONTEXT_MAX_CHARS, help=f"default {CONTEXT_MAX_CHARS}"
    )


def _import(command: argparse.ArgumentParser) -> None:
    command.add_argument("file", type=Path, help="JSONL: one object per line, with content")


def _export(command: argparse.ArgumentParser) -> None:
    command.add_argument("file", type=Path, nargs="?", help="default: standard output")


def _completion(command: argparse.ArgumentParser) -> None:
    command.add_argument("shell", choices=["bash", "zsh"])


def _token(command: argparse.ArgumentParser) -> None:
    command.add_argument("action", choices=["add", "list", "revoke"], nargs="?", default="list")
    command.add_argument("name", nargs="?", help="who the token is for: a person or an agent")
    command.add_argument("--read", metavar="S,...", help='scopes it may read ("*": every one)')
    command.add_argument(
        "--write", metavar="S,...", help="scopes it may write (and so read), forget in"
    )


# name -> what adds its arguments (after --json); stats, doctor, repair and reindex take none.
ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "serve": _serve,
    "remember": _remember,
    "recall": _recall,
    "forget": _forget,
    "show": _show,
    "list": _list,
    "context": _context,
    "import": _import,
    "export": _export,
    "completion": _completion,
    "token": _token,
    "ui": _ui,
}


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
        if name in ARGUMENTS:
            ARGUMENTS[name](command)
    return parser


# argparse keeps a parser's arguments and its commands in private attributes: these are the
# only places that read them.
def actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """A parser's arguments and options, in the order its --help shows them."""
    return list(parser._actions)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Each command's own parser, by name (for completion, and for the README's test)."""
    found = next(a for a in actions(parser) if isinstance(a, argparse._SubParsersAction))
    return dict(found.choices)


def options(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string a parser takes, -h and --help first."""
    return [flag for action in actions(parser) for flag in action.option_strings]


def commands() -> dict[str, list[str]]:
    """Each command's name and its options, e.g. "show": ["-h", "--help", "--json"]."""
    return {name: options(command) for name, command in subcommands(build_parser()).items()}
