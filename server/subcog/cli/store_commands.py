"""The commands on the whole store: doctor, repair, reindex, import and export."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from subcog import __version__
from subcog.cli.exit_codes import EXIT_MODEL, EXIT_PARTLY, EXIT_STORE
from subcog.cli.output import print_json
from subcog.config import Settings
from subcog.errors import SubcogError

if TYPE_CHECKING:
    from subcog.memory import Memory


def doctor(args: argparse.Namespace, settings: Settings) -> int:
    from subcog.embedder import bundle_files, snapshot_dir

    as_json: bool = args.json

    def say(line: str) -> None:
        if not as_json:
            print(line, flush=True)

    bundle = bundle_files()
    report: dict[str, Any] = {
        "version": __version__,
        "python": sys.version.split()[0],
        "data_dir": str(settings.data_dir),
        "cache_dir": str(settings.cache_dir),
        "model_path": None if settings.model_path is None else str(settings.model_path),
        "cached_model": str(snapshot_dir(settings.cache_dir) or "") or None,
        "offline_bundle": [str(path) for path in bundle.values()] if bundle else None,
    }
    say(f"subcog {__version__}, Python {report['python']}")
    say(f"data dir (SUBCOG_DATA_DIR):   {settings.data_dir}")
    report["store_uri"] = settings.store.shown
    say(f"store (SUBCOG_STORE):         {settings.store.shown}")
    say(f"cache dir (SUBCOG_CACHE_DIR): {settings.cache_dir}")
    say(f"model path (SUBCOG_MODEL_PATH): {settings.model_path or 'unset'}")
    say(f"cached model:   {report['cached_model'] or 'none'}")
    bundled = ", ".join(report["offline_bundle"]) if bundle else "not installed"
    say(f"offline bundle: {bundled}")
    report["model"] = _doctor_model(settings, say)
    if settings.store.remote:
        report["bucket"] = _doctor_bucket(settings, say)
    report["store"] = _doctor_store(settings, say)
    code = EXIT_MODEL if not report["model"]["ok"] else 0
    code = code or (EXIT_STORE if not report["store"]["ok"] else 0)
    code = code or (EXIT_STORE if not report.get("bucket", {"ok": True})["ok"] else 0)
    if as_json:
        print_json(report)
    return code


def _doctor_model(settings: Settings, say: Callable[[str], None]) -> dict[str, Any]:
    from subcog.embedder import load_embedder

    try:
        embedder = load_embedder(settings)
        vector = embedder.embed(["subcog doctor"])[0]
    except SubcogError as exc:
        say(f"model: FAILED\n{exc}")
        return {"ok": False, "error": str(exc)}
    source, running = embedder.source, embedder.int8 or "the model as provided"
    say(f"model: OK, {embedder.name}, {vector.shape[0]} dimensions")
    say(f"  from {source.kind}: {source.location}")
    say(f"  running: {running}")
    return {
        "ok": True,
        "name": embedder.name,
        "dimensions": int(vector.shape[0]),
        "source": source.kind,
        "location": str(source.location),
        "running": str(running),
    }


def _doctor_bucket(settings: Settings, say: Callable[[str], None]) -> dict[str, Any]:
    """Write, read and delete a small table beside the store, timing each round trip."""
    from subcog.storage.location import check_bucket

    location = settings.store
    try:
        took = check_bucket(location)
    except Exception as exc:  # any failure of the object store, in its own words
        error = str(exc).replace("\n", " ")[:400]
        say(f"bucket: FAILED, {location.shown}\n  {error}")
        say(
            "  Check the URI, AWS_ENDPOINT_URL / AWS_REGION and the credentials in the environment."
        )
        return {"ok": False, "error": error}
    figures = ", ".join(f"{what} {ms:.0f} ms" for what, ms in took.items())
    say(f"bucket: OK, {location.shown}: {figures}")
    options = ", ".join(f"{k}={v}" for k, v in location.shown_options().items()) or "none"
    say(f"  storage options: {options}")
    return {"ok": True, **{f"{what}_ms": round(ms, 1) for what, ms in took.items()}}


def _doctor_store(settings: Settings, say: Callable[[str], None]) -> dict[str, Any]:
    from subcog.memory import open_store

    try:
        store = open_store(settings)
        count, size = store.count(), store.disk_bytes()
        damage = store.examine()  # every data, deletion and index file, read to its end
        found: dict[str, Any] = {"ok": not damage, "memories": count, "disk_bytes": size}
        if damage:
            say(f"store: DAMAGED, {count} memories, {size} bytes in {settings.store.shown}")
            for file in damage.files:
                say(f"  cannot read {file.describe()}: {file.error}")
            advice = (
                f"{damage.unreadable} memories cannot be read. Run `subcog repair`: it keeps "
                "a copy of these files, rebuilds the store from every memory that can be read, "
                "and builds the indexes again."
            )
            say(f"  {advice}")
            found["damaged_files"] = [file.describe() for file in damage.files]
            found["what_to_do"] = advice
        else:
            say(f"store: OK, {count} memories, {size} bytes in {settings.store.shown}")
            say(
                "  on object storage, files are read as searches need them"
                if store.remote
                else "  every data and index file reads to its end"
            )
        if store.erasure_pending():
            say("store: erasing memories forgotten earlier from the files...")
            store.finish_erasure()
        return found
    except SubcogError as exc:
        say(f"store: FAILED\n{exc}")
        return {"ok": False, "error": str(exc)}


def repair(args: argparse.Namespace, settings: Settings) -> int:
    from subcog.memory import open_store

    store = open_store(settings)  # the model is not needed: the rows keep their vectors
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    repaired = store.repair(settings.data_dir / f"damaged-{stamp}")
    rebuilt = sorted(repaired.damage.indexes) if repaired.damage else []
    if args.json:
        print_json(
            {
                "damaged": bool(repaired.damage),
                "kept_in": str(repaired.kept_in) if repaired.damage else None,
                "recovered": repaired.recovered,
                "lost": repaired.lost if repaired.damage else 0,
                "rebuilt_indexes": rebuilt,
            }
        )
        return 0
    if not repaired.damage:
        print(
            f"nothing to repair: every file of the store reads to its end ({repaired.recovered}"
            " memories)"
        )
        return 0
    print(f"kept a copy of the damaged files in {repaired.kept_in}")
    if repaired.damage.fragments:
        print(f"rebuilt the store from every row that could be read: {repaired.recovered} memories")
        print(f"could not recover {repaired.lost} memories")
    if rebuilt:
        print(f"built the damaged indexes again: {', '.join(rebuilt)}")
    return 0


def reindex(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from subcog.memory import reindex as reembed_every_memory

    with tqdm(unit="memories", file=sys.stderr, desc="reindex") as bar:

        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done)

        count = reembed_every_memory(settings, progress=advance)
    if args.json:
        print_json({"reindexed": count, "model": settings.model})
    elif count:
        print(f"re-embedded {count} memories with {settings.model}")
    else:
        print(f"nothing to do: every memory is embedded with {settings.model}")
    return 0


def import_memories(args: argparse.Namespace, memory: Memory) -> int:
    from tqdm import tqdm

    path: Path = args.file
    with path.open(encoding="utf-8") as handle:
        total = sum(1 for line in handle if line.strip())
        handle.seek(0)
        bar = tqdm(total=total, unit="memories", file=sys.stderr, desc="import")
        with bar:
            report = memory.import_jsonl(handle, progress=bar.update, bulk=True)
    code = EXIT_PARTLY if report.bad_lines else 0
    if args.json:
        bad = [{"line": number, "problem": problem} for number, problem in report.bad_lines]
        print_json({"added": report.added, "existing": report.existing, "bad_lines": bad})
        return code
    print(
        f"added {report.added}, already present {report.existing}, "
        f"bad lines {len(report.bad_lines)}"
    )
    for number, problem in report.bad_lines:
        print(f"{path}:{number}: {problem}", file=sys.stderr)
    return code


def export(args: argparse.Namespace, memory: Memory) -> int:
    if args.file is None:
        for line in memory.export_jsonl():
            print(line)
    else:
        with args.file.open("w", encoding="utf-8") as out:
            for line in memory.export_jsonl():
                out.write(line + "\n")
    return 0
