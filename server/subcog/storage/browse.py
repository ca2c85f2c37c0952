"""What the web page reads of the store beyond search: pages of memories newest first, and the
counts per scope, tag and week. Plain Arrow over the columns the store hands in."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.compute as pc

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Key:
    """Where a page of memories, newest first, starts after: a memory's time and id."""

    micros: int  # created_at, in microseconds since the epoch (UTC)
    id: str

    @property
    def moment(self) -> datetime:
        return _EPOCH + timedelta(microseconds=self.micros)


@dataclass
class Tallies:
    scopes: dict[str, int] = field(default_factory=dict)
    tags: dict[str, int] = field(default_factory=dict)
    weeks: dict[str, int] = field(default_factory=dict)  # Monday (YYYY-MM-DD) -> memories


def page_keys(keys: pa.Table, limit: int, after: Key | None) -> list[Key]:
    """The keys of the next page: `keys` (columns id and created_at) sorted by time and then
    id, both descending, from just after `after`. Only two columns are sorted, so a page costs
    about the same at any depth (keyset paging, not an offset)."""
    times = pc.cast(keys["created_at"], pa.int64())
    ids = keys["id"]
    if after is not None:
        older = pc.less(times, after.micros)
        tied = pc.and_(pc.equal(times, after.micros), pc.less(ids, after.id))
        keep = pc.or_(older, tied)
        times, ids = times.filter(keep), ids.filter(keep)
    order = pc.sort_indices(
        pa.table({"t": times, "id": ids}), [("t", "descending"), ("id", "descending")]
    )[:limit]
    return [
        Key(t, i)
        for t, i in zip(times.take(order).to_pylist(), ids.take(order).to_pylist(), strict=True)
    ]


def tallies(rows: pa.Table) -> Tallies:
    """Counts per scope, per tag and per week (starting on Monday, UTC) of `rows` (columns
    scope, tags and created_at), largest first; weeks in order."""
    if rows.num_rows == 0:
        return Tallies()
    weeks = pc.floor_temporal(rows["created_at"], unit="week", week_starts_monday=True)
    by_week = _counts(pc.strftime(weeks, format="%Y-%m-%d"))
    return Tallies(
        scopes=_largest_first(_counts(rows["scope"])),
        tags=_largest_first(_counts(pc.list_flatten(rows["tags"]))),
        weeks=dict(sorted(by_week.items())),
    )


def _counts(values: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    return {item["values"]: item["counts"] for item in pc.value_counts(values).to_pylist()}


def _largest_first(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
