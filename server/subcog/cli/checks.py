"""A command's arguments, checked before the model and the store load (which takes seconds)."""

from __future__ import annotations

import argparse
import errno
import os
from pathlib import Path

from subcog import validation as check
from subcog.config import Settings
from subcog.errors import InvalidInput


def checked(command: str, args: argparse.Namespace, settings: Settings) -> None:
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
        _checked_export(Path(args.file))
    elif command == "token":
        from subcog.cli.token_commands import check_token_args

        check_token_args(args)


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


def _checked_export(target: Path) -> None:
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", str(target))
    folder = target.resolve().parent
    if not folder.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such directory", str(folder))
    if not os.access(folder, os.W_OK):
        raise PermissionError(errno.EACCES, "the directory cannot be written", str(folder))
