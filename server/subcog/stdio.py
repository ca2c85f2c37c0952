"""The stdio transport: the SDK's message handling over asyncio's own pipes.

The SDK's `stdio_server` reads and writes stdin and stdout through anyio's file wrappers, which
hand every line read, every write and every flush to a worker thread. Three thread hops per
request cost about 0.4 ms: `ping` took 0.72-0.84 ms there, 0.32-0.40 ms here, and `recall` at
1,000 memories 5.9-6.1 ms against 5.5-5.7 (raw JSON-RPC on the 2-core machine of
benchmarks/README.md). The SDK's `stdio_server` is still used, with explicit streams, for
parsing and writing the messages.

Like the SDK, it keeps stray output off the wire: while serving, fd 0 reads the null device and
fd 1 writes to stderr, and the protocol runs on private duplicates of both. Unless stdin and
stdout are both pipes or sockets, as an MCP client connects them (a terminal, a file, or
Windows), the SDK's transport runs.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from mcp.server.stdio import stdio_server

LINE_LIMIT = 64 * 2**20  # a longer line is answered as malformed, not read whole


class _Lines:
    """stdin as the SDK reads it: an async iterator of text lines."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> str:
        try:
            line = await self._reader.readline()
        except ValueError:  # over LINE_LIMIT: the reader dropped what it held of the line
            return "\n"  # not JSON: the SDK reports it, and the rest of the line likewise
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


class _Out:
    """stdout as the SDK writes it."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def write(self, text: str) -> None:
        self._writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        await self._writer.drain()


@asynccontextmanager
async def serve_stdio() -> AsyncIterator[Any]:
    """The read and write streams of the MCP session, as `mcp.server.stdio.stdio_server`."""
    pipes = None if sys.platform == "win32" else await _pipes()
    if pipes is None:
        async with stdio_server() as streams:
            yield streams
        return
    reading, writing, writer, reader, blocking = pipes
    saved_in, saved_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)  # print() and child processes reach stderr, not the client
    try:
        async with stdio_server(stdin=_Lines(reader), stdout=_Out(writer)) as streams:  # type: ignore[arg-type]
            yield streams
    finally:
        os.dup2(saved_in, 0)
        os.dup2(saved_out, 1)
        os.close(saved_in)
        os.close(saved_out)
        reading.close()
        writing.close()
        # asyncio made the pipes non-blocking, a flag of the pipe that whoever started us
        # may share: it is set back.
        for fd, was_blocking in zip((0, 1), blocking, strict=True):
            with suppress(OSError):
                os.set_blocking(fd, was_blocking)


_Pipes = tuple[
    asyncio.ReadTransport,
    asyncio.WriteTransport,
    asyncio.StreamWriter,
    asyncio.StreamReader,
    tuple[bool, bool],  # whether fds 0 and 1 were blocking
]


async def _pipes() -> _Pipes | None:
    """asyncio transports on duplicates of fds 0 and 1; None unless both are pipes or sockets,
    as an MCP client starts a server (a terminal or a file is left to the SDK's transport)."""
    try:
        modes = [os.fstat(fd).st_mode for fd in (0, 1)]
        blocking = (os.get_blocking(0), os.get_blocking(1))
    except OSError:
        return None
    if not all(stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) for mode in modes):
        return None
    loop = asyncio.get_running_loop()
    stdin = os.fdopen(os.dup(0), "rb", buffering=0)
    stdout = os.fdopen(os.dup(1), "wb", buffering=0)
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    try:
        reading, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), stdin
        )
    except ValueError:
        stdin.close()
        stdout.close()
        return None
    try:
        writing, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, stdout)
    except ValueError:
        reading.close()
        stdout.close()
        return None
    return reading, writing, asyncio.StreamWriter(writing, protocol, None, loop), reader, blocking
