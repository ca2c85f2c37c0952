"""`subcog context`: a compact block of a scope's recent memories, for an assistant's start."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from subcog import validation as check
from subcog.cli.output import cut, one_line, print_json
from subcog.config import Settings
from subcog.errors import SubcogError

if TYPE_CHECKING:
    from subcog.memory import StoredMemory

# What it prints by default, and how long it waits for a store another process holds (a
# session-start hook must not keep the session waiting).
CONTEXT_LIMIT = 20
CONTEXT_MAX_CHARS = 2000
CONTEXT_LINE_CHARS = 300
CONTEXT_LOCK_WAIT_S = 2.0


def context(args: argparse.Namespace, settings: Settings) -> int:
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
        print_json({"scope": scope, "count": total, "memories": shown, "text": text})
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
            f"- {stored.created_at[:10]}: {one_line(stored.content)}{tags}{where} (id {stored.id})"
        )
        header = _context_header(scope, len(shown) + 1, total)
        room = max_chars - len(header) - sum(len(kept) + 1 for kept in lines) - 1
        if room < 80:  # too little for a line worth reading
            break
        lines.append(cut(line, min(room, CONTEXT_LINE_CHARS)))
        shown.append(stored.model_dump())
    return shown, "\n".join([_context_header(scope, len(shown), total), *lines])


def _context_header(scope: str, shown: int, total: int) -> str:
    some = f"the {shown} most recent of {total}" if shown < total else f"all {total}"
    where = "every scope" if scope == check.ALL_SCOPES else f"scope {scope}"
    return (
        f"Long-term memories from subcog, {where}: {some}, newest first. Use the recall tool "
        "for anything else; forget (by id) or remember with supersedes what is wrong."
    )
