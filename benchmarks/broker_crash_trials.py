"""Broker SIGKILL trials: how often a crash loses data, with and without the endpoints' recovery.

    python benchmarks/broker_crash_trials.py [--trials 5] [--out benchmarks/broker-crash.json]

Each trial is a full max-speed replay of the default split (persistence and linear) whose
mosquitto is SIGKILLed once the collector holds 300, 2,000 or 3,900 readings, and restarted on
the same port; in the "collector-down" cases the collector is killed first, so that the broker's
memory alone holds what is queued for it and the crash surely loses something
(tests/test_broker_crash.py has the harness).  Prints one line per trial and a summary, and
writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the harness imports the tests' helpers

from tests.test_broker_crash import MODELS, replay_with_a_broker_crash  # noqa: E402
from wattcast.data import load_split  # noqa: E402
from wattcast.evaluation import stream_forecasts  # noqa: E402
from wattcast.forecasters import load_model  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--points", type=int, nargs="+", default=[300, 2000, 3900])
    p.add_argument("--out", default=str(REPO / "benchmarks" / "broker-crash.json"))
    args = p.parse_args()
    val = load_split().val
    offline = {}
    for m in MODELS:
        preds, targets = stream_forecasts(load_model(m), val)
        offline[m] = (len(targets), float(((preds - targets) ** 2).mean()))
    rows = []
    # (recover, kill point, collector down during the crash): the last makes a loss certain
    cases = [(True, p, False) for p in args.points] + [(True, 2000, True), (False, 2000, True), (False, 2000, False)]
    for recover, point, down in cases:
        for trial in range(args.trials):
            with tempfile.TemporaryDirectory(prefix="wattcast-crash-") as tmp:
                t0 = time.monotonic()
                got = replay_with_a_broker_crash(Path(tmp), point, recover=recover, collector_down=down)
                took = time.monotonic() - t0
            exact = all(
                got["scores"][m][0] == n and abs(got["scores"][m][1] - mse) <= 1e-9 * mse for m, (n, mse) in offline.items()
            )
            row = {
                "recover": recover,
                "kill_at": point,
                "collector_down": down,
                "trial": trial,
                "stored_at_kill": got["stored_at_kill"],
                "n": {m: got["scores"][m][0] for m in MODELS},
                "exact": exact,
                "missing": got["missing"],
                "seconds": round(took, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for recover, point, down in cases:
        sel = [r for r in rows if (r["recover"], r["kill_at"], r["collector_down"]) == (recover, point, down)]
        name = f"{'recover' if recover else 'no-recovery'}@{point}{'+collector-down' if down else ''}"
        summary[name] = {
            "trials": len(sel),
            "exact": sum(r["exact"] for r in sel),
            "lost_and_named": sum(bool(r["missing"]) for r in sel),
            "lost_silently": sum((not r["exact"]) and not r["missing"] for r in sel),
        }
    print(json.dumps(summary, indent=2))
    Path(args.out).write_text(json.dumps({"offline": offline, "rows": rows, "summary": summary}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
