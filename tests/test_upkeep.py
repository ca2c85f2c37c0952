"""A server's upkeep child (subcog.upkeep): a child that stops answering is stopped, not waited
for with the server's upkeep."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from subcog.upkeep import read_answer


def test_a_child_that_gives_no_answer_is_stopped() -> None:
    hung = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    started = time.monotonic()
    with hung, pytest.raises(RuntimeError, match="gave no answer in 1 s"):
        read_answer(hung, 1.0)
    assert time.monotonic() - started < 10
    assert hung.returncode is not None  # killed, not left running


def test_an_answer_is_read_whole() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "print('{\"ran\": true}')"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    with child:
        assert read_answer(child, 30.0) == '{"ran": true}\n'
