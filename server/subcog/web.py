"""Streamable HTTP at /mcp, for a long-running server that several agents share.

Every request needs ``Authorization: Bearer <token>``. The owner's token is SUBCOG_TOKEN, or
one generated on first start and kept, mode 0600, in the data directory; it may read and write
every scope. A team server adds named tokens with scopes (`subcog token add`, access.py):
`who(token)` names the caller of each request, and the tools keep to their scopes. Host and
Origin headers are checked by the SDK's DNS-rebinding protection. A non-loopback address is
only served with SUBCOG_TOKEN set explicitly and at least MIN_TOKEN_CHARS long, or with named
tokens (each 256 random bits).

Under abuse it holds (benchmarks/faults.py): the server is stateless (the SDK's stateless mode;
each request stands alone, so an abandoned client leaves nothing behind), each request must
arrive whole within READ_TIMEOUT_S of its first byte, an idle connection is closed after
uvicorn's keep-alive timeout, and past MAX_CONNECTIONS connections or requests at once the
next get 503. HTTP/1.1 answers one request of a connection at a time, so a client that never
reads its answers holds one request in flight, not thousands.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h11
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from subcog.access import CALLER, OWNER, Access, Tokens
from subcog.config import Settings
from subcog.errors import InvalidSetting

log = logging.getLogger(__name__)

TOKEN_FILE = "http-token"
MCP_PATH = "/mcp"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
MIN_TOKEN_CHARS = 32  # for a non-loopback address: guessing it must be hopeless
READ_TIMEOUT_S = 10.0  # from a request's first byte to its last (headers and body)
KEEP_ALIVE_S = 5  # an idle connection between requests
MAX_CONNECTIONS = 256  # connections, and requests being served, at once; then 503


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def http_token(settings: Settings) -> tuple[str, Path | None]:
    """The bearer token, and the file it is kept in when it was generated rather than given."""
    if settings.token:
        return settings.token, None
    path = settings.data_dir / TOKEN_FILE
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = path.read_text().strip()
        if token:
            return token, path
        raise InvalidSetting(f"{path} is empty; delete it to have a new token made.") from None
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token, path


def identifier(settings: Settings, owner_token: str) -> Callable[[str], Access | None]:
    """`who(token)`: the caller a bearer token names (the owner, or a named token's person or
    agent with their scopes), or None. Every check is in constant time."""
    tokens = Tokens(settings.store, settings.refresh_s)
    owner = owner_token.encode()

    def who(token: str) -> Access | None:
        if not token:
            return None
        if hmac.compare_digest(token.encode(), owner):
            return OWNER
        return tokens.who(token)

    return who


class TimedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, with a deadline for reading each request.

    uvicorn closes a connection idle between requests, but not one that sends its headers or
    body a byte at a time, nor one that connects and sends nothing: such connections stayed
    open (benchmarks/README.md, "Faults and abuse"). Here a request must arrive whole (headers
    and body) within READ_TIMEOUT_S of the connection, or of the first byte after the last
    answer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self._reading():
            self._arm()
        super().data_received(data)
        if not self._reading():
            self._disarm()  # the whole request is in: the answer takes what it takes

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _reading(self) -> bool:
        return self.conn.their_state in (h11.IDLE, h11.SEND_BODY)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(READ_TIMEOUT_S, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self._reading() and not self.transport.is_closing():
            log.debug("closed a connection that sent no whole request in %s s", READ_TIMEOUT_S)
            self.transport.close()


class BearerAuth:
    """ASGI middleware: 401 unless the request carries a token `who` knows; the request is
    then served as that caller (access.CALLER)."""

    def __init__(self, app: ASGIApp, who: Callable[[str], Access | None]) -> None:
        self.app = app
        self.who = who

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        caller = self._caller(scope) if scope["type"] == "http" else None
        if scope["type"] == "http" and caller is None:
            response = JSONResponse(
                {
                    "error": "invalid_token",
                    "error_description": "Send the header 'Authorization: Bearer <token>'; the "
                    "token is SUBCOG_TOKEN or the file named in subcog's start-up message.",
                },
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="subcog"'},
            )
            await response(scope, receive, send)
            return
        reset = CALLER.set(caller)
        try:
            await self.app(scope, receive, send)
        finally:
            CALLER.reset(reset)

    def _caller(self, scope: Scope) -> Access | None:
        given = ""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = credentials.strip().decode("latin-1")
        return self.who(given)


def serve_http(settings: Settings, host: str, port: int) -> None:
    import uvicorn
    from mcp.server.transport_security import TransportSecuritySettings

    from subcog.page.access import token_check
    from subcog.page.serve import beside_mcp, login_url, page_app
    from subcog.server import Service, build_server

    # On the network the owner's token must be long: SUBCOG_TOKEN, unless named tokens stand in
    # for it (the generated owner token, then, is long).
    named = bool(Tokens(settings.store, settings.refresh_s).entries())
    short = len(settings.token or "") < MIN_TOKEN_CHARS
    if not is_loopback(host) and short and (settings.token or not named):
        given = (
            f"a SUBCOG_TOKEN of {len(settings.token)} characters"
            if settings.token
            else "no SUBCOG_TOKEN"
        )
        raise InvalidSetting(
            f"Refusing to serve on {host}, which is not a loopback address, with {given}: set "
            f"SUBCOG_TOKEN to a random secret of at least {MIN_TOKEN_CHARS} characters (e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`), add named tokens "
            "with `subcog token add NAME`, or bind to 127.0.0.1."
        )
    token, token_path = http_token(settings)
    names = [*LOOPBACK_NAMES, *([] if is_loopback(host) else [host]), *settings.allowed_hosts]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{name}:*" for name in names],
        allowed_origins=[
            *(f"{scheme}://{name}:*" for name in names for scheme in ("http", "https")),
            *settings.allowed_origins,
        ],
    )
    service = Service(settings)
    service.start()  # load while uvicorn starts; requests never wait for the handshake
    server = build_server(settings, service, http=True)
    mcp_app = server.streamable_http_app(
        transport_security=security, host=host, stateless_http=True, json_response=True
    )
    # The web page at / (subcog/page). It shows and changes every scope, so it opens for the
    # owner's token only, never a named one (access.py). On the network no one-time login code
    # is printed: the lines may reach logs that others read.
    page = page_app(settings, service.memory, token_check(token), names)
    if not is_loopback(host):
        page.access.no_login_code()
    app = beside_mcp(BearerAuth(mcp_app, identifier(settings, token)), page.app(), MCP_PATH)
    shown = f"[{host}]" if ":" in host else host
    where = f"in {token_path}" if token_path else "in SUBCOG_TOKEN"
    print(
        f"subcog: MCP over streamable HTTP at http://{shown}:{port}{MCP_PATH}\n"
        f"subcog: clients must send 'Authorization: Bearer <token>'; the owner's token is "
        f"{where}, and `subcog token add NAME` makes one for each person or agent\n"
        f"subcog: the memories page: {login_url(host, port, page)}",
        file=sys.stderr,
    )
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="warning",
            http=TimedH11Protocol,
            timeout_keep_alive=KEEP_ALIVE_S,
            limit_concurrency=MAX_CONNECTIONS,
        )
    finally:
        service.close()
