"""Forget means erased: the marker a forget leaves until no file holds the forgotten rows.

LanceDB's delete only marks rows. Upkeep (upkeep.py) rewrites every fragment with a deleted
row, builds the full-text index again (its word lists would name forgotten words), and drops
the old versions that still hold the rows once they are old enough. The marker file records
how far that got, so a process that exits at any point leaves the erasure to the next one.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

MARKER = ".erase-pending"


@dataclass(frozen=True)
class Erasure:
    """What the marker holds: a forget's token (a new one with every forget), and once the
    files hold the forgotten rows no more, the table's version then and the time."""

    token: str
    rewritten: int | None = None
    at: float | None = None

    @classmethod
    def read(cls, text: str) -> Erasure:
        try:
            data = json.loads(text)
            return cls(str(data["token"]), data.get("rewritten"), data.get("at"))
        except (ValueError, KeyError, TypeError):  # an earlier subcog's marker: a bare token
            return cls(text.strip() or "?")

    def text(self) -> str:
        return json.dumps({"token": self.token, "rewritten": self.rewritten, "at": self.at})


class Marker:
    """The marker file of one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / MARKER

    def pending(self) -> Erasure | None:
        """The erasure a forget asked for and nobody finished, if any."""
        try:
            text = self.path.read_text()
        except OSError:
            return None
        return Erasure.read(text)

    def forgot(self) -> None:
        """A forget deleted rows: a new erasure (a pass under way starts again)."""
        self.write(Erasure(uuid.uuid4().hex))

    def write(self, erasure: Erasure) -> None:
        """Write the marker whole (another process may read it meanwhile)."""
        staging = self.path.with_name(f".erase-{os.getpid()}-{threading.get_ident()}")
        staging.write_text(erasure.text())
        os.replace(staging, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
