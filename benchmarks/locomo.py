"""Recall quality of subcog on LoCoMo conversations, through a real ``subcog serve`` over stdio.

Usage::

    .venv/bin/python benchmarks/locomo.py PATH [--limit 10] [--json OUT] [--conversations 26,30]

PATH is a directory of LoCoMo conversation files, one ``*.json`` per conversation (keys
``speaker_a``, ``speaker_b``, ``session_N_date_time``, ``session_N`` and ``qa``); every file in
it is used, in sorted order, unless ``--conversations`` names some by file stem. The data is
only read, never copied.

For each conversation the script starts one ``subcog serve`` subprocess with a fresh, throwaway
``SUBCOG_DATA_DIR`` (``SUBCOG_CACHE_DIR``, the model cache, is inherited), and talks to it with
the MCP Python client:

1. ``remember`` every dialogue turn as one memory, ``[<session date>] <speaker>: <text>``,
   followed by `` (image: <blip_caption>)`` when the turn shares an image. Each returned id
   maps to the dia_ids it stands for (status ``exists`` returns an earlier id for identical
   text, so one id can stand for several turns).
2. ``recall(query=question, limit=--limit)`` for every question whose category is not 5
   (adversarial questions have no answer in the conversation). A retrieved memory is relevant
   if any of its dia_ids is in the question's evidence. Evidence ids that are not dia_ids of
   the conversation (malformed or missing in LoCoMo) are dropped; a question left with no
   evidence is skipped and counted.

Metrics, per conversation and pooled over all questions (not an average of conversations):

- ``R@k`` (k = 1, 5, 10): hit rate, the fraction of questions with at least one relevant
  memory among the top k results.
- ``fullR@10``: mean over questions of |evidence dia_ids retrieved in the top 10| /
  |evidence dia_ids|.
- ``MRR@10``: mean of 1 / rank of the first relevant memory within the top 10, else 0.
- Latency: p50 and p95, in ms, of each ``call_tool`` as the client sees it
  (``time.perf_counter`` around the call), for ``remember`` and for ``recall``; and the wall
  time of each conversation, from starting the server to its exit.

A ``call_tool`` that the server answers with "still loading ... Retry" is retried after a short
pause; any other tool error is counted (a failed recall scores as a miss). Warnings, errors and
tracebacks that the server logs on stderr are echoed to stderr and kept in the JSON.

With ``--json OUT`` every figure, including each question's ranks, is written to OUT.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

sys.path.insert(0, str(Path(__file__).parent))
from common import percentile, subcog_command

ADVERSARIAL = 5
KS = (1, 5, 10)
SESSION_KEY = re.compile(r"session_(\d+)")
LOADING_HINT = "Retry this call"
LOADING_RETRIES = 30
LOADING_PAUSE_S = 1.0
LOG_PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback")


@dataclass
class Turn:
    dia_id: str
    text: str


@dataclass
class Question:
    question: str
    category: int
    evidence: list[str]
    invalid_evidence: list[str]


@dataclass
class Conversation:
    name: str
    turns: list[Turn]
    questions: list[Question]
    skipped: list[str]
    adversarial: int


@dataclass
class QuestionResult:
    question: str
    category: int
    evidence: list[str]
    invalid_evidence: list[str]
    retrieved: list[list[str]]
    first_rank: int | None
    evidence_found: int
    error: str | None = None

    def hit(self, k: int) -> bool:
        return self.first_rank is not None and self.first_rank <= k

    def full_recall(self) -> float:
        return self.evidence_found / len(self.evidence)

    def reciprocal_rank(self, k: int) -> float:
        return 1.0 / self.first_rank if self.hit(k) and self.first_rank else 0.0


@dataclass
class ConversationRun:
    name: str
    turns: int
    memories: int = 0
    duplicates: int = 0
    skipped: list[str] = field(default_factory=list)
    adversarial: int = 0
    results: list[QuestionResult] = field(default_factory=list)
    remember_ms: list[float] = field(default_factory=list)
    recall_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    loading_retries: int = 0
    server_log_problems: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    remember_phase_s: float = 0.0
    recall_phase_s: float = 0.0


def load_conversation(path: Path) -> Conversation:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    sessions = sorted(
        (int(match.group(1)), key)
        for key in data
        if (match := SESSION_KEY.fullmatch(key)) and isinstance(data[key], list)
    )
    turns: list[Turn] = []
    for _, key in sessions:
        date = data.get(f"{key}_date_time")
        if not date:
            raise ValueError(f"{path}: {key} has no {key}_date_time")
        for turn in data[key]:
            text = f"[{date}] {turn['speaker']}: {turn['text']}"
            if turn.get("blip_caption"):
                text += f" (image: {turn['blip_caption']})"
            turns.append(Turn(dia_id=turn["dia_id"], text=text))
    dia_ids = {turn.dia_id for turn in turns}
    questions: list[Question] = []
    skipped: list[str] = []
    adversarial = 0
    for qa in data["qa"]:
        if qa["category"] == ADVERSARIAL:
            adversarial += 1
            continue
        evidence = [e for e in dict.fromkeys(qa.get("evidence") or []) if e in dia_ids]
        invalid = [e for e in qa.get("evidence") or [] if e not in dia_ids]
        if not evidence:
            skipped.append(f"{qa['question']} (evidence {qa.get('evidence')!r})")
            continue
        questions.append(Question(qa["question"], qa["category"], evidence, invalid))
    return Conversation(path.stem, turns, questions, skipped, adversarial)


async def call(
    client: Client, run: ConversationRun, tool: str, arguments: dict[str, Any], times: list[float]
) -> dict[str, Any] | None:
    """Call a tool; time it; retry while the server is loading; None (and an error) on failure."""
    for _ in range(LOADING_RETRIES):
        started = time.perf_counter()
        result = await client.call_tool(tool, arguments)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if not result.is_error and result.structured_content is not None:
            times.append(elapsed_ms)
            content: dict[str, Any] = result.structured_content
            return content
        message = " ".join(getattr(part, "text", str(part)) for part in result.content)
        if result.is_error and LOADING_HINT in message:
            run.loading_retries += 1
            await anyio.sleep(LOADING_PAUSE_S)
            continue
        run.errors.append(f"{tool}: {message or 'no structured content'}")
        return None
    run.errors.append(f"{tool}: still loading after {LOADING_RETRIES} tries")
    return None


async def run_conversation(conversation: Conversation, limit: int) -> ConversationRun:
    run = ConversationRun(
        name=conversation.name,
        turns=len(conversation.turns),
        skipped=conversation.skipped,
        adversarial=conversation.adversarial,
    )
    with (
        tempfile.TemporaryDirectory(prefix=f"subcog-locomo-{conversation.name}-") as data_dir,
        tempfile.TemporaryFile("w+", encoding="utf-8") as server_log,
    ):
        env = {**os.environ, "SUBCOG_DATA_DIR": data_dir}
        server = StdioServerParameters(command=subcog_command(), args=["serve"], env=env)
        started = time.perf_counter()
        async with Client(stdio_client(server, errlog=server_log)) as client:
            id_to_dia: dict[str, list[str]] = {}
            for turn in conversation.turns:
                stored = await call(
                    client, run, "remember", {"content": turn.text}, run.remember_ms
                )
                if stored is None:
                    continue
                if stored["status"] == "exists":
                    run.duplicates += 1
                id_to_dia.setdefault(stored["id"], []).append(turn.dia_id)
            run.memories = len(id_to_dia)
            remembered = time.perf_counter()
            run.remember_phase_s = remembered - started

            for question in conversation.questions:
                found = await call(
                    client,
                    run,
                    "recall",
                    {"query": question.question, "limit": limit},
                    run.recall_ms,
                )
                run.results.append(score(question, found, id_to_dia, run.errors))
            run.recall_phase_s = time.perf_counter() - remembered
        run.wall_s = time.perf_counter() - started
        server_log.seek(0)
        run.server_log_problems = [line.rstrip() for line in server_log if LOG_PROBLEM.search(line)]
    return run


def score(
    question: Question,
    found: dict[str, Any] | None,
    id_to_dia: dict[str, list[str]],
    errors: list[str],
) -> QuestionResult:
    memories: list[dict[str, Any]] = [] if found is None else found["memories"]
    retrieved: list[list[str]] = []
    for memory in memories:
        dia = id_to_dia.get(memory["id"])
        if dia is None:
            errors.append(f"recall returned an id that remember never gave: {memory['id']}")
            dia = []
        retrieved.append(dia)
    evidence = set(question.evidence)
    first_rank = next(
        (rank for rank, dia in enumerate(retrieved, 1) if evidence.intersection(dia)), None
    )
    in_top = {d for dia in retrieved[: max(KS)] for d in dia} & evidence
    return QuestionResult(
        question=question.question,
        category=question.category,
        evidence=question.evidence,
        invalid_evidence=question.invalid_evidence,
        retrieved=retrieved,
        first_rank=first_rank,
        evidence_found=len(in_top),
        error=None if found is not None else "recall failed",
    )


def metrics(results: list[QuestionResult]) -> dict[str, float]:
    n = len(results)
    if n == 0:
        return {f"R@{k}": math.nan for k in KS} | {"fullR@10": math.nan, "MRR@10": math.nan}
    figures = {f"R@{k}": sum(r.hit(k) for r in results) / n for k in KS}
    figures["fullR@10"] = sum(r.full_recall() for r in results) / n
    figures["MRR@10"] = sum(r.reciprocal_rank(max(KS)) for r in results) / n
    return figures


def latency(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": percentile(values, 50),
        "p95_ms": percentile(values, 95),
        "max_ms": max(values, default=math.nan),
    }


def summary(name: str, runs: list[ConversationRun]) -> dict[str, Any]:
    results = [r for run in runs for r in run.results]
    remember_ms = [t for run in runs for t in run.remember_ms]
    recall_ms = [t for run in runs for t in run.recall_ms]
    return {
        "conversation": name,
        "turns": sum(run.turns for run in runs),
        "memories": sum(run.memories for run in runs),
        "duplicates": sum(run.duplicates for run in runs),
        "questions": len(results),
        "skipped_questions": sum(len(run.skipped) for run in runs),
        "adversarial_questions": sum(run.adversarial for run in runs),
        "metrics": metrics(results),
        "remember_latency": latency(remember_ms),
        "recall_latency": latency(recall_ms),
        "wall_s": sum(run.wall_s for run in runs),
        "remember_phase_s": sum(run.remember_phase_s for run in runs),
        "recall_phase_s": sum(run.recall_phase_s for run in runs),
        "errors": [e for run in runs for e in run.errors],
        "loading_retries": sum(run.loading_retries for run in runs),
        "server_log_problems": [p for run in runs for p in run.server_log_problems],
    }


def by_category(runs: list[ConversationRun]) -> dict[str, dict[str, Any]]:
    results = [r for run in runs for r in run.results]
    categories = sorted({r.category for r in results})
    return {
        str(c): {"questions": sum(r.category == c for r in results)}
        | metrics([r for r in results if r.category == c])
        for c in categories
    }


COLUMNS = (
    ("conv", 6),
    ("turns", 6),
    ("questions", 9),
    ("R@1", 6),
    ("R@5", 6),
    ("R@10", 6),
    ("fullR@10", 8),
    ("MRR@10", 6),
    ("remember p50", 12),
    ("recall p50/p95", 14),
    ("wall", 7),
)


def table_row(row: dict[str, Any]) -> str:
    m = row["metrics"]
    remember = row["remember_latency"]
    recall = row["recall_latency"]
    cells = (
        row["conversation"],
        str(row["turns"]),
        str(row["questions"]),
        f"{m['R@1']:.3f}",
        f"{m['R@5']:.3f}",
        f"{m['R@10']:.3f}",
        f"{m['fullR@10']:.3f}",
        f"{m['MRR@10']:.3f}",
        f"{remember['p50_ms']:.1f} ms",
        f"{recall['p50_ms']:.1f}/{recall['p95_ms']:.1f} ms",
        f"{row['wall_s']:.0f} s",
    )
    return "  ".join(cell.rjust(width) for cell, (_, width) in zip(cells, COLUMNS, strict=True))


def print_report(rows: list[dict[str, Any]], pooled: dict[str, Any], limit: int) -> None:
    header = "  ".join(name.rjust(width) for name, width in COLUMNS)
    print(f"subcog on LoCoMo: recall limit {limit}, R@k = hit rate, latency per call_tool")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(table_row(row))
    print("-" * len(header))
    print(table_row(pooled))
    print(
        f"\nskipped questions (no valid evidence): {pooled['skipped_questions']}; "
        f"adversarial (category 5) left out: {pooled['adversarial_questions']}; "
        f"duplicate turns (status exists): {pooled['duplicates']}"
    )
    remember = pooled["remember_latency"]
    recall = pooled["recall_latency"]
    print(
        f"remember p95 {remember['p95_ms']:.1f} ms, max {remember['max_ms']:.1f} ms; "
        f"recall max {recall['max_ms']:.1f} ms; "
        f"tool errors: {len(pooled['errors'])}; loading retries: {pooled['loading_retries']}; "
        f"server log warnings/errors: {len(pooled['server_log_problems'])}"
    )


def print_categories(categories: dict[str, dict[str, Any]]) -> None:
    print("\npooled by LoCoMo category")
    print(f"{'cat':>4}  {'questions':>9}  {'R@1':>6}  {'R@5':>6}  {'R@10':>6}  {'MRR@10':>6}")
    for category, m in categories.items():
        print(
            f"{category:>4}  {m['questions']:>9}  {m['R@1']:>6.3f}  {m['R@5']:>6.3f}  "
            f"{m['R@10']:>6.3f}  {m['MRR@10']:>6.3f}"
        )


def conversation_files(path: Path, wanted: str | None) -> list[Path]:
    files = sorted(path.glob("*.json"))
    if not files:
        sys.exit(f"locomo.py: no *.json files in {path}")
    if wanted:
        names = [name.strip() for name in wanted.split(",") if name.strip()]
        unknown = sorted(set(names) - {f.stem for f in files})
        if unknown:
            sys.exit(f"locomo.py: no conversation {', '.join(unknown)} in {path}")
        files = [f for f in files if f.stem in names]
    return files


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("path", type=Path, help="directory of LoCoMo conversation *.json files")
    parser.add_argument("--limit", type=int, default=10, help="recall limit (default 10)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write every figure to OUT")
    parser.add_argument(
        "--conversations", metavar="IDS", help="comma-separated file stems, e.g. 26,30"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.limit <= 50:
        parser.error("--limit must be 1 to 50 (what recall accepts)")
    if not args.path.is_dir():
        parser.error(f"{args.path} is not a directory")
    return args


async def main(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    runs: list[ConversationRun] = []
    for path in conversation_files(args.path, args.conversations):
        conversation = load_conversation(path)
        print(
            f"conversation {conversation.name}: {len(conversation.turns)} turns, "
            f"{len(conversation.questions)} questions ...",
            file=sys.stderr,
            flush=True,
        )
        run = await run_conversation(conversation, args.limit)
        for problem in run.errors + run.server_log_problems:
            print(f"  [{run.name}] {problem}", file=sys.stderr)
        runs.append(run)
    total_s = time.perf_counter() - started

    rows = [summary(run.name, [run]) for run in runs]
    pooled = summary("pooled", runs)
    categories = by_category(runs)
    print_report(rows, pooled, args.limit)
    print_categories(categories)
    print(f"\ntotal wall time {total_s:.0f} s")

    if args.json:
        report = {
            "dataset": str(args.path.resolve()),
            "limit": args.limit,
            "subcog": subcog_command(),
            "total_wall_s": total_s,
            "pooled": pooled,
            "by_category": categories,
            "conversations": [
                row
                | {
                    "skipped": run.skipped,
                    "questions_detail": [
                        {
                            "question": r.question,
                            "category": r.category,
                            "evidence": r.evidence,
                            "invalid_evidence": r.invalid_evidence,
                            "first_rank": r.first_rank,
                            "evidence_found": r.evidence_found,
                            "retrieved": r.retrieved,
                            "error": r.error,
                        }
                        for r in run.results
                    ],
                }
                for row, run in zip(rows, runs, strict=True)
            ],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    anyio.run(main, parse_args())
