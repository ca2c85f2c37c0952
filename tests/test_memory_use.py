"""One Lance in a server: a `subcog serve` that stored and searched loads LanceDB's build of
Lance and not pylance's (benchmarks/README.md, "One Lance"); upkeep runs in a child process."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.servers import JsonRpc, serve


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_server_maps_one_lance() -> None:
    with serve() as proc:
        rpc = JsonRpc(proc)
        rpc.initialize()
        for i in range(60):  # past Limits.upkeep_every: upkeep has run in its child process
            rpc.tool("remember", {"content": f"Fact {i}: the blue box {i} is on shelf {i % 7}."})
        assert rpc.tool("recall", {"query": "where is blue box 12?"})["memories"]
        time.sleep(2)
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    assert "_lancedb.abi3" in maps  # LanceDB's Lance
    assert "lance.abi3" not in maps.replace("_lancedb.abi3", "")  # and not pylance's
