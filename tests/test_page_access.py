"""The page's access rules, request by request (the browser tests drive them end to end)."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from subcog.page.access import Access, session_cookie, token_check

TOKEN = "the-token-" + "x" * 30


def request(headers: dict[str, str], path: str = "/") -> Request:
    return Request(
        {
            "type": "http",
            "method": "POST",
            "path": path,
            "scheme": "http",
            "server": ("127.0.0.1", 8765),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        }
    )


@pytest.fixture
def access() -> Access:
    return Access(token_check(TOKEN), ["127.0.0.1", "localhost"], ["http://trusted.example"])


def test_the_login_code_works_once_and_a_wrong_one_never(access: Access) -> None:
    code = access.login_code()
    assert code
    assert access.redeem("wrong") is None
    session = access.redeem(code)
    assert session
    assert access.redeem(code) is None
    assert access.login_code() is None
    cookie = {"Host": "127.0.0.1:8765", "Cookie": f"{session_cookie(request({}))}={session}"}
    assert access.session(request(cookie)) == session
    access.log_out(session)
    assert access.session(request(cookie)) is None


def test_the_token_logs_in_and_a_wrong_one_does_not(access: Access) -> None:
    assert access.log_in("nope") is None
    assert access.log_in("") is None
    assert access.log_in(TOKEN)
    assert access.session(request({"Authorization": f"Bearer {TOKEN}"}))
    assert access.session(request({"Authorization": "Bearer nope"})) is None
    assert access.session(request({"Authorization": f"Basic {TOKEN}"})) is None


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({"Host": "127.0.0.1:8765", "Origin": "http://127.0.0.1:8765"}, True),
        ({"Host": "127.0.0.1:8765", "Origin": "http://trusted.example"}, True),
        ({"Host": "127.0.0.1:8765", "Origin": "http://127.0.0.1:9999"}, False),
        ({"Host": "127.0.0.1:8765", "Origin": "http://evil.example"}, False),
        ({"Host": "127.0.0.1:8765", "Origin": "null"}, False),
        ({"Host": "127.0.0.1:8765", "Sec-Fetch-Site": "cross-site"}, False),
        ({"Host": "127.0.0.1:8765", "Sec-Fetch-Site": "same-site"}, False),
        ({"Host": "127.0.0.1:8765", "Sec-Fetch-Site": "same-origin"}, True),
        ({"Host": "127.0.0.1:8765"}, True),  # not a browser: the CSRF token still decides
    ],
)
def test_a_change_must_come_from_our_origin(
    access: Access, headers: dict[str, str], allowed: bool
) -> None:
    session = access.log_in(TOKEN)
    assert session
    csrf = access.csrf_token(session)
    assert access.change_allowed(request(headers), session, csrf) is allowed
    assert access.change_allowed(request(headers), session, "") is False
    assert access.change_allowed(request(headers), session, access.csrf_token("other")) is False


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:8765", True),
        ("localhost:8765", True),
        ("LOCALHOST", True),
        ("evil.example:8765", False),
        ("127.0.0.1.evil.example", False),
        ("", False),
    ],
)
def test_only_this_machines_names_are_served(access: Access, host: str, allowed: bool) -> None:
    assert access.host_allowed(request({"Host": host})) is allowed
