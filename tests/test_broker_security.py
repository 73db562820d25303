"""The deployment's broker security against a real mosquitto running mosquitto/mosquitto.conf.

Authentication (no anonymous access, wrong passwords refused) and the ACL by role
(mosquitto/acl).  Mosquitto drops a PUBLISH outside a user's role silently (it
still acknowledges it), so every check is made on the receiving side: a spy that
may read everything (the collector user) must see a later sentinel message but not
the forbidden one; the broker routes one connection's messages in order, and a
forbidden message is acknowledged only after it was routed (or dropped).

Also: the password tools of wattcast/credentials.py and the compose init step
mosquitto/init-auth.sh.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from argparse import Namespace

import pytest
from helpers import REPO

from wattcast.broker import PrivateBroker
from wattcast.bus import BrokerConfig, MqttBus, topic_matches
from wattcast.contract import Forecast, Metrics, Reading, decode, forecast_topic, metrics_topic, reading_topic
from wattcast.credentials import (
    RUN_USERS,
    USERS,
    CredentialsError,
    deployment_conf,
    ensure_passwords,
    hash_password,
    passwd_command,
    password_env_var,
    passwords_from,
    prepare_auth_dir,
    read_env_file,
    verify_password,
)

H = "h000"
T0 = 1196680920


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def passwords() -> dict[str, str]:
    return ensure_passwords(users=RUN_USERS)[0]


@pytest.fixture
def secure_broker(broker_factory, tmp_path, passwords) -> PrivateBroker:
    """mosquitto with the deployment's config, password file and ACL, on a free loopback port.

    The ACL tests log in as one user several times at once (a spy and a sender), which the
    deployment's ``use_username_as_clientid`` forbids: here, and only here, it is off again
    (the last setting wins).  ``bound_broker`` is the deployment's config as it is.
    """
    auth = prepare_auth_dir(tmp_path / "auth", passwords)
    return broker_factory(
        common=False,
        anonymous=False,
        extra_conf=deployment_conf(auth) + "use_username_as_clientid false\n",
        prefer="mosquitto",
    )


@pytest.fixture
def bound_broker(broker_factory, tmp_path, passwords) -> PrivateBroker:
    """The deployment's config exactly: a client id is tied to its user."""
    auth = prepare_auth_dir(tmp_path / "auth-bound", passwords)
    return broker_factory(
        common=False, anonymous=False, extra_conf=deployment_conf(auth), prefer="mosquitto", workdir=tmp_path / "bound"
    )


@pytest.fixture
def login(secure_broker, passwords):
    """``login(user, password=None, **MqttBus kwargs)`` -> a connected MqttBus; closed at teardown."""
    buses: list[MqttBus] = []

    def make(
        user: str | None, password: str | None = None, *, client_id: str | None = None, session: bool = False, **kwargs
    ) -> MqttBus:
        pw = password if password is not None else passwords.get(user or "", None)
        cfg = BrokerConfig(secure_broker.host, secure_broker.port, user, pw)
        bus = MqttBus(cfg, client_id or f"test-{user}-{len(buses)}-{os.getpid()}", session=session, **kwargs)
        buses.append(bus)
        return bus.connect(timeout=5)

    yield make
    for bus in buses:
        try:
            bus.close()
        except Exception:
            pass


def reading(seq: int = 0) -> Reading:
    return Reading(H, seq, T0 + 60 * seq, 1.0, 0.1, 240.0, 4.2, 0.0, 1.0, 17.0)


def forecast(model: str = "lstm", seq: int = 0) -> Forecast:
    return Forecast(H, model, "v1", seq, T0 + 60 * seq, T0 + 60 * seq + 300, 1.5)


def metrics(model: str = "lstm") -> Metrics:
    return Metrics(H, model, T0, 10, 0.25, 0.5, 0.4, 10, 0.25, 3600, 0, 5)


class Spy:
    """A client of ``user`` subscribed to ``filters``; ``seen_before_sentinel()`` lists what arrived.

    The sentinel is published by ``sender`` on ``sentinel`` (both must be allowed by the ACL).
    """

    def __init__(
        self,
        login,
        user: str,
        filters: list[str],
        sender: str = "collector",
        sentinel: str = metrics_topic("sentinel", "lstm"),
    ) -> None:
        self.bus = login(user)
        self.sentinel = sentinel
        extra = [] if any(topic_matches(f, sentinel) for f in filters) else [sentinel]
        self.bus.subscribe(*filters, *extra)
        self.sender = login(sender)
        self.count = 0
        # Wait until the subscription is active: sentinels until one arrives.
        deadline = time.monotonic() + 5
        while not self._sentinel_arrives(timeout=0.2, into=[]):
            assert time.monotonic() < deadline, "spy subscription not active"

    def _sentinel_arrives(self, timeout: float, into: list) -> bool:
        self.count += 1
        token = b"sentinel-%d" % self.count
        self.sender.publish(self.sentinel, token)
        self.sender.flush(5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                m = self.bus.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if m.topic == self.sentinel:
                if m.payload == token:
                    return True
                continue
            into.append((m.topic, m.payload))
        return False

    def seen_before_sentinel(self) -> list[tuple[str, bytes]]:
        got: list[tuple[str, bytes]] = []
        assert self._sentinel_arrives(timeout=5, into=got), "sentinel lost"
        return got


def publish_as(login, user: str, topic: str, payload: bytes = b"{}") -> None:
    bus = login(user)
    bus.publish(topic, payload)
    assert bus.flush(5), f"{user}: publish to {topic} not acknowledged"
    bus.close()


# --------------------------------------------------------------------- authentication


@pytest.mark.parametrize("user", sorted(RUN_USERS))
def test_every_user_logs_in_with_its_password(login, user):
    assert login(user)


@pytest.mark.parametrize(
    "user,password,why",
    [
        ("simulator", "wrong-password", "wrong password"),
        ("viewer", None, "another user's password"),
        ("nobody", "x", "unknown user"),
        (None, None, "anonymous"),
        ("healthcheck", "x", "the broker's healthcheck user, wrong password"),
    ],
)
def test_bad_credentials_are_refused(login, passwords, user, password, why):
    if why == "another user's password":
        password = passwords["collector"]
    with pytest.raises(ConnectionError, match="did not accept|refused|not authori"):
        login(user, password if password is not None else "")


# ------------------------------------------------------------------------------ ACL: write

FORBIDDEN_PUBLISH = [
    ("simulator", forecast_topic(H, "lstm")),
    ("simulator", metrics_topic(H, "lstm")),
    ("simulator", "wattcast/v1/status/collector"),
    ("predictor-lstm", forecast_topic(H, "linear")),
    ("predictor-lstm", reading_topic(H)),
    ("predictor-lstm", "wattcast/v1/h000/end"),
    ("predictor-lstm", metrics_topic(H, "lstm")),
    ("predictor-lstm", "wattcast/v1/status/predictor-linear"),
    ("predictor-linear", forecast_topic(H, "lstm")),
    ("predictor-lstm-augmented", forecast_topic(H, "lstm")),
    ("predictor-persistence", forecast_topic(H, "lstm-augmented")),
    ("collector", reading_topic(H)),
    ("collector", forecast_topic(H, "lstm")),
    ("collector", "wattcast/v1/h000/end"),
    ("collector", "wattcast/v1/status/simulator"),
    ("collector", "wattcast/v1/progress/simulator"),
    ("predictor-lstm", "wattcast/v1/progress/collector"),
    ("simulator", "wattcast/v1/progress/collector"),
    ("viewer", forecast_topic(H, "lstm")),
    ("viewer", metrics_topic(H, "lstm")),
    ("viewer", reading_topic(H)),
    ("viewer", "wattcast/v1/status/viewer"),
    ("homeassistant", reading_topic(H)),
    ("homeassistant", forecast_topic(H, "lstm")),
    ("homeassistant", "wattcast/v1/status/homeassistant"),
    ("runner", reading_topic(H)),
    ("runner", "wattcast/v1/h000/end"),
    ("runner", forecast_topic(H, "persistence")),
    ("runner", "wattcast/v1/status/collector"),
    ("runner", "wattcast/v1/status/runner"),
    ("runner", "wattcast/v1/progress/collector"),
]


def test_publishing_outside_a_role_reaches_no_subscriber(login):
    spy = Spy(login, "collector", ["wattcast/v1/#"])
    for user, topic in FORBIDDEN_PUBLISH:
        publish_as(login, user, topic, b"forbidden from " + user.encode())
    leaked = spy.seen_before_sentinel()
    assert leaked == [], f"delivered although outside the publisher's role: {leaked}"


def test_only_the_collector_announces_home_assistant_sensors(login):
    config = "homeassistant/sensor/wattcast_h000/{}/config"
    spy = Spy(login, "homeassistant", ["homeassistant/#"], sentinel=config.format("sentinel"))
    for user in ("viewer", "homeassistant", "predictor-lstm", "simulator"):
        publish_as(login, user, config.format("gap"), b'{"forged": true}')
    publish_as(login, "collector", config.format("forecast_lstm"), b"{}")
    assert [t for t, _ in spy.seen_before_sentinel()] == [config.format("forecast_lstm")]


ALLOWED_PUBLISH = [
    ("simulator", reading_topic(H), reading().to_json()),
    ("simulator", "wattcast/v1/h000/end", b'{"house":"h000","readings":1,"last_seq":0,"last_ts":1196680920}'),
    ("simulator", "wattcast/v1/status/simulator", b"{}"),
    *[
        (f"predictor-{m}", forecast_topic(H, m), forecast(m).to_json())
        for m in ("lstm", "lstm-augmented", "linear", "persistence")
    ],
    *[(f"predictor-{m}", f"wattcast/v1/status/predictor-{m}", b"{}") for m in ("lstm", "linear")],
    ("collector", metrics_topic(H, "lstm"), metrics().to_json()),
    ("collector", "wattcast/v1/status/collector", b"{}"),
    ("collector", "wattcast/v1/progress/collector", b'{"node":"collector","house":"h000","seq":1}'),
]


def test_publishing_inside_a_role_reaches_subscribers(login):
    spy = Spy(login, "collector", ["wattcast/v1/#"])
    for user, topic, payload in ALLOWED_PUBLISH:
        publish_as(login, user, topic, payload)
    got = spy.seen_before_sentinel()
    assert [t for t, _ in got] == [t for _, t, _ in ALLOWED_PUBLISH]


# ------------------------------------------------------------------------------- ACL: read


def publish_one_of_each(login) -> list[str]:
    sent = [
        ("simulator", reading_topic(H), reading().to_json()),
        ("simulator", "wattcast/v1/h000/end", b'{"house":"h000","readings":1,"last_seq":0,"last_ts":1196680920}'),
        ("predictor-lstm", forecast_topic(H, "lstm"), forecast().to_json()),
        ("collector", metrics_topic(H, "lstm"), metrics().to_json()),
        ("predictor-linear", "wattcast/v1/status/predictor-linear", b"{}"),
        ("collector", "wattcast/v1/progress/collector", b'{"node":"collector","house":"h000","seq":1}'),
    ]
    for user, topic, payload in sent:
        publish_as(login, user, topic, payload)
    return [t for _, t, _ in sent]


@pytest.mark.parametrize(
    "user,readable",
    [
        ("viewer", {"forecast", "metrics", "status"}),
        ("homeassistant", {"reading", "forecast", "status"}),
        ("dashboard", {"reading", "forecast", "metrics", "status", "progress"}),
        ("runner", {"metrics", "status", "progress"}),
        ("predictor-lstm", {"reading", "end"}),
        ("predictor-persistence", {"reading", "end"}),
        ("simulator", {"forecast", "status", "progress"}),
        ("collector", {"reading", "end", "forecast", "metrics", "status", "progress"}),
    ],
)
def test_a_subscription_delivers_only_what_the_role_may_read(login, user, readable):
    # Everything is subscribed ("#"); the ACL decides per message.  The sentinel is
    # a message the user may read, from a user who may publish it.
    if "metrics" in readable:
        sender, sentinel = "collector", metrics_topic("sentinel", "lstm")
    elif "reading" in readable:
        sender, sentinel = "simulator", reading_topic("sentinel")
    else:
        sender, sentinel = "predictor-lstm", forecast_topic("sentinel", "lstm")
    spy = Spy(login, user, ["#"], sender=sender, sentinel=sentinel)
    publish_one_of_each(login)
    got = spy.seen_before_sentinel()
    kinds = {t.split("/")[2] if t.split("/")[2] in ("status", "progress") else t.split("/")[3] for t, _ in got}
    assert kinds == readable, got


def test_viewer_follows_forecasts_and_metrics(login):
    viewer = login("viewer")
    viewer.subscribe("wattcast/v1/+/forecast/+", "wattcast/v1/+/metrics/+")
    publisher = login("predictor-lstm")
    deadline = time.monotonic() + 5
    got = None
    while got is None and time.monotonic() < deadline:  # until the subscription is active
        publisher.publish(forecast_topic(H, "lstm"), forecast().to_json())
        try:
            got = viewer.inbox.get(timeout=0.2)
        except queue.Empty:
            pass
    assert got is not None and decode(got.topic, got.payload) == forecast()
    publish_as(login, "collector", metrics_topic(H, "lstm"), metrics().to_json())
    while True:
        m = viewer.inbox.get(timeout=5)
        if "/metrics/" in m.topic:
            break
    assert decode(m.topic, m.payload) == metrics()


# ----------------------------------------------------------------------- status and wills

NODE_SCRIPT = """
import sys, time
from wattcast.bus import BrokerConfig, MqttBus
from wattcast.contract import status_topic
from wattcast.node import status
host, port, user, password, node, client_id = sys.argv[1:7]
will = (status_topic(node), status(node, "test", "offline").to_json())
bus = MqttBus(BrokerConfig(host, int(port), user, password), client_id, will=will).connect(timeout=5)
print("up", flush=True)
time.sleep(60)
"""


def start_node(broker: PrivateBroker, user: str, password: str, node: str, client_id: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", NODE_SCRIPT, broker.host, str(broker.port), user, password, node, client_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )


def test_each_node_leaves_its_last_will_and_no_other(login, secure_broker, passwords):
    spy = Spy(login, "collector", ["wattcast/v1/status/+"])
    nodes = [u for u, role in USERS.items() if role in ("simulator", "predictor", "collector")]
    # Each node as itself (client id as wattcast.node.connect makes it), plus the
    # simulator user leaving a forged will on the collector's status topic.
    runs = [(u, u, f"wattcast-{u}") for u in nodes] + [("simulator", "collector", "forger")]
    procs = [(user, start_node(secure_broker, user, passwords[user], node, cid)) for user, node, cid in runs]
    try:
        for user, proc in procs[:-1]:
            line = proc.stdout.readline().strip()
            assert line == "up", f"{user}: {line} {proc.stdout.read() if proc.poll() is not None else ''}"
        procs[-1][1].stdout.readline()  # refused (newer mosquitto) or accepted with a will the broker drops
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)  # a crash: the broker publishes the wills
            proc.wait()
            proc.stdout.close()
    deadline = time.monotonic() + 10
    wills: dict[str, list] = {}
    while time.monotonic() < deadline:
        for topic, payload in spy.seen_before_sentinel():
            obj = json.loads(payload)
            if obj["state"] == "offline":
                wills.setdefault(topic.rsplit("/", 1)[1], []).append(obj)
        if len(wills) == len(nodes):
            break
        time.sleep(0.1)
    time.sleep(0.3)
    for topic, payload in spy.seen_before_sentinel():  # stragglers
        wills.setdefault(topic.rsplit("/", 1)[1], []).append(json.loads(payload))
    assert sorted(wills) == sorted(nodes)
    assert all(len(w) == 1 and w[0]["node"] == n for n, w in wills.items()), wills  # no forged collector will


def test_a_user_cannot_take_a_nodes_client_id(bound_broker, passwords):
    """The viewer (or any other user) asking for the collector's client id gets its own: the
    collector is not disconnected and keeps its persistent session and the messages queued in it."""
    buses: list[MqttBus] = []

    def login(user: str, client_id: str, session: bool = False) -> MqttBus:
        cfg = BrokerConfig(bound_broker.host, bound_broker.port, user, passwords[user])
        buses.append(MqttBus(cfg, client_id, session=session).connect(timeout=10))
        return buses[-1]

    try:
        collector = login("collector", "wattcast-collector", session=True)
        collector.subscribe("wattcast/v1/#")
        assert collector.flush(10)
        collector.close()  # away: what is published now is queued for its session
        simulator = login("simulator", "wattcast-simulator")
        simulator.publish(reading_topic(H), reading(7).to_json())
        assert simulator.flush(10)
        for cid in ("wattcast-collector", "collector"):  # the id it asked for, and the one the broker gave it
            intruder = login("viewer", cid, session=True)
            intruder.subscribe("wattcast/v1/#")
            assert intruder.flush(10)
            intruder.close()
        collector = login("collector", "wattcast-collector", session=True)
        got = collector.inbox.get(timeout=30)  # the queued reading is still the collector's
        assert got.topic == reading_topic(H) and decode(got.topic, got.payload).seq == 7
        # ... and a viewer connecting with its id does not disconnect it
        login("viewer", "wattcast-collector")
        simulator.publish(reading_topic(H), reading(8).to_json())
        got = collector.inbox.get(timeout=30)
        assert decode(got.topic, got.payload).seq == 8 and collector.reconnects == 0
    finally:
        for bus in buses:
            bus.close()


# ------------------------------------------------------------------------- credentials.py


def test_hash_is_mosquitto_passwds_format(tmp_path):
    h = hash_password("s3cret")
    assert h.startswith("$7$101$") and verify_password("s3cret", h) and not verify_password("other", h)
    exe = shutil.which("mosquitto_passwd")
    if exe is None:
        pytest.skip("mosquitto_passwd is not installed")
    pwfile = tmp_path / "pw"
    pwfile.write_text("")
    subprocess.run([exe, "-b", str(pwfile), "alice", "s3cret"], check=True, capture_output=True)
    user, theirs = pwfile.read_text().strip().split(":", 1)
    assert user == "alice" and verify_password("s3cret", theirs) and not verify_password("S3cret", theirs)


def test_env_file_keeps_other_lines_and_existing_passwords(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("WATTCAST_PASSWORD_"):
            monkeypatch.delenv(key)
    env = tmp_path / ".env"
    env.write_text("# mine\nWATTCAST_SPEED=60\nWATTCAST_PASSWORD_VIEWER='viewer-pw'\n")
    args = Namespace(env_file=str(env), password_file=str(tmp_path / "passwd"), rotate=False, users=list(USERS))
    assert passwd_command(args) == 0
    values = read_env_file(env)
    assert values["WATTCAST_SPEED"] == "60" and values["WATTCAST_PASSWORD_VIEWER"] == "viewer-pw"
    assert env.read_text().startswith("# mine\n")
    first = passwords_from(values)
    assert len(set(first.values())) == len(USERS) and all(len(p) >= 32 for u, p in first.items() if u != "viewer")
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "passwd").stat().st_mode) == 0o600
    hashed = dict(line.split(":", 1) for line in (tmp_path / "passwd").read_text().splitlines())
    assert all(verify_password(first[u], hashed[u]) for u in USERS)

    assert passwd_command(args) == 0  # again: nothing changes
    assert passwords_from(read_env_file(env)) == first
    monkeypatch.setenv("WATTCAST_PASSWORD_COLLECTOR", "from-the-environment")
    assert passwd_command(args) == 0
    assert passwords_from(read_env_file(env))["collector"] == "from-the-environment"
    monkeypatch.delenv("WATTCAST_PASSWORD_COLLECTOR")
    assert passwd_command(Namespace(**{**vars(args), "rotate": True})) == 0
    rotated = passwords_from(read_env_file(env))
    assert all(rotated[u] != first[u] for u in USERS)
    assert env.read_text().count("WATTCAST_PASSWORD_SIMULATOR=") == 1


def test_env_to_stdout_and_missing_passwords(capsys, monkeypatch):
    for key in list(os.environ):
        if key.startswith("WATTCAST_PASSWORD_"):
            monkeypatch.delenv(key)
    assert passwd_command(Namespace(env_file="-", password_file=None, rotate=False, users=list(USERS))) == 0
    lines = capsys.readouterr().out.split()
    assert sorted(line.split("=")[0] for line in lines) == sorted(password_env_var(u) for u in USERS)
    assert password_env_var("predictor-lstm-augmented") == "WATTCAST_PASSWORD_PREDICTOR_LSTM_AUGMENTED"
    with pytest.raises(CredentialsError, match="WATTCAST_PASSWORD_VIEWER"):
        passwords_from({password_env_var(u): "x" for u in USERS if u != "viewer"})


# ------------------------------------------------------------- the compose init step


@pytest.fixture
def init_script():
    if shutil.which("mosquitto_passwd") is None or shutil.which("sh") is None:
        pytest.skip("needs sh and mosquitto_passwd")
    return REPO / "mosquitto" / "init-auth.sh"


def test_init_step_refuses_to_start_without_every_password(init_script, tmp_path, passwords):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTCAST_")}
    env.update({password_env_var(u): p for u, p in passwords.items() if u not in ("viewer", "collector")})
    env["WATTCAST_AUTH_DIR"] = str(tmp_path / "auth")
    r = subprocess.run(["sh", str(init_script)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "WATTCAST_PASSWORD_COLLECTOR" in r.stderr and "WATTCAST_PASSWORD_VIEWER" in r.stderr
    assert "wattcast broker passwd" in r.stderr
    assert not (tmp_path / "auth" / "passwd").exists()


def test_init_step_makes_what_the_broker_reads(init_script, tmp_path, passwords, broker_factory):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTCAST_")}
    env.update({password_env_var(u): p for u, p in passwords.items()})
    auth = tmp_path / "auth"
    env["WATTCAST_AUTH_DIR"] = str(auth)
    r = subprocess.run(["sh", str(init_script)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (auth / "acl").read_text() == (REPO / "mosquitto" / "acl").read_text()
    for name in ("passwd", "acl", "healthcheck.password"):
        assert stat.S_IMODE((auth / name).stat().st_mode) == 0o600, name
    hashed = dict(line.split(":", 1) for line in (auth / "passwd").read_text().splitlines())
    assert set(hashed) == {*USERS, "healthcheck"}
    assert all(verify_password(passwords[u], hashed[u]) for u in USERS)
    # The broker accepts the healthcheck user, which may read only $SYS/broker/version.
    broker = broker_factory(common=False, extra_conf=deployment_conf(auth), prefer="mosquitto")
    hc = (auth / "healthcheck.password").read_text().strip()
    bus = MqttBus(BrokerConfig(broker.host, broker.port, "healthcheck", hc), f"hc-{os.getpid()}", session=False)
    bus.connect(timeout=5)
    try:
        bus.subscribe("$SYS/broker/version", "wattcast/v1/#")
        m = bus.inbox.get(timeout=5)
        assert m.topic == "$SYS/broker/version" and m.payload.startswith(b"mosquitto version 2.0.")
    finally:
        bus.close()


# ------------------------------------------------------------ the documented paho example


def test_the_documented_paho_example_follows_forecasts_as_viewer(login, secure_broker, passwords, tmp_path):
    code = re.search(r"```python\n(.*?)```", (REPO / "docs" / "contract.md").read_text(), re.S).group(1)
    assert len(code.strip().splitlines()) <= 25
    script = tmp_path / "follow.py"
    script.write_text(code)
    env = {
        **os.environ,
        "WATTCAST_PASSWORD_VIEWER": passwords["viewer"],
        "MQTT_HOST": secure_broker.host,
        "MQTT_PORT": str(secure_broker.port),
    }
    proc = subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        predictor, collector = login("predictor-lstm"), login("collector")
        simulator = login("simulator")
        seen: list[str] = []
        deadline = time.monotonic() + 15
        while not (any("forecast for" in x for x in seen) and any("mse=" in x for x in seen)):
            assert time.monotonic() < deadline and proc.poll() is None, seen
            simulator.publish(reading_topic(H), reading().to_json())  # not for viewers: never printed
            predictor.publish(forecast_topic(H, "lstm"), forecast().to_json())
            collector.publish(metrics_topic(H, "lstm"), metrics().to_json())
            try:
                while True:
                    seen.append(lines.get(timeout=0.3))
            except queue.Empty:
                pass
    finally:
        proc.kill()
        proc.wait()
    assert f"h000 lstm            forecast for {T0 + 300}: 1.500 kW\n" in seen
    assert "h000 lstm            n=10 mse=0.2500 rolling=0.2500\n" in seen
    assert all("forecast" in x or "mse=" in x for x in seen), seen


def test_init_step_declares_models_of_your_own(init_script, tmp_path, passwords):
    from wattcast.credentials import predictor_acl

    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTCAST_")}
    env.update({password_env_var(u): p for u, p in passwords.items()})
    env.update({password_env_var("predictor-mine"): "pw-mine", password_env_var("predictor-other"): "pw-other"})
    env.update(WATTCAST_AUTH_DIR=str(tmp_path / "auth"), WATTCAST_EXTRA_MODELS="mine,other")
    r = subprocess.run(["sh", str(init_script)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    # the same lines wattcast run writes for its private broker
    expected = (REPO / "mosquitto" / "acl").read_text() + predictor_acl("mine") + predictor_acl("other")
    assert (tmp_path / "auth" / "acl").read_text() == expected
    hashed = dict(line.split(":", 1) for line in (tmp_path / "auth" / "passwd").read_text().splitlines())
    assert verify_password("pw-mine", hashed["predictor-mine"]) and verify_password("pw-other", hashed["predictor-other"])
    env["WATTCAST_EXTRA_MODELS"] = "bad/name"
    bad = subprocess.run(["sh", str(init_script)], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "not a model name: bad/name" in bad.stderr
