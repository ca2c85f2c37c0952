"""Who may use the page, and which requests may change anything.

- A person proves they hold the bearer token of /mcp, once: by the one-time login code in the
  URL that `subcog ui` prints (as Jupyter does), or by typing the token into the login form.
  Either gives an HttpOnly, SameSite=Strict session cookie; a script may also send the token
  as `Authorization: Bearer`.
- Every change is a POST carrying the session's CSRF token, from the page's own origin.
- The Host header must be a name of this machine (or SUBCOG_ALLOWED_HOSTS): a DNS-rebinding
  page cannot read our answers.

- Every answer carries a strict Content-Security-Policy (no inline script, nothing from
  another origin, no framing); see `guarded`.

Whether a token is right is one function handed in (`TokenCheck`): the server that serves
/mcp passes its own check of the same token (web.py's serve_http, and serve.py for `subcog
ui`), so a change to how /mcp checks tokens reaches the page by changing that argument.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SESSION_COOKIE = "subcog_session"
# No inline script or style, nothing from another origin, no framing.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    # The login code never leaves in a Referer; "no-referrer" would make a POST's Origin "null".
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
# Whether a token given is the bearer token of /mcp.
TokenCheck = Callable[[str], bool]


def token_check(token: str) -> TokenCheck:
    """The check for one token, in constant time."""
    expected = token.encode()
    return lambda given: hmac.compare_digest(given.encode(), expected)


def session_cookie(request: Request) -> str:
    """The cookie's name: one per port, since browsers share a host's cookies across its ports
    (`subcog ui` and an HTTP server on one machine each keep their own)."""
    return f"{SESSION_COOKIE}-{request.url.port or 80}"


def _host_name(host: str) -> str:
    """The name of a Host header, without its port ("[::1]:8080" -> "[::1]")."""
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if host.count(":") == 1 else host


class Access:
    """The login code, the sessions, and the checks of each request."""

    def __init__(
        self, accepts: TokenCheck, hosts: Iterable[str], origins: Iterable[str] = ()
    ) -> None:
        self.accepts = accepts
        self.hosts = {name.lower() for name in hosts}
        self.origins = set(origins)
        self._code: str | None = secrets.token_urlsafe(24)
        self._sessions: set[str] = set()
        self._secret = secrets.token_bytes(32)
        self._lock = threading.Lock()

    def login_code(self) -> str | None:
        """The one-time code for the printed URL; None once it has been used."""
        return self._code

    def no_login_code(self) -> None:
        """No one-time code: for a server on the network, whose printed lines may end up in
        logs that others read. The page is then opened with the token itself."""
        with self._lock:
            self._code = None

    def redeem(self, code: str) -> str | None:
        """A new session for the one-time code, which then stops working; else None."""
        with self._lock:
            if self._code is None or not hmac.compare_digest(code.encode(), self._code.encode()):
                return None
            self._code = None
        return self._new_session()

    def log_in(self, token: str) -> str | None:
        """A new session for the bearer token; None for a wrong one."""
        return self._new_session() if token and self.accepts(token) else None

    def _new_session(self) -> str:
        session = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions.add(session)
        return session

    def log_out(self, session: str) -> None:
        with self._lock:
            self._sessions.discard(session)

    def session(self, request: Request) -> str | None:
        """The request's session: its cookie's, or its bearer token's; None: not logged in."""
        cookie = request.cookies.get(session_cookie(request), "")
        with self._lock:
            if cookie in self._sessions:
                return cookie
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip() and self.accepts(token.strip()):
            return "bearer:" + hmac.new(self._secret, token.encode(), "sha256").hexdigest()
        return None

    def csrf_token(self, session: str) -> str:
        return hmac.new(self._secret, session.encode(), "sha256").hexdigest()

    def host_allowed(self, request: Request) -> bool:
        return _host_name(request.headers.get("host", "").lower()) in self.hosts

    def same_origin(self, request: Request) -> bool:
        """Whether a POST comes from the page itself: its Origin is ours (a browser always
        sends one with a POST); without one, Sec-Fetch-Site must not say another site."""
        origin = request.headers.get("origin")
        if origin is None:
            return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")
        if origin in self.origins:
            return True
        parts = urlsplit(origin)
        own = request.headers.get("host", "")
        return parts.scheme in ("http", "https") and parts.netloc.lower() == own.lower()

    def change_allowed(self, request: Request, session: str, csrf: str) -> bool:
        """A POST that changes something: from our origin, with this session's CSRF token."""
        expected = self.csrf_token(session)
        return self.same_origin(request) and hmac.compare_digest(csrf.encode(), expected.encode())


def guarded(app: ASGIApp, access: Access) -> ASGIApp:
    """Every answer with the security headers; a request for another Host refused."""

    async def run(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        if not access.host_allowed(Request(scope)):
            refused = Response("This Host is not served here.", 421, media_type="text/plain")
            await refused(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await app(scope, receive, with_headers)

    return run
