"""The README documents every command and setting, and the example configs work."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from subcog.cli import COMMANDS, commands
from subcog.config import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_cli_command_is_in_the_readme_table_with_every_option(command: str) -> None:
    rows = [line for line in README.splitlines() if line.startswith(f"| `subcog {command}")]
    assert rows, f"the README's command table has no row for subcog {command}"
    options = {flag for flag in commands()[command] if flag.startswith("--") and flag != "--help"}
    assert {flag for flag in options if flag not in rows[0]} == set()


@pytest.mark.parametrize("name", [setting.env for setting in SETTINGS])
def test_every_setting_is_in_the_readme_table(name: str) -> None:
    assert f"| `{name}` |" in README


def test_the_readme_gives_the_two_setup_commands() -> None:
    assert "make run" in README
    assert "make test" in README


@pytest.mark.parametrize(
    "path",
    sorted(p for p in (ROOT / "examples").rglob("*.json") if p.name != "settings.json"),
    ids=str,
)
def test_example_configs_are_valid_and_start_an_existing_subcog_command(path: Path) -> None:
    config = json.loads(path.read_text())
    servers = config.get("mcpServers") or config.get("servers")
    server = servers["subcog"]
    assert Path(server["command"]).name == "subcog"
    assert (Path(sys.executable).parent / "subcog").exists() or shutil.which("subcog")
    assert server["args"][0] in COMMANDS
