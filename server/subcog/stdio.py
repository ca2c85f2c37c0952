"""The stdio transport: the SDK's message handling, with every message answered and bounded.

The SDK's `stdio_server` parses each line and writes each reply; subcog hands it the lines
itself, for three reasons:

- **Every message gets the answer JSON-RPC requires.** The SDK drops a line it cannot parse
  without a reply, and a client waits forever. Here a line that is not JSON gets -32700 (parse
  error), and JSON that is not a valid message (`[]`, an object without `method`, an unpaired
  surrogate, a line over LINE_LIMIT) gets -32600 (invalid request), with the request's id when
  it can be read and null otherwise. The server goes on.
- **Requests in flight are bounded.** A client that sends requests and never reads the replies
  would have them pile up in memory; past IN_FLIGHT unanswered requests, stdin is not read
  until replies go out.
- **Speed, on pipes.** Where stdin and stdout are pipes or sockets, as an MCP client starts a
  server, they are read and written with asyncio's own pipes: the SDK's anyio file wrappers
  hand every line, write and flush to a worker thread, a cost on every request
  (benchmarks/README.md, "Where the time went"). A terminal, a file, or Windows get anyio's
  file wrappers.

Like the SDK, it keeps stray output off the wire: while serving, fd 0 reads the null device and
fd 1 writes to stderr, and the protocol runs on private duplicates of both.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from io import TextIOWrapper
from typing import Any, BinaryIO

import anyio
import anyio.to_thread
from mcp.server.stdio import stdio_server

LINE_LIMIT = 16 * 2**20  # a longer line is refused, not read whole; input beyond twice this waits
IN_FLIGHT = 32  # unanswered requests before stdin waits for replies to go out
PARSE_ERROR, INVALID_REQUEST = -32700, -32600


class Gate:
    """Counts requests in flight: handed to the SDK, not yet answered."""

    def __init__(self, limit: int = IN_FLIGHT) -> None:
        self._limit = limit
        self._open: set[object] = set()
        self._changed = anyio.Event()

    def sent(self, request_id: object) -> None:
        self._open.add(_key(request_id))

    def answered(self, request_id: object) -> None:
        self._open.discard(_key(request_id))
        self._changed.set()

    async def wait(self) -> None:
        """Return once fewer than the limit are in flight."""
        while len(self._open) >= self._limit:
            self._changed = anyio.Event()
            await self._changed.wait()


def _key(request_id: object) -> object:
    return (type(request_id).__name__, request_id)


class Checked:
    """stdin as the SDK reads it: the lines of valid JSON-RPC messages. Any other line is
    answered here with its error, through `reply`, and not passed on."""

    def __init__(
        self,
        read_line: Callable[[], Awaitable[bytes | None]],
        reply: Callable[[str], Awaitable[None]],
        gate: Gate,
    ) -> None:
        self._read_line = read_line  # a line without its end, b"" for an empty one, None at EOF
        self._reply = reply
        self._gate = gate

    def __aiter__(self) -> Checked:
        return self

    async def __anext__(self) -> str:
        while True:
            await self._gate.wait()
            line = await self._read_line()
            if line is None:
                raise StopAsyncIteration
            if not line.strip():
                continue
            text, error = _check(line)
            if error is not None:
                await self._reply(error)
                continue
            return text


def _check(line: bytes) -> tuple[str, str | None]:
    """The line as text, and the error reply it gets if it is not a message the SDK accepts."""
    import mcp_types as types

    if line is _TOO_LONG:
        return "", _error(None, INVALID_REQUEST, f"Invalid request: over {LINE_LIMIT} bytes.")
    text = line.decode("utf-8", errors="replace")
    try:
        message = json.loads(text)
    except (ValueError, RecursionError) as exc:
        why = "a number has over 4,300 digits" if "digits" in str(exc) else str(exc)[:120]
        return text, _error(None, PARSE_ERROR, f"Parse error: not JSON ({why}).")
    if isinstance(message, list):
        return text, _error(None, INVALID_REQUEST, "Invalid request: batches are not supported.")
    if not isinstance(message, dict):
        return text, _error(None, INVALID_REQUEST, "Invalid request: send a JSON object.")
    request_id = message.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, (str, int)):
        request_id = None
    try:
        types.jsonrpc_message_adapter.validate_json(text, by_name=False)
    except ValueError as exc:
        reason = _reason(message, exc)
        return text, _error(request_id, INVALID_REQUEST, f"Invalid request: {reason}.")
    return text, None


def _reason(message: dict[str, Any], exc: ValueError) -> str:
    if message.get("jsonrpc") != "2.0":
        return 'it needs "jsonrpc": "2.0"'
    if "method" not in message and "result" not in message and "error" not in message:
        return 'it has no "method"'
    if "surrogate" in str(exc) or "hex escape" in str(exc):
        return "a string holds an unpaired UTF-16 surrogate"
    return "it is not a JSON-RPC request, notification or response"


def _error(request_id: str | int | None, code: int, message: str) -> str:
    reply = {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
    return json.dumps(reply, ensure_ascii=False, separators=(",", ":")) + "\n"


_TOO_LONG = b"\x00too long\x00"


class _Replies:
    """stdout as the SDK writes it, through `write` and `flush`; it also sees each reply go."""

    def __init__(self, write: Callable[[bytes], Awaitable[None]], gate: Gate) -> None:
        self._write = write
        self._gate = gate
        self._lock = anyio.Lock()  # the SDK's writer and Checked's errors: whole lines

    async def write(self, text: str) -> None:
        async with self._lock:
            await self._write(text.encode("utf-8"))
        if '"result"' in text or '"error"' in text:
            with suppress(ValueError):
                message = json.loads(text)
                if isinstance(message, dict) and ("result" in message or "error" in message):
                    self._gate.answered(message.get("id"))

    async def flush(self) -> None:
        """Each write is whole already."""


class _Sent:
    """The SDK's read stream, counting the requests it hands on."""

    def __init__(self, lines: Checked, gate: Gate) -> None:
        self._lines = lines
        self._gate = gate

    def __aiter__(self) -> _Sent:
        return self

    async def __anext__(self) -> str:
        text = await self._lines.__anext__()
        if '"method"' in text:
            with suppress(ValueError, AttributeError):
                message = json.loads(text)
                if "id" in message:
                    self._gate.sent(message["id"])
                elif message["method"] == "notifications/cancelled":  # it gets no reply
                    self._gate.answered(message["params"]["requestId"])
        return text


@asynccontextmanager
async def serve_stdio() -> AsyncIterator[Any]:
    """The read and write streams of the MCP session, as `mcp.server.stdio.stdio_server`."""
    gate = Gate()
    pipes = None if sys.platform == "win32" else await _pipes()
    with _diverted() as (wire_in, wire_out):
        if pipes is not None:
            reading, writing, writer, reader, blocking = pipes
            try:
                out = _Replies(writer.write, gate)
                lines = Checked(_pipe_line(reader), out.write, gate)
                async with stdio_server(stdin=_Sent(lines, gate), stdout=out) as streams:  # type: ignore[arg-type]
                    yield streams
            finally:
                reading.close()
                writing.close()
                # asyncio made the pipes non-blocking, a flag of the pipe that whoever
                # started us may share: it is set back.
                for fd, was_blocking in zip((0, 1), blocking, strict=True):
                    with suppress(OSError):
                        os.set_blocking(fd, was_blocking)
            return
        source = os.fdopen(wire_in, "rb", closefd=False)
        sink = anyio.wrap_file(TextIOWrapper(os.fdopen(wire_out, "wb", closefd=False)))

        async def write_file(data: bytes) -> None:
            await sink.write(data.decode("utf-8"))
            await sink.flush()

        out = _Replies(write_file, gate)
        lines = Checked(_file_line(source), out.write, gate)
        async with stdio_server(stdin=_Sent(lines, gate), stdout=out) as streams:  # type: ignore[arg-type]
            yield streams


def _pipe_line(reader: asyncio.StreamReader) -> Callable[[], Awaitable[bytes | None]]:
    async def read() -> bytes | None:
        try:
            return (await reader.readuntil(b"\n")).rstrip(b"\r\n")
        except asyncio.IncompleteReadError as end:  # the last line, without its end
            return end.partial.rstrip(b"\r\n") if end.partial else None
        except asyncio.LimitOverrunError as over:  # over LINE_LIMIT: dropped, not kept whole
            while True:
                if "is found" in str(over):  # the line ends at over.consumed
                    await reader.readexactly(over.consumed + 1)
                    return _TOO_LONG
                await reader.readexactly(over.consumed)
                try:
                    await reader.readuntil(b"\n")
                    return _TOO_LONG
                except asyncio.IncompleteReadError:
                    return _TOO_LONG
                except asyncio.LimitOverrunError as more:
                    over = more

    return read


def _file_line(source: BinaryIO) -> Callable[[], Awaitable[bytes | None]]:
    async def read() -> bytes | None:
        line = await anyio.to_thread.run_sync(source.readline, LINE_LIMIT + 1)
        if not line:
            return None
        if len(line) > LINE_LIMIT:
            while line and not line.endswith(b"\n"):
                line = await anyio.to_thread.run_sync(source.readline, LINE_LIMIT)
            return _TOO_LONG
        return line.rstrip(b"\r\n")

    return read


class _diverted:
    """While serving, fd 0 reads the null device and fd 1 writes to stderr, so that nothing
    else reads the requests or writes on the wire; the wire itself is on private duplicates
    (yielded). Both are put back after."""

    def __enter__(self) -> tuple[int, int]:
        self._saved = (os.dup(0), os.dup(1))
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.dup2(2, 1)  # print() and child processes reach stderr, not the client
        _rebind_windows_handles()
        return self._saved

    def __exit__(self, *_: object) -> None:
        saved_in, saved_out = self._saved
        os.dup2(saved_in, 0)
        os.dup2(saved_out, 1)
        os.close(saved_in)
        os.close(saved_out)
        _rebind_windows_handles()


def _rebind_windows_handles() -> None:
    """On Windows, child processes inherit the std handles, not the C runtime's fds: point the
    handles at what fds 0 and 1 now are (the SDK's own transport does the same)."""
    if sys.platform != "win32":
        return
    from mcp.os.win32.utilities import rebind_std_handle_to_fd

    for fd in (0, 1):
        with suppress(OSError):
            rebind_std_handle_to_fd(fd)


class _PipeWriter(asyncio.BaseProtocol):
    """The protocol of stdout's pipe, and its writer: `write` returns once the pipe has room.
    The transport pauses it while more than its high-water mark waits unwritten, and resumes
    it below the low one. Only asyncio's public protocol callbacks (asyncio.StreamWriter
    would need asyncio.streams.FlowControlMixin, a private class, as its protocol)."""

    def __init__(self) -> None:
        self._transport: asyncio.WriteTransport | None = None
        self._room = asyncio.Event()
        self._room.set()
        self._lost = False
        self._lost_with: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self._transport = transport

    def pause_writing(self) -> None:
        self._room.clear()

    def resume_writing(self) -> None:
        self._room.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost, self._lost_with = True, exc
        self._room.set()

    async def write(self, data: bytes) -> None:
        """Write data, then wait while the pipe is full. Raises ConnectionResetError once the
        pipe is gone (the reader closed it), as asyncio.StreamWriter.drain does."""
        assert self._transport is not None
        self._transport.write(data)
        if self._transport.is_closing():
            await asyncio.sleep(0)  # let connection_lost run
        if self._lost:
            raise ConnectionResetError("Connection lost") from self._lost_with
        if not self._room.is_set():
            await self._room.wait()
            if self._lost and self._lost_with is not None:
                raise self._lost_with


_Pipes = tuple[
    asyncio.ReadTransport,
    asyncio.WriteTransport,
    _PipeWriter,
    asyncio.StreamReader,
    tuple[bool, bool],  # whether fds 0 and 1 were blocking
]


async def _pipes() -> _Pipes | None:
    """asyncio transports on duplicates of fds 0 and 1; None unless both are pipes or sockets,
    as an MCP client starts a server (a terminal or a file is left to anyio's file wrappers)."""
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
        writing, writer = await loop.connect_write_pipe(_PipeWriter, stdout)
    except ValueError:
        reading.close()
        stdout.close()
        return None
    return reading, writing, writer, reader, blocking
