"""`subcog token add|list|revoke`: the named tokens of a team server (access.py).

A token is printed once, when it is made; only its hash is kept. Writing a scope implies
reading it (supersedes and forget look up what they change)."""

from __future__ import annotations

import argparse
import sys

from subcog.access import Tokens, check_name
from subcog.cli.exit_codes import EXIT_PARTLY
from subcog.cli.output import aligned, print_json
from subcog.config import Settings
from subcog.errors import InvalidInput


def scopes_of(text: str | None) -> list[str]:
    return [scope.strip() for scope in (text or "").split(",") if scope.strip()]


def check_token_args(args: argparse.Namespace) -> None:
    """Checked before anything loads."""
    if args.action in ("add", "revoke"):
        if not args.name:
            raise InvalidInput(f"Name the token: subcog token {args.action} NAME.")
        check_name(args.name)
    elif args.name:
        raise InvalidInput("subcog token list takes no name.")
    if args.action != "add" and (args.read or args.write):
        raise InvalidInput("--read and --write go with subcog token add.")
    if args.action == "add" and not (scopes_of(args.read) or scopes_of(args.write)):
        raise InvalidInput(
            'Say what the token may do: --read SCOPE,... and/or --write SCOPE,... ("*": every '
            "scope)."
        )


def token(args: argparse.Namespace, settings: Settings) -> int:
    tokens = Tokens(settings.store)
    if args.action == "add":
        write = scopes_of(args.write)
        read = sorted(set(scopes_of(args.read)) | set(write))
        made = tokens.add(args.name, read, write)
        if args.json:
            print_json({"name": args.name, "token": made, "read": read, "write": sorted(write)})
        else:
            print(made)
            print(
                f"subcog: the token of {args.name} (read: {', '.join(read) or 'none'}; write: "
                f"{', '.join(sorted(set(write))) or 'none'}). It is shown this once: only its "
                f"hash is kept, in {tokens.where}.",
                file=sys.stderr,
            )
        return 0
    if args.action == "revoke":
        gone = tokens.revoke(args.name)
        if args.json:
            print_json({"name": args.name, "revoked": gone})
        elif gone:
            print(f"revoked: {args.name}")
        else:
            print(f"subcog: no token is named {args.name}", file=sys.stderr)
        return 0 if gone else EXIT_PARTLY
    listed = tokens.listed()
    if args.json:
        print_json(listed)
    elif not listed:
        print("no tokens")
    else:
        for entry in listed:
            print(
                aligned(
                    [
                        ("name", entry["name"]),
                        ("read", ", ".join(entry["read"]) or "none"),
                        ("write", ", ".join(entry["write"]) or "none"),
                        ("created", entry["created_at"]),
                    ]
                )
            )
            print()
    return 0
