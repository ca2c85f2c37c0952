"""Start subcog over stdio, remember three facts, recall one by a paraphrase, print the result.

    .venv/bin/python examples/client.py

It uses a throwaway data directory, so your real memories are left alone.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

FACTS = [
    "Ana's favourite programming language is OCaml.",
    "The staging deploy command is ./deploy-staging.sh --region eu-west-1.",
    "Team standup is every weekday at 9:30 in the Blue room.",
]
QUESTION = "How do I ship to the staging environment?"


def subcog_command() -> str:
    beside_python = Path(sys.executable).parent / "subcog"
    return str(beside_python) if beside_python.exists() else (shutil.which("subcog") or "subcog")


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="subcog-example-") as data_dir:
        env = {**os.environ, "SUBCOG_DATA_DIR": data_dir}
        server = StdioServerParameters(command=subcog_command(), args=["serve"], env=env)
        async with Client(stdio_client(server)) as client:
            for fact in FACTS:
                result = await client.call_tool("remember", {"content": fact})
                print("remembered:", result.structured_content)
            result = await client.call_tool("recall", {"query": QUESTION, "limit": 1})
            print(f"\nrecall({QUESTION!r}):")
            print(json.dumps(result.structured_content, indent=2))


if __name__ == "__main__":
    anyio.run(main)
