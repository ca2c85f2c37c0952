"""Recall's weights on both dev sets at once, leave one out: the check behind ranking.py.

Usage::

    .venv/bin/python benchmarks/tune.py --everyday ../shared/everyday-dev \
        --locomo ../shared/locomo-dev [--json OUT]

Both sets go into stores of their own, in process (the real model, real LanceDB in throwaway
directories): the everyday memories with their past creation times, each LoCoMo conversation
with one second between turns, as ``locomo.py`` stores them through ``remember``. Every
question is searched once; the candidates and the query's lexical reference are kept, and
``ranking.rank`` (subcog's own code) ranks them again under each set of weights tried.

Printed: the figures of the weights in ranking.py; then, over a grid of the three weights that
trade words against meaning (lexical, lexical_power, context), the weights each fold chooses
with the others and what they give on the fold left out (each LoCoMo conversation, and each
fifth of the everyday questions), and what tuning on one set alone would cost the other. A
fold chooses by the sum of each target's relative margin: LoCoMo R@10 0.78 and MRR@10 0.53,
everyday hit@5 0.95 and MRR@5 0.85. Filters are applied as recall applies them.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from locomo import load_conversation
from subcog import ranking
from subcog.config import Settings
from subcog.memory import Memory, open_memory

GRID = {
    "lexical": (1.5, 2.0, 2.33),
    "lexical_power": (1.5, 2.0),
    "context": (0.3, 0.4, 0.5, 0.6),
}
TARGETS = {"R@10": 0.78, "MRR@10": 0.53, "hit@5": 0.95, "MRR@5": 0.85}


@dataclass
class Asked:
    """One question, searched once: what ranking needs to rank it again."""

    fold: str
    text: str
    limit: int
    candidates: list[ranking.Candidate]
    reference: float
    unseen: frozenset[str]
    narrowed: bool
    few: bool
    gold: list[set[str]]  # per candidate id: the answers it stands for

    def ranks(self, weights: ranking.Weights) -> int | None:
        """The rank of the first right answer, as recall would return them."""
        found = ranking.rank(
            self.candidates,
            self.text,
            self.limit,
            self.reference,
            self.unseen,
            floor=not self.few,
            weights=weights,
        ).results
        if not found and self.narrowed:
            found = ranking.rank(
                self.candidates,
                self.text,
                self.limit,
                self.reference,
                self.unseen,
                floor=False,
                weights=weights,
            ).results
        right = self.gold[0]
        return next((rank for rank, c in enumerate(found, 1) if c.id in right), None)


def ask(memory: Memory, fold: str, text: str, limit: int, right: set[str], **filters: Any) -> Asked:
    where = memory._filter(filters.get("tags"), filters.get("scope"), *_window(filters))
    narrowed = bool(filters.get("tags") or filters.get("since") or filters.get("until")) or (
        filters.get("scope") not in (None, "*")
    )
    few = narrowed and memory.store.count_matching(where) <= limit
    candidates, reference = memory._candidates(text, where)
    return Asked(
        fold, text, limit, candidates, reference.total, reference.unseen, narrowed, few, [right]
    )


def _window(filters: dict[str, Any]) -> tuple[str | None, str | None]:
    return filters.get("since"), filters.get("until")


def everyday(path: Path, settings: Settings) -> list[Asked]:
    data = json.loads((path / "everyday-dev.json" if path.is_dir() else path).read_text())
    now = datetime.now(timezone.utc)
    memory = open_memory(settings)
    memories = sorted(data["memories"], key=lambda m: (-m["days_ago"], m["id"]))
    lines = [
        json.dumps(
            {
                "content": m["content"],
                "tags": m["tags"],
                "scope": m["scope"],
                "metadata": {"dev_id": m["id"]},
                "created_at": (now - timedelta(days=m["days_ago"])).isoformat(),
            }
        )
        for m in memories
    ]
    memory.import_jsonl(lines)
    memory.store.upkeep_now()
    ids = {row["content"]: row["id"] for row in memory.store.all_rows()}
    by_dev = {m["id"]: ids[m["content"]] for m in memories}
    asked = []
    for n, question in enumerate(data["questions"]):
        if not question["gold"]:
            continue
        f = question.get("filters") or {}
        filters: dict[str, Any] = {"scope": f.get("scope", "*"), "tags": f.get("tags")}
        if "since_days_ago" in f:
            filters["since"] = (now - timedelta(days=f["since_days_ago"])).isoformat()
        if "until_days_ago" in f:
            filters["until"] = (now - timedelta(days=f["until_days_ago"])).isoformat()
        right = {by_dev[g] for g in question["gold"]}
        asked.append(ask(memory, f"everyday {n % 5}", question["q"], 5, right, **filters))
    memory.store.close()
    return asked


def locomo(path: Path, settings: Settings) -> list[Asked]:
    asked = []
    for file in sorted(path.glob("*.json")):
        conversation = load_conversation(file)
        with tempfile.TemporaryDirectory() as data_dir:
            memory = open_memory(dataclasses.replace(settings, data_dir=Path(data_dir)))
            start = datetime.now(timezone.utc) - timedelta(days=1)
            lines = [
                json.dumps(
                    {"content": turn.text, "created_at": (start + timedelta(seconds=i)).isoformat()}
                )
                for i, turn in enumerate(conversation.turns)
            ]
            memory.import_jsonl(lines)
            memory.store.upkeep_now()
            stands_for: dict[str, set[str]] = {}
            rows = {row["content"]: row["id"] for row in memory.store.all_rows()}
            for turn in conversation.turns:
                stands_for.setdefault(rows[turn.text], set()).add(turn.dia_id)
            for question in conversation.questions:
                evidence = set(question.evidence)
                right = {i for i, dia in stands_for.items() if dia & evidence}
                asked.append(
                    ask(memory, f"locomo {conversation.name}", question.question, 10, right)
                )
            memory.store.close()
    return asked


def figures(asked: Iterable[Asked], weights: ranking.Weights) -> dict[str, float]:
    ranks = [(a.fold, a.ranks(weights)) for a in asked]
    out: dict[str, float] = {}
    for name, k in (("locomo", 10), ("everyday", 5)):
        mine = [r for fold, r in ranks if fold.startswith(name)]
        if mine:
            hit, mrr = ("R@10", "MRR@10") if name == "locomo" else ("hit@5", "MRR@5")
            out[hit] = float(np.mean([r is not None and r <= k for r in mine]))
            out[mrr] = float(np.mean([1 / r if r and r <= k else 0.0 for r in mine]))
    return out


def margin(found: dict[str, float]) -> float:
    return sum((found[key] - target) / target for key, target in TARGETS.items() if key in found)


def main(args: argparse.Namespace) -> None:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as data_dir:
        settings = dataclasses.replace(Settings.from_env(), data_dir=Path(data_dir))
        print("searching every question once ...", file=sys.stderr, flush=True)
        asked = everyday(args.everyday, settings) + locomo(args.locomo, settings)
    folds = sorted({a.fold for a in asked})
    defaults = ranking.WEIGHTS
    report: dict[str, Any] = {"weights": dataclasses.asdict(defaults) | {"neighbour_gap": None}}
    report["defaults"] = figures(asked, defaults)
    print("the weights in ranking.py:", _fmt(report["defaults"]))

    grid = [
        dataclasses.replace(defaults, lexical=w, lexical_power=p, context=c)
        for w, p, c in itertools.product(*GRID.values())
    ]
    by_fold = {
        weights: {fold: figures([a for a in asked if a.fold == fold], weights) for fold in folds}
        for weights in grid
    }

    def pooled(weights: ranking.Weights, chosen: list[str]) -> dict[str, float]:
        return figures([a for a in asked if a.fold in chosen], weights)

    everything = {weights: pooled(weights, folds) for weights in grid}
    report["grid"] = [
        {"lexical": w.lexical, "power": w.lexical_power, "context": w.context} | found
        for w, found in everything.items()
    ]
    print("\nthe best of the grid on both sets together:")
    for weights in sorted(grid, key=lambda w: -margin(everything[w]))[:6]:
        print(
            f"  lexical {weights.lexical}, power {weights.lexical_power}, context "
            f"{weights.context}: {_fmt(everything[weights])}"
        )

    print("\nleave one out (a fold chooses with the others, is scored alone):")
    held: dict[str, list[tuple[str, int | None]]] = {}
    report["folds"] = {}
    for fold in folds:
        others = [f for f in folds if f != fold]
        best = max(grid, key=lambda w: margin(pooled(w, others)))
        name = f"lexical {best.lexical}, power {best.lexical_power}, context {best.context}"
        score = by_fold[best][fold]
        report["folds"][fold] = {"chose": name, "held out": score}
        print(f"  {fold:>12}: chose {name}: {_fmt(score)}")
        held.setdefault(fold.split()[0], []).extend(
            (a.fold, a.ranks(best)) for a in asked if a.fold == fold
        )
    pooled_held = {}
    for name, k, keys in (("locomo", 10, ("R@10", "MRR@10")), ("everyday", 5, ("hit@5", "MRR@5"))):
        ranks = [r for _, r in held[name]]
        pooled_held[keys[0]] = float(np.mean([r is not None and r <= k for r in ranks]))
        pooled_held[keys[1]] = float(np.mean([1 / r if r and r <= k else 0.0 for r in ranks]))
    report["held out, pooled"] = pooled_held
    print("  held out, pooled:", _fmt(pooled_held))

    print("\ntuned on one set alone:")
    for name in ("locomo", "everyday"):
        mine = [f for f in folds if f.startswith(name)]
        best = max(grid, key=lambda w: margin(pooled(w, mine)))
        both = figures(asked, best)
        report[f"tuned on {name} alone"] = {
            "weights": [best.lexical, best.lexical_power, best.context],
            "figures": both,
        }
        print(
            f"  {name}: lexical {best.lexical}, power {best.lexical_power}, context "
            f"{best.context}: {_fmt(both)}"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


def _fmt(found: dict[str, float]) -> str:
    return ", ".join(f"{key} {value:.3f}" for key, value in found.items())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--everyday", type=Path, required=True, help="the everyday set")
    parser.add_argument("--locomo", type=Path, required=True, help="LoCoMo conversations")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write every figure to OUT")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
