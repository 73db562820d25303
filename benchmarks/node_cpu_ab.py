"""Issue 11's CPU target: the summed CPU time of all nodes for the default replay, commit against commit.

Runs ``wattcast bench --scenarios default --models persistence linear lstm lstm-augmented`` (the
issue's four models, max speed, default split) from each given source tree in turn, round after
round, in one session: the machine drifts, so only figures of one session compare.  Each tree
runs with ``PYTHONPATH`` set to it (make one with ``git worktree add /tmp/wt/base <commit>``).
The nodes' CPU times come from their final statuses (start-up included).  Prints every run and
the median sum of each tree, and writes JSON (``--out``).

    python benchmarks/node_cpu_ab.py base=/tmp/wt/base new=. --rounds 5 --out bench-ab.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MODELS = ["persistence", "linear", "lstm", "lstm-augmented"]


def one_run(tree: Path, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, "-m", "wattcast", "bench", "--scenarios", "default", "--models", *MODELS, "--out", str(out)]
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"bench failed in {tree}: {done.stderr.strip().splitlines()[-1:]}")
    scenario = json.loads(out.read_text())["scenarios"]["default"]
    nodes = {name: node["cpu_s"] for name, node in scenario["nodes"].items()}
    return {"sum_cpu_s": round(sum(nodes.values()), 2), "nodes_cpu_s": nodes, "replay_s": scenario["replay_s"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trees", nargs="+", metavar="NAME=PATH", help="source trees to compare, run in this order")
    p.add_argument("--rounds", type=int, default=3, help="runs of every tree (default 3)")
    p.add_argument("--out", default="bench-ab.json", help="JSON file to write (default %(default)s)")
    args = p.parse_args()
    trees = dict(t.split("=", 1) for t in args.trees)
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, path in trees.items():
                run = one_run(Path(path).resolve(), Path(tmp) / f"{name}-{r}.json")
                runs[name].append(run)
                print(f"round {r + 1} {name:>8}: {run['sum_cpu_s']:6.2f} CPU s  {run['nodes_cpu_s']}", flush=True)
    medians = {name: statistics.median(x["sum_cpu_s"] for x in rs) for name, rs in runs.items()}
    for name, m in medians.items():
        print(f"{name:>8}: median {m:.2f} CPU s of {sorted(x['sum_cpu_s'] for x in runs[name])}")
    Path(args.out).write_text(json.dumps({"models": MODELS, "runs": runs, "median_sum_cpu_s": medians}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
