"""The web page (`subcog ui`) in a real browser: Debian's Chromium driven by Playwright, against
a real `subcog ui` process on a real store, with the real model. What the page changes is then
checked through a real MCP client over stdio.

Without Chromium the tests fail on Linux (CI installs it: .ci/run) and are skipped elsewhere,
saying why. Every wait is Playwright's own (expect), never a sleep."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import stdio_client

from subcog.memory import Memory
from tests.servers import call, server_params, subcog_command
from tests.test_erasure import erased_within

playwright_api = pytest.importorskip("playwright.sync_api")
Browser = playwright_api.Browser
BrowserContext = playwright_api.BrowserContext
PwPage = playwright_api.Page
expect = playwright_api.expect

STANDUP = "Our team standup is at 9:30 every weekday."
VET = "The cat's vet appointment is on Friday."
XSS = "<script>alert(1)</script> and <img src=x onerror=alert(2)>"
DOCS_SHOT = "SUBCOG_DOCS_SCREENSHOT"  # set to 1: the README's screenshot is written to docs/
DOCS_PNG = Path(__file__).resolve().parent.parent / "docs" / "subcog-ui.png"


def chromium_path() -> str | None:
    given = os.environ.get("SUBCOG_CHROMIUM")
    if given:
        return given
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    if executable is None:
        why = "no Chromium found: `apt-get install -y chromium`, or set SUBCOG_CHROMIUM"
        if sys.platform.startswith("linux"):
            pytest.fail(why + " (on Linux the page's tests must run, not skip)")
        pytest.skip(why + f" (skipped on {sys.platform}; CI runs them on Linux)")
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    with playwright_api.sync_playwright() as driver:
        launched = driver.chromium.launch(
            executable_path=executable, args=["--no-sandbox"] if as_root else []
        )
        yield launched
        launched.close()


@dataclass
class Ui:
    """A running `subcog ui`: its address and the one-time login URL it printed."""

    proc: subprocess.Popen[bytes]
    base: str
    login_url: str
    output: list[str]


@pytest.fixture
def ui(memory: Memory) -> Iterator[Ui]:
    """`subcog ui --no-browser` on the test's store, after the test's `seed` memories."""
    memory.close()
    proc = subprocess.Popen(
        [subcog_command(), "ui", "--no-browser"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
    )
    assert proc.stderr is not None
    output: list[str] = []
    url = None
    for line in iter(proc.stderr.readline, b""):
        output.append(line.decode())
        found = re.search(r"(http://127\.0\.0\.1:\d+)/login\?code=\S+", line.decode())
        if found:
            url = found
            break
    assert url is not None, "".join(output)
    drain = threading.Thread(target=lambda: output.extend(x.decode() for x in proc.stderr))  # type: ignore[union-attr]
    drain.start()
    try:
        yield Ui(proc, url.group(1), url.group(0), output)
    finally:
        proc.terminate()
        proc.wait(60)
        drain.join(10)
        proc.stderr.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    made = browser.new_context(viewport={"width": 1200, "height": 900})
    yield made
    made.close()


def logged_in(context: BrowserContext, ui: Ui) -> PwPage:
    page = context.new_page()
    page.goto(ui.login_url)
    expect(page.get_by_role("heading", name="Memories, newest first")).to_be_visible()
    return page


def seed(memory: Memory, *lines: dict[str, Any]) -> None:
    report = memory.import_jsonl(json.dumps(line) for line in lines)
    assert report.added == len(lines), report


def days_ago(days: int) -> str:
    return (datetime.now(timezone.utc) - timedelta(days=days)).isoformat()


def recall_over_stdio(query: str) -> list[str]:
    """What `recall` returns through a real MCP client and a `subcog serve` on stdio."""

    async def ask() -> list[str]:
        async with Client(stdio_client(server_params())) as client:
            found = await call(client, "recall", query=query, limit=10)
            return [m["content"] for m in found["memories"]]

    with ThreadPoolExecutor(1) as thread:  # Playwright's sync API owns this thread's loop
        return thread.submit(anyio.run, ask).result()


def test_the_login_link_opens_the_page_once_and_sets_a_strict_cookie(
    memory: Memory, ui: Ui, context: BrowserContext, browser: Browser, tmp_path: Path
) -> None:
    page = logged_in(context, ui)
    assert page.url == ui.base + "/"  # the code is not left in the address bar
    (cookie,) = context.cookies()
    assert cookie["name"] == f"subcog_session-{ui.base.rsplit(':', 1)[1]}"
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    page.screenshot(path=str(tmp_path / "memories-empty.png"))
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_label("Token")).to_be_visible()
    page.goto(ui.base + "/")
    expect(page.get_by_label("Token")).to_be_visible()
    assert context.cookies() == []
    other = browser.new_context()
    try:
        again = other.new_page()
        again.goto(ui.login_url)
        expect(again.get_by_role("alert")).to_contain_text("used already")
        expect(again.get_by_label("Token")).to_be_visible()
        assert again.get_by_role("navigation", name="Main").count() == 0
    finally:
        other.close()


@pytest.fixture
def standup(memory: Memory) -> None:
    seed(
        memory,
        {"content": STANDUP, "tags": ["work"], "author": "ana"},
        {"content": VET, "tags": ["home"]},
        {
            "content": "We flew to Lisbon for the conference.",
            "tags": ["travel"],
            "created_at": "2024-03-05T10:00:00Z",
        },
        {
            "content": "Passport renewal is due in May.",
            "tags": ["travel", "admin"],
            "scope": "personal",
            "created_at": days_ago(2),
        },
    )


@pytest.mark.usefixtures("standup")
def test_search_finds_a_paraphrase_and_shows_its_score(
    ui: Ui, context: BrowserContext, tmp_path: Path
) -> None:
    page = logged_in(context, ui)
    page.get_by_label("Search by meaning").fill("When is the daily team meeting?")
    page.get_by_label("Search by meaning").press("Enter")
    first = page.locator("ol.memories > li").first
    expect(first.locator(".content")).to_have_text(STANDUP)
    expect(first.locator(".score")).to_have_text(re.compile(r"score 0\.\d{3}"))
    expect(first.locator(".author")).to_have_text("by ana")
    page.screenshot(path=str(tmp_path / "search.png"), full_page=True)


@pytest.mark.usefixtures("standup")
def test_filters_by_tag_by_scope_and_by_dates_in_words(ui: Ui, context: BrowserContext) -> None:
    page = logged_in(context, ui)
    items = page.locator("ol.memories .content")
    expect(items).to_have_count(4)
    page.get_by_label("Tags (all of)").fill("travel")
    page.get_by_role("button", name="Apply").click()
    expect(items).to_have_text(
        ["Passport renewal is due in May.", "We flew to Lisbon for the conference."]
    )
    page.get_by_label("Since").fill("30 days ago")
    page.get_by_role("button", name="Apply").click()
    expect(items).to_have_text(["Passport renewal is due in May."])
    page.get_by_label("Since").fill("2024-03")
    page.get_by_label("Until").fill("2024-04")
    page.get_by_label("Tags (all of)").fill("")
    page.get_by_role("button", name="Apply").click()
    expect(items).to_have_text(["We flew to Lisbon for the conference."])
    page.goto(ui.base + "/")
    page.get_by_label("Scope").select_option("personal")
    page.get_by_role("button", name="Apply").click()
    expect(items).to_have_text(["Passport renewal is due in May."])
    page.get_by_label("Since").fill("the day after never")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("alert")).to_contain_text("since")


def test_pages_go_back_in_time_without_repeating_or_missing_one(
    memory: Memory, ui: Ui, context: BrowserContext
) -> None:
    same_time = "2025-01-01T00:00:00Z"  # keyset paging must order ties by id
    seed(memory, *({"content": f"note number {n}", "created_at": same_time} for n in range(120)))
    page = logged_in(context, ui)
    seen: list[str] = []
    items = page.locator("ol.memories .content")
    for expected in (50, 50, 20):
        expect(items).to_have_count(expected)
        seen += items.all_inner_texts()
        older = page.get_by_role("link", name="Older memories →")
        if expected == 50:
            older.click()
        else:
            expect(older).to_have_count(0)
    assert sorted(seen) == sorted(f"note number {n}" for n in range(120))


@pytest.mark.usefixtures("standup")
def test_forget_after_confirmation_is_gone_from_recall_and_erased(
    ui: Ui, context: BrowserContext, tmp_path: Path, settings: Any
) -> None:
    assert STANDUP in recall_over_stdio("When is the daily team meeting?")
    page = logged_in(context, ui)
    page.get_by_role("button", name="Forget selected…").click()
    expect(page.get_by_role("alert")).to_have_text(
        "Select at least one memory first: tick the box beside it."
    )
    page.get_by_role("link", name="Back to the memories").click()
    for text in (STANDUP, VET):
        row = page.locator("ol.memories > li").filter(has_text=text)
        row.get_by_role("checkbox", name="Select this memory to forget").check()
    page.get_by_role("button", name="Forget selected…").click()
    expect(page.get_by_role("heading", name="Forget 2 memories?")).to_be_visible()
    doomed = page.locator("ol.doomed li")
    expect(doomed).to_have_count(2)
    assert sorted(doomed.all_inner_texts()) == sorted([STANDUP, VET])
    page.screenshot(path=str(tmp_path / "confirm.png"))
    page.get_by_role("button", name="Forget 2").click()
    expect(page.get_by_role("status")).to_contain_text("Forgotten: 2")
    expect(page.locator("ol.memories .content")).to_have_count(2)
    assert STANDUP not in recall_over_stdio("When is the daily team meeting?")
    erased_within(settings.data_dir, STANDUP.encode())


def test_memory_text_is_shown_as_text_and_runs_nothing(
    memory: Memory, ui: Ui, context: BrowserContext, tmp_path: Path
) -> None:
    seed(memory, {"content": XSS, "tags": ["x"], "metadata": {"note": "<b>bold</b>"}})
    dialogs: list[str] = []
    page = context.new_page()
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(ui.login_url)
    expect(page.locator("ol.memories .content")).to_have_text([XSS])
    expect(page.locator(".metadata dd")).to_have_text(["<b>bold</b>"])
    assert page.locator("main img, main script, main b").count() == 0
    page.get_by_role("link", name="details of this memory").click()
    expect(page.locator(".content")).to_have_text(XSS)
    assert page.locator("main img, main script").count() == 0
    page.screenshot(path=str(tmp_path / "xss.png"))
    assert dialogs == []


@pytest.mark.usefixtures("standup")
def test_a_wrong_token_and_a_cross_site_post_are_refused(
    ui: Ui, context: BrowserContext, browser: Browser
) -> None:
    stranger = browser.new_context()
    try:
        page = stranger.new_page()
        page.goto(ui.base + "/")
        expect(page.get_by_label("Token")).to_be_visible()  # a login page, never data
        assert STANDUP not in page.content()
        page.get_by_label("Token").fill("not-the-token")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("alert")).to_have_text("That token is not right.")
        assert STANDUP not in page.content()
        refused = stranger.request.get(ui.base + "/", headers={"Authorization": "Bearer nope"})
        assert refused.status == 401
        assert STANDUP not in refused.text()
    finally:
        stranger.close()

    page = logged_in(context, ui)
    memory_id = page.locator("ol.memories input[type=checkbox]").first.get_attribute("value")
    csrf = page.locator("#selection input[name=csrf]").get_attribute("value")
    assert memory_id
    assert csrf
    forged = context.request.post(  # the cookie and even the CSRF token, from another origin
        ui.base + "/forget",
        form={"id": memory_id, "csrf": csrf},
        headers={"Origin": "http://evil.example"},
    )
    assert forged.status == 403
    no_token = context.request.post(ui.base + "/forget", form={"id": memory_id})
    assert no_token.status == 403
    # A real page of another site posting a form to ours: the Strict cookie stays home.
    evil = context.new_page()
    evil.route(
        "http://evil.example/",
        lambda route: route.fulfill(
            content_type="text/html",
            body=f'<form method="post" action="{ui.base}/forget">'
            f'<input name="id" value="{memory_id}"><input name="csrf" value="{csrf}">'
            "<button>win a prize</button></form>",
        ),
    )
    evil.goto("http://evil.example/")
    with evil.expect_navigation():
        evil.get_by_role("button", name="win a prize").click()
    expect(evil.get_by_label("Token")).to_be_visible()
    page.reload()
    expect(page.locator("ol.memories .content")).to_have_count(4)
    other_host = context.request.get(ui.base + "/", headers={"Host": "evil.example"})
    assert other_host.status == 421


@pytest.mark.usefixtures("standup")
def test_tags_are_edited_and_export_and_import_round_trip(
    memory: Memory, ui: Ui, context: BrowserContext, tmp_path: Path
) -> None:
    page = logged_in(context, ui)
    page.locator("ol.memories > li").filter(has_text=STANDUP).get_by_role(
        "link", name="details of this memory"
    ).click()
    page.get_by_label("Tags").fill("work, not/allowed?")
    page.get_by_role("button", name="Save tags").click()
    expect(page.get_by_role("alert")).to_contain_text("Nothing was changed")
    expect(page.get_by_label("Tags")).to_have_value("work, not/allowed?")  # what was typed
    expect(page.locator(".tag")).to_have_text(["#work"])
    page.get_by_label("Tags").fill("work, meetings")
    page.get_by_role("button", name="Save tags").click()
    expect(page.get_by_role("status")).to_have_text("Tags saved.")
    expect(page.locator(".tag")).to_have_text(["#work", "#meetings"])
    page.screenshot(path=str(tmp_path / "memory.png"), full_page=True)
    page.goto(ui.base + "/?tags=meetings")
    expect(page.locator("ol.memories .content")).to_have_text([STANDUP])

    with page.expect_download() as waiting:
        page.get_by_role("link", name="Export").click()
    exported = tmp_path / "export.jsonl"
    waiting.value.save_as(exported)
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert len(lines) == 4
    assert next(m for m in lines if m["content"] == STANDUP)["tags"] == ["work", "meetings"]

    upload = tmp_path / "more.jsonl"
    upload.write_text(
        "\n".join(json.dumps({"content": f"imported fact {n}"}) for n in range(300))
        + "\nnot json\n"
        + exported.read_text()
    )
    page.goto(ui.base + "/import")
    page.get_by_label("File").set_input_files(upload)
    page.get_by_role("button", name="Import").click()
    expect(page.locator("#import-progress")).to_be_visible()
    expect(page.locator("#import-status")).to_contain_text(
        "Done: 300 added, 4 already there, 1 bad lines", timeout=60_000
    )
    page.screenshot(path=str(tmp_path / "import.png"))


@pytest.mark.usefixtures("standup")
def test_overview_counts_scopes_and_tags_charts_weeks_and_shows_health(
    ui: Ui, context: BrowserContext, tmp_path: Path
) -> None:
    page = logged_in(context, ui)
    page.get_by_role("link", name="Overview").click()
    scopes = page.get_by_role("table").first
    expect(scopes.get_by_role("row", name="default 3")).to_be_visible()
    expect(scopes.get_by_role("row", name="personal 1")).to_be_visible()
    expect(page.get_by_role("row", name="#travel 2")).to_be_visible()
    chart = page.get_by_role("img", name=re.compile("Memories stored per week"))
    expect(chart).to_be_visible()
    assert chart.locator("rect").count() > 100  # every week from March 2024 (at most 104)
    expect(page.locator(".health")).to_contain_text("all-MiniLM-L6-v2")
    page.get_by_role("button", name="Read every file now (subcog doctor)").click()
    expect(page.locator("#doctor-report")).to_contain_text(
        "Store OK: 4 memories; every data and index file reads to its end", timeout=120_000
    )
    page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)


@pytest.mark.usefixtures("standup")
def test_keyboard_labels_narrow_screens_and_dark_mode(
    ui: Ui, browser: Browser, tmp_path: Path
) -> None:
    phone = browser.new_context(viewport={"width": 320, "height": 700}, color_scheme="dark")
    try:
        page = phone.new_page()
        page.goto(ui.login_url)
        expect(page.locator("ol.memories .content")).to_have_count(4)
        assert page.evaluate("document.documentElement.scrollWidth") <= 320
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(20, 20, 20)"
        unlabelled = page.evaluate(
            """[...document.querySelectorAll('input:not([type=hidden]), select, button')]
                .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                             && !e.textContent.trim()).length"""
        )
        assert unlabelled == 0
        page.keyboard.press("Tab")
        expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
        page.keyboard.press("Enter")
        page.keyboard.press("Tab")
        expect(page.get_by_label("Search by meaning")).to_be_focused()
        page.keyboard.type("vet appointment")
        page.keyboard.press("Enter")
        expect(page.locator("ol.memories .content").first).to_have_text(
            "The cat's vet appointment is on Friday."
        )
        page.screenshot(path=str(tmp_path / "phone-dark.png"), full_page=True)
    finally:
        phone.close()


def test_readme_screenshot(memory: Memory, ui: Ui, context: BrowserContext, tmp_path: Path) -> None:
    """With SUBCOG_DOCS_SCREENSHOT=1, writes docs/subcog-ui.png for the README; else the same
    screen goes to the test's tmp dir."""
    seed(
        memory,
        {
            "content": "Prefers window seats on long flights.",
            "tags": ["travel"],
            "created_at": days_ago(1),
        },
        {
            "content": "The team's standup is at 9:30 every weekday.",
            "tags": ["work"],
            "author": "ana",
            "created_at": days_ago(3),
        },
        {
            "content": "Allergic to penicillin.",
            "tags": ["health"],
            "scope": "personal",
            "created_at": days_ago(9),
        },
        {
            "content": "Uses uv and ruff in every Python project.",
            "tags": ["tools", "python"],
            "created_at": days_ago(20),
        },
    )
    page = logged_in(context, ui)
    page.set_viewport_size({"width": 1000, "height": 720})
    expect(page.locator("ol.memories .content")).to_have_count(4)
    target = DOCS_PNG if os.environ.get(DOCS_SHOT) == "1" else tmp_path / "subcog-ui.png"
    target.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(target))
    assert target.stat().st_size > 10_000


@pytest.mark.skipif(os.name == "nt", reason="$BROWSER is a shell script here")
def test_ui_opens_the_browser_at_its_login_url_on_the_port_asked(tmp_path: Path) -> None:
    """No browser is needed: $BROWSER (which Python's webbrowser obeys) writes what it got."""
    opened = tmp_path / "opened.txt"
    fake = tmp_path / "browser.sh"
    fake.write_text(
        f'#!/bin/sh\nprintf "%s" "$1" > "{opened}.part" && mv "{opened}.part" "{opened}"\n'
    )
    fake.chmod(0o755)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [subcog_command(), "ui", "--port", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "BROWSER": str(fake)},
        text=True,
    )
    try:
        assert proc.stderr is not None
        printed = re.search(r"http://\S+", proc.stderr.readline())
        assert printed is not None
        assert printed.group(0).startswith(f"http://127.0.0.1:{port}/login?code=")
        deadline = time.monotonic() + 30
        while not opened.exists():  # a file, not a page: Playwright's waits do not apply
            assert time.monotonic() < deadline, "the browser was not opened"
            time.sleep(0.05)
        assert opened.read_text() == printed.group(0)
        taken = subprocess.run(
            [subcog_command(), "ui", "--no-browser", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert taken.returncode == 2
        assert "pick another --port" in taken.stderr
    finally:
        proc.terminate()
        proc.wait(60)
        if proc.stderr:
            proc.stderr.close()
