"""The command line uses the same domain service as the server."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from subcog.cli import EXIT_FILE, EXIT_INVALID, EXIT_MODEL, EXIT_NO_SPACE, main
from subcog.config import Settings
from subcog.embedder import Embedder
from subcog.memory import Memory, open_store
from subcog.storage.limits import Limits
from tests.servers import JsonRpc, serve, subcog_command


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_remember_recall_list_stats_and_forget(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "remember", "The build server is called hal9000.", "--tag", "infra")
    assert code == 0
    assert out.startswith("created: ")
    memory_id = out.split()[1]

    code, out, _ = run(capsys, "remember", "The build server is called   hal9000.")
    assert out.startswith(f"exists: {memory_id}")

    code, out, _ = run(capsys, "recall", "name of the build machine", "--json")
    assert code == 0
    found = json.loads(out)["memories"]
    assert found[0]["id"] == memory_id
    assert found[0]["tags"] == ["infra"]

    code, out, _ = run(capsys, "recall", "--tag", "infra", "--since", "yesterday")
    assert code == 0
    assert out.split() == [
        memory_id,
        "[default]",
        "The",
        "build",
        "server",
        "is",
        "called",
        "hal9000.",
    ]

    code, out, _ = run(capsys, "list", "--limit", "5")
    assert memory_id in out

    code, out, _ = run(capsys, "stats", "--json")
    assert json.loads(out)["count"] == 1

    code, out, _ = run(capsys, "forget", memory_id)
    assert code == 0
    assert out.strip() == f"forgotten: {memory_id}"
    code, out, _ = run(capsys, "recall", "build machine")
    assert out.strip() == "No memories found."


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A model that cannot load (EXIT_MODEL): a command that fails otherwise failed first."""
    monkeypatch.setenv("SUBCOG_MODEL_PATH", str(tmp_path / "no-such-model"))


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["recall", "x", "--limit", "0"], EXIT_INVALID, "limit is 0"),
        (["forget", "nope"], EXIT_INVALID, "is not a memory id"),
        (["recall", "x", "--since", "9999-12-31T23:59:59-14:00"], EXIT_INVALID, "since"),
        (["recall", "x", "--since", "tomorrow", "--until", "yesterday"], EXIT_INVALID, "swap"),
        (["remember", "   "], EXIT_INVALID, "content is empty"),
        (["remember", "x", "--scope", "no spaces"], EXIT_INVALID, "scope 'no spaces'"),
        (["list", "--limit", "0"], EXIT_INVALID, "--limit must be at least 1"),
        (["export", "no-such-dir/out.jsonl"], EXIT_FILE, "no-such-dir: no such directory"),
        (["import", "no-such-file.jsonl"], EXIT_FILE, "no-such-file.jsonl: No such file"),
    ],
)
def test_a_wrong_argument_gets_one_sentence_and_its_exit_code_before_anything_loads(
    capsys: pytest.CaptureFixture[str], no_model: None, args: list[str], code: int, says: str
) -> None:
    exit_code, out, err = run(capsys, *args)
    assert (exit_code, out) == (code, "")
    assert err.startswith("subcog: ")
    assert says in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_a_port_out_of_range_is_refused_by_the_command_line(
    capsys: pytest.CaptureFixture[str], no_model: None
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--transport", "http", "--port", "99999"])
    assert exited.value.code == EXIT_INVALID
    assert "99999 is not a port: use 1 to 65535" in capsys.readouterr().err


def test_a_model_that_cannot_load_has_its_own_exit_code(
    capsys: pytest.CaptureFixture[str], no_model: None
) -> None:
    code, _, err = run(capsys, "recall", "anything")
    assert code == EXIT_MODEL
    assert "Traceback" not in err


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_says_where_to_free_space(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "remember", "Something worth exporting.")[0] == 0
    code, _, err = run(capsys, "export", "/dev/full")
    assert code == EXIT_NO_SPACE
    assert err.strip() == "subcog: No space left on device: free space under /dev"


def test_doctor_checks_the_model_and_store_and_prints_every_path(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "doctor")
    assert code == 0, out
    for line in ("data dir", "cache dir", "model path", "offline bundle", "model: OK", "store: OK"):
        assert line in out


def test_import_is_idempotent_reports_bad_lines_and_round_trips_with_export(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source = tmp_path / "memories.jsonl"
    source.write_text(
        "\n".join(
            [
                json.dumps({"content": "The llama is called Dolly."}),
                json.dumps({"content": "Alpacas hum.", "tags": ["farm"], "scope": "zoo"}),
                "not json",
                json.dumps({"content": "   "}),
                "",
                json.dumps(
                    {
                        "content": "The barn was painted red.",
                        "metadata": {"by": "Sam", "coats": 2},
                        "created_at": "2024-05-01T10:00:00Z",
                    }
                ),
                json.dumps({"content": "The llama is called   Dolly."}),
            ]
        )
    )
    code, out, err = run(capsys, "import", str(source))
    assert code == 1
    assert "added 3, already present 1, bad lines 2" in out
    assert f"{source}:3: not valid JSON" in err
    assert f"{source}:4: content is empty" in err

    code, out, _ = run(capsys, "import", str(source))
    assert "added 0, already present 4" in out

    exported = tmp_path / "export.jsonl"
    assert run(capsys, "export", str(exported))[0] == 0
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    assert rows[0]["content"] == "The barn was painted red."  # oldest first
    assert set(rows[0]) == {"id", "content", "tags", "scope", "metadata", "created_at"}
    assert rows[0]["created_at"] == "2024-05-01T10:00:00Z"
    assert rows[0]["metadata"] == {"by": "Sam", "coats": 2}

    code, out, _ = run(capsys, "import", str(exported))
    assert code == 0
    assert "added 0, already present 3, bad lines 0" in out
    code, out, _ = run(capsys, "recall", "what sound do alpacas make", "--scope", "zoo", "--json")
    assert json.loads(out)["memories"][0]["tags"] == ["farm"]


def test_a_bulk_import_builds_the_vector_index_once_at_the_end(
    settings: Settings, embedder: Embedder
) -> None:
    """What `subcog import` does (Memory.import_jsonl in bulk), with upkeep after every batch
    and a vector index due at 300 memories."""
    tuned = replace(settings, limits=Limits(vector_index_rows=300, upkeep_every=1))
    memory = Memory(open_store(tuned), embedder, tuned)
    notes = [f"Crate {i} on shelf {i % 9} holds {i * 7} bolts." for i in range(700)]
    lines = (json.dumps({"content": note}) for note in notes)

    assert memory.import_jsonl(lines, batch_size=100, bulk=True).added == 700

    assert memory.store.indexes()["vector"] == (700, 0)
    assert memory.store.vector_index_builds == 1  # never over part of the rows meanwhile


def test_the_first_start_says_only_what_subcog_did(tmp_path: Path) -> None:
    """Making the int8 copy of the model, ONNX Runtime's quantiser explains every tensor at
    INFO: none of that reaches stderr, only subcog's own lines."""
    env = {**os.environ, "SUBCOG_CACHE_DIR": str(tmp_path / "empty-cache")}
    done = subprocess.run(
        [subcog_command(), "doctor"], env=env, capture_output=True, text=True, check=True
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert any("made an int8 copy" in line for line in lines), done.stderr
    assert all(" subcog." in line for line in lines if " INFO " in line), done.stderr
    assert len(lines) <= 4, done.stderr


def test_forget_all_asks_first_and_erases_a_scope_or_everything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for text, scope in [("Work note one.", "work"), ("Work note two.", "work"), ("Home.", "home")]:
        assert run(capsys, "remember", text, "--scope", scope)[0] == 0
    code, _, err = run(capsys, "forget", "--all", "--scope", "work")  # stdin is not a terminal
    assert code == 2
    assert "would forget all 2 memories in scope work; add --yes" in err
    code, out, _ = run(capsys, "forget", "--all", "--scope", "work", "--yes")
    assert code == 0
    assert "forgotten: 2 memories in scope work" in out
    assert json.loads(run(capsys, "stats", "--json")[1])["scopes"] == {"home": 1}
    code, out, _ = run(capsys, "forget", "--all", "--yes")
    assert "forgotten: 1 memories in every scope" in out
    assert json.loads(run(capsys, "stats", "--json")[1])["count"] == 0
    code, _, err = run(capsys, "forget")
    assert code == 2
    assert "or --all" in err


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB file system of its own (Linux, as root): a disk that can be filled."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("needs to mount a small tmpfs (Linux, as root)")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_keeps_what_was_stored_and_says_where_to_free_space(
    small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = small_disk / "data"
    env = {**os.environ, "SUBCOG_DATA_DIR": str(data_dir)}
    monkeypatch.setenv("SUBCOG_DATA_DIR", str(data_dir))

    def subcog(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [subcog_command(), *args], env=env, capture_output=True, text=True, check=False
        )

    assert subcog("remember", "Stored before the disk filled up.").returncode == 0
    with (small_disk / "filler").open("wb") as filler, contextlib.suppress(OSError):
        while True:
            filler.write(b"\0" * 65536)
            filler.flush()
    done = subcog("remember", "This one does not fit.")
    assert done.returncode == EXIT_NO_SPACE
    assert done.stderr.strip().endswith(
        f"subcog: No space left on device: free space under {data_dir}. Nothing was changed."
    )
    assert "Traceback" not in done.stderr
    with serve(env) as proc:
        rpc = JsonRpc(proc)
        rpc.initialize()
        reply = rpc.wait(
            rpc.send("tools/call", {"name": "remember", "arguments": {"content": "Nor this."}})
        )
        assert reply["result"]["isError"]
        assert f"free space under {data_dir}" in reply["result"]["content"][0]["text"]
        listed = rpc.tool("recall", {})["memories"]
        assert [m["content"] for m in listed] == ["Stored before the disk filled up."]
        proc.kill()
