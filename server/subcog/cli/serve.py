"""`subcog serve`: the MCP server, on stdio (the default) or streamable HTTP."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from subcog import __version__
from subcog.config import Settings
from subcog.errors import SubcogError


def serve(args: argparse.Namespace, settings: Settings) -> int:
    """`subcog` without a command serves too: then `args` has none of serve's options."""
    if getattr(args, "transport", "stdio") == "http":
        from subcog.web import serve_http

        serve_http(settings, args.host, args.port)
        return 0
    return _serve_stdio(settings)


def ui(args: argparse.Namespace, settings: Settings) -> int:
    """`subcog ui`: the web page on 127.0.0.1."""
    from subcog.page.serve import serve_ui

    return serve_ui(settings, args.port, open_browser=not args.no_browser)


def _first_start(settings: Settings) -> bool:
    """Whether the model has yet to be copied into the cache (and an int8 copy made)."""
    from subcog.embedder import snapshot_dir

    return settings.model_path is None and snapshot_dir(settings.cache_dir, settings.model) is None


def _serve_stdio(settings: Settings) -> int:
    from subcog.embedder import Embedder, load_embedder
    from subcog.server import Service, build_server

    prepared: Embedder | None = None
    if _first_start(settings):
        # Else the model loads in the background while the server answers; the first time it
        # is prepared first (seconds), so that the first tool call does not wait for it.
        print(
            f"subcog: first start: preparing the model in {settings.cache_dir} (a few seconds)",
            file=sys.stderr,
        )
        started = time.monotonic()
        try:
            prepared = load_embedder(settings)
            print(f"subcog: model ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
        except SubcogError as exc:  # the tools say so too; `subcog doctor` tells more
            print(f"subcog: {exc}", file=sys.stderr)
    exe = shutil.which("subcog") or sys.argv[0]
    print(
        f"subcog {__version__}: MCP server on stdio; memories in "
        f"{settings.store.shown if settings.store.remote else settings.data_dir}",
        file=sys.stderr,
    )
    if sys.stdin.isatty():
        config = {
            "mcpServers": {"subcog": {"command": str(Path(exe).resolve()), "args": ["serve"]}}
        }
        print(
            "It speaks JSON-RPC on stdin/stdout and is meant to be started by an MCP client.\n"
            "Connect one, for example Claude Desktop's claude_desktop_config.json:\n"
            f"{json.dumps(config, indent=2)}\n"
            f"or Claude Code: claude mcp add subcog -- {Path(exe).resolve()} serve\n"
            "More clients are in README.md. Press Ctrl-C to stop.",
            file=sys.stderr,
        )
    if prepared is None:
        service = Service(settings)
    else:
        model = prepared
        service = Service(settings, load_model=lambda _settings: model)
    try:
        build_server(settings, service).run("stdio")
    finally:
        service.close()  # loading finished, forgotten memories erased, upkeep stopped
    return 0
