"""Forget means erased: a forgotten memory's bytes leave every file under the data dir, whether
the server that forgot it exits at once, is killed, or the next process to open the store is a
one-shot command. Real `subcog serve` processes, real files scanned byte by byte."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.servers import JsonRpc, serve, subcog_command

WITHIN_S = 60.0


def holding(data_dir: Path, marker: bytes) -> list[Path]:
    """The files under data_dir whose bytes hold the marker."""
    found = []
    for root, _dirs, files in os.walk(data_dir):
        for name in files:
            path = Path(root) / name
            try:
                if marker in path.read_bytes():
                    found.append(path)
            except OSError:  # removed by upkeep meanwhile
                continue
    return found


def erased_within(data_dir: Path, marker: bytes, seconds: float = WITHIN_S) -> float:
    """Seconds until no file holds the marker; fails after `seconds`."""
    started = time.monotonic()
    while holding(data_dir, marker):
        assert time.monotonic() - started < seconds, holding(data_dir, marker)
        time.sleep(0.5)
    return time.monotonic() - started


def cleared_within(pending: Path, seconds: float = WITHIN_S) -> None:
    """The erase marker goes once the bytes are gone: a moment after, not at the same instant."""
    started = time.monotonic()
    while pending.exists():
        assert time.monotonic() - started < seconds, pending
        time.sleep(0.1)


def remember_and_forget(proc: subprocess.Popen[bytes], marker: str) -> None:
    rpc = JsonRpc(proc)
    rpc.initialize()
    for n in range(5):
        rpc.tool("remember", {"content": f"An ordinary note, number {n}."})
    stored = rpc.tool("remember", {"content": f"The secret is {marker}."})
    assert rpc.tool("forget", {"ids": [stored["id"]]})["forgotten"] == [stored["id"]]


def test_a_server_that_exits_right_after_forget_leaves_nothing(tmp_path: Path) -> None:
    """What a one-shot client does: forget, then close stdin a second later."""
    marker = uuid.uuid4().hex
    data_dir = Path(os.environ["SUBCOG_DATA_DIR"])
    with serve() as proc:
        remember_and_forget(proc, marker)
        assert holding(data_dir, marker.encode())  # still in the files: erasure takes seconds
        time.sleep(1)
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=WITHIN_S) == 0
    with serve() as proc:  # the next process, should the first have left anything
        JsonRpc(proc).initialize()
        erased_within(data_dir, marker.encode())
        proc.kill()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("next_process", ["serve", "stats"])
def test_a_killed_server_leaves_the_erasure_to_the_next_process(next_process: str) -> None:
    """Killed right after forget, the server leaves its marker; the next server finishes the
    erasure in the background, a one-shot command before it exits."""
    marker = uuid.uuid4().hex
    data_dir = Path(os.environ["SUBCOG_DATA_DIR"])
    with serve() as proc:
        remember_and_forget(proc, marker)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert holding(data_dir, marker.encode())
    assert (data_dir / ".erase-pending").exists()
    if next_process == "stats":
        subprocess.run([subcog_command(), "stats"], check=True, capture_output=True)
        assert not holding(data_dir, marker.encode())
    else:
        with serve() as proc:
            JsonRpc(proc).initialize()
            erased_within(data_dir, marker.encode())
            cleared_within(data_dir / ".erase-pending")
            proc.kill()
    assert not (data_dir / ".erase-pending").exists()


def test_the_marker_stays_until_the_old_versions_are_gone() -> None:
    """The erase marker is removed only once no version of the table holds the forgotten
    rows: the upkeep pass that rewrote the fragments is not the end of the erasure, and a
    process that stopped there leaves its marker."""
    from subcog.config import Settings
    from subcog.memory import open_store
    from subcog.storage.erasure import Erasure

    marker = uuid.uuid4().hex
    data_dir = Path(os.environ["SUBCOG_DATA_DIR"])
    pending = data_dir / ".erase-pending"
    with serve() as proc:
        remember_and_forget(proc, marker)
        proc.kill()
        proc.wait()
    store = open_store(Settings.from_env())  # it takes the erasure up in the background
    try:
        deadline = time.monotonic() + WITHIN_S
        while pending.exists() and Erasure.read(pending.read_text()).rewritten is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        if pending.exists():  # rewritten: the fragments hold it no more, old versions do
            assert holding(data_dir, marker.encode())
        erased_within(data_dir, marker.encode())
        cleared_within(pending)
    finally:
        store.close()
