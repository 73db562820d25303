"""CPU seconds to read a meter file and cut the split (``wattcast.data.load_split``).

    python benchmarks/data_load.py [FILE ...] [--repeat 3] [--out benchmarks/data-load.json]

FILE defaults to the shipped sample; give the full UCI zip (``wattcast download``) to
see what every offline command and a simulator with ``--data`` pay at start-up.  Each
file is read ``--repeat`` times in fresh processes (no warm caches of pandas' own);
prints the median CPU seconds per file and writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CODE = """
import resource, sys
from wattcast.data import load_split
path = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] != "sample" else None
before = resource.getrusage(resource.RUSAGE_SELF)
split = load_split(path)
after = resource.getrusage(resource.RUSAGE_SELF)
print(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, split.info["rows_clean"])
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="*", default=["sample"], help="meter files (default: the shipped sample)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", default="data-load.json")
    args = p.parse_args()
    results = {}
    for name in args.files:
        runs = []
        for _ in range(args.repeat):
            out = subprocess.run([sys.executable, "-P", "-c", CODE, name], capture_output=True, text=True)
            if out.returncode != 0:
                print(f"data_load: error: {name}: {out.stderr.strip().splitlines()[-1]}", file=sys.stderr)
                return 1
            cpu, rows = out.stdout.split()
            runs.append(float(cpu))
        results[name] = {"rows_clean": int(rows), "cpu_s": runs, "median_cpu_s": round(statistics.median(runs), 3)}
        print(f"{name}: {int(rows):,} rows, load_split {results[name]['median_cpu_s']:.2f} CPU s (median of {args.repeat})")
    Path(args.out).write_text(json.dumps({"python": sys.version.split()[0], "files": results}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
