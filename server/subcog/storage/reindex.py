"""A model switch: every memory's vectors written again, while servers keep serving.

The new vectors go into columns of their own, batch by batch, while servers keep serving from
the old ones; a row still without a new vector is what is left to do, so an interrupted run
resumes where it stopped. The switch (filling the last rows, swapping the columns and the
recorded model) happens under the write lock. From then on, servers still running the old
model refuse to write or search until restarted.

The domain embeds (memory.reindex); this module asks for texts and takes vectors:

    job = store.reindexing()
    if job.start():
        ... job.todo(batch), job.write(ids, vectors, windows) until todo is empty ...
        with job.switching():
            ... the same, for rows added meanwhile ...
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from subcog.storage.mirror import Mirror
from subcog.storage.schema import (
    NEXT_VECTOR,
    NEXT_WINDOWS,
    vectors_column,
    windows_column,
    windows_type,
)
from subcog.storage.table import Table
from subcog.storage.upkeep import Upkeep

MODEL_MARK = ".model-changed"  # touched when a reindex switches the model


class Reindex:
    def __init__(self, table: Table, mirror: Mirror, upkeep: Upkeep) -> None:
        self._table = table
        self._mirror = mirror
        self._upkeep = upkeep

    def start(self) -> bool:
        """Add the new columns (unless a run that stopped left them); False if every memory
        is embedded with the store's model already."""
        table, model = self._table, self._table.model
        with table.locked():
            meta, names = table.meta(), table.handle.schema.names
            done = (meta.get("subcog.model"), meta.get("subcog.dimension")) == (
                model,
                str(table.dimension),
            )
            if done and NEXT_VECTOR not in names:
                return False
            if NEXT_VECTOR in names and meta.get("subcog.reindex_to") != model:
                # left by a reindex to another model
                table.handle.drop_columns([c for c in (NEXT_VECTOR, NEXT_WINDOWS) if c in names])
                names = table.handle.schema.names
            added = [
                pa.field(NEXT_VECTOR, pa.list_(pa.float32(), table.dimension), nullable=True),
                pa.field(NEXT_WINDOWS, windows_type(table.dimension), nullable=True),
            ]
            added = [column for column in added if column.name not in names]
            if added:  # NEXT_WINDOWS alone: a reindex an earlier subcog left unfinished
                table.handle.add_columns(added)
                table.update_meta({"subcog.reindex_to": model})
        return True

    def todo(self, batch_size: int) -> tuple[list[str], list[str]]:
        """Ids and texts of up to `batch_size` memories without a new vector yet."""
        found = self._table.scan("reindex", f"{NEXT_VECTOR} IS NULL", ["id", "content"], batch_size)
        return found["id"].to_pylist(), found["content"].to_pylist()

    def write(
        self,
        ids: Sequence[str],
        vectors: npt.NDArray[np.float32],
        windows: Sequence[npt.NDArray[np.float32] | None],
    ) -> None:
        """Store these memories' new vectors and windows."""
        dimension = self._table.dimension
        update = pa.table(
            {
                "id": list(ids),
                NEXT_VECTOR: vectors_column(vectors, dimension),
                NEXT_WINDOWS: windows_column(windows, dimension),
            },
            schema=pa.schema(  # the id is the primary key: merge_insert needs it non-nullable
                [
                    pa.field("id", pa.string(), nullable=False),
                    pa.field(NEXT_VECTOR, pa.list_(pa.float32(), dimension)),
                    pa.field(NEXT_WINDOWS, windows_type(dimension)),
                ]
            ),
        )
        with self._table.locked():
            self._table.write("reindex", lambda: self._table.merge(update))

    @contextmanager
    def switching(self) -> Iterator[None]:
        """Hold the write lock while the caller fills the last rows, then switch the model."""
        table = self._table
        with table.locked():
            yield
            index = table.index_on(["vector"])
            if index is not None:
                table.handle.drop_index(index.name)
            table.handle.drop_columns(["vector", "chunks"])
            table.handle.alter_columns(
                {"path": NEXT_VECTOR, "rename": "vector"},
                {"path": NEXT_WINDOWS, "rename": "chunks"},
            )
            table.update_meta(
                {
                    "subcog.model": table.model,
                    "subcog.dimension": str(table.dimension),
                    "subcog.reindex_to": None,  # removes the key
                }
            )
            self._mirror.forget()
            (table.data_dir / MODEL_MARK).touch()
        self._upkeep.soon()  # builds the vector index again if the store is large
