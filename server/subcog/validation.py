"""Checks on every value that crosses the boundary, shared by the MCP tools and the CLI.

Each check returns the normalised value or raises InvalidInput with a sentence that says
what to send instead. Values that end up inside a LanceDB filter (tags, scopes, ids) are
restricted to characters that cannot break out of a SQL string literal.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta, timezone
from typing import Any

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


def check_query(query: object, required: bool = True) -> str:
    """The query; "" when it may be left out (recall with filters only) and was."""
    if not required and (query is None or (isinstance(query, str) and not query.strip())):
        return ""
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
    parsed = _iso(value.strip())
    if parsed is None:
        raise InvalidInput(
            f"{name}={value[:40]!r} is not an ISO-8601 date or time; use e.g. 2025-01-31 "
            "or 2025-01-31T09:30:00Z."
        )
    return _utc(name, value, parsed)


def _iso(text: str) -> datetime | None:
    """An ISO-8601 date or date-time (a bare date is its midnight, in UTC); None if not one.
    For import's created_at; since and until read times without a zone as local ones."""
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def _utc(name: str, value: str, moment: datetime) -> datetime:
    try:
        return moment.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        raise InvalidInput(
            f"{name}={value[:40]!r} is out of range; use a time between the years 1 and 9999."
        ) from None


WHEN_FORMS = (
    "an ISO-8601 date or time (2025-01-31, 2025-01-31T09:30:00Z), a month (2026-11), or words "
    "such as yesterday, today, last week, last month, 3 days ago, past 7 days, Monday"
)
# Words that only say which side of the window a time is on: "since Monday" is Monday.
_SIDE = re.compile(r"^(since|after|from|until|till|before|up to|by)\s+", re.IGNORECASE)
# "past 7 days", "in the last 3 weeks", "last 24 hours": a rolling window, which dateparser reads
# as "7 days ago". A plain "last week" or "last month" is the calendar's.
_ROLLING = re.compile(
    r"^(?P<lead>(?:in|over|during|within)\s+(?:the\s+)?|the\s+)?(?P<word>last|past)\s+"
    r"(?P<count>\d+|a|an|one)?\s*(?P<unit>minute|hour|day|week|month|year)s?$",
    re.IGNORECASE,
)
# Phrases that name an instant rather than a day, week, month or year.
_INSTANT = re.compile(
    r"\b(hours?|minutes?|mins?|seconds?|secs?|now|noon|midnight)\b|\d\s*[ap]\.?m\b|\d:\d",
    re.IGNORECASE,
)
_ZONED = re.compile(r"([zZ]|[+-]\d\d(:?\d\d)?)$")
_COUNTED = re.compile(r"\bago\b|\d+\s*(d|w|days?|weeks?|months?|years?)\b", re.IGNORECASE)


def check_when(
    name: str, value: object, end: bool = False, now: datetime | None = None
) -> datetime | None:
    """since or until: an ISO-8601 date or time, or a time in words ("yesterday", "last week",
    "3 days ago", "2026-11", "since Monday"), read in the local time zone. A day, week, month or
    year stands for its start as `since` and its end as `until` (end=True)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{name} must be a string: {WHEN_FORMS}.")
    text = _SIDE.sub("", value.strip()).strip()
    try:
        day = date.fromisoformat(text)  # a bare date: its whole day, here
    except ValueError:
        day = None
    if day is not None:
        midnight = _local(name, value, datetime(day.year, day.month, day.day))
        return _utc(name, value, _bound(midnight, "day", end))
    exact = _iso(text)
    if exact is not None:
        if not _ZONED.search(text):  # a time without a zone is a local one
            exact = _local(name, value, exact.replace(tzinfo=None))
        return _utc(name, value, exact)
    moment, period = _words(name, value, text, now)
    return _utc(name, value, _bound(moment, period, end))


def _local(name: str, value: str, naive: datetime) -> datetime:
    """A wall-clock time read in the local time zone (with its daylight saving that day)."""
    try:
        return naive.astimezone()
    except (OverflowError, ValueError, OSError):
        raise InvalidInput(
            f"{name}={value[:40]!r} is out of range; use a time between the years 1 and 9999."
        ) from None


def _words(name: str, value: str, text: str, now: datetime | None) -> tuple[datetime, str]:
    """dateparser's reading of a time in words, and the span it names: instant, day, week,
    month or year."""
    rolling = _ROLLING.match(text)
    if rolling and not (rolling["count"] or rolling["lead"] or rolling["word"].lower() == "past"):
        rolling = None
    if rolling:
        count = rolling["count"] or "1"
        text = f"{1 if count.lower() in ('a', 'an', 'one') else count} {rolling['unit']}s ago"
    from dateparser.date import DateDataParser

    settings: dict[str, object] = {"PREFER_DATES_FROM": "past", "RETURN_AS_TIMEZONE_AWARE": True}
    if now is not None:
        settings["RELATIVE_BASE"] = now.astimezone().replace(tzinfo=None)
    try:
        found = DateDataParser(languages=["en"], settings=settings).get_date_data(text)
    except (ValueError, OverflowError):
        found = None
    if found is None or found.date_obj is None:
        raise InvalidInput(
            f"{name}={value[:40]!r} is not a time subcog can read; use {WHEN_FORMS}."
        )
    moment: datetime = found.date_obj
    if rolling or _INSTANT.search(text):
        return moment, "instant"
    if _COUNTED.search(text):
        return moment, "day"
    return moment, found.period or "day"


def _bound(moment: datetime, period: str, end: bool) -> datetime:
    """The start (or, with end, the last microsecond) of the period holding the moment."""
    if period == "instant":
        return moment
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        after = start + timedelta(days=7)
    elif period == "month":
        start = day.replace(day=1)
        after = (start + timedelta(days=32)).replace(day=1)
    elif period == "year":
        start = day.replace(month=1, day=1)
        after = start.replace(year=start.year + 1)
    else:
        start, after = day, day + timedelta(days=1)
    return after - timedelta(microseconds=1) if end else start


def check_window(
    since: object, until: object, now: datetime | None = None
) -> tuple[datetime | None, datetime | None]:
    start = check_when("since", since, now=now)
    end = check_when("until", until, end=True, now=now)
    if start is not None and end is not None and start > end:
        raise InvalidInput("since is later than until; swap them or drop one.")
    return start, end


def iso(moment: datetime) -> str:
    """UTC, to the second, with a Z: compact and unambiguous for a model to read."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_arguments(tool: str, schema: Mapping[str, object], arguments: object) -> None:
    """A tool's arguments against its input schema, strictly: no argument it does not take,
    no "5" for a number nor true for 1. One sentence per problem, in our words."""
    import jsonschema

    validator = jsonschema.Draft202012Validator({**schema, "additionalProperties": False})
    problems = [
        _problem(tool, schema, _deepest(error)) for error in validator.iter_errors(arguments)
    ]
    if problems:
        raise InvalidInput(" ".join(list(dict.fromkeys(problems))[:3]))


def _deepest(error: Any) -> Any:
    """For a value that matches none of a parameter's forms (anyOf), the error inside it, if
    one names a part of the value (metadata's key) rather than the value as a whole."""
    inner = [e for e in error.context or () if list(e.absolute_path) != list(error.absolute_path)]
    return _deepest(inner[0]) if error.validator == "anyOf" and inner else error


def _problem(tool: str, schema: Mapping[str, Any], error: Any) -> str:
    properties: dict[str, Any] = dict(schema.get("properties", {}))
    names = ", ".join(properties)
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and not path:
        unknown = sorted(set(error.instance) - set(properties))
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, properties, n=1)
            hints.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        return f"{tool} takes no argument {', '.join(hints)}; it takes {names}."
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else "an argument"
        return f"{tool} needs {missing}."
    if error.validator == "type" and not path:
        return f"{tool}'s arguments must be an object of {names}."
    where = _where(path)
    expected = _expected(properties.get(str(path[0]), {})) if path else "a value"
    value = error.instance
    if error.validator in ("type", "anyOf") and len(path) == 1:
        return f"{where} must be {expected}, not {_kind(value)}."
    if error.validator in ("type", "anyOf"):  # a list's item, or an object's value
        spec = properties.get(str(path[0]), {})
        kinds = [o.get("type") for o in spec.get("anyOf", [spec]) if o.get("type") != "null"]
        inside = "a string" if "array" in kinds else "a string, number or boolean"
        return f"{where} must be {inside}, not {_kind(value)}."
    if error.validator == "minimum":
        return f"{where} is {value}; use at least {error.validator_value}."
    if error.validator == "maximum":
        return f"{where} is {value}; use at most {error.validator_value}."
    if error.validator == "minLength":
        return f"{where} is empty; send at least {error.validator_value} character."
    if error.validator == "maxLength":
        return f"{where} has {len(value)} characters; the limit is {error.validator_value}."
    if error.validator == "maxItems":
        return f"{where} has {len(value)} items; at most {error.validator_value} are allowed."
    return f"{where} is not valid: send {expected}."


def _where(path: list[Any]) -> str:
    name = str(path[0])
    for part in path[1:]:
        name += f"[{part!r}]"
    return name


def _expected(spec: Mapping[str, Any]) -> str:
    """What a parameter's schema asks for, in words."""
    kinds = [option for option in spec.get("anyOf", [spec]) if option.get("type") != "null"]
    kind = kinds[0] if kinds else {}
    words = {
        "string": "a string",
        "integer": "a whole number",
        "number": "a number",
        "boolean": "true or false",
        "object": "an object of strings, numbers and booleans",
        "array": "a list of strings",
    }.get(str(kind.get("type")), "a value")
    low, high = kind.get("minimum"), kind.get("maximum")
    if low is not None and high is not None:
        words += f" from {low} to {high}"
    return words


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        shown = value if len(value) <= 20 else value[:20] + "..."
        return f"the string {json.dumps(shown)}"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    return {"list": "a list", "dict": "an object"}.get(type(value).__name__, "something else")
