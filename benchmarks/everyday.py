"""Recall quality on an everyday-assistant set, through a real ``subcog serve`` over stdio,
beside plain vector search with the same model in the same run.

Usage::

    .venv/bin/python benchmarks/everyday.py PATH [--json OUT]

PATH is the set's directory or its JSON file (``../shared/everyday-dev``): ``memories`` (id,
content, tags, scope, days_ago) and ``questions`` (qid, q, gold, kind, and optionally stale,
near_miss and filters). The data is only read, never copied into the repository.

1. The memories go into a fresh, throwaway ``SUBCOG_DATA_DIR`` through ``subcog import``, oldest
   first, each with ``created_at`` = now - days_ago and its dev id in metadata.
2. One ``subcog serve`` answers every question with ``recall(query, limit=5)``: scope ``"*"``
   unless the question's filters name one, tags and ``since``/``until`` (now - N days) as given.
3. The baseline embeds the same memories with the same model (subcog's embedder, one vector per
   memory) and returns the 5 with the highest cosine among those passing the same filters, as
   plain vector-search servers do (mcp-server-qdrant): no floor, no words.

Results map back to dev ids by exact content. Printed, for both: hit@1, hit@5 and MRR@5 per
kind and overall (answerable questions), all-gold@5 for ``multi``; false empty (answerable
questions answered with an empty list); abstained (unanswerable questions answered with an
empty list), near misses and unrelated apart; stale-first (questions about a changed fact where
the old version ranks above the new). For subcog also: each result's score band against how
often results in it were right, near misses' top scores against right answers' scores, the
mean response size (the tool's JSON text, in bytes) and recall p50/p95 as the client sees it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

sys.path.insert(0, str(Path(__file__).parent))
from common import percentile, subcog_command

LIMIT = 5
KINDS = ("paraphrase", "lexical", "identifier", "multi", "long", "temporal")
BANDS = ((0.8, 1.01), (0.6, 0.8), (0.4, 0.6), (0.2, 0.4), (0.0, 0.2))
LOADING_HINT = "Retry this call"


@dataclass
class Answer:
    """What one system returned for one question."""

    ids: list[str]  # dev ids, best first
    scores: list[float | None] = field(default_factory=list)
    size: int = 0  # bytes of the tool's text content
    ms: float = 0.0


def load(path: Path) -> dict[str, Any]:
    file = path / "everyday-dev.json" if path.is_dir() else path
    data: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
    return data


def window(question: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The question's recall arguments beside the query."""
    filters = question.get("filters") or {}
    arguments: dict[str, Any] = {"scope": filters.get("scope", "*")}
    if filters.get("tags"):
        arguments["tags"] = filters["tags"]
    if "since_days_ago" in filters:
        arguments["since"] = (now - timedelta(days=filters["since_days_ago"])).isoformat()
    if "until_days_ago" in filters:
        arguments["until"] = (now - timedelta(days=filters["until_days_ago"])).isoformat()
    return arguments


def import_memories(data: dict[str, Any], now: datetime, env: dict[str, str]) -> None:
    memories = sorted(data["memories"], key=lambda m: (-m["days_ago"], m["id"]))
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as out:
        for m in memories:
            created = now - timedelta(days=m["days_ago"])
            line = {
                "content": m["content"],
                "tags": m["tags"],
                "scope": m["scope"],
                "metadata": {"dev_id": m["id"]},
                "created_at": created.isoformat(),
            }
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
    try:
        subprocess.run(
            [subcog_command(), "import", out.name],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    finally:
        os.unlink(out.name)


async def ask_subcog(data: dict[str, Any], now: datetime, env: dict[str, str]) -> dict[str, Answer]:
    by_content = {m["content"]: m["id"] for m in data["memories"]}
    answers: dict[str, Answer] = {}
    server = StdioServerParameters(command=subcog_command(), args=["serve"], env=env)
    with tempfile.TemporaryFile("w+") as log:
        async with Client(stdio_client(server, errlog=log)) as client:
            for question in data["questions"]:
                arguments = {"query": question["q"], "limit": LIMIT, **window(question, now)}
                for _ in range(60):
                    started = time.perf_counter()
                    result = await client.call_tool("recall", arguments)
                    elapsed = (time.perf_counter() - started) * 1000
                    text = " ".join(getattr(part, "text", "") for part in result.content)
                    if not (result.is_error and LOADING_HINT in text):
                        break
                    await anyio.sleep(0.5)
                if result.is_error or result.structured_content is None:
                    sys.exit(f"recall failed for {question['qid']}: {text}")
                found = result.structured_content["memories"]
                answers[question["qid"]] = Answer(
                    ids=[by_content[m["content"]] for m in found],
                    scores=[m.get("score") for m in found],
                    size=len(text.encode()),
                    ms=elapsed,
                )
    return answers


def ask_vectors(data: dict[str, Any], now: datetime, env: dict[str, str]) -> dict[str, Answer]:
    """Plain vector search with subcog's model: cosine top 5 among what passes the filters."""
    from subcog.config import Settings
    from subcog.embedder import load_embedder

    embedder = load_embedder(Settings.from_env(env))
    memories = data["memories"]
    vectors = embedder.embed([m["content"] for m in memories])
    answers: dict[str, Answer] = {}
    for question in data["questions"]:
        filters = question.get("filters") or {}
        keep = np.array(
            [
                (filters.get("scope") in (None, m["scope"]))
                and all(tag in m["tags"] for tag in filters.get("tags", []))
                and m["days_ago"] <= filters.get("since_days_ago", math.inf)
                and m["days_ago"] >= filters.get("until_days_ago", -math.inf)
                for m in memories
            ]
        )
        started = time.perf_counter()
        cosines = np.where(keep, vectors @ embedder.embed([question["q"]])[0], -np.inf)
        best = [int(i) for i in np.argsort(-cosines)[:LIMIT] if np.isfinite(cosines[i])]
        answers[question["qid"]] = Answer(
            ids=[memories[i]["id"] for i in best],
            scores=[float(cosines[i]) for i in best],
            ms=(time.perf_counter() - started) * 1000,
        )
    return answers


def first_rank(ids: list[str], wanted: set[str]) -> int | None:
    return next((rank for rank, i in enumerate(ids, 1) if i in wanted), None)


def figures(data: dict[str, Any], answers: dict[str, Answer]) -> dict[str, Any]:
    kinds: dict[str, list[int | None]] = {}
    all_gold: list[bool] = []
    false_empty: list[bool] = []
    abstained: dict[str, list[bool]] = {"near miss": [], "unrelated": []}
    stale_first: list[bool] = []
    for question in data["questions"]:
        answer = answers[question["qid"]]
        gold = set(question["gold"])
        if not gold:
            abstained["near miss" if question.get("near_miss") else "unrelated"].append(
                not answer.ids
            )
            continue
        rank = first_rank(answer.ids, gold)
        kinds.setdefault(question["kind"], []).append(rank)
        false_empty.append(not answer.ids)
        if question["kind"] == "multi":
            all_gold.append(gold <= set(answer.ids))
        if question.get("stale"):
            stale = first_rank(answer.ids, set(question["stale"]))
            stale_first.append(stale is not None and (rank is None or stale < rank))

    def row(ranks: list[int | None]) -> dict[str, float]:
        return {
            "n": len(ranks),
            "hit@1": float(np.mean([r == 1 for r in ranks])),
            "hit@5": float(np.mean([r is not None for r in ranks])),
            "MRR@5": float(np.mean([1 / r if r else 0.0 for r in ranks])),
        }

    table = {kind: row(kinds[kind]) for kind in KINDS if kind in kinds}
    table["all answerable"] = row([r for kind in kinds.values() for r in kind])
    return {
        "kinds": table,
        "multi all-gold@5": float(np.mean(all_gold)) if all_gold else math.nan,
        "false empty": float(np.mean(false_empty)),
        "abstained near miss": float(np.mean(abstained["near miss"])),
        "abstained unrelated": float(np.mean(abstained["unrelated"])),
        "stale first": float(np.mean(stale_first)) if stale_first else math.nan,
        "stale questions": len(stale_first),
        "mean response bytes": float(np.mean([a.size for a in answers.values()])),
        "recall p50 ms": percentile([a.ms for a in answers.values()], 50),
        "recall p95 ms": percentile([a.ms for a in answers.values()], 95),
    }


def bands(data: dict[str, Any], answers: dict[str, Answer]) -> list[dict[str, Any]]:
    """How often results in each score band were right (a gold memory of their question)."""
    rows = []
    results = [
        (score, memory_id in question["gold"])
        for question in data["questions"]
        if question["kind"] != "temporal"  # their gold is whatever passes the filters
        for memory_id, score in zip(
            answers[question["qid"]].ids, answers[question["qid"]].scores, strict=True
        )
        if score is not None
    ]
    for low, high in BANDS:
        inside = [right for score, right in results if low <= score < high]
        rows.append(
            {
                "band": f"{low:.1f}-{min(high, 1.0):.1f}",
                "results": len(inside),
                "right": float(np.mean(inside)) if inside else math.nan,
            }
        )
    return rows


def misses_against_answers(data: dict[str, Any], answers: dict[str, Answer]) -> dict[str, Any]:
    right = [
        score
        for question in data["questions"]
        if question["gold"] and question["kind"] != "temporal"
        for memory_id, score in zip(
            answers[question["qid"]].ids, answers[question["qid"]].scores, strict=True
        )
        if memory_id in question["gold"] and score is not None
    ]
    near = {
        question["q"]: answers[question["qid"]].scores[0]
        for question in data["questions"]
        if question.get("near_miss") and answers[question["qid"]].ids
    }
    return {"right median": percentile(right, 50), "near misses": near}


def print_table(name: str, found: dict[str, Any]) -> None:
    print(f"\n{name}")
    print(f"{'kind':>16}  {'n':>3}  {'hit@1':>5}  {'hit@5':>5}  {'MRR@5':>5}")
    for kind, row in found["kinds"].items():
        print(
            f"{kind:>16}  {row['n']:>3}  {row['hit@1']:>5.2f}  {row['hit@5']:>5.2f}  "
            f"{row['MRR@5']:>5.2f}"
        )
    print(
        f"multi all-gold@5 {found['multi all-gold@5']:.2f}; false empty "
        f"{found['false empty']:.3f}; abstained: near miss {found['abstained near miss']:.2f}, "
        f"unrelated {found['abstained unrelated']:.2f}; stale first {found['stale first']:.2f} "
        f"of {found['stale questions']}"
    )


async def main(args: argparse.Namespace) -> None:
    data = load(args.path)
    now = datetime.now(timezone.utc)
    with tempfile.TemporaryDirectory(prefix="subcog-everyday-") as data_dir:
        env = {**os.environ, "SUBCOG_DATA_DIR": data_dir}
        started = time.perf_counter()
        import_memories(data, now, env)
        subcog = await ask_subcog(data, now, env)
        vectors = ask_vectors(data, now, env)
        took = time.perf_counter() - started
    report = {
        "subcog": figures(data, subcog),
        "vector only": figures(data, vectors),
        "subcog score bands": bands(data, subcog),
        "subcog near misses": misses_against_answers(data, subcog),
    }
    print(
        f"everyday set: {len(data['memories'])} memories, {len(data['questions'])} questions, "
        f"recall limit {LIMIT}"
    )
    print_table("subcog (hybrid, through subcog serve)", report["subcog"])
    s = report["subcog"]
    print(
        f"mean response {s['mean response bytes']:.0f} bytes; recall p50 "
        f"{s['recall p50 ms']:.1f} ms, p95 {s['recall p95 ms']:.1f} ms (client side)"
    )
    print_table("vector only (same model, cosine top 5, no floor)", report["vector only"])
    print("\nsubcog's scores: how often results in each band were right")
    for row in report["subcog score bands"]:
        print(f"  {row['band']}: {row['results']:>3} results, {row['right']:.2f} right")
    near = report["subcog near misses"]
    print(f"right answers' median score: {near['right median']:.2f}")
    for question, score in near["near misses"].items():
        print(f"  near miss {score:.2f}: {question}")
    print(f"\nwall time {took:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("path", type=Path, help="the set's directory or JSON file")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write every figure to OUT")
    args = parser.parse_args(argv)
    if not args.path.exists():
        parser.error(f"{args.path} does not exist")
    return args


if __name__ == "__main__":
    anyio.run(main, parse_args())
