"""The command line uses the same domain service as the server."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from subcog.cli import (
    COMMANDS,
    EXIT_FILE,
    EXIT_INVALID,
    EXIT_MODEL,
    EXIT_NO_SPACE,
    WITHOUT_JSON,
    main,
)
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
    day, minute, *rest = out.split()
    assert datetime.strptime(f"{day} {minute}", "%Y-%m-%d %H:%M")  # local time, to the minute
    assert rest == [
        memory_id,
        "[default]",
        *"The build server is called hal9000.".split(),
        "#infra",
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
    code, out, _ = run(capsys, "list")
    assert (code, out) == (0, "no memories\n")


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
        (["list", "--since", "the day after never"], EXIT_INVALID, "since"),
        (["show", "nope"], EXIT_INVALID, "is not a memory id"),
        (["remember", "x", "--metadata", "k=" + "v" * 5000], EXIT_INVALID, "metadata is"),
        (["remember", "x", "--supersedes", "nope"], EXIT_INVALID, "is not a memory id"),
        (["forget"], EXIT_INVALID, "Say what to forget"),
        (["forget", "--scope", "work"], EXIT_INVALID, "forget --all --scope work"),
        (["forget", "--query", "x", "--limit", "51"], EXIT_INVALID, "limit is 51"),
        (["forget", "--all", "--tag", "x"], EXIT_INVALID, "--all forgets every memory"),
        (["context", "--max-chars", "10"], EXIT_INVALID, "--max-chars must be at least 200"),
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


def test_serve_prepares_the_model_on_its_first_start_before_it_reports_ready(
    tmp_path: Path,
) -> None:
    """The first start copies the model into the cache and makes its int8 copy (seconds) before
    it says it serves, so the first tool call does not wait; later starts load it meanwhile."""
    env = {**os.environ, "SUBCOG_CACHE_DIR": str(tmp_path / "empty-cache")}
    for start in ("first", "second"):
        with serve(env, stderr=subprocess.PIPE) as proc:
            rpc = JsonRpc(proc)
            rpc.initialize()
            assert rpc.tool("recall", {"query": "anything"})["memories"] == []
            assert proc.stdin is not None
            assert proc.stderr is not None
            proc.stdin.close()
            stderr = proc.stderr.read().decode()
            proc.wait(timeout=60)
        ready = stderr.index("MCP server on stdio")
        if start == "first":
            assert stderr.index("first start: preparing the model") < ready, stderr
            assert stderr.index("made an int8 copy") < ready, stderr
            assert stderr.index("model ready in") < ready, stderr
        else:
            assert "preparing" not in stderr, stderr


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
    code, out, _ = run(capsys, "forget", "--all", "--yes", "--json")
    assert (code, json.loads(out)) == (0, {"forgotten": 0, "scope": None})


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


def test_remember_takes_metadata_and_supersedes_and_prints_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "remember", "Deploys go out on Tuesdays.", "--json")
    old = json.loads(out)
    assert (code, old["status"], old["scope"]) == (0, "created", "default")

    code, out, _ = run(
        capsys,
        "remember",
        "Deploys go out on Thursdays now.",
        *("--metadata", "by=Sam", "--metadata", "coats=2", "--metadata", "version=1.10"),
        *("--supersedes", old["id"]),
    )
    assert code == 0
    created, superseded = out.splitlines()[:2]
    assert created.startswith("created: ")
    assert superseded == f"superseded: {old['id']}"

    code, out, _ = run(capsys, "show", created.split()[1], "--json")
    shown = json.loads(out)
    assert shown["metadata"] == {"by": "Sam", "coats": 2, "version": "1.10"}
    assert run(capsys, "show", old["id"])[0] == 1  # superseded: forgotten
    code, out, _ = run(capsys, "show", created.split()[1])
    assert out.splitlines()[:2] == [f"id:       {shown['id']}", "scope:    default"]
    assert "metadata: by=Sam, coats=2, version=1.10" in out
    assert out.endswith("\n\nDeploys go out on Thursdays now.\n")


def test_a_missing_id_to_show_gets_one_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "show", "0" * 32)
    assert (code, out) == (1, "")
    assert err == f"subcog: no memory has the id {'0' * 32} (see `subcog list`)\n"


def test_forget_by_query_or_tag_previews_until_yes(capsys: pytest.CaptureFixture[str]) -> None:
    for text, tag in [
        ("The staging database is on port 5433.", "db"),
        ("Production Postgres listens on port 5432.", "db"),
        ("Lunch is at noon on Fridays.", "office"),
    ]:
        assert run(capsys, "remember", text, "--tag", tag, "--scope", "work")[0] == 0

    code, out, _ = run(capsys, "forget", "--query", "database port", "--scope", "work")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "would forget 2 memories (add --yes to forget them):"
    assert all("port" in line for line in lines[1:])
    assert len(lines) == 3
    code, out, _ = run(capsys, "forget", "--tag", "office", "--json")
    preview = json.loads(out)
    assert preview["dry_run"]
    assert preview["forgotten"] == []
    assert [m["content"] for m in preview["matches"]] == ["Lunch is at noon on Fridays."]
    assert json.loads(run(capsys, "stats", "--json")[1])["count"] == 3  # nothing went

    code, out, _ = run(capsys, "forget", "--tag", "db", "--yes")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == ["forgotten:", "forgotten:"]
    code, out, _ = run(capsys, "list", "--json")
    assert [m["content"] for m in json.loads(out)] == ["Lunch is at noon on Fridays."]


def test_forget_by_id_goes_at_once_unless_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    memory_id = run(capsys, "remember", "The printer is on floor 3.")[1].split()[1]
    code, out, _ = run(capsys, "forget", memory_id, "--dry-run")
    assert (code, out.splitlines()) == (
        0,
        ["would forget 1 memories:", f"  {memory_id}  The printer is on floor 3."],
    )
    code, out, _ = run(capsys, "forget", memory_id, "0" * 32, "--json")
    assert code == 1
    assert json.loads(out) == {
        "forgotten": [memory_id],
        "missing": ["0" * 32],
        "dry_run": False,
        "matches": [],
    }


def test_list_filters_by_tag_and_date_and_says_when_there_is_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source = tmp_path / "old.jsonl"
    source.write_text(
        json.dumps({"content": "The office moved in 2024.", "created_at": "2024-05-01T10:00:00Z"})
    )
    assert run(capsys, "import", str(source))[0] == 0
    assert run(capsys, "remember", "The office has a roof garden.", "--tag", "office")[0] == 0

    def listed(*args: str) -> list[str]:
        code, out, _ = run(capsys, "list", *args, "--json")
        assert code == 0
        return [m["content"] for m in json.loads(out)]

    assert listed() == ["The office has a roof garden.", "The office moved in 2024."]
    assert listed("--tag", "office") == ["The office has a roof garden."]
    assert listed("--until", "2024-12") == ["The office moved in 2024."]
    assert listed("--since", "yesterday") == ["The office has a roof garden."]
    assert run(capsys, "list", "--tag", "nothing-has-it")[1] == "no memories\n"
    assert run(capsys, "list", "--since", "tomorrow")[1] == "no memories\n"


def test_stats_prints_aligned_text_with_a_human_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "remember", "Alpha.", "--scope", "a")[0] == 0
    assert run(capsys, "remember", "Beta.", "--scope", "longer-scope")[0] == 0
    code, out, _ = run(capsys, "stats")
    assert code == 0
    lines = out.splitlines()
    assert lines[:3] == [
        "memories:   2",
        "scopes:     a             1",
        "            longer-scope  1",
    ]
    labels = [line[:12] for line in lines]
    assert {line[12] for line in lines} != {" "}  # values start in one column
    assert any(label == "on disk:    " for label in labels)
    size = next(line for line in lines if line.startswith("on disk:"))
    assert size.split()[-1] in {"kB", "MB"}, size


@pytest.mark.parametrize(
    "command", sorted(set(COMMANDS) - WITHOUT_JSON - {"forget", "remember", "show", "import"})
)
def test_every_command_that_reports_prints_json_with_json(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """remember, forget, show and import are checked with their own tests above."""
    code, out, _ = run(capsys, command, "--json")
    assert code == 0, out
    assert isinstance(json.loads(out), (dict, list))


def test_import_prints_json_with_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"content": "One."}) + "\nnot json\n")
    code, out, _ = run(capsys, "import", str(source), "--json")
    assert code == 1
    report = json.loads(out)
    assert (report["added"], report["existing"]) == (1, 0)
    assert report["bad_lines"][0]["line"] == 2


def complete(shell: str, words: str) -> list[str]:
    """What the completion script offers after `words` (a trailing space: a new word)."""
    script = run_subcog("completion", shell)
    line = f"COMP_WORDS=({words}); "
    if words.endswith(" "):
        line += 'COMP_WORDS+=(""); '
    line += 'COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _subcog; echo "${COMPREPLY[*]}"'
    if shell == "zsh":
        done = subprocess.run(
            ["zsh", "-c", f"{script}\n{line}"], capture_output=True, text=True, check=True
        )
    else:
        done = subprocess.run(
            ["bash", "-c", f"{script}\n{line}"], capture_output=True, text=True, check=True
        )
    return done.stdout.split()


def run_subcog(*args: str) -> str:
    return subprocess.run(
        [subcog_command(), *args], capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_shell_completion_offers_commands_options_and_choices(shell: str) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    assert complete(shell, "subcog re") == ["remember", "recall", "repair", "reindex"]
    assert complete(shell, "subcog forget --y") == ["--yes"]
    assert "--max-chars" in complete(shell, "subcog context --")
    assert complete(shell, "subcog serve --transport ") == ["stdio", "http"]
    assert complete(shell, "subcog completion ") == ["bash", "zsh"]
    assert complete(shell, "subcog import ") == []  # files: bash's own completion
