"""The real HTTP server: bearer token, DNS-rebinding checks, and the tools through mcp."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from subcog.cli import EXIT_INVALID
from subcog.config import Settings
from subcog.web import READ_TIMEOUT_S
from tests.servers import INITIALIZE, call, subcog_command

HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [subcog_command(), "serve", "--transport", "http", "--port", str(port), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the HTTP server did not start"
            time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}/mcp"


@pytest.fixture
def token_server() -> Iterator[tuple[str, str]]:
    token = "test-token-" + "x" * 30
    proc, url = start({**os.environ, "SUBCOG_TOKEN": token})
    try:
        yield url, token
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()


def test_requests_without_the_right_token_get_401(token_server: tuple[str, str]) -> None:
    url, token = token_server
    assert httpx2.post(url, json=INITIALIZE, headers=HEADERS).status_code == 401
    wrong = {**HEADERS, "Authorization": "Bearer not-the-token"}
    assert httpx2.post(url, json=INITIALIZE, headers=wrong).status_code == 401
    basic = {**HEADERS, "Authorization": f"Basic {token}"}
    assert httpx2.post(url, json=INITIALIZE, headers=basic).status_code == 401
    response = httpx2.post(url, json=INITIALIZE, headers=wrong)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_foreign_origin_gets_403_even_with_the_token(token_server: tuple[str, str]) -> None:
    url, token = token_server
    headers = {**HEADERS, "Authorization": f"Bearer {token}", "Origin": "http://evil.example"}
    assert httpx2.post(url, json=INITIALIZE, headers=headers).status_code == 403
    rebound = {**HEADERS, "Authorization": f"Bearer {token}", "Host": "evil.example:80"}
    assert httpx2.post(url, json=INITIALIZE, headers=rebound).status_code in (403, 421)
    local = {**HEADERS, "Authorization": f"Bearer {token}", "Origin": "http://localhost:3000"}
    assert httpx2.post(url, json=INITIALIZE, headers=local).status_code == 200


@pytest.mark.anyio
async def test_with_the_token_the_mcp_client_can_remember_recall_and_forget(
    token_server: tuple[str, str],
) -> None:
    url, token = token_server
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        stored = await call(client, "remember", content="The HTTP transport works with a token.")
        found = await call(client, "recall", query="does HTTP work with a token", limit=1)
        assert [m["id"] for m in found["memories"]] == [stored["id"]]
        assert await call(client, "forget", ids=[stored["id"]]) == {
            "forgotten": [stored["id"]],
            "missing": [],
        }


def test_without_subcog_token_a_token_is_generated_and_kept_private(settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SUBCOG_TOKEN"}
    proc, url = start(env)
    try:
        token_file = settings.data_dir / "http-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32
        ok = {**HEADERS, "Authorization": f"Bearer {token}"}
        assert httpx2.post(url, json=INITIALIZE, headers=ok).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
    assert str(token_file) in stderr


@pytest.mark.parametrize("token", [None, "a", "x" * 31])
def test_a_non_loopback_address_without_a_long_token_is_refused(token: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SUBCOG_TOKEN"}
    if token is not None:
        env["SUBCOG_TOKEN"] = token
    proc = subprocess.run(
        [subcog_command(), "serve", "--transport", "http", "--host", "0.0.0.0", "--port", "1"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == EXIT_INVALID
    assert b"Refusing to serve on 0.0.0.0" in proc.stderr
    assert b"at least 32 characters" in proc.stderr
    assert b"Traceback" not in proc.stderr


def test_each_request_stands_alone_so_an_abandoned_client_leaves_nothing(
    token_server: tuple[str, str],
) -> None:
    """Stateless: no session id is handed out, and a call needs no handshake before it."""
    url, token = token_server
    headers = {**HEADERS, "Authorization": f"Bearer {token}"}
    answer = httpx2.post(url, json=INITIALIZE, headers=headers)
    assert answer.status_code == 200
    assert "mcp-session-id" not in answer.headers
    call_tool = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "recall", "arguments": {"query": "anything"}},
    }
    answer = httpx2.post(url, json=call_tool, headers=headers)
    assert answer.status_code == 200
    assert "result" in answer.json()


def test_slow_senders_are_cut_off(token_server: tuple[str, str]) -> None:
    """A connection that sends nothing, or its headers or body a byte at a time, is closed
    READ_TIMEOUT_S after it began; a whole request is still answered afterwards."""
    url, token = token_server
    port = int(url.split(":")[2].split("/")[0])
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}'
    request = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    silent = socket.create_connection(("127.0.0.1", port))
    slow_headers = socket.create_connection(("127.0.0.1", port))
    slow_body = socket.create_connection(("127.0.0.1", port))
    slow_body.sendall(request)
    started = time.monotonic()
    open_ = {"silent": silent, "slow headers": slow_headers, "slow body": slow_body}
    trickle = {"slow headers": iter(request), "slow body": iter(body)}
    closed: dict[str, float] = {}
    while open_ and time.monotonic() - started < READ_TIMEOUT_S + 10:
        for name, sock in list(open_.items()):
            try:
                if name in trickle:
                    sock.sendall(bytes([next(trickle[name], 32)]))
                sock.settimeout(0.01)
                if sock.recv(1024) == b"":
                    raise ConnectionResetError
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                closed[name] = time.monotonic() - started
                del open_[name]
                sock.close()
        time.sleep(0.5)
    assert not open_, f"still open: {list(open_)}"
    assert all(READ_TIMEOUT_S - 1 <= seconds <= READ_TIMEOUT_S + 5 for seconds in closed.values())
    ok = {**HEADERS, "Authorization": f"Bearer {token}"}
    assert httpx2.post(url, json=INITIALIZE, headers=ok).status_code == 200


def test_the_web_page_is_served_beside_mcp_for_the_same_token(
    token_server: tuple[str, str],
) -> None:
    url, token = token_server
    base = url.removesuffix("/mcp")
    anonymous = httpx2.get(base + "/")
    assert anonymous.status_code == 401
    assert 'name="token"' in anonymous.text  # the login page, and no data
    assert "script-src 'self'" in anonymous.headers["content-security-policy"]
    page = httpx2.get(base + "/", headers={"Authorization": f"Bearer {token}"})
    assert page.status_code == 200
    assert "Memories, newest first" in page.text
    wrong = httpx2.get(base + "/", headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    login = httpx2.post(base + "/login", data={"token": token})
    assert login.status_code == 303
    assert "samesite=strict" in login.headers["set-cookie"].lower()
    assert "httponly" in login.headers["set-cookie"].lower()
    # /mcp itself still takes the bearer token only, not the page's cookie.
    cookie = {"Cookie": login.headers["set-cookie"].split(";")[0]}
    assert httpx2.post(url, json=INITIALIZE, headers={**HEADERS, **cookie}).status_code == 401


def test_named_tokens_do_not_excuse_a_short_subcog_token_on_the_network(tmp_path: Path) -> None:
    env = {**os.environ, "SUBCOG_DATA_DIR": str(tmp_path / "data")}
    env.pop("SUBCOG_TOKEN", None)
    subprocess.run(
        [subcog_command(), "token", "add", "alice", "--write", "alice"],
        env=env,
        capture_output=True,
        check=True,
    )
    proc = subprocess.run(
        [subcog_command(), "serve", "--transport", "http", "--host", "0.0.0.0", "--port", "1"],
        env={**env, "SUBCOG_TOKEN": "dev"},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == EXIT_INVALID
    assert b"Refusing to serve on 0.0.0.0," in proc.stderr
    assert b"a SUBCOG_TOKEN of 3 characters" in proc.stderr


def test_on_the_network_no_login_code_is_printed(tmp_path: Path) -> None:
    """The printed lines may reach logs others read: the page is opened with the token."""
    token = "test-token-" + "x" * 30
    env = {**os.environ, "SUBCOG_DATA_DIR": str(tmp_path / "data"), "SUBCOG_TOKEN": token}
    proc, url = start(env, "--host", "0.0.0.0")
    try:
        base = url.removesuffix("/mcp")
        assert httpx2.get(base + "/login?code=anything").status_code != 303
        assert httpx2.get(base + "/", headers={"Authorization": f"Bearer {token}"}).is_success
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
    (line,) = [line for line in stderr.splitlines() if "memories page" in line]
    assert "code=" not in line
    assert line.endswith("/")
