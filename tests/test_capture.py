"""Record and replay (issue 14, part 3): the capture format, the replay's rewriting, and a real round trip."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, stop_all

from simulator.capture import replay_capture, rewritten
from wattcast.broker import PrivateBroker
from wattcast.bus import MemoryHub, Message
from wattcast.capture import Captured, CaptureError, read_capture, to_line
from wattcast.contract import Forecast, Reading, decode
from wattcast.store import Store

T0 = 1_196_680_920


def reading(seq: int, run: str = "r1") -> Reading:
    return Reading("h000", seq, T0 + 60 * seq, 1.5, 0.1, 240.0, 4.0, 0.0, 1.0, 17.0, sent_at=1000.0 + seq, run=run)


def test_lines_round_trip_text_and_binary_payloads(tmp_path):
    path = tmp_path / "c.jsonl.gz"
    r = reading(0)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(to_line(Message(r.topic, r.to_json(), retain=False), 1000.5))
        fh.write(to_line(Message("other/topic", b"\xff\x00", retain=True), 1001.0))
    got = list(read_capture(path))
    assert got == [Captured(1000.5, r.topic, r.to_json(), False), Captured(1001.0, "other/topic", b"\xff\x00", True)]


@pytest.mark.parametrize(
    "line, why",
    [
        ("{not json", "line 2: not JSON"),
        ("[1, 2]", "line 2: not a JSON object"),
        ('{"t": "x", "topic": "a"}', "line 2: needs a number t and a topic"),
        ('{"t": 1, "topic": "a"}', "line 2: needs a payload"),
        ('{"t": 1, "topic": "a", "payload_b64": "%%"}', "line 2: payload_b64 is not base64"),
    ],
)
def test_a_bad_line_is_named_by_file_and_line(tmp_path, line, why):
    path = tmp_path / "c.jsonl"
    path.write_text('{"t": 1, "topic": "a", "payload": "x"}\n' + line + "\n")
    with pytest.raises(CaptureError, match=f"{path}: {why}"):
        list(read_capture(path))


def test_the_replay_moves_event_and_wall_times_and_renames_later_loops():
    r = reading(3)
    shifted = decode(r.topic, rewritten(Captured(1003.0, r.topic, r.to_json()), 600, 50.0, loop=1))
    assert (shifted.ts, shifted.sent_at, shifted.run, shifted.seq) == (r.ts + 600, r.sent_at + 50.0, "r1", 3)
    f = Forecast("h000", "lstm", "v", 3, r.ts, r.ts + 300, 1.0, 1003.0, run="r1")
    g = decode(f.topic, rewritten(Captured(1003.1, f.topic, f.to_json()), 60, 0.0, loop=2))
    assert (g.issued_at, g.target_ts, g.run) == (f.issued_at + 60, f.target_ts + 60, "r1-2")
    odd = Captured(1.0, "wattcast/v1/h000/reading", b"not json")
    assert rewritten(odd, 60, 1.0, 2) == b"not json"


def test_the_live_nodes_own_statuses_progress_and_metrics_are_not_replayed():
    hub = MemoryHub()
    bus, watcher = hub.connect(), hub.connect()
    watcher.subscribe("#")
    r = reading(0)
    messages = [
        Captured(1.0, "wattcast/v1/status/collector", b""),  # a cleared retained status
        Captured(2.0, r.topic, r.to_json()),
        Captured(3.0, "wattcast/v1/progress/collector", b'{"node":"collector","house":"h000","seq":0}'),
        Captured(4.0, "wattcast/v1/h000/metrics/lstm", b"{}"),
        Captured(5.0, "someone/else", b"kept"),
    ]
    assert replay_capture(bus, messages, None) == 2
    assert [m.topic for m in list(watcher.inbox.queue)] == [r.topic, "someone/else"]


def test_loops_follow_each_other_in_event_time_as_runs_of_their_own():
    hub = MemoryHub()
    bus, watcher = hub.connect(), hub.connect()
    watcher.subscribe("wattcast/v1/#")
    messages = [Captured(1000.0 + k, reading(k).topic, reading(k).to_json()) for k in range(3)]
    now = T0 + 10 * 86400 + 17  # ten days after the capture, 17 s into a minute
    assert replay_capture(bus, messages, None, loops=2, shift_to_now=True, clock=lambda: now) == 6
    got = [decode(m.topic, m.payload) for m in list(watcher.inbox.queue)]
    assert [g.ts for g in got] == [now - 17 + 60 * k for k in range(6)]
    assert [g.run for g in got] == ["r1"] * 3 + ["r1-2"] * 3


@pytest.mark.integration
def test_a_recorded_run_replayed_into_a_fresh_collector_scores_the_same(tmp_path):
    brokers = [PrivateBroker(workdir=tmp_path / f"broker{k}") for k in (1, 2)]
    if brokers[0].kind != "mosquitto":
        pytest.skip("needs the mosquitto binary (apt-get install mosquitto)")
    for b in brokers:
        b.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTCAST_")}
    env["OPENBLAS_NUM_THREADS"] = "1"
    capture = tmp_path / "run.jsonl.gz"
    procs: list[subprocess.Popen] = []
    try:
        recorder = subprocess.Popen(
            [sys.executable, "-m", "wattcast", "record", "--broker", brokers[0].url, "--out", str(capture)],
            env=env,
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(recorder)
        assert recorder.stderr is not None and recorder.stderr.readline().startswith("recording "), "recorder not ready"
        models = ["persistence", "linear"]
        run = subprocess.run(
            [sys.executable, "-m", "wattcast", "run", "--broker", brokers[0].url, "--limit", "200", "--models", *models]
            + ["--json", "--quiet", "--store", str(tmp_path / "first" / "w.db")],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        first = json.loads(run.stdout)
        recorder.send_signal(signal.SIGINT)  # Ctrl-C ends a recording normally
        assert recorder.wait(60) == 0 and "recorded " in recorder.stderr.read()
        kinds = {m.topic.split("/")[3] if m.topic.count("/") >= 3 else m.topic for m in read_capture(capture)}
        assert {"reading", "forecast", "end"} <= kinds

        store = tmp_path / "second.db"
        collector = subprocess.Popen(
            [sys.executable, "-m", "collector", "--broker", brokers[1].url, "--store", str(store), "--models", *models]
            + ["--exit-on-end", "--drain", "10"],
            env=env,
            cwd=REPO,
        )
        procs.append(collector)
        replay = subprocess.run(
            [sys.executable, "-m", "simulator", "--broker", brokers[1].url, "--capture", str(capture), "--speed", "max"]
            + ["--wait-for", "collector"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert replay.returncode == 0, replay.stderr[-2000:]
        assert collector.wait(120) == 0
        s = Store(store)
        try:
            summary = {r["model"]: r for r in s.summary(s.run())}
            assert s.run() == first["run"]
        finally:
            s.close()
        for model in models:
            assert summary[model]["n"] == first["models"][model]["n"] > 150
            assert summary[model]["mse"] == pytest.approx(first["models"][model]["mse"], rel=1e-12)
    finally:
        stop_all(procs)
        for b in brokers:
            b.close()


def test_a_bad_capture_is_one_line_from_the_simulator(tmp_path):
    bad = Path(tmp_path / "bad.jsonl")
    bad.write_text('{"t": 1, "topic": "a", "payload": "x"}\nnot json\n')
    out = subprocess.run(
        [sys.executable, "-m", "simulator", "--capture", str(bad), "--broker", "mqtt://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and lines == [f"simulator: error: {bad}: line 2: not JSON (Expecting value)"], out.stderr
