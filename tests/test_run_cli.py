"""A newcomer's mistakes and habits with ``wattcast run`` and the nodes' entry points.

Usage errors: one line, exit 2, no traceback, on every entry point.  Bad data: one
line naming file and row, exit 1, before any process starts.  Limits the machine
cannot meet: refused up front.  Ctrl-C: nodes first, broker last, exit 130.  With
``--broker``: stable node ids, and no retained statuses left behind.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from wattcast.broker import available_kind
from wattcast.data import load_split, sample_path


def _run(*args: str, cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env={**os.environ, **(env or {})}
    )


def _one_error_line(out: subprocess.CompletedProcess, prefix: str) -> str:
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prefix}: error: "), out.stderr
    assert "Traceback" not in out.stderr and "raise " not in out.stderr
    return lines[0]


USAGE_CASES = [
    (["-m", "wattcast", "run", "--limit", "0"], {}, "wattcast", "--limit"),
    (["-m", "wattcast", "run", "--limit", "-5"], {}, "wattcast", "--limit"),
    (["-m", "wattcast", "run", "--window", "0"], {}, "wattcast", "--window"),
    (["-m", "wattcast", "run", "--window", "-1"], {}, "wattcast", "--window"),
    (["-m", "wattcast", "run", "--houses", "0"], {}, "wattcast", "--houses"),
    (["-m", "wattcast", "run", "--speed", "nan"], {}, "wattcast", "--speed"),
    (["-m", "wattcast", "evaluate", "--fraction", "0"], {}, "wattcast", "--fraction"),
    (["-m", "wattcast", "run", "--models", "gpt"], {}, "wattcast", "--models"),
    (["-m", "simulator"], {"WATTCAST_HOUSES": "x"}, "simulator", "--houses"),
    (["-m", "simulator"], {"WATTCAST_SPEED": "fast"}, "simulator", "--speed"),
    (["-m", "simulator", "--limit", "0"], {}, "simulator", "--limit"),
    (["-m", "simulator", "--window", "-1"], {}, "simulator", "--window"),
    (["-m", "predictor", "--model", "lstm", "--max-batch", "0"], {}, "predictor", "--max-batch"),
    (["-m", "collector", "--log-level", "loud"], {}, "collector", "--log-level"),
    (["-m", "collector", "--broker", "ftp://x"], {}, "collector", "--broker"),
]


def test_every_entry_point_rejects_bad_flags_in_one_line_with_exit_2(tmp_path):
    procs = [
        (
            subprocess.Popen(
                [sys.executable, *argv],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=tmp_path,
                env={**os.environ, **env},
            ),
            prefix,
            flag,
        )
        for argv, env, prefix, flag in USAGE_CASES
    ]
    for (proc, prefix, flag), case in zip(procs, USAGE_CASES, strict=True):
        stdout, stderr = proc.communicate(timeout=120)
        out = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        assert proc.returncode == 2, (case, stderr)
        assert flag in _one_error_line(out, prefix), (case, stderr)
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing left behind
    # --help still helps, whatever the environment holds (it was a traceback)
    out = _run("-m", "simulator", "--help", cwd=tmp_path, env={"WATTCAST_HOUSES": "x"})
    assert out.returncode == 0 and "usage:" in out.stdout and "Traceback" not in out.stderr, out.stderr


def _with_value(tmp_path: Path, row: int, column: int, value: str) -> Path:
    with gzip.open(sample_path(), "rt", newline="") as fh:
        lines = [next(fh).rstrip("\r\n") for _ in range(200)]
    cells = lines[row].split(";")
    cells[column] = value
    lines[row] = ";".join(cells)
    path = tmp_path / "bad.txt"
    path.write_text("\r\n".join(lines) + "\r\n", newline="")
    return path


def test_a_value_the_contract_rejects_fails_at_read_time_naming_file_and_row(tmp_path):
    bad = _with_value(tmp_path, 150, 2, "1e7")  # data row 150: Global_active_power 10 GW
    for argv in (
        ["-m", "wattcast", "evaluate", "--data", str(bad), "--fraction", "1"],
        ["-m", "wattcast", "run", "--data", str(bad), "--fraction", "1"],
    ):
        out = _run(*argv, cwd=tmp_path)
        assert out.returncode == 1, out.stderr
        line = _one_error_line(out, "wattcast")
        assert str(bad) in line and "row 150" in line and "Global_active_power" in line, line
    sim = _run("-m", "simulator", "--data", str(bad), "--fraction", "1", "--broker", "mqtt://127.0.0.1:9", cwd=tmp_path)
    assert sim.returncode == 1 and "row 150" in _one_error_line(sim, "simulator")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt"]  # no runs/ folder: nothing started


def test_limits_the_machine_cannot_meet_are_refused_before_anything_starts(tmp_path):
    from wattcast.capacity import CapacityError, Plan, check

    with pytest.raises(CapacityError, match="memory"):
        check(Plan(100_000, 4099, 4, None), timeout=1e9, memory=16 * 2**30)
    with pytest.raises(CapacityError, match="--timeout"):
        check(Plan(1, 4099, 4, 1.0), timeout=1800)  # real time: 68 h
    check(Plan(1, 4099, 4, None), timeout=1800, memory=2 * 2**30)  # the default run fits
    out = _run("-m", "wattcast", "run", "--speed", "1", cwd=tmp_path)
    assert out.returncode == 2 and "--timeout" in _one_error_line(out, "wattcast")
    out = _run("-m", "wattcast", "run", "--houses", "5000000", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "GiB" in _one_error_line(out, "wattcast") or "--timeout" in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_simulators_memory_grows_with_what_is_replayed_not_with_houses_times_split():
    from simulator.streams import house_streams

    val = load_split().val
    tracemalloc.start()
    try:
        streams = house_streams(val, 2000, limit=2)  # np.roll copies: 2000 x 230 KB = 460 MB
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, peak
    assert len(streams) == 2000 and all(len(s) == 2 for s in streams)
    # the readings are what they were: house k is the split rotated by k * n / houses, restamped
    k, n = 7, len(val)
    offset = k * n // 2000
    assert streams[k].values_at(1) == val.iloc[offset + 1][list(val.columns[2:])].tolist()
    assert streams[k].ts_at(1) == int(val["ts"].iloc[0]) + 60
    assert streams[0].ts_at(1) == int(val["ts"].iloc[1])


def _needs_mosquitto():
    if available_kind("mosquitto") is None:
        pytest.skip("needs mosquitto (apt-get install mosquitto)")


@pytest.mark.integration
def test_ctrl_c_stops_nodes_first_and_the_broker_last_quietly_with_exit_130(tmp_path):
    _needs_mosquitto()
    # its own process group, like a shell's foreground job: Ctrl-C sends SIGINT to all of it
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wattcast",
            "run",
            "--speed",
            "30",
            "--limit",
            "200",
            "--models",
            "persistence",
            "--store",
            str(tmp_path / "r" / "w.db"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        start_new_session=True,
    )
    logs = tmp_path / "r" / "logs"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and "nodes online" not in _peek(proc):
            time.sleep(0.1)
        assert proc.poll() is None, _peek(proc)
        time.sleep(1.0)  # a moment of replay (what is checked does not depend on it)
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        err = _stderr_seen.get(proc.pid, "") + err
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "reconnect" not in err.lower(), err[-2000:]
    for log in logs.glob("*.log"):
        text = log.read_text()
        assert "reconnect" not in text.lower() and "Traceback" not in text, (log.name, text[-1500:])
    broker_log = (tmp_path / "r" / "broker" / "broker.log").read_text()
    # every node said goodbye to a broker that was still there (its client id is its user name)
    for node in ("collector", "predictor-persistence", "simulator"):
        assert f"Client {node} disconnected." in broker_log, broker_log[-3000:]
    assert took < 15, took  # was 11 s with the broker dying first; about 1-2 s now


_stderr_seen: dict[int, str] = {}


def _peek(proc: subprocess.Popen) -> str:
    """What the run printed so far on stderr (non-blocking)."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    text = _stderr_seen.get(proc.pid, "")
    while sel.select(timeout=0):
        chunk = os.read(proc.stderr.fileno(), 65536).decode(errors="replace")
        if not chunk:
            break
        text += chunk
    sel.close()
    _stderr_seen[proc.pid] = text
    return text


@pytest.mark.integration
def test_with_a_shared_broker_node_ids_are_stable_and_nothing_stays_retained(broker, mqtt_bus, tmp_path):
    out = _run(
        "-m",
        "wattcast",
        "run",
        "--broker",
        broker.url,
        "--limit",
        "30",
        "--models",
        "persistence",
        "--json",
        "--quiet",
        "--store",
        str(tmp_path / "a" / "w.db"),
        cwd=tmp_path,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    nodes = json.loads(out.stdout)["nodes"]
    assert set(nodes) == {"collector", "predictor-persistence", "simulator"}, nodes
    watcher = mqtt_bus(session=False)
    watcher.subscribe("wattcast/v1/status/#")
    deadline = time.monotonic() + 3.0  # retained messages come right after SUBACK
    got = []
    while time.monotonic() < deadline:
        try:
            got.append(watcher.inbox.get(timeout=0.2))
        except Exception:
            continue
    assert [m.topic for m in got if m.payload] == [], got


def test_an_interrupt_is_a_flag_the_run_checks_and_its_handler_takes_no_lock():
    import threading

    from wattcast.runner.processes import Interrupt

    interrupt = Interrupt()
    try:
        # the handler runs between two bytecodes of the main thread, wherever it is: it must not
        # take a lock that thread may hold (Event.set() in it once hung a run for good)
        assert interrupt.previous and signal.getsignal(signal.SIGINT) == interrupt._press
        interrupt.sleep(0.01)  # nothing pressed: returns
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            while time.monotonic() - t0 < 30:
                interrupt.sleep(0.05)
        assert time.monotonic() - t0 < 10
    finally:
        interrupt.restore()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
