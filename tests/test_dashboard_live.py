"""The dashboard against real parts: a real ``wattcast run`` (its own mosquitto) seen in headless
Chromium, and a broker restart under a running ``wattcast dashboard``.

The browser is Debian's ``chromium`` driven by Playwright for Python (``executable_path``: no
browser download); ``.ci/run`` installs both.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from wattcast.bus import BrokerConfig, MqttBus
from wattcast.contract import Metrics, metrics_topic
from wattcast.credentials import RUN_USERS, deployment_conf, ensure_passwords, prepare_auth_dir
from wattcast.runner import scores_from_store

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
MODELS = ["persistence", "linear", "gbm"]


def sync_playwright():
    api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright for Python is not installed (pip install -e '.[dev]')"
    )
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("no Chromium to drive: apt-get install chromium")
    return api.sync_playwright()


class Lines:
    """The lines of a stream, read on a thread; ``wait_for(text)`` returns the first line that has it."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line)
            self._new.put(line)

    def wait_for(self, text: str, timeout: float, proc: subprocess.Popen) -> str:
        for line in self.lines:
            if text in line:
                return line
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._new.get(timeout=0.5)
            except queue.Empty:
                assert proc.poll() is None, f"exited with {proc.returncode} before {text!r}:\n{''.join(self.lines)}"
                continue
            if text in line:
                return line
        raise AssertionError(f"no {text!r} within {timeout:.0f} s:\n{''.join(self.lines)}")


def test_a_real_run_in_headless_chromium(tmp_path):
    pw = sync_playwright()
    db = tmp_path / "wattcast.db"
    screenshot = tmp_path / "dashboard.png"
    primary, secondary = os.openpty()  # a terminal on stdin: the run keeps its page up until Enter
    args = ["--dashboard", "--speed", "600", "--limit", "240", "--houses", "2", "--models", *MODELS]
    proc = subprocess.Popen(
        [sys.executable, "-m", "wattcast", "run", *args, "--store", str(db), "--json"],
        stdin=secondary,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    os.close(secondary)
    err = Lines(proc.stderr)
    try:
        url = err.wait_for("dashboard: http://", 180, proc).split("dashboard: ", 1)[1].strip()
        with pw as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            # the page's CSP forbids eval, which Playwright's wait_for_function uses (the CSP is tested in
            # tests/test_dashboard.py); an error of the page itself still fails the test (below)
            page = browser.new_page(viewport={"width": 1280, "height": 1000}, bypass_csp=True)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            # live: the charts get points while the replay runs
            live = "w => w.points.mse > 3 && w.points.rolling > 3 && w.points.house > 10"
            page.wait_for_function(f"({live})(window.wattcast)", timeout=180_000)
            assert proc.poll() is None, "the replay was over before the page saw it live"
            assert page.locator("#connection").inner_text().startswith("connected to mqtt://127.0.0.1:")
            # a house can be chosen: its own readings and forecasts are drawn
            page.wait_for_function("document.querySelectorAll('#house option').length === 2", timeout=60_000)
            page.select_option("#house", "h001")
            page.wait_for_function(
                "window.wattcast.last.house.id === 'h001' && window.wattcast.points.house > 10", timeout=60_000
            )
            h001 = page.evaluate("window.wattcast.last.house")
            assert h001["actual"] and set(h001["forecasts"]) == set(MODELS)

            err.wait_for("press Enter to end the run", 600, proc)  # the replay is over; its page stays
            store = scores_from_store(db, MODELS, houses=2)["models"]
            want = {m: store[m]["n"] for m in MODELS}
            page.wait_for_function(
                "want => Object.entries(want).every(([m, n]) => "
                "(window.wattcast.last.models.find(x => x.model === m) || {}).n === n)",
                arg=want,
                timeout=60_000,
            )
            shown = {m["model"]: m for m in page.evaluate("window.wattcast.last.models")}
            for model in MODELS:
                assert shown[model]["mse"] == pytest.approx(store[model]["mse"], rel=1e-9), model
                row = page.locator(f'#models tr[data-model="{model}"]')
                assert row.locator("td.n").inner_text() == str(store[model]["n"])
                assert row.locator("td.mse").inner_text() == f"{store[model]['mse']:.4f}"
                assert row.locator("td.unmatched").inner_text() == str(store[model]["unmatched"])
            base = store["persistence"]["mse"]
            assert shown["gbm"]["skill"] == pytest.approx(1 - store["gbm"]["mse"] / base, rel=1e-9)
            page.wait_for_function("window.wattcast.last.progress && window.wattcast.last.progress.done === 480")
            page.screenshot(path=str(screenshot), full_page=True)
            if os.environ.get("WATTCAST_DASHBOARD_SCREENSHOT"):  # docs/dashboard.png is made so
                shutil.copy(screenshot, os.environ["WATTCAST_DASHBOARD_SCREENSHOT"])
            browser.close()
            assert not errors, errors
        os.write(primary, b"\n")
        out, _ = proc.communicate(timeout=120)
    finally:
        os.close(primary)
        if proc.poll() is None:  # Ctrl-C: the run stops its nodes and broker (a SIGKILL would orphan them)
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, "".join(err.lines)
    assert json.loads(out)["models"]["gbm"]["n"] == store["gbm"]["n"]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20_000


def state(url: str) -> dict:
    with urllib.request.urlopen(url + "api/state", timeout=30) as r:
        return json.loads(r.read())


def wait_state(url: str, check, what: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        snap = state(url)
        if check(snap):
            return snap
        assert time.monotonic() < deadline, f"{what} not seen within {timeout:.0f} s: {snap['broker']}"
        time.sleep(0.1)


def test_the_dashboard_follows_a_broker_that_restarts_and_says_so(broker_factory, tmp_path):
    passwords = ensure_passwords(users=RUN_USERS)[0]
    auth = prepare_auth_dir(tmp_path / "auth", passwords)
    broker = broker_factory(common=False, anonymous=False, extra_conf=deployment_conf(auth), prefer="mosquitto")
    url_file = tmp_path / "url"
    env = {**os.environ, "WATTCAST_MQTT_USERNAME": "dashboard", "WATTCAST_MQTT_PASSWORD": passwords["dashboard"]}
    dash = subprocess.Popen(
        [sys.executable, "-m", "wattcast", "dashboard", "--broker", broker.url, "--port", "0", "--url-file", str(url_file)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    collector = None
    try:
        deadline = time.monotonic() + 120
        while not url_file.exists():
            assert dash.poll() is None, dash.stderr.read() if dash.stderr else ""
            assert time.monotonic() < deadline, "the dashboard did not start"
            time.sleep(0.05)
        url = url_file.read_text().strip()

        def publish(n: int) -> None:
            nonlocal collector
            if collector is None:
                cfg = BrokerConfig(broker.host, broker.port, "collector", passwords["collector"])
                collector = MqttBus(cfg, "wattcast-collector", session=False).connect(timeout=30)
            m = Metrics("h000", "lstm", 1196680920 + 60 * n, n, 0.25, 0.5, 0.4, n, 0.2, 3600, 0, 5)
            collector.publish(metrics_topic("h000", "lstm"), m.to_json())

        publish(3)
        wait_state(url, lambda s: s["broker"]["connected"] and s["models"] and s["models"][0]["n"] == 3, "n=3")
        collector.close()
        collector = None
        broker.stop()
        down = wait_state(url, lambda s: not s["broker"]["connected"], "the broker lost")
        assert down["models"][0]["n"] == 3  # what it had stays on the page
        broker.start()  # the same port
        wait_state(url, lambda s: s["broker"]["connected"] and s["broker"]["reconnects"] >= 1, "the reconnection")
        # it subscribed again: what comes after the restart is shown
        deadline = time.monotonic() + 60
        while state(url)["models"][0]["n"] != 7:
            publish(7)  # QoS 1 from a new session: resent until the dashboard's resubscription is there
            assert time.monotonic() < deadline, "no metrics after the restart"
            time.sleep(0.5)
    finally:
        if collector is not None:
            collector.close()
        dash.terminate()
        dash.wait(30)
    assert dash.returncode == 0
