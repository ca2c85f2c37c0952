"""Real `subcog serve` processes for tests: how to start one, and two ways to talk to it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters

# A raw JSON-RPC initialize request, for tests that speak the protocol by hand.
INITIALIZE: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "subcog-tests", "version": "1"},
    },
}


def subcog_command() -> str:
    here = Path(sys.executable).parent / ("subcog.exe" if os.name == "nt" else "subcog")
    found = str(here) if here.exists() else shutil.which("subcog")
    assert found, "the subcog console script is not installed"
    return found


def serve(
    env: Mapping[str, str] | None = None, stderr: int = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    """A `subcog serve` process on pipes, in `env` (the test's environment by default)."""
    return subprocess.Popen(
        [subcog_command(), "serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=dict(os.environ if env is None else env),
    )


def server_params() -> StdioServerParameters:
    return StdioServerParameters(command=subcog_command(), args=["serve"], env=dict(os.environ))


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


class JsonRpc:
    """Raw JSON-RPC lines to a server process, to control exactly when it is killed."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.next_id = 0

    def send(self, method: str, params: dict[str, Any]) -> int:
        assert self.proc.stdin is not None
        self.next_id += 1
        message = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()
        return self.next_id

    def wait(self, request_id: int) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            assert line, "the server closed stdout"
            reply: dict[str, Any] = json.loads(line)
            if reply.get("id") == request_id:
                return reply

    def initialize(self) -> None:
        self.wait(self.send("initialize", INITIALIZE["params"]))
        assert self.proc.stdin is not None
        self.proc.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        self.proc.stdin.flush()

    def tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.wait(
            self.send("tools/call", {"name": name, "arguments": arguments})
        )["result"]
        assert not result.get("isError"), result
        structured: dict[str, Any] = result["structuredContent"]
        return structured
