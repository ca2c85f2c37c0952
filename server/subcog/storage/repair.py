"""`subcog repair`: the store rebuilt from every row that can be read (damage.py finds what
cannot), the damaged files kept aside, every damaged or lost index built again."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from subcog.errors import StoreBusy
from subcog.storage.damage import Damage, examine, keep_copies, rewrite
from subcog.storage.erasure import Marker
from subcog.storage.health import Health
from subcog.storage.indexes import Indexes
from subcog.storage.mirror import Mirror
from subcog.storage.table import Table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Repaired:
    """What `repair` found and did."""

    damage: Damage  # what examine found before the repair
    kept_in: Path | None  # where the damaged files were copied; None when nothing was damaged
    recovered: int  # memories in the store after the repair
    lost: int = 0  # memories of damaged files that could not be read


def repair(
    table: Table, indexes: Indexes, health: Health, mirror: Mirror, keep_in: Path
) -> Repaired:
    """Rebuild what `examine` finds damaged: the damaged files are copied under `keep_in`; if a
    data or deletion file is damaged, the table is written again from every row that can be
    read (old versions and their files dropped at once, a pending erasure with them); every
    index with a damaged file, or lost in the rewrite, is built again.

    Holds both locks throughout, so other processes' writes wait (StoreBusy past
    Limits.lock_timeout_s); their searches read the old version until the new one commits."""
    timeout = table.limits.lock_timeout_s
    if not table.compaction_locks(timeout=timeout):
        raise StoreBusy(
            f"Another process held the lock on {table.data_dir} for over {timeout:.0f} s. Try "
            "again shortly."
        )
    try:
        dataset = table.dataset()
        damage = examine(table.uri, dataset)
        if not damage:
            return Repaired(damage, None, dataset.count_rows())
        keep_copies(table.uri, damage, keep_in)
        if damage.fragments:
            counts = rewrite(table.uri, dataset, damage)
            recovered, lost = counts.recovered, counts.lost
        else:
            recovered, lost = dataset.count_rows(), 0
            for name in damage.indexes:
                table.handle.drop_index(name)
        table.handle.checkout_latest()
        table.ensure_indexes()
        indexes.vectors()
        health.broken.clear()
        mirror.forget()
        if damage.fragments:
            table.dataset().cleanup_old_versions(older_than=timedelta(0), delete_unverified=True)
            Marker(table.data_dir).remove()  # nothing forgotten was copied
        log.debug("repaired the store in %s: %d memories kept", table.data_dir, recovered)
        return Repaired(damage, keep_in, recovered, lost)
    finally:
        table.write_lock.release()
        table.index_lock.release()
