"""The commands on memories: remember, recall, forget, show, list and stats. Each takes the
parsed arguments and an open Memory, prints, and returns the exit code."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from subcog.cli.exit_codes import EXIT_INVALID, EXIT_PARTLY
from subcog.cli.output import aligned, human_bytes, memory_line, one_line, print_json
from subcog.errors import NotFound

if TYPE_CHECKING:
    from subcog.memory import Memory


def remember(args: argparse.Namespace, memory: Memory) -> int:
    result = memory.remember(
        args.text, args.tag, args.scope, dict(args.metadata) or None, args.supersedes
    )
    if args.json:
        print_json(result.model_dump())
        return 0
    print(f"{result.status}: {result.id} (scope {result.scope})")
    for memory_id in result.superseded:
        print(f"superseded: {memory_id}")
    for similar in result.similar:
        print(f"very similar: {similar.id} ({similar.score:.2f}) {one_line(similar.content)}")
    return 0


def recall(args: argparse.Namespace, memory: Memory) -> int:
    recalled = memory.recall(args.query, args.limit, args.tag, args.scope, args.since, args.until)
    if args.json:
        print_json(recalled.model_dump(exclude_defaults=True))
        return 0
    if not recalled.memories:
        print("No memories found.")
    elif recalled.note:
        print(recalled.note, file=sys.stderr)
    for found in recalled.memories:
        print(memory_line(found, memory.settings.default_scope))
    return 0


def forget(args: argparse.Namespace, memory: Memory) -> int:
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
        print_json(forgotten.model_dump())
        return code
    if forgotten.dry_run:
        if not forgotten.matches:
            print("nothing matches: nothing would be forgotten")
        else:
            more = " (add --yes to forget them)" if not args.ids else ""
            print(f"would forget {len(forgotten.matches)} memories{more}:")
        for match in forgotten.matches:
            score = "" if match.score is None or args.ids else f"{match.score:.3f}  "
            print(f"  {score}{match.id}  {one_line(match.content)}")
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
            print_json({"forgotten": 0, "scope": where.scope})
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
        print_json({"forgotten": gone, "scope": where.scope})
    else:
        print(f"forgotten: {gone} memories {what}")
    return 0


def show(args: argparse.Namespace, memory: Memory) -> int:
    try:
        stored = memory.get(args.id)
    except NotFound:
        print(f"subcog: no memory has the id {args.id} (see `subcog list`)", file=sys.stderr)
        return EXIT_PARTLY
    if args.json:
        print_json(stored.model_dump())
        return 0
    meta = ", ".join(f"{key}={value}" for key, value in stored.metadata.items())
    fields = [("id", stored.id), ("scope", stored.scope), ("created", stored.created_at)]
    fields += [("tags", ", ".join(stored.tags))] if stored.tags else []
    fields += [("metadata", meta)] if meta else []
    print(aligned(fields))
    print()
    print(stored.content)
    return 0


def list_memories(args: argparse.Namespace, memory: Memory) -> int:
    memories = memory.list(args.scope, args.limit, args.tag, args.since, args.until)
    if args.json:
        print_json([m.model_dump() for m in memories])
    elif not memories:
        print("no memories")
    for stored in memories if not args.json else []:
        print(memory_line(stored, memory.settings.default_scope))
    return 0


def stats(args: argparse.Namespace, memory: Memory) -> int:
    found = memory.stats()
    if args.json:
        print_json(found.model_dump(exclude_none=True))
        return 0
    width = max((len(scope) for scope in found.scopes), default=0)
    scopes = [f"{scope:<{width}}  {count}" for scope, count in sorted(found.scopes.items())]
    pairs: list[tuple[str, object]] = [("memories", found.count)]
    pairs += [("scopes" if i == 0 else "", line) for i, line in enumerate(scopes)]
    pairs += [
        ("on disk", human_bytes(found.disk_bytes)),
        ("data dir", found.data_dir),
        *([("store", found.store)] if found.store != str(Path(found.data_dir) / "lancedb") else []),
        ("model", found.model),
        ("model from", found.model_source),
    ]
    print(aligned(pairs))
    if found.damaged:
        print(f"DAMAGED: {found.damaged.what_to_do}")
    return 0
