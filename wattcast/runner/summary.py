"""What a run found: its scores read back from the store, the table, the exit code."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from wattcast.runner.options import RunError, RunOptions
from wattcast.scoring import pooled


def scores_from_store(
    db_path: Path, models: list[str] | None = None, houses: int = 1, run: str | None = None
) -> dict[str, Any]:
    """Per-model scores of ``run`` (default: the newest) pooled over houses, per-house scores, the
    store's counters, and what is missing.  StoreError if the store holds no such run."""
    from wattcast.contract import house_ids
    from wattcast.store import Store

    store = Store(db_path)
    try:
        run = store.run(run)
        summary = store.summary(run)
        models_pooled: dict[str, dict[str, Any]] = {}
        for model in sorted({s["model"] for s in summary}):
            rows = [s for s in summary if s["model"] == model]
            mse = pooled((s["n"], s["mse"]) for s in rows)
            mae = pooled((s["n"], s["mae"]) for s in rows)
            models_pooled[model] = {
                "n": sum(s["n"] for s in rows),
                "mse": mse if mse is not None else math.nan,
                "rmse": math.sqrt(mse) if mse is not None else math.nan,
                "mae": mae if mae is not None else math.nan,
                "unmatched": sum(s["unmatched"] for s in rows),
                "pending": sum(s["pending"] for s in rows),
            }
        return {
            "run": run,
            "models": models_pooled,
            "houses": summary,
            "readings": store.count("readings", run),
            "forecasts": store.count("forecasts", run),
            "rejections": store.count("rejections", run),
            "ends": store.published(run),
            "collector": store.run_stats(run) or store.meta().get("collector_stats", {}),
            "missing": store.missing(run, models or [], house_ids(houses)),
        }
    finally:
        store.close()


def format_table(result: dict[str, Any]) -> str:
    """The one summary of a run: per model, and what the counts mean."""
    houses = result.get("houses", 1)
    lines = [
        f"scores over {houses} house(s), every forecast scored against the reading at its target minute "
        "(issued + 5 min), kW²/kW:",
        f"{'model':<16}{'n':>7}{'MSE':>9}{'RMSE':>9}{'MAE':>9}{'unmatched':>11}{'pending':>9}",
    ]
    for model, r in result["models"].items():
        lines.append(
            f"{model:<16}{r.get('n', 0):>7}{r.get('mse', math.nan):>9.4f}{r.get('rmse', math.nan):>9.4f}"
            f"{r.get('mae', math.nan):>9.4f}{r.get('unmatched', 0):>11}{r.get('pending', 0):>9}"
        )
    lines.append(
        "n = matched forecasts; unmatched = no reading at the target minute (a gap in the data); "
        "pending = target after the last reading (5 per house: normal)"
    )
    lines.append(
        f"published {result['published']} readings, collector received {result['received']} messages, "
        f"malformed {result['malformed']}, conflicts {result.get('conflicts', 0)}, "
        f"missing {'none' if not result.get('missing') else len(result['missing'])}"
    )
    lines.append(
        f"start-up {result['startup_s']:.1f} s, replay {result['replay_s']:.1f} s, total {result['elapsed_s']:.1f} s"
    )
    lines.append(f"store: {result['store']}")
    if result.get("report"):
        files = result["report"]
        lines.append(f"report: {files[0]}" + (f" (+{len(files) - 1} files beside it)" if len(files) > 1 else ""))
    return "\n".join(lines)


def run_command(ns: argparse.Namespace) -> int:
    """``wattcast run``: the options built once from the command line, the run, its summary."""
    args = RunOptions.from_args(ns)
    if args.houses < 1:
        raise ValueError("--houses must be at least 1")
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    view = None
    if not args.quiet:
        from wattcast.live import LiveView

        view = LiveView(sys.stderr)
    try:
        from wattcast.runner.pipeline import run

        result = run(args, progress, view)
    except RunError as exc:
        print(f"wattcast: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result))
    return 1 if incomplete(result) else 0


def incomplete(result: dict[str, Any]) -> bool:
    """Say on stderr, one line each, why a finished run's scores cannot be trusted; True if so."""
    problems = []
    if result.get("missing"):
        shown = "; ".join(result["missing"][:8]) + (" ..." if len(result["missing"]) > 8 else "")
        problems.append(f"incomplete run: the store lacks what was published: {shown}")
    if result.get("conflicts"):
        problems.append(
            f"{result['conflicts']} conflicting readings or forecasts (a second, different message "
            f"for a minute already scored; the first was kept): see the store's rejections"
        )
    for line in problems:
        print(f"wattcast: error: {line}", file=sys.stderr)
    return bool(problems)
