"""Who is calling, and which scopes they may read and write.

A team server hands out one token per person or agent (`subcog token add NAME --read team,alice
--write alice`). Only a hash of each token is kept (tokens are 256 random bits, so a plain
SHA-256 cannot be reversed by guessing), in a table beside the memories (`Tokens`).
`web.who(token)` is the one lookup every HTTP request goes through.

The owner (stdio, the command line, today's single SUBCOG_TOKEN) may read and write every
scope; their name is the client's (clientInfo) over stdio.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Iterable
from contextlib import suppress
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from subcog import validation as check
from subcog.errors import InvalidInput
from subcog.storage.location import Location

TOKENS_TABLE = "tokens"
OWNER_NAME = "owner"


@dataclass(frozen=True)
class Access:
    """A caller: their name (recorded as each memory's author) and the scopes they may read
    and write; None: every scope."""

    name: str
    read: frozenset[str] | None = None
    write: frozenset[str] | None = None

    @property
    def everything(self) -> bool:
        return self.read is None and self.write is None

    def reads(self, scope: str) -> bool:
        return self.read is None or scope in self.read

    def writes(self, scope: str) -> bool:
        return self.write is None or scope in self.write

    def named(self, name: str | None) -> Access:
        """The same rights under another name (the stdio client's)."""
        return self if not name else Access(name, self.read, self.write)


OWNER = Access(OWNER_NAME)

# The caller of the request being served over HTTP, set by web.BearerAuth for its duration;
# None over stdio and in-process, where the owner calls.
CALLER: ContextVar[Access | None] = ContextVar("subcog_caller", default=None)


def check_name(name: str) -> str:
    """A token's name: 1 to 64 letters, digits or . _ - @ (it is shown as an author)."""
    if not isinstance(name, str) or not name or len(name) > 64:
        raise InvalidInput("A token's name must be 1 to 64 characters.")
    if not all(c.isalnum() or c in "._-@" for c in name):
        raise InvalidInput(
            f"A token's name may hold letters, digits and . _ - @ only, not {name!r}."
        )
    return name


def author_name(name: Any) -> str | None:
    """A name fit to be an author (see check_name): a valid name as it is; otherwise every
    character but A-Z a-z 0-9 . _ - @ made "-", runs of "-" made one, "-" trimmed from the
    ends, cut to 64 characters; None if nothing is left or `name` is not a string. What the
    stdio client calls itself ("Visual Studio Code") and what an import reads both go
    through this, so an export always imports back."""
    if not isinstance(name, str):
        return None
    with suppress(InvalidInput):
        return check_name(name)
    cleaned = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9._@-]", "-", name)).strip("-")
    return cleaned[:64].strip("-") or None


def _scopes(scopes: Iterable[str]) -> list[str]:
    found = []
    for scope in scopes:
        if scope != check.ALL_SCOPES:
            check.check_scope(scope)
        found.append(scope)
    return sorted(set(found))


def _tokens_schema() -> Any:
    import pyarrow as pa  # not at start-up: a server imports this module

    return pa.schema(
        [
            pa.field("name", pa.string(), nullable=False),
            pa.field("sha256", pa.string(), nullable=False),
            pa.field("read", pa.list_(pa.string()), nullable=False),
            pa.field("write", pa.list_(pa.string()), nullable=False),
            pa.field("created_at", pa.string(), nullable=False),
        ]
    )


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Tokens:
    """The named tokens of one store: a small LanceDB table, `tokens`, beside the memories (in
    the same directory or under the same prefix), so every replica of a team server knows the
    same tokens. Read through LanceDB alone: a server loads no second Lance. A server sees a
    token added or revoked within `refresh_s` seconds (SUBCOG_REFRESH_S)."""

    def __init__(self, location: Location, refresh_s: float = 0.0) -> None:
        self._location = location
        self._refresh = timedelta(seconds=refresh_s)
        self._lock = threading.Lock()
        self._table: Any = None
        self._version: int | None = None
        self._absent_until = 0.0
        self._entries: dict[str, dict[str, Any]] = {}

    @property
    def where(self) -> str:
        return f"{self._location.shown}/{TOKENS_TABLE}.lance"

    def _open(self, create: bool) -> Any:
        if self._table is None and not create and time.monotonic() < self._absent_until:
            return None  # looked a moment ago: no token was ever added
        if self._table is None:
            import lancedb

            db = lancedb.connect(
                self._location.db,
                read_consistency_interval=self._refresh,
                storage_options=dict(self._location.options) or None,
            )
            if TOKENS_TABLE in db.list_tables().tables:
                self._table = db.open_table(TOKENS_TABLE)
            elif create:
                self._table = db.create_table(TOKENS_TABLE, schema=_tokens_schema())
            else:  # asked again after SUBCOG_REFRESH_S (at least a second): not per request
                self._absent_until = time.monotonic() + max(1.0, self._refresh.total_seconds())
        return self._table

    def entries(self) -> dict[str, dict[str, Any]]:
        """The tokens by name, read again when the table has a new version."""
        with self._lock:
            table = self._open(create=False)
            if table is None:
                return {}
            version = int(table.version)
            if version != self._version:
                rows = table.to_arrow().to_pylist()
                self._entries = {row["name"]: row for row in rows}
                self._version = version
            return self._entries

    # What `subcog token` does.

    def add(self, name: str, read: Iterable[str], write: Iterable[str]) -> str:
        """Make a token for `name`; returns it (it is shown once: only its hash is kept)."""
        check_name(name)
        if name in self.entries():
            raise InvalidInput(
                f"A token named {name} exists; revoke it first (`subcog token revoke {name}`)."
            )
        token = secrets.token_urlsafe(32)
        row = {
            "name": [name],
            "sha256": [_hash(token)],
            "read": [_scopes(read)],
            "write": [_scopes(write)],
            "created_at": [datetime.now(timezone.utc).isoformat(timespec="seconds")],
        }
        import pyarrow as pa

        self._open(create=True).add(pa.table(row, schema=_tokens_schema()))
        return token

    def revoke(self, name: str) -> bool:
        from lancedb.expr import col, lit

        if name not in self.entries():
            return False
        self._open(create=False).delete((col("name") == lit(name)).to_sql())
        return True

    def listed(self) -> list[dict[str, Any]]:
        return [
            {"name": name, "read": e["read"], "write": e["write"], "created_at": e["created_at"]}
            for name, e in sorted(self.entries().items())
        ]

    def who(self, token: str) -> Access | None:
        """The caller this token names, or None. Every entry is compared, in constant time."""
        given = _hash(token)
        found = None
        for name, entry in self.entries().items():
            if hmac.compare_digest(given, str(entry.get("sha256", ""))):
                found = Access(name, _rights(entry.get("read")), _rights(entry.get("write")))
        return found


def _rights(scopes: Any) -> frozenset[str] | None:
    """A token's scopes; "*" among them: every scope."""
    listed = frozenset(str(scope) for scope in scopes or ())
    return None if check.ALL_SCOPES in listed else listed
