"""subcog.internals, the reaches into libraries' private APIs: pinned to the versions they were
checked on, and each exercised for real on the installed library."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import fastembed.common.onnx_model
import numpy as np
import onnxruntime
import pytest
from fastembed import TextEmbedding
from mcp.server.lowlevel import Server

from subcog import __version__
from subcog.config import Settings
from subcog.embedder import MODEL_NAME, snapshot_dir
from subcog.internals import (
    CHECKED_ON,
    fragment_of,
    lowlevel_server,
    offset_in_fragment,
    text_embedding,
    versions_stamp,
)
from subcog.server import build_server
from tests.servers import JsonRpc, serve

SPINNING = "session.force_spinning_stop"


@pytest.mark.parametrize("library", sorted(CHECKED_ON))
def test_each_library_reached_into_is_the_version_it_was_checked_on(library: str) -> None:
    installed = version(library)
    assert installed == CHECKED_ON[library], (
        f"{library} is {installed}, but subcog.internals was checked on {CHECKED_ON[library]}: "
        f"read the functions there that use {library} against {installed}'s source, look "
        "again for a public way, and then update CHECKED_ON."
    )


def test_lowlevel_server_is_the_one_the_mcp_server_is_built_on(settings: Settings) -> None:
    server = build_server(settings)
    lowlevel = lowlevel_server(server)
    assert isinstance(lowlevel, Server)
    # MCPServer's public properties read these from the server inside it.
    assert (lowlevel.name, lowlevel.version) == ("subcog", __version__)
    assert (server.name, server.version) == (lowlevel.name, lowlevel.version)
    assert lowlevel.create_initialization_options().server_name == "subcog"


def test_subcog_serve_runs_the_lowlevel_server_on_its_own_stdio_transport() -> None:
    """A line that is not JSON gets a parse error: subcog's transport answers it, where the
    SDK's own transport (what a missing lowlevel server falls back to) drops it silently."""
    with serve() as proc:
        try:
            rpc = JsonRpc(proc)
            rpc.initialize()
            assert proc.stdin is not None
            assert proc.stdout is not None
            proc.stdin.write(b"this is not json\n")
            proc.stdin.flush()
            reply = json.loads(proc.stdout.readline())
            assert (reply["id"], reply["error"]["code"]) == (None, -32700)
            assert rpc.wait(rpc.send("ping", {}))["result"] == {}
        finally:
            proc.kill()


def test_text_embedding_sessions_carry_the_config_and_embed_as_fastembed_does(
    model_cache: Path,
) -> None:
    snapshot = snapshot_dir(model_cache)
    assert snapshot is not None
    kwargs = {"specific_model_path": str(snapshot), "threads": 1}
    ours = text_embedding(MODEL_NAME, {SPINNING: "1"}, **kwargs)
    plain = TextEmbedding(MODEL_NAME, **kwargs)

    # The ONNX Runtime session, inside fastembed 0.9.1's TextEmbedding: read here only.
    options = ours.model.model.get_session_options()
    assert options.get_session_config_entry(SPINNING) == "1"
    with pytest.raises(RuntimeError, match="does not have configuration"):
        plain.model.model.get_session_options().get_session_config_entry(SPINNING)
    # fastembed's own onnxruntime is put back for every other load.
    assert fastembed.common.onnx_model.ort is onnxruntime

    texts = ["the office moved to Leeds", "where is the office?"]
    vectors = np.asarray(list(ours.embed(texts)))
    assert vectors.shape == (2, 384)
    np.testing.assert_array_equal(vectors, np.asarray(list(plain.embed(texts))))


def test_a_row_id_is_its_fragment_and_its_place_there(tmp_path: Path) -> None:
    """What the in-memory copy reads into `_rowid` (storage/mirror.py): each add is a fragment
    of its own, numbered in order, its rows at places 0, 1, ...; a delete leaves the others'
    row ids as they were."""
    import lancedb
    import pyarrow as pa

    table = lancedb.connect(tmp_path / "db").create_table(
        "t", schema=pa.schema([pa.field("n", pa.int64())])
    )
    table.add(pa.table({"n": [0, 1, 2]}))
    table.add(pa.table({"n": [3, 4]}))
    table.delete("n = 1")

    def rowids() -> dict[int, int]:
        found = table.search().select(["n"]).with_row_id(True).to_arrow()
        return dict(zip(found["n"].to_pylist(), found["_rowid"].to_pylist(), strict=True))

    ids = np.asarray([rowids()[n] for n in (0, 2, 3, 4)], dtype=np.int64)
    assert fragment_of(ids).tolist() == [0, 0, 1, 1]
    assert offset_in_fragment(ids).tolist() == [0, 2, 0, 1]


def test_every_commit_changes_the_stamp_of_the_versions_directory(tmp_path: Path) -> None:
    """What the in-memory copy trusts to skip asking LanceDB for the latest version
    (storage/mirror.py): each commit writes a manifest into `_versions`."""
    import lancedb
    import pyarrow as pa

    db = lancedb.connect(tmp_path / "db")
    table = db.create_table("t", schema=pa.schema([pa.field("n", pa.int64())]))
    directory = tmp_path / "db" / "t.lance"
    stamps = [versions_stamp(directory)]
    for change in (lambda: table.add(pa.table({"n": [1]})), lambda: table.delete("n = 1")):
        before = len(list((directory / "_versions").iterdir()))
        change()
        assert len(list((directory / "_versions").iterdir())) == before + 1
        stamps.append(versions_stamp(directory))
    assert None not in stamps
    assert versions_stamp(tmp_path / "nowhere") is None
