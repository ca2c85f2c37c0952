"""Build subcog.mcpb, the Claude Desktop bundle, from subcog's wheel: `make bundle`.

    python bundle/pack.py dist/subcog-X-py3-none-any.whl dist/subcog.mcpb

The bundle is of server type "uv": it holds manifest.json, src/server.py, the wheel, and a
pyproject.toml (with its uv.lock) that names the wheel. The host installs the wheel and its
dependencies from PyPI with uv, once, and then runs the server with no network at all (the
model is one of those dependencies, never a download). A "python" bundle would have to carry
the dependencies themselves, built for one system and one Python (LanceDB, Arrow and ONNX
Runtime are compiled), about 300 MB each. `mcpb pack` (npm) checks the manifest and zips it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MCPB = "@anthropic-ai/mcpb@2.1.2"

PYPROJECT = """\
# Written by bundle/pack.py: what the host installs with uv before it runs src/server.py.
[project]
name = "subcog-bundle"
version = "{version}"
requires-python = ">=3.10"
dependencies = ["subcog=={version}"]

[tool.uv]
package = false

[tool.uv.sources]
subcog = {{ path = "wheels/{wheel}" }}
"""


def stage(wheel: Path, into: Path) -> Path:
    """The bundle's files in `into`, with the wheel's version in manifest.json checked."""
    version = wheel.name.split("-")[1]
    manifest = json.loads((HERE / "manifest.json").read_text(encoding="utf-8"))
    if manifest["version"] != version:
        raise SystemExit(
            f"bundle/manifest.json is version {manifest['version']}, the wheel {version}"
        )
    if into.exists():
        shutil.rmtree(into)
    (into / "wheels").mkdir(parents=True)
    shutil.copy2(HERE / "manifest.json", into / "manifest.json")
    shutil.copy2(HERE / ".mcpbignore", into / ".mcpbignore")
    shutil.copytree(HERE / "src", into / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(HERE.parent / "LICENSE", into / "LICENSE")
    shutil.copy2(wheel, into / "wheels" / wheel.name)
    (into / "pyproject.toml").write_text(PYPROJECT.format(version=version, wheel=wheel.name))
    return into


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--staging", type=Path, default=Path("build/bundle"))
    parser.add_argument(
        "--server-json",
        type=Path,
        help="write the bundle's sha256 into this MCP Registry entry (for a release)",
    )
    args = parser.parse_args(argv)
    staged = stage(args.wheel.resolve(), args.staging.resolve())
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv") or "uv"
    subprocess.run([uv, "lock", "--quiet", "--directory", str(staged)], check=True)
    npx = shutil.which("npx") or "npx"
    subprocess.run([npx, "-y", MCPB, "validate", str(staged / "manifest.json")], check=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([npx, "-y", MCPB, "pack", str(staged), str(args.output.resolve())], check=True)
    if args.server_json is not None:
        record_sha256(args.output, args.server_json)
    return 0


def record_sha256(bundle: Path, server_json: Path) -> None:
    """The registry entry's mcpb package gets the bundle's sha256, which clients check."""
    entry = json.loads(server_json.read_text(encoding="utf-8"))
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
    for package in entry["packages"]:
        if package["registryType"] == "mcpb":
            package["fileSha256"] = digest
    server_json.write_text(json.dumps(entry, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
