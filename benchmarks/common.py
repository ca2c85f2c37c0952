"""What the benchmark scripts share: finding the subcog command, and percentiles."""

from __future__ import annotations

import math
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path


def subcog_command() -> str:
    """The `subcog` script beside this Python (the project's venv), else the one on PATH."""
    beside_python = Path(sys.executable).parent / "subcog"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("subcog")
    if found is None:
        sys.exit("cannot find the subcog command next to Python or on PATH; run `make run` first")
    return found


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks; NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
