"""`make run`, as the README's first command: without a terminal too, it prepares the model,
prints the configuration to paste with the absolute path of subcog, and serves MCP."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import INITIALIZE

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"


@pytest.mark.skipif(
    shutil.which("make") is None
    or not VENV_PYTHON.exists()
    or Path(sys.prefix).resolve() != VENV_PYTHON.parent.parent.resolve(),
    reason="make run serves from this checkout's .venv, which is not the one running the tests",
)
def test_make_run_without_a_terminal_prepares_the_model_and_prints_the_config_to_paste(
    tmp_path: Path,
) -> None:
    # -o: the venv is installed (the tests run in it); make must not reinstall it meanwhile.
    with (
        open(tmp_path / "stderr", "wb") as stderr_file,
        subprocess.Popen(
            ["make", "-s", "-o", ".venv/.installed-run", "run"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
        ) as proc,
    ):
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(json.dumps(INITIALIZE).encode() + b"\n")
        proc.stdin.flush()
        reply = json.loads(proc.stdout.readline())  # stdout carries the protocol alone
        proc.stdin.close()
        proc.wait(timeout=60)
    assert reply["result"]["serverInfo"]["name"] == "subcog"

    stderr = (tmp_path / "stderr").read_text()
    subcog = str((ROOT / ".venv" / "bin" / "subcog").absolute())
    config = {"mcpServers": {"subcog": {"command": subcog, "args": ["serve"]}}}
    assert json.dumps(config) in stderr
    assert f"claude mcp add subcog -- {subcog} serve" in stderr
    # The model was ready before the server started: doctor loaded it first.
    assert stderr.index("model: OK") < stderr.index("MCP server on stdio")
