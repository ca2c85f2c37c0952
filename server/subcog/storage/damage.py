"""Which of a Lance table's files cannot be read, and how many memories that costs.

A data file cut short (a full disk, a copy stopped half way, a bad sector) makes Lance fail on
every read that touches it: `LanceError(IO) ... failed to fill whole buffer`. Each memory lives
in one fragment, and a fragment's rows in a few data files (one per group of columns) plus an
optional deletion file. So a damaged data file costs its fragment's memories and no others,
and a damaged index file costs nothing that cannot be rebuilt from the rows.

`examine` reads every file of the latest version to the end (subcog doctor, subcog repair);
the server finds damage as it reads (mirror.py) and names the files with `examine_fragment`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lance import LanceDataset
    from lance.fragment import LanceFragment

log = logging.getLogger(__name__)

READ_BATCH_ROWS = 1024  # a file is read to its end in batches of this many rows, then dropped

# What Lance raises for a file it cannot read: ArrowInvalid (a ValueError) from scans, OSError
# from the file reader, RuntimeError from LanceDB's queries.
UNREADABLE = (OSError, ValueError, RuntimeError)


@dataclass(frozen=True)
class DamagedFile:
    """One file that cannot be read to its end."""

    path: str  # relative to the table's directory, e.g. "data/0110….lance"
    kind: str  # "data", "deletions" or "index"
    memories: int  # the live memories it holds (data, deletions) or covers (index)
    error: str  # the first line of what Lance said
    index: str | None = None  # the index's name, for an index file

    def describe(self) -> str:
        """The file and what it is, for a person."""
        if self.kind == "index":
            return f"{self.path} (the index {self.index}, which a repair builds again)"
        if self.kind == "deletions":
            return (
                f"{self.path} (which of {_count(self.memories, 'memory', 'memories')} are deleted)"
            )
        return f"{self.path} (data of {_count(self.memories, 'memory', 'memories')})"


@dataclass(frozen=True)
class Damage:
    """What cannot be read in one version of the table. Empty (falsy) when all is well."""

    version: int = 0
    files: tuple[DamagedFile, ...] = ()
    # fragment id: its live memories, for every fragment with a damaged data or deletion file
    fragments: Mapping[int, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.files)

    @property
    def unreadable(self) -> int:
        """Memories that no read can return until `subcog repair`."""
        return sum(self.fragments.values())

    @property
    def indexes(self) -> set[str]:
        """Names of the indexes with a damaged file."""
        return {f.index for f in self.files if f.index is not None}

    def merged(self, other: Damage) -> Damage:
        files = {f.path: f for f in (*self.files, *other.files)}
        return Damage(
            max(self.version, other.version),
            tuple(files.values()),
            {**self.fragments, **other.fragments},
        )

    def summary(self) -> str:
        """One sentence: what is lost and what to run."""
        data = [f for f in self.files if f.kind != "index"]
        parts = []
        if data:
            parts.append(
                f"{self.unreadable} memories are in {_count(len(data), 'file')} that cannot be read"
            )
        if self.indexes:
            parts.append(f"{_count(len(self.indexes), 'index', 'indexes')} cannot be read")
        return (
            f"The store is damaged: {' and '.join(parts)}. Run `subcog doctor` to see which "
            "files, and `subcog repair` to rebuild the store from every memory that can be read."
        )


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def what_lance_said(error: BaseException) -> str:
    """The first line of an error, without the Rust source path Lance appends."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return re.split(r", /\S+\.rs:\d+", text)[0][:300]


def _read_to_end(path: Path) -> None:
    """Read a Lance file's every page, a batch at a time. Raises what Lance raises."""
    from lance.file import LanceFileReader

    reader = LanceFileReader(str(path))
    for _batch in reader.read_all(batch_size=READ_BATCH_ROWS).to_batches():
        pass


def examine_fragment(table_dir: Path, fragment: LanceFragment) -> list[DamagedFile]:
    """The damaged files of one fragment: each data file read to its end, and its deletion
    file (which count_rows reads)."""
    meta = fragment.metadata
    damaged: list[DamagedFile] = []
    try:
        live = fragment.count_rows()
    except UNREADABLE as error:
        live = meta.physical_rows or 0
        deleted = meta.deletion_file
        path = "_deletions" if deleted is None else str(deleted.path(meta.id))
        damaged.append(DamagedFile(path, "deletions", live, what_lance_said(error)))
    for file in meta.files:
        relative = f"data/{file.path}"
        try:
            _read_to_end(table_dir / relative)
        except UNREADABLE as error:
            damaged.append(DamagedFile(relative, "data", live, what_lance_said(error)))
    return damaged


@dataclass(frozen=True)
class Segment:
    """One part of an index (an index folded new rows into itself as a part of its own)."""

    index: str  # the index's name
    columns: tuple[str, ...]
    uuid: str  # its folder under _indices
    fragments: frozenset[int]  # the fragments whose rows it covers


def segments(dataset: LanceDataset) -> list[Segment]:
    """Every part of every index of the dataset's version."""
    return [
        Segment(
            description.name,
            tuple(description.field_names),
            str(part.uuid),
            frozenset(part.fragment_ids or ()),
        )
        for description in dataset.describe_indices()
        for part in description.segments
    ]


def examine_indexes(
    table_dir: Path, dataset: LanceDataset, rows_of: Mapping[int, int]
) -> list[DamagedFile]:
    """The damaged files of the version's indexes."""
    damaged: list[DamagedFile] = []
    for segment in segments(dataset):
        covers = sum(rows_of.get(f, 0) for f in segment.fragments)
        folder = f"_indices/{segment.uuid}"
        try:
            files = sorted(os.listdir(table_dir / folder))
        except OSError as error:
            damaged.append(
                DamagedFile(folder, "index", covers, what_lance_said(error), segment.index)
            )
            continue
        for file in files:  # .lance files, and .idx for the vector index: all Lance files
            try:
                _read_to_end(table_dir / folder / file)
            except UNREADABLE as error:
                damaged.append(
                    DamagedFile(
                        f"{folder}/{file}", "index", covers, what_lance_said(error), segment.index
                    )
                )
    return damaged


def examine(table_dir: Path, dataset: LanceDataset) -> Damage:
    """Read every data, deletion and index file of the dataset's version to its end."""
    damaged: list[DamagedFile] = []
    fragments: dict[int, int] = {}
    rows_of: dict[int, int] = {}
    for fragment in dataset.get_fragments():
        files = examine_fragment(table_dir, fragment)
        live = files[0].memories if files else fragment.count_rows()
        rows_of[fragment.fragment_id] = live
        if files:
            fragments[fragment.fragment_id] = live
            damaged.extend(files)
    damaged.extend(examine_indexes(table_dir, dataset, rows_of))
    return Damage(dataset.version, tuple(damaged), fragments)


SALVAGE_ROWS = (
    256  # a damaged fragment is read in slices of this many rows; each that fails is lost
)


def keep_copies(table_dir: Path, damage: Damage, into: Path) -> None:
    """Copy the damaged files under `into`, at their paths in the table, before a repair
    drops them: what a better tool might still read from them."""
    import shutil

    for file in damage.files:
        source = table_dir / file.path
        if not source.is_file():
            continue
        target = into / file.path
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copy2(source, target)
        os.chmod(target, 0o600)


@dataclass
class Rewritten:
    """What a rewrite kept."""

    recovered: int = 0  # memories written to the new version
    lost: int = 0  # memories of damaged fragments that could not be read


def rewrite(uri: Path, dataset: LanceDataset, damage: Damage) -> Rewritten:
    """Overwrite the table with every row that can be read: whole fragments where nothing is
    damaged, and slices of SALVAGE_ROWS from the damaged ones. The new version has the same
    schema (with its metadata: the model, the primary key) and no indexes."""
    import lance
    import pyarrow as pa

    schema = dataset.schema
    counts = Rewritten()

    def batches() -> Iterable[pa.RecordBatch]:
        for fragment in dataset.get_fragments():
            if fragment.fragment_id not in damage.fragments:
                for batch in fragment.to_batches(columns=schema.names, batch_size=READ_BATCH_ROWS):
                    counts.recovered += batch.num_rows
                    yield batch
                continue
            live = damage.fragments[fragment.fragment_id]
            read = 0
            for offset in range(0, live, SALVAGE_ROWS):
                try:
                    part = fragment.to_table(
                        columns=schema.names, offset=offset, limit=SALVAGE_ROWS
                    )
                except UNREADABLE:
                    continue
                read += part.num_rows
                yield from part.to_batches()
            counts.recovered += read
            counts.lost += max(0, live - read)

    reader = pa.RecordBatchReader.from_batches(schema, iter(batches()))
    lance.write_dataset(reader, str(uri), schema=schema, mode="overwrite")
    return counts
