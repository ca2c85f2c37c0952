"""The tool list costs little context: every conversation pays for it."""

from __future__ import annotations

import json

from tests.servers import INITIALIZE, serve

# The whole tools/list answer, as the server writes it on stdout (issue 17: it was 14 KB).
MAX_TOOL_LIST_BYTES = 5_000


def test_tools_list_as_sent_by_subcog_serve_is_at_most_5_kb() -> None:
    with serve() as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        requests = [
            INITIALIZE,
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}},
        ]
        proc.stdin.write(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
        proc.stdin.flush()
        while True:
            line = proc.stdout.readline()
            assert line, "the server closed stdout"
            if json.loads(line).get("id") == 2:
                break
        proc.stdin.close()
        proc.wait(timeout=60)

    tools = json.loads(line)["result"]["tools"]
    assert [tool["name"] for tool in tools] == ["remember", "recall", "forget"]
    assert len(line) <= MAX_TOOL_LIST_BYTES, f"tools/list is {len(line)} bytes"
    for tool in tools:  # what a model needs to call each tool is still there
        assert tool["description"]
        assert all(spec.get("description") for spec in tool["inputSchema"]["properties"].values())
        assert tool["inputSchema"]["additionalProperties"] is False
        assert tool["outputSchema"]["properties"]
