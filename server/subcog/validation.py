"""Checks on every value that crosses the boundary, shared by the MCP tools and the CLI.

Each check returns the normalised value or raises InvalidInput with a sentence that says
what to send instead. Values that end up inside a LanceDB filter (tags, scopes, ids) are
restricted to characters that cannot break out of a SQL string literal.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timezone

from subcog.errors import InvalidInput

# Letters, digits and a few separators; no quotes, backslashes, spaces or control characters.
_NAME = re.compile(r"[^\W][\w.:/@+#-]{0,63}", re.UNICODE)
_ID = re.compile(r"[0-9a-f]{32}")
ALL_SCOPES = "*"
MAX_IDS = 1000
MAX_METADATA_KEYS = 32
MAX_QUERY_CHARS = 2000
MIN_LIMIT, MAX_LIMIT = 1, 50

MetadataValue = str | int | float | bool


def check_content(content: object, max_chars: int) -> str:
    if not isinstance(content, str):
        raise InvalidInput("content must be a string.")
    if not content.strip():
        raise InvalidInput("content is empty. Pass the fact to remember as text.")
    if len(content) > max_chars:
        raise InvalidInput(
            f"content has {len(content)} characters; the limit is {max_chars}. "
            "Split it into smaller, self-contained memories."
        )
    if "\x00" in content:
        raise InvalidInput("content contains a NUL character; remove it.")
    return content


def normalise_whitespace(text: str) -> str:
    return " ".join(text.split())


def check_query(query: object) -> str:
    if not isinstance(query, str) or not query.strip():
        raise InvalidInput("query is empty. Describe what you are looking for in words.")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidInput(
            f"query has {len(query)} characters; the limit is {MAX_QUERY_CHARS}. Shorten it."
        )
    return query


def _check_name(kind: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"each {kind} must be a string, not {type(value).__name__}.")
    name = value.strip()
    if not _NAME.fullmatch(name):
        shown = name if len(name) <= 40 else name[:40] + "..."
        raise InvalidInput(
            f"{kind} {shown!r} is not allowed: use 1-64 letters, digits or . _ : / @ + # - "
            "and start with a letter or digit."
        )
    return name


def check_scope(scope: object) -> str:
    return _check_name("scope", scope)


def check_tags(tags: object, max_tags: int) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str) or not isinstance(tags, Iterable):
        raise InvalidInput('tags must be a list of strings, for example ["project-x", "todo"].')
    tag_list = list(tags)
    if len(tag_list) > max_tags:
        raise InvalidInput(f"{len(tag_list)} tags given; at most {max_tags} are allowed.")
    # Keep first-seen order, drop repeats.
    return list(dict.fromkeys(_check_name("tag", tag) for tag in tag_list))


def check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise InvalidInput(f"limit must be a whole number from {MIN_LIMIT} to {MAX_LIMIT}.")
    if not MIN_LIMIT <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit is {limit}; use a number from {MIN_LIMIT} to {MAX_LIMIT}.")
    return limit


def check_ids(ids: object, name: str = "ids") -> list[str]:
    if isinstance(ids, str) or not isinstance(ids, Iterable):
        raise InvalidInput(
            f"{name} must be a list of memory ids, as returned by remember or recall."
        )
    id_list = list(ids)
    if not id_list:
        raise InvalidInput(f"{name} is empty. Call recall to find the ids of memories.")
    if len(id_list) > MAX_IDS:
        raise InvalidInput(f"{len(id_list)} ids given in {name}; at most {MAX_IDS} at a time.")
    for memory_id in id_list:
        if not isinstance(memory_id, str) or not _ID.fullmatch(memory_id):
            shown = repr(memory_id)[:50]
            raise InvalidInput(
                f"{shown} is not a memory id: ids are 32 lowercase hex characters. "
                "Call recall to find ids."
            )
    return list(dict.fromkeys(id_list))


def check_metadata(metadata: object, max_bytes: int) -> dict[str, MetadataValue]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidInput('metadata must be an object of simple values, e.g. {"source": "chat"}.')
    if len(metadata) > MAX_METADATA_KEYS:
        raise InvalidInput(f"metadata has {len(metadata)} keys; at most {MAX_METADATA_KEYS}.")
    clean: dict[str, MetadataValue] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key.strip() or len(key) > 64:
            raise InvalidInput("metadata keys must be non-empty strings of at most 64 characters.")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(f"metadata[{key!r}] is {value}; only finite numbers are allowed.")
        if not isinstance(value, (str, int, float, bool)):
            raise InvalidInput(
                f"metadata[{key!r}] must be a string, number or boolean, "
                f"not {type(value).__name__}."
            )
        clean[key] = value
    size = len(json.dumps(clean, ensure_ascii=False).encode())
    if size > max_bytes:
        raise InvalidInput(f"metadata is {size} bytes as JSON; the limit is {max_bytes}.")
    return clean


def check_time(name: str, value: object) -> datetime | None:
    """Parse an ISO-8601 date or date-time. A value without a zone is taken as UTC."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(
            f"{name} must be an ISO-8601 date or time, e.g. 2025-01-31 or 2025-01-31T09:30:00Z."
        )
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            parsed = datetime(day.year, day.month, day.day)
        else:
            parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"{name}={value[:40]!r} is not an ISO-8601 date or time; use e.g. 2025-01-31 "
            "or 2025-01-31T09:30:00Z."
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def check_window(since: object, until: object) -> tuple[datetime | None, datetime | None]:
    start, end = check_time("since", since), check_time("until", until)
    if start is not None and end is not None and start > end:
        raise InvalidInput("since is later than until; swap them or drop one.")
    return start, end


def iso(moment: datetime) -> str:
    """UTC, to the second, with a Z: compact and unambiguous for a model to read."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
