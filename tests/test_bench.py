"""`wattcast bench` runs and writes the figures it prints (a smoke test: no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.integration
def test_bench_writes_its_figures(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "wattcast",
            "bench",
            "--scenarios",
            "houses",
            "--houses",
            "2",
            "--minutes",
            "60",
            "--models",
            "persistence",
            "linear",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    s = json.loads(out.read_text())["scenarios"]["houses"]
    assert s["houses"] == 2 and s["readings"] == 120
    assert s["malformed"] == 0
    for model in ("persistence", "linear"):
        lat = s["latency"][model]
        assert lat["n"] == 2 * 59  # a forecast after every reading from the second on
        assert 0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        assert s["scores"][model]["n"] == 2 * 54
    assert {"collector", "predictor-persistence", "predictor-linear", "simulator"} <= set(s["nodes"])
    assert all(n["peak_rss_mib"] > 10 for n in s["nodes"].values())
    assert all(n["cpu_s"] > 0.05 for n in s["nodes"].values())  # importing numpy alone takes more
    assert "readings/s" in proc.stdout and "latency p50" in proc.stdout
