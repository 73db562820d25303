"""docker-compose.yml without a Docker engine.

* Static checks of the file: the compose specification (check-jsonschema), a pinned
  eclipse-mosquitto 2.0.x with healthcheck, config and persistence volume, one image
  for every application service, one predictor per model, credentials by role.
* The deployment as local processes: every service of the file is started in
  ``depends_on`` order with its own command and environment (host names mapped to
  loopback, container paths to temporary folders, interpolation from a generated
  ``.env``): the init step (mosquitto/init-auth.sh) makes the password file, a real
  mosquitto runs the repo's mosquitto/mosquitto.conf on a free port, healthchecks
  gate the start of dependants as in compose.  The collector's scores must equal
  those of ``wattcast run`` on the same data, also when the broker restarts in the
  middle of the replay.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO

from wattcast import config
from wattcast.broker import PrivateBroker, available_kind, free_port
from wattcast.contract import MODELS
from wattcast.credentials import (
    CONTAINER_AUTH_DIR,
    CONTAINER_CONFIG_DIR,
    CONTAINER_DATA_DIR,
    DEPLOYMENT_CONF,
    USERS,
    ensure_passwords,
    password_env_var,
    read_env_file,
    secured_private_broker,
    update_env_file,
)

COMPOSE_FILE = REPO / "docker-compose.yml"
BROKER_SERVICE = "mosquitto"
BROKER_PORT = 1883  # inside the compose network only; never used on this machine
MATCHED = 4093  # forecasts of the default validation split whose target lies in it


def load_yaml(path: Path) -> Any:
    try:
        import yaml
    except ImportError:  # ruamel.yaml comes with check-jsonschema (the dev extra)
        from ruamel.yaml import YAML

        return YAML(typ="safe", pure=True).load(path.read_text())
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


# ------------------------------------------------------------------ compose semantics

_VAR = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose variable interpolation: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}."""

    def sub(m: re.Match) -> str:
        if m.group(1):
            return "$"
        name = m.group(2) or m.group(5)
        op, arg = m.group(3), m.group(4) or ""
        val = env.get(name)
        if op in (":-", ":?") and not val or op in ("-", "?") and val is None:
            if op.endswith("?"):
                raise AssertionError(f"compose would stop: {name}: {arg}")
            return arg
        return val or ""

    return _VAR.sub(sub, value)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {d: (spec or {}).get("condition", "service_started") for d, spec in deps.items()}


def start_order(services: dict[str, Any]) -> list[str]:
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"depends_on cycle: {' -> '.join((*path, name))}"
        if name in order:
            return
        for dep in depends_on(services[name]):
            assert dep in services, f"{name} depends on unknown service {dep}"
            visit(dep, (*path, name))
        order.append(name)

    for name in services:
        visit(name, ())
    return order


def app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The pipeline's services built from this repo (the Dockerfile): not the broker's, and not those of an
    optional profile (the dashboard)."""
    return {n: s for n, s in compose["services"].items() if "build" in s and not s.get("profiles")}


# ---------------------------------------------------------------------- static checks


def test_compose_file_follows_the_compose_specification():
    exe = shutil.which("check-jsonschema")
    if exe is None:
        pytest.skip("check-jsonschema is not installed (pip install -e '.[dev]')")
    r = subprocess.run(
        [exe, "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_broker_service_is_pinned_configured_persistent_and_healthchecked(compose):
    services = compose["services"]
    broker = services[BROKER_SERVICE]
    assert re.fullmatch(r"eclipse-mosquitto:2\.0\.\d+", broker["image"]), broker["image"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in broker["volumes"]}
    assert mounts[CONTAINER_CONFIG_DIR] == "./mosquitto"
    assert broker["command"] == ["mosquitto", "-c", f"{CONTAINER_CONFIG_DIR}/{DEPLOYMENT_CONF.name}"]
    assert mounts[CONTAINER_DATA_DIR] in compose["volumes"], "persistence must be a named volume"
    assert mounts[CONTAINER_AUTH_DIR] in compose["volumes"]
    conf = DEPLOYMENT_CONF.read_text()
    assert re.search(rf"^persistence_location {CONTAINER_DATA_DIR}/$", conf, re.M)
    assert re.search(r"^allow_anonymous false$", conf, re.M)
    test = " ".join(broker["healthcheck"]["test"])
    assert "mosquitto_sub" in test and "$$SYS/broker/version" in test and "-C 1" in test and "-W 3" in test

    init = services["mosquitto-init"]
    assert init["image"] == broker["image"]
    assert depends_on(broker) == {"mosquitto-init": "service_completed_successfully"}
    # The init step gets every user's password variable (and nothing else secret).
    init_env = environment(init)
    assert {k for k in init_env if k.startswith("WATTCAST_PASSWORD_")} == {password_env_var(u) for u in USERS}
    for key, value in init_env.items():
        if key.startswith("WATTCAST_PASSWORD_"):
            assert value == f"${{{key}:-}}"


def test_application_services_share_one_image_and_wait_for_a_healthy_broker(compose):
    apps = app_services(compose)
    assert set(apps) == {"simulator", "collector", *(f"predictor-{m}" for m in MODELS)}
    assert len({(s["image"], json.dumps(s["build"], sort_keys=True)) for s in apps.values()}) == 1
    assert len({s["image"] for s in apps.values()}) == 1
    for name, service in apps.items():
        assert depends_on(service).get(BROKER_SERVICE) == "service_healthy" or all(
            depends_on(apps[d]).get(BROKER_SERVICE) == "service_healthy" for d in depends_on(service)
        ), name
        cmd = service["command"]
        assert isinstance(cmd, list) and cmd[:2] == ["python", "-m"], f"{name}: exec form python -m <module>"
        env = environment(service)
        # Each node logs in as the user named like its node id, with that user's password variable.
        assert env[config.ENV_USERNAME] == name and name in USERS
        assert env[config.ENV_PASSWORD] == f"${{{password_env_var(name)}:-}}"
        assert env[config.ENV_BROKER] == f"mqtt://{BROKER_SERVICE}:{BROKER_PORT}"
        known = {getattr(config, k) for k in dir(config) if k.startswith("ENV_")}
        assert set(env) <= known, f"{name}: variables not read by the entry points: {set(env) - known}"
    # The simulator replays only once every node that consumes its readings reports
    # online (and so is subscribed): it starts after them and waits for their status.
    sim = apps["simulator"]
    others = sorted(n for n in apps if n != "simulator")
    assert sorted(environment(sim)[config.ENV_WAIT_FOR].split(",")) == others
    assert all(depends_on(sim).get(n) in ("service_started", "service_healthy") for n in others)


def test_one_predictor_service_per_model(compose):
    predictors = {n: s for n, s in app_services(compose).items() if s["command"][2] == "predictor"}
    assert sorted(environment(s)[config.ENV_MODEL] for s in predictors.values()) == sorted(MODELS)
    for name, s in predictors.items():
        assert name == f"predictor-{environment(s)[config.ENV_MODEL]}"


def test_collector_keeps_its_store_in_a_volume(compose):
    collector = compose["services"]["collector"]
    store = environment(collector)[config.ENV_STORE]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in collector["volumes"]}
    home = next(m for m in mounts if store.startswith(m + "/"))
    assert mounts[home] in compose["volumes"]


def test_predictors_keep_their_state_in_a_volume(compose):
    predictors = [s for n, s in compose["services"].items() if n.startswith("predictor-")]
    for service in predictors:
        state_dir = environment(service)[config.ENV_STATE_DIR]
        mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
        assert mounts.get(state_dir) in compose["volumes"]
    assert re.search(r"mkdir -p .*/state", (REPO / "Dockerfile").read_text())  # owned by the image's user


def test_dockerfile_installs_the_package_and_the_models():
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^RUN pip wheel --no-deps --wheel-dir /wheels \.$", text, re.M)
    assert re.search(r"^RUN pip install --no-deps /tmp/wheels/\*\.whl", text, re.M)
    models_dir = re.search(r"^ENV WATTCAST_MODELS_DIR=(\S+)$", text, re.M).group(1)
    assert re.search(rf"^COPY models {re.escape(models_dir)}$", text, re.M)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".env" in ignored, "the MQTT passwords must never reach the image"


def test_every_variable_of_the_compose_file_is_documented(compose):
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE_FILE.read_text()))
    docs = (REPO / "docs" / "deployment.md").read_text()
    undocumented = sorted(n for n in names if n not in docs and not n.startswith("WATTCAST_PASSWORD_"))
    assert not undocumented
    assert "WATTCAST_PASSWORD_<USER>" in docs or all(password_env_var(u) in docs for u in USERS)


# ------------------------------------------------------------ the services as processes


def _needs_local_tools() -> None:
    if available_kind("mosquitto") is None:
        pytest.skip("needs mosquitto (apt-get install mosquitto)")
    for tool in ("mosquitto_passwd", "sh"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")


@dataclass
class Deployment:
    """docker-compose.yml run as local processes (one per service) against a private mosquitto."""

    compose: dict[str, Any]
    root: Path
    shell_env: dict[str, str]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    broker: PrivateBroker | None = None
    port: int = 0

    def __post_init__(self) -> None:
        self.services = self.compose["services"]
        self.logs = self.root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    # -- mapping a container to this machine --------------------------------------
    def mounts(self, name: str) -> list[tuple[str, str]]:
        """(container path, local path) of a service's volumes, longest container path first."""
        out = []
        for v in self.services[name].get("volumes", []):
            source, target = v.split(":")[:2]
            local = REPO / source[2:] if source.startswith("./") else self.root / "volumes" / source
            local.mkdir(parents=True, exist_ok=True)
            out.append((target, str(local)))
        return sorted(out, key=lambda m: -len(m[0]))

    def localize(self, name: str, text: str) -> str:
        text = interpolate(text, self.shell_env)
        for container, local in self.mounts(name):
            text = re.sub(rf"(?<![\w./-]){re.escape(container)}(?=/|\s|\"|'|$)", lambda _m, x=local: x, text)
        # Host names of the compose network -> loopback, the broker's port -> the private one.
        text = text.replace(f"//{BROKER_SERVICE}:{BROKER_PORT}", f"//127.0.0.1:{self.port}")
        if name == BROKER_SERVICE:
            text = text.replace(f"-h localhost -p {BROKER_PORT}", f"-h 127.0.0.1 -p {self.port}")
        return text

    def env(self, name: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WATTCAST_")}
        env.update({k: self.localize(name, v) for k, v in environment(self.services[name]).items()})
        return env

    def argv(self, name: str, cmd: list[str]) -> list[str]:
        argv = [self.localize(name, c) for c in cmd]
        return [sys.executable if a == "python" else a for a in argv]

    # -- running ------------------------------------------------------------------
    def start(self, name: str) -> None:
        service = self.services[name]
        if name == BROKER_SERVICE:
            conf = self.localize(name, service["command"][-1])
            assert Path(conf).resolve() == DEPLOYMENT_CONF.resolve(), conf
            data = self.localize(name, CONTAINER_DATA_DIR)
            self.broker = secured_private_broker(
                self.localize(name, CONTAINER_AUTH_DIR), workdir=data, prefer="mosquitto"
            ).start()
            self.port = self.broker.port
            return
        log = (self.logs / f"{name}.log").open("w")
        self.procs[name] = subprocess.Popen(
            self.argv(name, service["command"]),
            env=self.env(name),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def healthy(self, name: str) -> bool:
        test = self.services[name]["healthcheck"]["test"]
        if name == BROKER_SERVICE and shutil.which("mosquitto_sub") is None:
            return self._broker_answers()  # no mosquitto-clients here: the same check with paho
        if test[0] == "CMD-SHELL":
            argv = ["sh", "-c", self.localize(name, " ".join(test[1:]))]
        else:
            argv = self.argv(name, test[1:])
        try:
            r = subprocess.run(argv, env=self.env(name), cwd=REPO, capture_output=True, timeout=20)
        except subprocess.TimeoutExpired:
            return False
        return r.returncode == 0

    def _broker_answers(self) -> bool:
        from wattcast.bus import BrokerConfig, MqttBus

        auth = Path(self.localize(BROKER_SERVICE, CONTAINER_AUTH_DIR))
        password = (auth / "healthcheck.password").read_text().strip()
        bus = MqttBus(BrokerConfig("127.0.0.1", self.port, "healthcheck", password), f"hc-{os.getpid()}", session=False)
        try:
            bus.connect(timeout=3)
            bus.subscribe("$SYS/broker/version")
            return bool(bus.inbox.get(timeout=3).payload)
        except Exception:
            return False
        finally:
            bus.close()

    def wait(self, name: str, condition: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            proc = self.procs.get(name)
            if condition == "service_completed_successfully":
                if proc.poll() is not None:
                    assert proc.returncode == 0, f"{name} failed: {self.tail(name)}"
                    return
            elif condition == "service_healthy":
                if name != BROKER_SERVICE:
                    assert proc.poll() is None, f"{name} exited with {proc.returncode}: {self.tail(name)}"
                if self.healthy(name):
                    return
            else:
                return
            assert time.monotonic() < deadline, f"{name} not {condition} after {timeout} s: {self.tail(name)}"
            time.sleep(0.2)

    def up(self, services: list[str] | None = None) -> None:
        """Start the services (default: all) in depends_on order, honouring the conditions."""
        for name in start_order(self.services):
            if services is not None and name not in services:
                continue
            if self.services[name].get("profiles"):  # as compose does: only with --profile
                continue
            for dep, condition in depends_on(self.services[name]).items():
                self.wait(dep, condition)
            self.start(name)

    def tail(self, name: str, lines: int = 15) -> str:
        if name == BROKER_SERVICE and self.broker:
            return self.broker.log_tail(lines)
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def down(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.broker:
            self.broker.stop()


@pytest.fixture
def deployment(compose, tmp_path):
    """``make(**shell_env)``: the compose deployment as processes, with a fresh .env of random passwords."""
    _needs_local_tools()
    made: list[Deployment] = []

    def make(**shell_env: str) -> Deployment:
        env_file = tmp_path / ".env"
        passwords, _ = ensure_passwords()
        update_env_file(env_file, passwords)
        # the collector's /metrics on a free loopback port, not the container's 0.0.0.0:9100
        metrics = {"WATTCAST_PROMETHEUS_PORT": str(free_port()), "WATTCAST_PROMETHEUS_HOST": "127.0.0.1"}
        d = Deployment(compose, tmp_path / "deploy", {**read_env_file(env_file), **metrics, **shell_env})
        made.append(d)
        return d

    yield make
    for d in made:
        d.down()
        for name in (BROKER_SERVICE, *d.procs):
            print(f"--- {name}:\n{d.tail(name, 40)}")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> dict[str, Any]:
    """``wattcast run`` on the default data, all models (its own private broker)."""
    _needs_local_tools()
    store = tmp_path_factory.mktemp("baseline") / "wattcast.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTCAST_")}
    r = subprocess.run(
        [sys.executable, "-m", "wattcast", "run", "--json", "--quiet", "--store", str(store)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout)
    assert result["broker"]["kind"] == "mosquitto"
    return result["models"]


def collector_scores(d: Deployment, timeout: float) -> dict[str, dict[str, Any]]:
    """Wait for the collector to score the end of the stream and exit (--exit-on-end); the newest run's
    summary per model."""
    from wattcast.runner import scores_from_store

    collector = d.procs["collector"]
    try:
        rc = collector.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"collector did not finish within {timeout} s:\n{d.tail('collector')}\n{d.tail('simulator')}")
    assert rc == 0, d.tail("collector")
    assert d.procs["simulator"].wait(30) == 0, d.tail("simulator")
    store = environment(d.services["collector"])[config.ENV_STORE]
    return scores_from_store(Path(d.localize("collector", store)))


def assert_same_scores(got: dict[str, Any], baseline: dict[str, Any]) -> None:
    assert set(got["models"]) == set(MODELS)
    for model in MODELS:
        g, b = got["models"][model], baseline[model]
        assert g["n"] == b["n"] == MATCHED, (model, g, b)
        assert math.isclose(g["mse"], b["mse"], rel_tol=1e-6), (model, g["mse"], b["mse"])
        assert g["unmatched"] == b["unmatched"] and g["pending"] == b["pending"], (model, g, b)
    assert got["rejections"] == 0


@pytest.mark.integration
@pytest.mark.slow
def test_compose_services_as_processes_score_like_wattcast_run(deployment, baseline):
    d = deployment()
    d.up()
    scores = collector_scores(d, timeout=120)
    assert_same_scores(scores, baseline)
    # The init step made the password file and ACL the broker ran with, and a
    # healthcheck password for the broker's own healthcheck.
    auth = Path(d.localize(BROKER_SERVICE, CONTAINER_AUTH_DIR))
    users = {line.split(":")[0] for line in (auth / "passwd").read_text().splitlines()}
    assert users == {*USERS, "healthcheck"}
    assert (auth / "passwd").stat().st_mode & 0o077 == 0
    assert d.healthy(BROKER_SERVICE)


@pytest.mark.integration
@pytest.mark.slow
def test_broker_restart_mid_replay_loses_no_forecast(deployment, baseline):
    # 20,000x real time: the 4,099 readings take ~12 s; the broker restarts at the
    # simulator's first progress line, ~2 s (~670 readings) into the replay.
    d = deployment(WATTCAST_SPEED="20000")
    d.up()
    simulator = d.procs["simulator"]
    deadline = time.monotonic() + 90
    while not re.search(r"simulator: \d+/4099 readings", d.tail("simulator")):
        assert simulator.poll() is None, "the replay ended before the restart: " + d.tail("simulator")
        assert time.monotonic() < deadline, "the replay did not start: " + d.tail("simulator")
        time.sleep(0.05)
    d.broker.restart()
    assert simulator.poll() is None, "the replay ended during the restart"
    scores = collector_scores(d, timeout=150)
    assert_same_scores(scores, baseline)
    # Every node came back with its persistent session (c0) after the restart, under its client id:
    # its user name (use_username_as_clientid), whatever id it asked for.
    after = d.broker.log_path.read_text(errors="replace").rsplit("starting mosquitto", 1)[1]
    for name in app_services(d.compose):
        assert re.search(rf"as {name} \(p\d, c{'1' if name == 'simulator' else '0'},", after), name


@pytest.mark.integration
@pytest.mark.slow
def test_a_second_up_is_scored_as_a_new_run(deployment, baseline, tmp_path):
    """``docker compose up`` twice: the broker and the predictors keep running, the collector
    and the simulator start again.  The second replay is a run of its own in the same store,
    with the offline scores, and each run's report shows its own."""
    from wattcast.report import load_report_data

    d = deployment()
    d.up()
    first = collector_scores(d, timeout=120)
    assert_same_scores(first, baseline)
    assert "run " + first["run"] in d.tail("simulator", 40)
    # the second up: the exited services start again in depends_on order (the collector finds
    # its store's run finished and waits for the next instead of exiting at once)
    d.up(["collector", "simulator"])
    second = collector_scores(d, timeout=120)
    assert second["run"] != first["run"]
    assert_same_scores(second, baseline)
    store = Path(d.localize("collector", environment(d.services["collector"])[config.ENV_STORE]))
    from wattcast.runner import scores_from_store

    assert scores_from_store(store, list(MODELS), 1, first["run"])["models"] == first["models"]
    for run in (first["run"], second["run"]):
        data = load_report_data(store, run=run)
        assert data.facts["run"] == run and data.facts["readings"] == 4099
        for row in data.aggregate:
            assert row.n == MATCHED and math.isclose(row.mse, baseline[row.model]["mse"], rel_tol=1e-6), row


@pytest.mark.integration
@pytest.mark.slow
def test_the_dashboard_profile_follows_the_deployment(deployment, baseline, tmp_path):
    """The `dashboard` service's command, as a process with its compose login, sees the whole replay: its
    page's scores equal the store's."""
    import urllib.request

    d = deployment()
    service = d.services["dashboard"]
    assert service["profiles"] == ["dashboard"] and service["ports"] == ["127.0.0.1:${WATTCAST_DASHBOARD_PORT:-8050}:8050"]
    assert service["image"] == d.services["collector"]["image"]  # the one image of the pipeline
    assert environment(service)[config.ENV_USERNAME] == "dashboard" and "dashboard" in USERS
    d.up(["mosquitto-init", BROKER_SERVICE])
    d.wait(BROKER_SERVICE, "service_healthy")
    port, url_file = free_port(), tmp_path / "dashboard.url"
    argv = [a.replace("0.0.0.0", "127.0.0.1").replace("8050", str(port)) for a in d.argv("dashboard", service["command"])]
    d.procs["dashboard"] = subprocess.Popen(
        [*argv, "--url-file", str(url_file)], env=d.env("dashboard"), cwd=REPO, stdin=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while not url_file.exists():
        assert d.procs["dashboard"].poll() is None and time.monotonic() < deadline, "the dashboard did not start"
        time.sleep(0.05)
    d.up(list(app_services(d.compose)))
    scores = collector_scores(d, timeout=120)
    assert_same_scores(scores, baseline)

    def shown() -> dict[str, Any]:
        with urllib.request.urlopen(url_file.read_text().strip() + "api/state", timeout=30) as r:
            return {m["model"]: m for m in json.loads(r.read())["models"]}

    deadline = time.monotonic() + 60
    while {m: x["n"] for m, x in shown().items()} != {m: s["n"] for m, s in scores["models"].items()}:
        assert time.monotonic() < deadline, (shown(), scores["models"])
        time.sleep(0.2)
    for model, x in shown().items():
        assert math.isclose(x["mse"], scores["models"][model]["mse"], rel_tol=1e-9), model
