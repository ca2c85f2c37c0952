"""Streamable HTTP at /mcp, for a long-running server that several agents share.

Every request needs ``Authorization: Bearer <token>``. The token is SUBCOG_TOKEN, or one
generated on first start and kept, mode 0600, in the data directory. Host and Origin headers
are checked by the SDK's DNS-rebinding protection. A non-loopback address is only served
with SUBCOG_TOKEN set explicitly.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
import sys
from pathlib import Path

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from subcog.config import Settings
from subcog.errors import InvalidSetting

log = logging.getLogger(__name__)

TOKEN_FILE = "http-token"
MCP_PATH = "/mcp"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


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


class BearerAuth:
    """ASGI middleware: 401 unless the request carries the bearer token (constant-time check)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._authorised(scope):
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
        await self.app(scope, receive, send)

    def _authorised(self, scope: Scope) -> bool:
        given = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = credentials.strip()
        return hmac.compare_digest(given, self.token)


def serve_http(settings: Settings, host: str, port: int) -> None:
    import uvicorn
    from mcp.server.transport_security import TransportSecuritySettings

    from subcog.server import Service, build_server

    if not is_loopback(host) and not settings.token:
        raise InvalidSetting(
            f"Refusing to serve on {host}, which is not a loopback address, without a token: "
            "set SUBCOG_TOKEN to a long random secret (e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'`), or bind to 127.0.0.1."
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
    server = build_server(settings, service)
    app = BearerAuth(server.streamable_http_app(transport_security=security, host=host), token)
    shown = f"[{host}]" if ":" in host else host
    where = f"in {token_path}" if token_path else "in SUBCOG_TOKEN"
    print(
        f"subcog: MCP over streamable HTTP at http://{shown}:{port}{MCP_PATH}\n"
        f"subcog: clients must send 'Authorization: Bearer <token>'; the token is {where}",
        file=sys.stderr,
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        service.close()
