"""What mosquitto's autosave settings change for a crash, with the endpoints' recovery off.

    python benchmarks/broker_persistence.py [--trials 4] [--out benchmarks/broker-persistence.json]

Mosquitto acknowledges a QoS 1 message before it writes it to disk and, by default here,
saves its database every 60 s (``autosave_interval 60``); ``autosave_on_changes true``
saves instead after that many changes.  Each trial is a full max-speed replay of the
default split (persistence and linear) whose broker is SIGKILLed once the collector holds
2,000 readings and restarted on the same port (tests/test_broker_crash.py has the
harness), *without* the simulator's recovery, so what the broker's own persistence keeps
is all there is.  Prints one line per trial and a summary (trials that lost something,
readings lost, the broker's CPU seconds up to the kill), and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the harness imports the tests' helpers

from tests.test_broker_crash import MODELS, replay_with_a_broker_crash  # noqa: E402

SETTINGS = {
    "interval-60s (shipped)": "",
    "every-1000-changes": "autosave_on_changes true\nautosave_interval 1000",
    "every-100-changes": "autosave_on_changes true\nautosave_interval 100",
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--kill-at", type=int, default=2000)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "broker-persistence.json"))
    args = p.parse_args()
    rows = []
    for name, conf in SETTINGS.items():
        for trial in range(args.trials):
            with tempfile.TemporaryDirectory(prefix="wattcast-persist-") as tmp:
                t0 = time.monotonic()
                got = replay_with_a_broker_crash(Path(tmp), args.kill_at, recover=False, broker_conf=conf)
                took = time.monotonic() - t0
            lost_readings = sum(int(line.split(": ")[1].split()[0]) for line in got["missing"] if line.endswith("readings"))
            row = {
                "setting": name,
                "trial": trial,
                "stored_at_kill": got["stored_at_kill"],
                "n": {m: got["scores"][m][0] for m in MODELS},
                "missing": got["missing"],
                "lost_readings": lost_readings,
                "broker_cpu_s_at_kill": got["broker_cpu_s_at_kill"],
                "seconds": round(took, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for name in SETTINGS:
        sel = [r for r in rows if r["setting"] == name]
        summary[name] = {
            "trials": len(sel),
            "lost_something": sum(bool(r["missing"]) for r in sel),
            "lost_readings_total": sum(r["lost_readings"] for r in sel),
            "broker_cpu_s_at_kill_median": round(statistics.median(r["broker_cpu_s_at_kill"] for r in sel), 2),
            "trial_s_median": statistics.median(r["seconds"] for r in sel),
        }
    print(json.dumps(summary, indent=2))
    Path(args.out).write_text(json.dumps({"kill_at": args.kill_at, "rows": rows, "summary": summary}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
