"""What the live dashboard costs the pipeline (issue 13: under 5 % replay time at max speed).

Runs the same command with and without ``--dashboard``, alternating, in one session:
``wattcast run --json --quiet [--dashboard --dashboard-port P]`` (default data, all models,
max speed), with a browser's worth of load on the page: a client that follows ``/events``
for the whole run.  Reports each run's replay time (from the run's JSON) and the CPU time of
the whole run (every process: the run, its broker, nodes and dashboard), then the medians and
the median pairwise ratio.  Prints the figures and writes JSON (``--out``).

    python benchmarks/dashboard_cost.py --pairs 5 --out benchmarks/2026-12-03-dashboard-cost.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from wattcast.broker import free_port


def follow_events(port: int, stop: threading.Event, got: list[int]) -> None:
    """A browser's share: connect to the page's event stream as soon as it serves, read until it ends."""
    while not stop.is_set():
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/events")
            r = conn.getresponse()
            while not stop.is_set():
                line = r.fp.readline()
                if not line:
                    return
                if line.startswith(b"data: "):
                    got[0] += 1
        except OSError:
            time.sleep(0.05)


def one_run(dashboard: bool, workdir: Path) -> dict:
    argv = [sys.executable, "-m", "wattcast", "run", "--json", "--quiet", "--store", str(workdir / "w.db")]
    stop, got, follower = threading.Event(), [0], None
    if dashboard:
        port = free_port()
        argv += ["--dashboard", "--dashboard-port", str(port)]
        follower = threading.Thread(target=follow_events, args=(port, stop, got), daemon=True)
        follower.start()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(argv, capture_output=True, text=True, cwd=workdir, stdin=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    stop.set()
    if r.returncode != 0:
        raise SystemExit(f"wattcast run failed ({r.returncode}): {r.stderr.strip().splitlines()[-1:]}")
    out = json.loads(r.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "replay_s": out["replay_s"],
        "elapsed_s": out["elapsed_s"],
        "cpu_s": round(cpu, 2),
        "snapshots_read": got[0] if dashboard else None,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"dashboard-cost-{os.getpid()}"
    runs: dict[str, list[dict]] = {"without": [], "with": []}
    for k in range(args.pairs):
        order = ("without", "with") if k % 2 == 0 else ("with", "without")
        for name in order:
            d = work / f"{k}-{name}"
            d.mkdir(parents=True)
            res = one_run(name == "with", d)
            runs[name].append(res)
            line = f"pair {k + 1} {name:>7} dashboard: replay {res['replay_s']:6.2f} s, CPU {res['cpu_s']:6.2f} s"
            print(line, flush=True)
    med = {n: {m: statistics.median(r[m] for r in rs) for m in ("replay_s", "cpu_s")} for n, rs in runs.items()}
    ratio = statistics.median(w["replay_s"] / o["replay_s"] for w, o in zip(runs["with"], runs["without"], strict=True))
    cpu_ratio = statistics.median(w["cpu_s"] / o["cpu_s"] for w, o in zip(runs["with"], runs["without"], strict=True))
    result = {
        "what": "wattcast run (default data, all models, max speed) with and without --dashboard, a client "
        "following /events for the whole run; alternating pairs, one session",
        "machine": f"{os.cpu_count()} cores",
        "runs": runs,
        "median": med,
        "median_pairwise_replay_ratio": round(ratio, 4),
        "median_pairwise_cpu_ratio": round(cpu_ratio, 4),
    }
    print(
        f"median replay {med['without']['replay_s']:.2f} s without, {med['with']['replay_s']:.2f} s with the dashboard "
        f"(pairwise ratio {ratio:.3f}); CPU of the whole run {med['without']['cpu_s']:.1f} vs {med['with']['cpu_s']:.1f} s "
        f"(ratio {cpu_ratio:.3f})"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
