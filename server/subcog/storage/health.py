"""Damage a process finds while it serves: a file that cannot be read costs the memories it
holds, not the store (damage.py reads every file; this keeps what searches ran into)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from subcog.storage import aside
from subcog.storage.damage import Damage, DamagedFile, examine_fragment, what_lance_said
from subcog.storage.mirror import Snapshot
from subcog.storage.table import Table

log = logging.getLogger(__name__)


class Health:
    """Indexes whose search failed, and the named files of fragments that could not be read."""

    def __init__(self, table: Table, upkeep_aside: bool) -> None:
        self._table = table
        self._aside = upkeep_aside  # name damaged files in the upkeep child (aside.py)
        # index name: (its parts, what Lance said)
        self.broken: dict[str, tuple[frozenset[str], str]] = {}
        self._named: dict[tuple[tuple[int, int], ...], tuple[DamagedFile, ...]] = {}
        self.told_waiting = False  # that upkeep waits for a repair, said once

    def index_failed(self, columns: list[str], error: BaseException) -> bool:
        """An index on `columns` failed a search: say so once. True if it is news (upkeep
        should build it again)."""
        index = self._table.index_on(columns)
        if index is None:
            return False
        name, uuids = index.name, frozenset({index.index_uuid})
        if self.broken.get(name, (None,))[0] == uuids:
            return False
        self.broken[name] = (uuids, what_lance_said(error))
        log.warning(
            "the index %s of the store in %s cannot be read (%s); searches go on without it "
            "while it is built again. If this repeats, run `subcog repair`.",
            name,
            self._table.data_dir,
            self.broken[name][1],
        )
        return True

    def index_parts(self) -> dict[str, frozenset[str]]:
        """Each index's name: its uuid, which changes when it is built again."""
        return {index.name: frozenset({index.index_uuid}) for index in self._table.indexes()}

    def asked_to_rebuild(self) -> dict[str, list[str]]:
        """The broken indexes as upkeep takes them: name: the uuids that failed."""
        return {name: sorted(uuids) for name, (uuids, _error) in self.broken.items()}

    def rebuilt(self, names: list[str], asked: dict[str, list[str]]) -> None:
        """Upkeep built these indexes again; unless a search found the new one failing too."""
        for name in names:
            if name in self.broken and sorted(self.broken[name][0]) == asked.get(name):
                del self.broken[name]

    def damage(self, snapshot: Snapshot) -> Damage:
        """What this process found it cannot read in the snapshot: the fragments that failed
        to load (with their damaged files named) and the indexes that failed a search."""
        if not snapshot.unreadable and not self.broken:
            return Damage(snapshot.version)
        files: list[DamagedFile] = []
        if snapshot.unreadable:
            key = tuple(sorted(snapshot.unreadable.items()))
            if key not in self._named:
                self._named[key] = tuple(self._name(dict(snapshot.unreadable)))
            files.extend(self._named[key])
        current = self.index_parts() if self.broken else {}
        for name, (uuids, error) in list(self.broken.items()):
            if current.get(name) != uuids:
                del self.broken[name]  # built again since
                continue
            for uid in sorted(uuids):
                files.append(DamagedFile(f"_indices/{uid}", "index", 0, error, name))
        return Damage(snapshot.version, tuple(files), dict(snapshot.unreadable))

    def _name(self, fragments: dict[int, int]) -> list[DamagedFile]:
        if not self._aside:
            return name_damage(self._table, fragments)
        table = self._table
        request = aside.Request("name-damage", str(table.data_dir), table.model, table.dimension)
        request = replace(
            request,
            fragments=fragments,
            limits=table.limits.to_dict(),
            store=table.location.db,
        )
        return aside.damaged_files(request)


def name_damage(table: Table, fragments: dict[int, int]) -> list[DamagedFile]:
    """The damaged files of these fragments (id: live memories), read to their end."""
    files: list[DamagedFile] = []
    dataset: Any = table.dataset()
    for fragment in dataset.get_fragments():
        if fragment.fragment_id in fragments:
            found = examine_fragment(table.uri, fragment)
            memories = fragments[fragment.fragment_id]
            files.extend(found or [DamagedFile("data", "data", memories, "could not be read")])
    return files
