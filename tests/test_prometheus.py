"""The collector's /metrics for Prometheus: the same figures as its store, scraped over HTTP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from helpers import REPO, stop_all
from prometheus_client.parser import text_string_to_metric_families

from collector.node import CollectorNode
from collector.prometheus import Exporter
from wattcast.broker import PrivateBroker, free_port
from wattcast.bus import MemoryHub, Message
from wattcast.contract import Forecast, Reading, Status, status_topic
from wattcast.store import Store

T0 = 1_196_680_920


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of http://127.0.0.1:port/metrics: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def score(samples, name: str, run: str, house: str, model: str) -> float:
    return samples[(name, tuple(sorted({"run": run, "house": house, "model": model}.items())))]


def test_the_exporter_serves_what_the_collector_scores(tmp_path):
    hub = MemoryHub()
    bus = hub.connect()
    store = Store(tmp_path / "s.db")
    exporter = Exporter()
    port = exporter.serve(0)
    try:
        node = CollectorNode(bus, store, ("persistence",), exporter=exporter)
        messages = []
        for seq in range(12):
            r = Reading("h000", seq, T0 + 60 * seq, 1.0 + 0.1 * seq, 0.1, 240.0, 4.0, 0.0, 1.0, 17.0, sent_at=100.0 + seq)
            messages.append((r.topic, r.to_json()))
            if seq >= 1:
                f = Forecast("h000", "persistence", "v", seq, r.ts, r.ts + 300, r.global_active_power, 100.0 + seq)
                messages.append((f.topic, f.to_json()))
        status = Status("predictor-persistence", "online", "predictor", 1.0, {"forecasts": 11}, "persistence")
        messages.append((status_topic(status.node), status.to_json()))
        node.handle([Message(t, p, received_at=100.5 + i * 0.01) for i, (t, p) in enumerate(messages)])
        node.tick()  # publishes the metrics
        samples = scrape(port)
        m = node.board.metrics("h000", "persistence")
        run = m.run
        assert score(samples, "wattcast_scored_forecasts", run, "h000", "persistence") == m.n == 6
        assert score(samples, "wattcast_mse_kw2", run, "h000", "persistence") == pytest.approx(m.mse, rel=1e-12)
        assert score(samples, "wattcast_rolling_mse_kw2", run, "h000", "persistence") == pytest.approx(m.rolling_mse)
        assert score(samples, "wattcast_pending_forecasts", run, "h000", "persistence") == m.pending == 5
        assert samples[("wattcast_forecast_latency_seconds_count", (("model", "persistence"),))] == 11
        assert samples[("wattcast_node_up", (("node", "predictor-persistence"), ("role", "predictor")))] == 1
        assert samples[("wattcast_node_counter", (("counter", "forecasts"), ("node", "predictor-persistence")))] == 11
        exporter.forget(run)
        assert not any(name == "wattcast_mse_kw2" for name, _ in scrape(port))
    finally:
        exporter.close()
        store.close()


PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


class PrometheusServer:
    """Debian's Prometheus on a free loopback port, scraping ``target`` every second, its database in ``workdir``."""

    def __init__(self, workdir: Path, target: str) -> None:
        if not os.access(PROMETHEUS, os.X_OK):
            pytest.skip("no Prometheus server: apt-get install prometheus")
        workdir.mkdir(parents=True)
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"scrape_configs:\n  - job_name: wattcast\n    static_configs:\n      - targets: ['{target}']\n"
        )
        self.port = free_port()
        self.log = (workdir / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}"]
            + [f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def query(self, promql: str) -> list[dict]:
        """The instant vector of ``promql`` (Prometheus' HTTP API), [] while it is not up yet."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except OSError:
            assert self.proc.poll() is None, f"prometheus exited with {self.proc.returncode}"
            return []
        assert body["status"] == "success", body
        return body["data"]["result"]

    def close(self) -> None:
        stop_all([self.proc])
        self.log.close()


@pytest.mark.integration
@pytest.mark.parametrize(
    "prometheus_server", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["scrape", "prometheus-server"]
)
def test_a_live_collectors_metrics_equal_its_store(tmp_path, prometheus_server):
    broker = PrivateBroker(workdir=tmp_path / "broker")
    if broker.kind != "mosquitto":
        pytest.skip("needs the mosquitto binary (apt-get install mosquitto)")
    port = free_port()
    server = PrometheusServer(tmp_path / "prometheus", f"127.0.0.1:{port}") if prometheus_server else None
    broker.start()
    db = tmp_path / "w.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTCAST_")}
    env["OPENBLAS_NUM_THREADS"] = "1"
    common = ["--broker", broker.url]
    logs = (tmp_path / "nodes.log").open("w")

    def spawn(*args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", *args, *common], env=env, cwd=REPO, stdout=logs, stderr=logs)

    models = ("persistence", "linear")
    procs = [
        spawn("collector", "--store", str(db), "--models", *models, "--prometheus-port", str(port), "--drain", "5"),
        *(spawn("predictor", "--model", m) for m in models),
    ]
    try:
        sim = subprocess.run(
            [sys.executable, "-m", "simulator", *common, "--limit", "300", "--speed", "max", "--await-models", *models]
            + ["--await-nodes", "collector", "--wait-for", "collector", *(f"predictor-{m}" for m in models)],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert sim.returncode == 0, sim.stderr[-2000:]
        deadline = time.monotonic() + 120
        store = Store(db)
        try:
            while not store.db.execute("SELECT COUNT(*) FROM runs WHERE finished_at IS NOT NULL").fetchone()[0]:
                assert time.monotonic() < deadline, "the collector did not finish the run"
                time.sleep(0.2)
                store.db.commit()  # a fresh read snapshot
            summary = {(r["house"], r["model"]): r for r in store.summary(store.run())}
            run = store.run()
        finally:
            store.close()
        samples = scrape(port)
        for model in models:
            row = summary[("h000", model)]
            assert row["n"] == 294
            assert score(samples, "wattcast_scored_forecasts", run, "h000", model) == row["n"]
            assert score(samples, "wattcast_mse_kw2", run, "h000", model) == pytest.approx(row["mse"], rel=1e-12)
            assert samples[("wattcast_forecast_latency_seconds_count", (("model", model),))] == 299
        # the simulator has exited, its final status flushed to the broker: the collector gets it soon
        simulator_up = ("wattcast_node_up", (("node", "simulator"), ("role", "simulator")))
        while scrape(port).get(simulator_up) != 0:
            assert time.monotonic() < deadline, "the simulator's offline status never reached /metrics"
            time.sleep(0.2)
        if server is not None:  # a real Prometheus scraped the collector: its database holds the store's scores
            for model in models:
                row, labels = summary[("h000", model)], f'run="{run}",house="h000",model="{model}"'
                deadline = time.monotonic() + 120
                while [float(v["value"][1]) for v in server.query(f"wattcast_scored_forecasts{{{labels}}}")] != [row["n"]]:
                    assert time.monotonic() < deadline, f"Prometheus never scraped the final count of {model}"
                    time.sleep(0.5)
                (mse,) = server.query(f"wattcast_mse_kw2{{{labels}}}")
                assert float(mse["value"][1]) == pytest.approx(row["mse"], rel=1e-12)
                assert mse["metric"]["job"] == "wattcast"
            (up,) = server.query('up{job="wattcast"}')
            assert up["value"][1] == "1"
    finally:
        if server is not None:
            server.close()
        stop_all(procs)
        logs.close()
        broker.close()


def test_a_port_in_use_is_one_clear_line(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "collector", "--store", str(tmp_path / "w.db"), "--prometheus-port", str(port)]
            + ["--broker", "mqtt://127.0.0.1:1"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and lines[0].startswith("collector: error: "), out.stderr


# ---------------------------------------------------------------- the monitoring profile


def test_the_monitoring_profile_scrapes_the_collector_and_its_board_plots_exported_metrics():
    import json
    import re

    from ruamel.yaml import YAML  # with check-jsonschema (the dev extra)

    def load(*parts: str):
        return YAML(typ="safe", pure=True).load(REPO.joinpath(*parts).read_text())

    compose = load("docker-compose.yml")
    services = compose["services"]
    assert services["prometheus"]["profiles"] == services["grafana"]["profiles"] == ["monitoring"]
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            assert not source.startswith("./") or (REPO / source).exists(), volume
    port = re.search(r"WATTCAST_PROMETHEUS_PORT:-(\d+)", services["collector"]["environment"]["WATTCAST_PROMETHEUS_PORT"])
    scrape = load("monitoring", "prometheus.yml")
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == [f"collector:{port.group(1)}"]

    exported = set()
    for family in Exporter().registry.collect():
        exported |= {family.name, *(s.name for s in family.samples)}
    board = json.loads((REPO / "monitoring" / "grafana" / "dashboards" / "wattcast.json").read_text())
    datasource = load("monitoring", "grafana", "provisioning", "datasources", "prometheus.yml")
    uid = datasource["datasources"][0]["uid"]
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in board["templating"]["list"]]
    used = {name for e in exprs for name in re.findall(r"\bwattcast_[a-z0-9_]+", e)}
    assert used and used <= exported | {f"{n}_bucket" for n in exported}, used - exported
    assert {p["datasource"]["uid"] for p in board["panels"]} == {uid}
