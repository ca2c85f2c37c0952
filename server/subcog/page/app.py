"""The page's requests: each reads or changes memories through `Memory`, as the tools do, and
answers with server-rendered HTML (Jinja2, autoescaped: memory text is always text)."""

from __future__ import annotations

import itertools
import json
import re
import secrets
import subprocess
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import wraps
from pathlib import Path
from typing import IO, Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from subcog import __version__
from subcog import validation as check
from subcog.config import Settings
from subcog.errors import InvalidInput, NotReady, SubcogError
from subcog.memory import IMPORT_BATCH, Imported, Memory
from subcog.page.access import Access, guarded, session_cookie

HERE = Path(__file__).parent
PAGE_SIZE = 50
SEARCH_LIMIT = 50  # recall's largest limit
TIMELINE_WEEKS = 104  # the chart's last two years
DOCTOR_TIMEOUT_S = 600  # it reads every file of the store
# The largest upload the page imports: the upload is copied to a temporary file, so a larger
# one (a wrong file, or a whole disk's worth) would fill the server's disk before anything is
# read. 64 MiB is hundreds of thousands of memories; `subcog import FILE` takes any size.
MAX_UPLOAD_BYTES = 64 << 20
BAD_LINES_KEPT = 100  # an import's first bad lines shown; the rest are only counted
# import_jsonl keeps every bad line of what it is given, so it is given this many lines at a
# time, after which all but the first BAD_LINES_KEPT of the import are let go.
IMPORT_CHUNK_LINES = 16 * IMPORT_BATCH
JOBS_KEPT = 20  # finished imports whose progress pages still answer: the latest few,
JOB_KEPT_FOR = timedelta(hours=1)  # and none finished longer ago than this
Handler = Callable[["Page", Request, str], Awaitable[Response]]


def split_tags(text: str) -> list[str]:
    """Tags as a person types them: separated by commas or spaces."""
    return [tag for tag in re.split(r"[,\s]+", text) if tag]


def logged_in(handler: Handler) -> Callable[[Page, Request], Awaitable[Response]]:
    """The handler runs for a logged-in request only; any other gets the login page."""

    @wraps(handler)
    async def run(page: Page, request: Request) -> Response:
        session = page.access.session(request)
        if session is None:
            return page.login_page(request, status=401)
        try:
            return await handler(page, request, session)
        except NotReady as exc:
            return page.render(request, "loading.html", session, 503, message=str(exc))

    return run


def changes(handler: Handler) -> Callable[[Page, Request], Awaitable[Response]]:
    """A logged-in POST that changes something: it needs our Origin and the CSRF token."""

    @logged_in
    @wraps(handler)
    async def run(page: Page, request: Request, session: str) -> Response:
        form = await request.form()
        csrf = form.get("csrf")
        if not page.access.change_allowed(request, session, csrf if isinstance(csrf, str) else ""):
            return page.render(
                request,
                "error.html",
                session,
                403,
                message="This change was refused: it did not come from this page (a missing or "
                "stale form token, or another site's page). Reload the page and try again.",
            )
        return await handler(page, request, session)

    return run


def line_limit(settings: Settings) -> int:
    """The longest line, in bytes, that an import reads: the longest content (up to 4 bytes a
    character in UTF-8) and metadata, with room for the id, tags, scope, dates and JSON."""
    return 4 * settings.max_content_chars + 2 * settings.max_metadata_bytes + (64 << 10)


def upload_lines(binary: IO[bytes], limit: int, bad: Callable[[int, str], None]) -> Iterator[str]:
    """Each line of an uploaded file as text, decoded as strictly as `subcog import` does (a
    UTF-8 byte order mark may start the file). A line that is not UTF-8, or longer than `limit`
    bytes, goes to `bad` with its number and is given as an empty line, which `import_jsonl`
    skips while counting it: its line numbers stay the file's. A long line is never read whole."""
    number = 0
    while raw := binary.readline(limit + 1):
        number += 1
        if len(raw) > limit and not raw.endswith(b"\n"):
            while (rest := binary.readline(1 << 16)) and not rest.endswith(b"\n"):
                pass  # the rest of the long line, a piece at a time
            bad(number, f"longer than {limit:,} bytes, the most a memory's line can take")
            yield ""
            continue
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            bad(
                number,
                f"not UTF-8 text (byte {exc.start + 1} of the line, 0x{raw[exc.start]:02x}, "
                "cannot be read as UTF-8); save the file as UTF-8",
            )
            yield ""


def import_upload(
    memory: Memory,
    binary: IO[bytes],
    progress: Callable[[int], None],
    kept: int = BAD_LINES_KEPT,
) -> tuple[Imported, int]:
    """Import an uploaded JSONL file as `Memory.import_jsonl` does, reporting bad lines as it
    does, lines that are not UTF-8 or are too long among them; returns the report, with the
    first `kept` bad lines only, and how many bad lines there were in all."""
    report = Imported()
    bad_total = 0
    own: list[tuple[int, str]] = []

    def bad(number: int, why: str) -> None:
        own.append((number, why))
        progress(1)

    lines = upload_lines(binary, line_limit(memory.settings), bad)
    start = 0  # lines before this chunk
    while (first := next(lines, None)) is not None:
        chunk = itertools.chain([first], itertools.islice(lines, IMPORT_CHUNK_LINES - 1))
        part = memory.import_jsonl(chunk, progress=progress)  # reads the whole chunk
        found = sorted(own + [(start + number, why) for number, why in part.bad_lines])
        own.clear()
        bad_total += len(found)
        report.bad_lines.extend(found[: max(0, kept - len(report.bad_lines))])
        report.added += part.added
        report.existing += part.existing
        start += IMPORT_CHUNK_LINES
    return report, bad_total


@dataclass
class ImportJob:
    """An upload being imported in the background, for its progress page."""

    name: str
    total: int
    done: int = 0
    report: Imported | None = None
    bad_total: int = 0  # report.bad_lines holds the first BAD_LINES_KEPT only
    error: str | None = None
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    finished: datetime | None = None


class Page:
    """The page's requests over one `Memory` (loaded on first use) and one `Access`."""

    def __init__(
        self,
        memory: Callable[[], Memory],
        access: Access,
        upload_limit: int = MAX_UPLOAD_BYTES,
    ) -> None:
        self.memory = memory
        self.access = access
        self.upload_limit = upload_limit
        self.jobs: dict[str, ImportJob] = {}
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )

    def app(self) -> ASGIApp:
        routes = [
            Route("/", self.memories),
            Route("/login", self.login, methods=["GET", "POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/memory/{memory_id}", self.one),
            Route("/memory/{memory_id}/tags", self.tags, methods=["POST"]),
            Route("/forget/confirm", self.confirm, methods=["POST"]),
            Route("/forget", self.forget, methods=["POST"]),
            Route("/overview", self.overview),
            Route("/overview/doctor", self.doctor, methods=["POST"]),
            Route("/export", self.export),
            Route("/import", self.import_form),
            Route("/import", self.upload, methods=["POST"]),
            Route("/import/{job}", self.import_progress),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        return guarded(Starlette(routes=routes), self.access)

    def render(
        self, request: Request, name: str, session: str | None, status: int = 200, **values: Any
    ) -> HTMLResponse:
        html = self.templates.get_template(name).render(
            csrf=self.access.csrf_token(session) if session else "",
            logged_in=session is not None,
            path=request.url.path,
            version=__version__,
            **values,
        )
        return HTMLResponse(html, status, headers={"cache-control": "no-store"})

    def login_page(self, request: Request, status: int = 200, error: str = "") -> HTMLResponse:
        return self.render(request, "login.html", None, status, error=error)

    # Login and logout.

    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            code = request.query_params.get("code", "")
            session = self.access.redeem(code) if code else None
            if session is None:
                if not code:
                    return self.login_page(request)
                return self.login_page(
                    request, 401, "That login link was used already or is wrong: paste the token."
                )
        else:
            form = await request.form()
            token = form.get("token")
            session = self.access.log_in(token.strip() if isinstance(token, str) else "")
            if not self.access.same_origin(request) or session is None:
                return self.login_page(request, 401, "That token is not right.")
        response = RedirectResponse("/", 303)
        response.set_cookie(
            session_cookie(request), session, httponly=True, samesite="strict", path="/"
        )
        return response

    @changes
    async def logout(self, request: Request, session: str) -> Response:
        self.access.log_out(session)
        response = RedirectResponse("/login", 303)
        response.delete_cookie(session_cookie(request), path="/")
        return response

    # Reading.

    @logged_in
    async def memories(self, request: Request, session: str) -> Response:
        params = request.query_params
        wanted = {
            "q": params.get("q", "").strip(),
            "scope": params.get("scope", "").strip(),
            "tags": params.get("tags", "").strip(),
            "since": params.get("since", "").strip(),
            "until": params.get("until", "").strip(),
        }
        after = params.get("after") or None

        def read() -> dict[str, Any]:
            memory = self.memory()
            found: dict[str, Any] = {"scopes": memory.store.scopes(), "results": [], "next": None}
            filters: dict[str, Any] = {
                "scope": wanted["scope"] or check.ALL_SCOPES,
                "tags": split_tags(wanted["tags"]) or None,
                "since": wanted["since"] or None,
                "until": wanted["until"] or None,
            }
            try:
                if wanted["q"]:
                    recalled = memory.recall(wanted["q"], SEARCH_LIMIT, **filters)
                    found.update(results=recalled.memories, note=recalled.note)
                else:
                    page = memory.page(**filters, limit=PAGE_SIZE, after=after)
                    found.update(results=page.memories, next=page.next)
            except SubcogError as exc:
                found["error"] = str(exc)
            return found

        found = await run_in_threadpool(read)
        status = 400 if found.get("error") else 200
        return self.render(
            request,
            "memories.html",
            session,
            status,
            wanted=wanted,
            default_scope=self.memory().settings.default_scope,
            forgot=params.get("forgot"),
            query=request.url.query,
            **found,
        )

    @logged_in
    async def one(self, request: Request, session: str) -> Response:
        tagged = request.query_params.get("tagged") is not None
        return await self._one(request, session, tagged=tagged)

    async def _one(self, request: Request, session: str, **values: Any) -> Response:
        """A memory's own page, with the very similar memories of its scope."""
        memory_id = request.path_params["memory_id"]

        def read() -> dict[str, Any]:
            memory = self.memory()
            stored = memory.get(memory_id)
            return {"m": stored, "similar": memory.similar_to(stored.id)}

        try:
            found = await run_in_threadpool(read)
        except SubcogError as exc:
            return self.render(request, "error.html", session, 404, message=str(exc))
        status = 400 if values.get("error") else 200
        return self.render(request, "memory.html", session, status, **found, **values)

    @logged_in
    async def overview(self, request: Request, session: str) -> Response:
        return await self._overview(request, session)

    async def _overview(self, request: Request, session: str, **values: Any) -> Response:
        def read() -> dict[str, Any]:
            memory = self.memory()
            tallies = memory.tallies()
            return {"tallies": tallies, "weeks": timeline(tallies.weeks), "health": memory.health()}

        found = await run_in_threadpool(read)
        return self.render(request, "overview.html", session, **found, **values)

    @changes
    async def doctor(self, request: Request, session: str) -> Response:
        """`subcog doctor`, in a process of its own: it reads every file of the store to its
        end, which a server does not (Lance's own package would stay in its memory)."""
        return await self._overview(request, session, doctor=await run_in_threadpool(doctor))

    @logged_in
    async def export(self, request: Request, session: str) -> Response:
        lines = self.memory().export_jsonl()
        name = f"subcog-export-{date.today().isoformat()}.jsonl"
        return StreamingResponse(
            (line + "\n" for line in lines),
            media_type="application/x-ndjson",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    # Changing.

    @changes
    async def confirm(self, request: Request, session: str) -> Response:
        ids = [i for i in (await request.form()).getlist("id") if isinstance(i, str)]
        if not ids:
            message = "Select at least one memory first: tick the box beside it."
            return self.render(request, "error.html", session, 400, message=message)
        try:
            preview = await run_in_threadpool(lambda: self.memory().forget(ids=ids, dry_run=True))
        except SubcogError as exc:
            return self.render(request, "error.html", session, 400, message=str(exc))
        return self.render(request, "confirm.html", session, preview=preview)

    @changes
    async def forget(self, request: Request, session: str) -> Response:
        ids = [i for i in (await request.form()).getlist("id") if isinstance(i, str)]
        try:
            gone = await run_in_threadpool(lambda: self.memory().forget(ids=ids, dry_run=False))
        except SubcogError as exc:
            return self.render(request, "error.html", session, 400, message=str(exc))
        return RedirectResponse(f"/?forgot={len(gone.forgotten)}", 303)

    @changes
    async def tags(self, request: Request, session: str) -> Response:
        memory_id = request.path_params["memory_id"]
        given = (await request.form()).get("tags")
        tags = split_tags(given if isinstance(given, str) else "")
        try:
            await run_in_threadpool(lambda: self.memory().set_tags(memory_id, tags))
        except InvalidInput as exc:  # the page again, with what was typed and why not
            return await self._one(request, session, error=str(exc), typed=given)
        except SubcogError as exc:
            return self.render(request, "error.html", session, 400, message=str(exc))
        return RedirectResponse(f"/memory/{memory_id}?tagged", 303)

    @logged_in
    async def import_form(self, request: Request, session: str) -> Response:
        return self.render(request, "import.html", session, job=None)

    @changes
    async def upload(self, request: Request, session: str) -> Response:
        upload = (await request.form()).get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            return self.render(
                request, "import.html", session, 400, job=None, error="Choose a .jsonl file."
            )
        # Starlette spooled the upload to a file of its own, closed here once copied to this
        # one, which the import thread closes.
        kept = tempfile.TemporaryFile()  # noqa: SIM115
        lines, last, size = 0, b"\n", 0
        try:
            while chunk := await upload.read(1 << 20):
                size += len(chunk)
                if size > self.upload_limit:
                    kept.close()
                    error = (
                        f"{upload.filename} is larger than {self.upload_limit / (1 << 20):g} MiB, "
                        "the most the page imports at once; nothing was imported. Split it, or "
                        "import it in a terminal with `subcog import FILE`."
                    )
                    return self.render(request, "import.html", session, 413, job=None, error=error)
                kept.write(chunk)
                lines += chunk.count(b"\n")
                last = chunk
        except BaseException:
            kept.close()
            raise
        finally:
            await upload.close()
        lines += 0 if last.endswith(b"\n") else 1
        kept.seek(0)
        self._forget_old_jobs()
        job_id = secrets.token_urlsafe(12)
        job = self.jobs[job_id] = ImportJob(upload.filename, lines)
        threading.Thread(target=self._import, args=(job, kept), daemon=True).start()
        return RedirectResponse(f"/import/{job_id}", 303)

    def _forget_old_jobs(self) -> None:
        """Finished imports are kept for their progress pages: the latest JOBS_KEPT, for at
        most JOB_KEPT_FOR. Imports still running are all kept."""
        now = datetime.now(timezone.utc)
        finished = sorted(
            (job.finished, job_id) for job_id, job in self.jobs.items() if job.finished is not None
        )
        for index, (when, job_id) in enumerate(finished):
            if index < len(finished) - JOBS_KEPT or now - when > JOB_KEPT_FOR:
                del self.jobs[job_id]

    def _import(self, job: ImportJob, kept: IO[bytes]) -> None:
        def advance(lines: int) -> None:
            job.done += lines

        try:
            with kept:
                report, job.bad_total = import_upload(self.memory(), kept, advance)
                job.report = report
        except SubcogError as exc:
            job.error = str(exc)
        except Exception as exc:  # the page says so; the log has the traceback
            import logging

            logging.getLogger(__name__).exception("import from the page failed")
            job.error = f"The import stopped: {exc}"
        finally:
            job.finished = datetime.now(timezone.utc)

    @logged_in
    async def import_progress(self, request: Request, session: str) -> Response:
        job = self.jobs.get(request.path_params["job"])
        if job is None:
            return self.render(request, "error.html", session, 404, message="No such import.")
        return self.render(request, "import.html", session, job=job)


def doctor() -> dict[str, Any]:
    """`subcog doctor --json`'s report, or what went wrong running it."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "subcog", "doctor", "--json"],
            capture_output=True,
            text=True,
            timeout=DOCTOR_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
        report: dict[str, Any] = json.loads(done.stdout)
        return report
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        return {"error": f"subcog doctor could not be run here ({exc}); run it in a terminal."}


def timeline(weeks: dict[str, int]) -> list[tuple[str, int]]:
    """Every week from the first with a memory to the last (at most TIMELINE_WEEKS), with
    how many memories were stored in it; weeks without any count 0."""
    if not weeks:
        return []
    first, last = (date.fromisoformat(week) for week in (min(weeks), max(weeks)))
    first = max(first, last - timedelta(weeks=TIMELINE_WEEKS - 1))
    days = (last - first).days
    return [
        (week.isoformat(), weeks.get(week.isoformat(), 0))
        for week in (first + timedelta(days=d) for d in range(0, days + 1, 7))
    ]
