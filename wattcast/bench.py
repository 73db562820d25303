"""``wattcast bench``: measure the live pipeline; figures printed and written as JSON.

Scenarios (each a full ``wattcast run`` on a private broker unless ``--broker``):

* ``default``: the default split, one house, all four models, max speed;
* ``houses``: ``--houses`` meters x ``--minutes`` readings each (default 50 x 1 day).

Per scenario: start-up and replay wall time, readings/s, forecast latency p50/p99
per model (reading published -> forecast received by the collector), collector lag
(message received -> handled), peak RSS and CPU time of every node.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np

from wattcast.config import positive_int
from wattcast.contract import MODELS


def add_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scenarios",
        nargs="+",
        choices=("default", "houses"),
        default=["default", "houses"],
        help="default: the default split, 1 house; houses: --houses meters x --minutes (default: both)",
    )
    p.add_argument("--houses", type=positive_int, default=50, help="meters of the multi-house scenario (default 50)")
    p.add_argument("--minutes", type=positive_int, default=1440, help="readings per meter there (default 1440 = 1 day)")
    p.add_argument(
        "--models", nargs="+", choices=MODELS, default=list(MODELS), metavar="MODEL", help="models to run (default: all)"
    )
    p.add_argument("--broker", default=None, help="use this broker instead of a private one")
    p.add_argument("--window", type=positive_int, default=None, help="simulator flow-control window (default: its own)")
    p.add_argument("--out", default="bench.json", help="JSON file to write (default %(default)s)")
    p.add_argument(
        "--engine",
        choices=("mosquitto", "rabbitmq"),
        default="mosquitto",
        help="rabbitmq: the houses scenario on a RabbitMQ cluster of 3 nodes for each --shards count (one replica "
        "per shard), next to the same on mosquitto (docs/scale-out.md)",
    )
    p.add_argument(
        "--shards", type=positive_int, nargs="+", default=[1, 2, 4], help="rabbitmq: shard counts (default 1 2 4)"
    )


def latency_and_lag(db: Path) -> dict[str, Any]:
    """Per model the forecast latency percentiles, and the collector's bus lag, of the store's newest run."""
    from wattcast.store import RunReader

    with RunReader(db) as reader:
        by_model: dict[str, list[float]] = {}
        for model, seconds in reader.latencies():
            by_model.setdefault(model, []).append(seconds * 1000)
        latency = {}
        for model in sorted(by_model):
            ms = np.array(by_model[model])
            latency[model] = {
                "n": int(ms.size),
                "p50_ms": round(float(np.percentile(ms, 50)), 2),
                "p99_ms": round(float(np.percentile(ms, 99)), 2),
                "max_ms": round(float(ms.max()), 2),
            }
        stats = reader.stats()
    lag = {k: round(stats[k], 2) for k in ("lag_ms_p50", "lag_ms_p99", "lag_ms_max") if stats.get(k) is not None}
    return {"latency": latency, "collector_lag": lag}


def run_scenario(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from wattcast.runner import RunOptions, run

    houses, limit = (1, None) if name == "default" else (args.houses, args.minutes)
    shards = int(name.split("-")[1]) if name.startswith("rabbitmq-") else None
    cluster = {"engine": "rabbitmq", "shards": shards, "replicas": shards} if shards else {}
    ns = RunOptions(
        **cluster,  # type: ignore[arg-type]
        broker=args.broker,
        models=args.models,
        houses=houses,
        limit=limit,
        window=args.window,
        store=str(workdir / name / "wattcast.db"),
        timeout=3600.0,
        json=True,
        quiet=True,
    )
    print(
        f"bench: {name}: {houses} house(s) x {limit or 'all'} readings, models {', '.join(args.models)} ...",
        file=sys.stderr,
        flush=True,
    )
    result = run(ns, progress=lambda line: None)
    figures = latency_and_lag(Path(result["store"]))
    # the runner saw every node's final status (the store only those before the collector stopped)
    figures["nodes"] = {
        node: {
            "peak_rss_mib": round(c["rss_kb"] / 1024, 1),
            "startup_ms": c.get("startup_ms"),
            "cpu_s": round(c["cpu_ms"] / 1000, 2) if "cpu_ms" in c else None,
        }
        for node, c in result["nodes"].items()
        if "rss_kb" in c
    }
    readings = result["published"]
    if "replay_cpu_s" in result:  # the cluster engine: CPU per reading during the replay, nodes and broker
        nodes_cpu = sum(result["replay_cpu_s"].values())
        figures["cpu_per_reading_ms"] = {
            "nodes": round(1000 * nodes_cpu / readings, 3),
            "broker": round(1000 * result["broker"]["replay_cpu_s"] / readings, 3)
            if result["broker"]["replay_cpu_s"] is not None
            else None,
        }
        figures["engine"] = result["engine"]
    return {
        "houses": houses,
        "readings": readings,
        "startup_s": result["startup_s"],
        "replay_s": result["replay_s"],
        "readings_per_s": round(readings / result["replay_s"], 1),
        "messages_received_by_collector": result["received"],
        "malformed": result["malformed"],
        "scores": {m: {k: r.get(k) for k in ("n", "mse", "unmatched", "pending")} for m, r in result["models"].items()},
        **figures,
        "broker": result["broker"]["kind"],
    }


def bench_command(args: argparse.Namespace) -> int:
    import platform

    out: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "scenarios": {},
    }
    with TemporaryDirectory(prefix="wattcast-bench-") as tmp:
        names = args.scenarios
        if args.engine == "rabbitmq":  # the houses scenario on mosquitto, then on the cluster per shard count
            names = ["houses", *(f"rabbitmq-{n}-shards" for n in args.shards)]
        for name in names:
            out["scenarios"][name] = run_scenario(name, args, Path(tmp))
            print_scenario(name, out["scenarios"][name])
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def print_scenario(name: str, s: dict[str, Any]) -> None:
    print(f"== {name}: {s['houses']} house(s), {s['readings']} readings, broker {s['broker']}")
    print(
        f"   start-up {s['startup_s']:.2f} s, replay {s['replay_s']:.2f} s, {s['readings_per_s']:,.0f} readings/s, "
        f"collector received {s['messages_received_by_collector']} messages, malformed {s['malformed']}"
    )
    for model, lat in s["latency"].items():
        sc = s["scores"].get(model, {})
        p50, p99 = lat.get("p50_ms", float("nan")), lat.get("p99_ms", float("nan"))
        print(
            f"   {model:<15} latency p50 {p50:7.2f} ms  p99 {p99:8.2f} ms"
            f"   matched {sc.get('n')}  mse {sc.get('mse') or float('nan'):.4f}"
        )
    if "cpu_per_reading_ms" in s:
        cpu = s["cpu_per_reading_ms"]
        print(f"   CPU per reading during the replay: nodes {cpu['nodes']} ms, RabbitMQ {cpu['broker']} ms ({s['engine']})")
    lag = s["collector_lag"]
    print(f"   collector lag p50 {lag.get('lag_ms_p50')} ms, p99 {lag.get('lag_ms_p99')} ms, max {lag.get('lag_ms_max')} ms")
    for node, mem in s["nodes"].items():
        cpu = f"{mem['cpu_s']:.2f} s" if mem.get("cpu_s") is not None else "n/a"
        print(f"   {node:<26} peak RSS {mem['peak_rss_mib']:7.1f} MiB  start-up {mem['startup_ms']} ms  CPU {cpu}")
