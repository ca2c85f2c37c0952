"""How the commands print: JSON, one memory per line, aligned fields, sizes and dates."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from subcog.memory import RecalledMemory, StoredMemory


def print_json(value: object) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


def one_line(text: str) -> str:
    return " ".join(text.split())


def cut(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1].rstrip() + "…"


def local_time(iso: str) -> str:
    """A stored UTC time as the reader's local time, to the minute."""
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def memory_line(found: RecalledMemory | StoredMemory, default_scope: str) -> str:
    """One memory on one line: when, id, scope, text, tags (and the score, for recall)."""
    score = getattr(found, "score", None)
    tags = "  " + " ".join(f"#{tag}" for tag in found.tags) if found.tags else ""
    return (
        ("" if score is None else f"{score:.3f}  ")
        + f"{local_time(found.created_at)}  {found.id}  [{found.scope or default_scope}] "
        + one_line(found.content)
        + tags
    )


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def aligned(pairs: Sequence[tuple[str, object]]) -> str:
    width = max(len(key) for key, _ in pairs) + 2
    return "\n".join(f"{key + ':' if key else '':<{width}}{value}" for key, value in pairs)
