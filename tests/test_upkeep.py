"""A server's upkeep child (subcog.storage.aside): a child that stops answering is stopped, not
waited for with the server's upkeep."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from subcog.storage.aside import read_answer


def python(code: str) -> subprocess.Popen[str]:
    """A real child process running `code`, on pipes as the upkeep child is."""
    command = [sys.executable, "-c", code]
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_a_child_that_gives_no_answer_is_stopped() -> None:
    started = time.monotonic()
    with python("import time; time.sleep(60)") as hung:
        with pytest.raises(RuntimeError, match="gave no answer in 1 s"):
            read_answer(hung, 1.0)
        assert time.monotonic() - started < 10
        assert hung.returncode is not None  # killed, not left running


def test_an_answer_is_read_whole() -> None:
    with python("print('{\"ran\": true}')") as child:
        assert read_answer(child, 30.0) == '{"ran": true}\n'
