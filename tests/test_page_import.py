"""The page's JSONL import (`/import`): lines decoded strictly, long lines and large uploads
refused without being read whole, and what it keeps bounded. Real model, real LanceDB under
tmp_path; the page in-process through Starlette's TestClient."""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from starlette.testclient import TestClient

from subcog.memory import Memory
from subcog.page.access import Access, token_check
from subcog.page.app import (
    IMPORT_CHUNK_LINES,
    JOBS_KEPT,
    ImportJob,
    Page,
    import_upload,
    line_limit,
)

TOKEN = "a-test-token-for-the-page"


def jsonl(*contents: str) -> bytes:
    return b"".join(
        json.dumps({"content": c}, ensure_ascii=False).encode() + b"\n" for c in contents
    )


def stored(memory: Memory) -> list[str]:
    return sorted(json.loads(line)["content"] for line in memory.export_jsonl())


class Reader(io.BytesIO):
    """An upload that remembers the longest piece asked of it at once."""

    longest = 0

    def readline(self, size: int | None = -1, /) -> bytes:
        got = super().readline(size)
        self.longest = max(self.longest, len(got))
        return got


def run(memory: Memory, data: bytes, kept: int = 100) -> tuple[list[tuple[int, str]], int, int]:
    done: list[int] = []
    report, total = import_upload(memory, io.BytesIO(data), done.append, kept)
    return report.bad_lines, total, report.added


def test_a_line_that_is_not_utf8_is_a_bad_line_and_the_others_are_imported_unchanged(
    memory: Memory,
) -> None:
    good = ["naïve café ☕ — 日本語", "plain ascii line"]
    latin1 = json.dumps({"content": "café in Latin-1"}, ensure_ascii=False).encode("latin-1")
    data = jsonl(good[0]) + latin1 + b"\n" + jsonl(good[1])
    bad, total, added = run(memory, data)
    assert total == 1
    assert added == 2
    ((number, why),) = bad
    assert number == 2
    assert why.startswith("not UTF-8 text")
    assert stored(memory) == sorted(good)
    assert not any("\ufffd" in content for content in stored(memory))


def test_a_byte_order_mark_may_start_the_file(memory: Memory) -> None:
    bad, total, added = run(memory, b"\xef\xbb\xbf" + jsonl("first", "second"))
    assert (bad, total, added) == ([], 0, 2)
    assert stored(memory) == ["first", "second"]


def test_an_over_long_line_is_a_bad_line_and_not_read_whole(memory: Memory) -> None:
    limit = line_limit(memory.settings)
    huge = json.dumps({"content": "x" * (20 * limit)}).encode()
    upload = Reader(jsonl("before") + huge + b"\n" + jsonl("after"))
    report, total = import_upload(memory, upload, lambda n: None)
    assert total == 1
    assert report.added == 2
    ((number, why),) = report.bad_lines
    assert number == 2
    assert why.startswith(f"longer than {limit:,} bytes")
    assert upload.longest <= limit + 1
    assert stored(memory) == ["after", "before"]


def test_only_the_first_bad_lines_are_kept_with_the_right_total(memory: Memory) -> None:
    lines = [b"not json"] * (IMPORT_CHUNK_LINES + 500)
    lines[3] = b"\xff\xfe not utf-8"
    lines[IMPORT_CHUNK_LINES + 10] = json.dumps({"content": "the one good line"}).encode()
    data = b"\n".join(lines) + b"\n"
    bad, total, added = run(memory, data)
    assert added == 1
    assert total == len(lines) - 1
    assert [number for number, _ in bad] == list(range(1, 101))
    assert bad[3][1].startswith("not UTF-8 text")
    assert bad[0][1].startswith("not valid JSON")
    # Numbered across import_jsonl's chunks as in the file.
    every, total, _ = run(memory, data, kept=len(lines))
    assert total == len(every) == len(lines) - 1
    assert [number for number, _ in every] == [
        n for n in range(1, len(lines) + 1) if n != IMPORT_CHUNK_LINES + 11
    ]


@pytest.fixture
def page(memory: Memory) -> Page:
    return Page(lambda: memory, Access(token_check(TOKEN), ["testserver"]), upload_limit=4096)


@pytest.fixture
def client(page: Page) -> Iterator[TestClient]:
    with TestClient(page.app(), headers={"authorization": f"Bearer {TOKEN}"}) as client:
        yield client


def upload(client: TestClient, data: bytes) -> tuple[int, str]:
    form = client.get("/import").text
    match = re.search(r'name="csrf" value="([^"]+)"', form)
    assert match is not None
    sent = client.post(
        "/import",
        data={"csrf": match.group(1)},
        files={"file": ("memories.jsonl", data, "application/x-ndjson")},
        follow_redirects=False,
    )
    return sent.status_code, sent.headers.get("location", sent.text)


def finished(client: TestClient, location: str) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        html = client.get(location).text
        if "Done:" in html or 'class="error"' in html:
            return html
        time.sleep(0.1)
    raise AssertionError(f"the import at {location} did not finish")


def test_an_upload_over_the_limit_is_refused_and_nothing_imported(
    client: TestClient, page: Page, memory: Memory
) -> None:
    data = jsonl(*(f"memory number {n}" for n in range(200)))
    assert len(data) > page.upload_limit
    status, html = upload(client, data)
    assert status == 413
    assert "larger than" in html
    assert "nothing was imported" in html
    assert page.jobs == {}
    assert stored(memory) == []


def test_an_upload_within_the_limit_is_imported_and_old_jobs_forgotten(
    client: TestClient, page: Page, memory: Memory
) -> None:
    now = datetime.now(timezone.utc)
    for n in range(JOBS_KEPT + 5):  # finished n minutes ago
        page.jobs[f"old{n}"] = ImportJob("old.jsonl", 1, finished=now - timedelta(minutes=n))
    page.jobs["stale"] = ImportJob("old.jsonl", 1, finished=now - timedelta(hours=2))
    page.jobs["running"] = ImportJob("big.jsonl", 10**6)
    status, location = upload(client, jsonl("kept fact") + b"\xff oops\n" + jsonl("other fact"))
    assert status == 303
    html = finished(client, location)
    assert "Done: 2 added, 0 already there, 1 bad lines." in html
    assert "line 2: not UTF-8 text" in html
    assert stored(memory) == ["kept fact", "other fact"]
    left = set(page.jobs)
    assert {f"old{n}" for n in range(JOBS_KEPT)} | {"running"} <= left
    assert not left & ({f"old{n}" for n in range(JOBS_KEPT, JOBS_KEPT + 5)} | {"stale"})
    assert len(left) == JOBS_KEPT + 2  # and the new one
