"""The command line uses the same domain service as the server."""

from __future__ import annotations

import json

import pytest

from subcog.cli import main


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

    code, out, _ = run(capsys, "list", "--limit", "5")
    assert memory_id in out

    code, out, _ = run(capsys, "stats", "--json")
    assert json.loads(out)["count"] == 1

    code, out, _ = run(capsys, "forget", memory_id)
    assert code == 0
    assert out.strip() == f"forgotten: {memory_id}"
    code, out, _ = run(capsys, "recall", "build machine")
    assert out.strip() == "No memories found."


def test_cli_bad_input_exits_nonzero_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "recall", "x", "--limit", "0")
    assert code == 1
    assert "limit is 0" in err
    code, _, err = run(capsys, "forget", "nope")
    assert code == 1
    assert "is not a memory id" in err


def test_doctor_checks_the_model_and_store_and_prints_every_path(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "doctor")
    assert code == 0, out
    for line in ("data dir", "cache dir", "model path", "offline bundle", "model: OK", "store: OK"):
        assert line in out
