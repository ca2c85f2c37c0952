"""The handshake never waits for the model: slow loading gives a clear, retryable ToolError."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from subcog.config import Settings
from subcog.embedder import Embedder
from subcog.errors import ModelUnavailable
from subcog.server import Service, build_server
from tests.servers import subcog_command

pytestmark = pytest.mark.anyio


async def test_server_answers_while_the_model_loads_and_tool_calls_say_retry(
    monkeypatch: pytest.MonkeyPatch, embedder: Embedder
) -> None:
    release = threading.Event()

    def slow_model(_settings: Settings) -> Embedder:
        release.wait(timeout=60)
        return embedder

    monkeypatch.setenv("SUBCOG_LOAD_TIMEOUT", "0.2")
    settings = Settings.from_env()
    async with Client(build_server(settings, Service(settings, slow_model))) as client:
        # initialize already happened; listing tools must not wait for the model either.
        assert len((await client.list_tools()).tools) == 3
        result = await client.call_tool("remember", {"content": "too early"})
        assert result.is_error
        text = result.content[0].text  # type: ignore[union-attr]
        assert "still loading" in text
        assert "the embedding model" in text
        assert "Retry" in text

        release.set()
        for _ in range(100):  # the load finishes in the background; retry as a client would
            result = await client.call_tool("remember", {"content": "in time"})
            if not result.is_error:
                break
        assert not result.is_error, result.content
        assert result.structured_content is not None
        assert result.structured_content["status"] == "created"


async def test_a_failed_model_load_is_reported_and_retried_on_the_next_call(
    embedder: Embedder,
) -> None:
    attempts: list[int] = []

    def flaky_model(_settings: Settings) -> Any:
        attempts.append(1)
        if len(attempts) == 1:
            raise ModelUnavailable("no model here; install subcog[offline]")
        return embedder

    settings = Settings.from_env()
    async with Client(build_server(settings, Service(settings, flaky_model))) as client:
        result = await client.call_tool("recall", {"query": "anything"})
        assert result.is_error
        assert "install subcog[offline]" in result.content[0].text  # type: ignore[union-attr]
        result = await client.call_tool("recall", {"query": "anything"})
        assert not result.is_error, result.content
        assert len(attempts) == 2


def test_closing_stdin_while_loading_exits_cleanly_every_time(tmp_path: Path) -> None:
    """A client that closes stdin while the model and store are still loading: the server
    waits for them and exits with 0. Threads inside ONNX Runtime or Lance at interpreter
    shutdown used to abort it (exit 134, 1 in 12 to 1 in 20 tries)."""
    from concurrent.futures import ThreadPoolExecutor

    def once(n: int) -> tuple[int, str]:
        env = {**os.environ, "SUBCOG_DATA_DIR": str(tmp_path / f"store-{n % 2}")}
        proc = subprocess.Popen(
            [subcog_command(), "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        time.sleep(0.25)
        _, err = proc.communicate(b"", timeout=120)
        return proc.returncode, err.decode(errors="replace")[-500:]

    with ThreadPoolExecutor(2) as pool:
        for code, err in pool.map(once, range(50)):
            assert code == 0, err
            assert "FATAL" not in err
