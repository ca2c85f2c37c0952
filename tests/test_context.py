"""`subcog context`, and the Claude Code SessionStart hook that runs it: the scope's recent
memories on stdout, fast, and never a failed session."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest
from filelock import FileLock

from subcog.cli import CONTEXT_LOCK_WAIT_S, main
from subcog.memory import Memory
from tests.servers import subcog_command

ROOT = Path(__file__).resolve().parent.parent
HOOKS = json.loads((ROOT / "examples" / "claude-code" / ".claude" / "settings.json").read_text())
# What Claude Code writes on the hook's stdin at the start of a session.
SESSION_START = {
    "session_id": "abc123",
    "transcript_path": "/home/you/.claude/projects/p/abc123.jsonl",
    "cwd": "/home/you/p",
    "hook_event_name": "SessionStart",
    "source": "startup",
}


def remembered(memory: Memory, notes: list[tuple[str, str]]) -> None:
    """Remember (text, scope) pairs, oldest first, and close the store for the next process."""
    for text, scope in notes:
        memory.remember(text, ["ops"] if "deploy" in text else None, scope)
    memory.close()


def test_context_prints_the_scopes_newest_memories_within_the_budget(
    memory: Memory, capsys: pytest.CaptureFixture[str]
) -> None:
    remembered(
        memory,
        [(f"Fact number {i} about the project: " + "detail " * 20, "proj") for i in range(30)]
        + [("We deploy with make release.", "proj"), ("Another project's fact.", "other")],
    )
    assert main(["context", "--scope", "proj"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("Long-term memories from subcog, scope proj: the ")
    assert "most recent of 31, newest first" in lines[0]
    assert lines[1].startswith("- ")
    assert "We deploy with make release. [ops] (id " in lines[1]
    assert "Fact number 29 " in lines[2]
    assert "Another project" not in out
    assert len(out.rstrip("\n")) <= 2000

    assert main(["context", "--scope", "proj", "--max-chars", "400"]) == 0
    small = capsys.readouterr().out.rstrip("\n")
    assert len(small) <= 400
    assert len(small.splitlines()) >= 2

    assert main(["context", "--scope", "*", "--limit", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Long-term memories from subcog, every scope: the 1 most recent")
    assert "Another project's fact. (scope other) (id " in lines[1]

    assert main(["context", "--scope", "proj", "--limit", "2", "--json"]) == 0
    block = json.loads(capsys.readouterr().out)
    assert (block["scope"], block["count"], len(block["memories"])) == ("proj", 31, 2)
    assert block["text"].splitlines()[1].startswith("- ")


def test_a_long_memory_is_cut_to_a_line(memory: Memory, capsys: pytest.CaptureFixture[str]) -> None:
    remembered(memory, [("A long one. " + "word " * 1000, "default")])
    assert main(["context"]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert len(line) <= 300
    assert line.endswith("…")


def hook(env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    """The example's SessionStart hook, run as Claude Code runs it: its command in a shell,
    the session's JSON on stdin; with this checkout's subcog for /home/you/.local/bin/subcog."""
    (entry,) = HOOKS["hooks"]["SessionStart"]
    (command,) = entry["hooks"]
    assert command["type"] == "command"
    assert "startup" in entry["matcher"].split("|")
    line = command["command"].replace("/home/you/.local/bin/subcog", shlex.quote(subcog_command()))
    started = time.monotonic()
    done = subprocess.run(
        line,
        shell=True,
        input=json.dumps(SESSION_START),
        capture_output=True,
        text=True,
        env=env,
        timeout=command["timeout"],
        check=False,
    )
    return done, time.monotonic() - started


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "SUBCOG_DATA_DIR": str(tmp_path / "data")}


def test_the_session_start_hook_adds_the_projects_memories(
    memory: Memory, env: dict[str, str]
) -> None:
    remembered(
        memory,
        [("The staging host is stage-2.", "my-project"), ("Unrelated.", "default")],
    )
    done, seconds = hook(env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Long-term memories from subcog, scope my-project: all 1,")
    assert "- " + time.strftime("%Y-") in done.stdout
    assert "The staging host is stage-2." in done.stdout
    assert "Unrelated" not in done.stdout
    assert seconds < 10


@pytest.mark.parametrize("store", ["empty", "missing"])
def test_the_hook_says_nothing_and_succeeds_without_memories(
    memory: Memory, env: dict[str, str], tmp_path: Path, store: str
) -> None:
    if store == "missing":
        env["SUBCOG_DATA_DIR"] = str(tmp_path / "never-made")
    else:
        remembered(memory, [("Only in another scope.", "default")])
    done, _ = hook(env)
    assert (done.returncode, done.stdout) == (0, "")
    assert done.stderr.strip() == "subcog: no memories in scope my-project"


def test_the_hook_does_not_wait_long_for_a_busy_store(
    memory: Memory, env: dict[str, str], tmp_path: Path
) -> None:
    """Another process in the middle of a long write (an import, a compaction) holds the
    store's write lock, which opening the store takes for a moment."""
    remembered(memory, [("Written before the lock was taken.", "my-project")])
    with FileLock(tmp_path / "data" / ".write.lock"):
        done, seconds = hook(env)
    assert (done.returncode, done.stdout) == (0, "")
    assert "subcog: no context from the memory store: Another process held the write lock" in (
        done.stderr
    )
    assert CONTEXT_LOCK_WAIT_S <= seconds < 10
