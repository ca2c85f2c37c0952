"""Every reach into a library's private API, in one place.

Each function here depends on how a library is built inside, not on what it promises, so an
upgrade can break it without a word. Each names the version it was checked on, and
tests/test_internals.py fails when the installed version is another: read the function
against the new version's source, look again for a public way, then update the pin.

Reaches checked and found public since (so not here): the stdio transport's writer is an
`asyncio.BaseProtocol` of our own (subcog.stdio._PipeWriter), not `asyncio.StreamWriter`,
whose protocol would have to be the private `asyncio.streams.FlowControlMixin`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from mcp.server.lowlevel import Server
    from mcp.server.mcpserver import MCPServer

# What each reach below was checked on; tests/test_internals.py compares the installed ones.
CHECKED_ON = {"mcp": "2.3.0", "fastembed": "0.9.1", "lancedb": "0.40.0"}

# Without stable row ids (LanceDB's default) a row id is the row's address: the fragment id in
# the high 32 bits, the row's offset in the fragment in the low 32 (lancedb 0.40.0; Lance's
# RowAddress). LanceDB documents `_rowid` as an opaque id; the mirror reads it as an address
# to know which fragment changed without reading the rows.
_ROW_BITS = 32
_ROW_MASK = (1 << _ROW_BITS) - 1


def versions_stamp(table_dir: Path) -> tuple[int, int] | None:
    """(modification time in ns, inode) of the directory where Lance writes each version's
    manifest (lancedb 0.40.0: `<table>.lance/_versions/`), which every commit changes; None if
    it cannot be read. LanceDB answers "which version is latest" by listing that directory
    (0.2 to 0.4 ms, benchmarks/README.md, "One Lance"); a stat call is microseconds."""
    try:
        found = os.stat(table_dir / "_versions")
    except OSError:
        return None
    return found.st_mtime_ns, found.st_ino


def fragment_of(rowids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The fragment id of each row id."""
    return rowids >> _ROW_BITS


def offset_in_fragment(rowids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Each row's place in its fragment."""
    return rowids & _ROW_MASK


def lowlevel_server(server: MCPServer) -> Server[Any] | None:
    """The low-level `Server` inside an MCPServer (mcp 2.3.0), to run on streams of our own;
    None if the SDK no longer keeps one there.

    MCPServer.run_stdio_async runs `self._lowlevel_server.run(...)` on the SDK's
    `stdio_server()` called without arguments, so there is no public way to hand it other
    streams; `Server.run(read, write, options)` and `stdio_server(stdin=, stdout=)` are
    public. The SDK itself reaches for the attribute in its in-memory client (its comment:
    "Make `lowlevel_server` public"). The one public path to the same object,
    `server.session_manager.app`, exists only after building the HTTP app."""
    lowlevel: Server[Any] | None = getattr(server, "_lowlevel_server", None)
    return lowlevel


def text_embedding(name: str, session_config: Mapping[str, str], **kwargs: Any) -> Any:
    """fastembed's TextEmbedding(name, **kwargs) (fastembed 0.9.1), its ONNX Runtime
    sessions made with `session_config` added to their SessionOptions
    (`SessionOptions.add_session_config_entry`, public in onnxruntime).

    fastembed exposes one session option (`enable_cpu_mem_arena`), and makes the options
    with `ort.SessionOptions()` in fastembed.common.onnx_model, reading `ort` from that
    module's globals when the model loads. While loading, that name is pointed at
    onnxruntime with a SessionOptions of ours, then put back; loads take turns so that no
    other load sees it."""
    import fastembed.common.onnx_model as onnx_model
    import onnxruntime as ort
    from fastembed import TextEmbedding

    def session_options() -> ort.SessionOptions:
        options = ort.SessionOptions()
        for key, value in session_config.items():
            options.add_session_config_entry(key, value)
        return options

    with _LOADING:
        setattr(onnx_model, "ort", _Onnx(ort, session_options))  # noqa: B010
        try:
            return TextEmbedding(name, **kwargs)
        finally:
            setattr(onnx_model, "ort", ort)  # noqa: B010


class _Onnx:
    """onnxruntime as fastembed sees it while loading, with our session options."""

    def __init__(self, ort: Any, session_options: Callable[[], Any]) -> None:
        self._ort = ort
        self.SessionOptions = session_options

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ort, name)


_LOADING = threading.Lock()
