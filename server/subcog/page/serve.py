"""`subcog ui`: the page alone, on 127.0.0.1; and the page beside /mcp on the HTTP transport."""

from __future__ import annotations

import socket
import sys
import webbrowser
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from subcog.config import Settings
from subcog.errors import InvalidInput
from subcog.memory import Memory
from subcog.page.access import Access, TokenCheck
from subcog.page.app import Page

UI_HOST = "127.0.0.1"


def page_app(
    settings: Settings, memory: Callable[[], Memory], accepts: TokenCheck, hosts: list[str]
) -> Page:
    """The page over a server's memory; `accepts` is /mcp's check of a bearer token."""
    return Page(memory, Access(accepts, hosts, settings.allowed_origins))


def beside_mcp(mcp: ASGIApp, page: ASGIApp, mcp_path: str) -> ASGIApp:
    """/mcp (and the server's start-up and shutdown) to the MCP app; every other path to the
    page."""

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "lifespan" or path == mcp_path or path.startswith(mcp_path + "/"):
            await mcp(scope, receive, send)
        else:
            await page(scope, receive, send)

    return route


def login_url(host: str, port: int, page: Page) -> str:
    shown = f"[{host}]" if ":" in host else host
    code = page.access.login_code()
    return f"http://{shown}:{port}/" + (f"login?code={code}" if code else "")


def serve_ui(settings: Settings, port: int, open_browser: bool) -> int:
    import uvicorn

    from subcog.page.access import token_check
    from subcog.server import Service
    from subcog.web import (
        KEEP_ALIVE_S,
        LOOPBACK_NAMES,
        MAX_CONNECTIONS,
        TimedH11Protocol,
        http_token,
    )

    token, token_path = http_token(settings)
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listening.bind((UI_HOST, port))
        listening.listen(128)  # a browser opened now waits for uvicorn rather than failing
    except OSError as exc:
        listening.close()
        raise InvalidInput(
            f"Cannot listen on {UI_HOST}:{port} ({exc.strerror}): pick another --port, or "
            "leave it out for a free one."
        ) from None
    port = listening.getsockname()[1]
    service = Service(settings)
    service.start()
    page = page_app(
        settings,
        service.memory,
        token_check(token),
        [*LOOPBACK_NAMES, *settings.allowed_hosts],
    )
    url = login_url(UI_HOST, port, page)
    where = f"in {token_path}" if token_path else "SUBCOG_TOKEN"
    print(
        f"subcog: your memories, in a browser: {url}\n"
        f"subcog: that link logs in once; later, log in with the token ({where}). "
        "Ctrl-C stops.",
        file=sys.stderr,
        flush=True,
    )
    if open_browser:
        webbrowser.open(url)
    config = uvicorn.Config(
        page.app(),
        log_level="warning",
        http=TimedH11Protocol,
        timeout_keep_alive=KEEP_ALIVE_S,
        limit_concurrency=MAX_CONNECTIONS,
    )
    try:
        uvicorn.Server(config).run(sockets=[listening])
    finally:
        listening.close()
        service.close()
    return 0
