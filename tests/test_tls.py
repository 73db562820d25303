"""MQTT over TLS (mqtts://) against a real mosquitto TLS listener on loopback.

The tests make their own CA and certificates (cryptography, a dev dependency); nothing is committed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import REPO

from wattcast.broker import PrivateBroker, mosquitto_binary
from wattcast.bus import BrokerConfig, MqttBus
from wattcast.contract import Status, decode, status_topic

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(mosquitto_binary() is None, reason="needs mosquitto (apt-get install mosquitto)"),
]

NOW = dt.datetime.now(dt.UTC)


def _write(path: Path, key, cert) -> tuple[Path, Path]:
    key_path, cert_path = path.with_suffix(".key"), path.with_suffix(".pem")
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _cert(name: str, issuer=None, issuer_key=None, *, ca=False, days=(-1, 30), server=False):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + dt.timedelta(days=days[0]))
        .not_valid_after(NOW + dt.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
    cert = builder.sign(issuer_key if issuer_key is not None else key, hashes.SHA256())
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca = _cert("wattcast test CA", ca=True)
    other_key, other = _cert("another CA", ca=True)
    files: dict[str, Path] = {}
    files["ca"], _ = _write(d / "ca", ca_key, ca)
    files["other_ca"], _ = _write(d / "other-ca", other_key, other)
    key, cert = _cert("broker", ca, ca_key, server=True)
    files["server"], files["server_key"] = _write(d / "server", key, cert)
    key, cert = _cert("broker", ca, ca_key, server=True, days=(-30, -1))
    files["expired"], files["expired_key"] = _write(d / "expired", key, cert)
    key, cert = _cert("client", ca, ca_key)
    files["client"], files["client_key"] = _write(d / "client", key, cert)
    return files


def tls_broker(pki, *, cert="server", require_certificate=False) -> PrivateBroker:
    conf = f"cafile {pki['ca']}\ncertfile {pki[cert]}\nkeyfile {pki[cert + '_key']}\n"
    if require_certificate:
        conf += "require_certificate true\n"
    return PrivateBroker(extra_conf=conf, prefer="mosquitto").start()


@pytest.fixture
def broker_over_tls(pki):
    b = tls_broker(pki)
    yield b
    b.close()


def bus(broker: PrivateBroker, scheme: str = "mqtts", client_id: str = "tls-test", **files) -> MqttBus:
    config = BrokerConfig.from_url(f"{scheme}://127.0.0.1:{broker.port}", **files)
    return MqttBus(config, client_id=client_id, session=False)


def test_a_round_trip_over_tls(broker_over_tls, pki):
    publisher = bus(broker_over_tls, ca_file=str(pki["ca"])).connect(timeout=10)
    subscriber = bus(broker_over_tls, client_id="tls-sub", ca_file=str(pki["ca"])).connect(timeout=10)
    try:
        assert publisher.broker.url.startswith("mqtts://") and hasattr(publisher.client.socket(), "cipher")
        subscriber.subscribe("wattcast/v1/status/#")
        status = Status("collector", "online", "collector", 1.0, {"received": 3})
        publisher.publish(status_topic("collector"), status.to_json(), retain=True)
        assert publisher.flush(timeout=10)
        message = subscriber.inbox.get(timeout=10)
        assert decode(message.topic, message.payload) == status
    finally:
        publisher.close()
        subscriber.close()


def test_plain_tcp_to_a_tls_listener_is_refused(broker_over_tls):
    with pytest.raises(ConnectionError, match="did not accept the connection.*mqtts://"):
        bus(broker_over_tls, scheme="mqtt").connect(timeout=3)


def test_a_broker_certificate_of_another_ca_is_refused(broker_over_tls, pki):
    with pytest.raises(ConnectionError, match="does not trust: .*--ca-file") as exc:
        bus(broker_over_tls, ca_file=str(pki["other_ca"])).connect(timeout=10)
    assert "\n" not in str(exc.value)


def test_an_expired_broker_certificate_is_refused(pki):
    broker = tls_broker(pki, cert="expired")
    try:
        with pytest.raises(ConnectionError, match="certificate has expired"):
            bus(broker, ca_file=str(pki["ca"])).connect(timeout=10)
    finally:
        broker.close()


def test_a_broker_that_requires_a_client_certificate(pki):
    broker = tls_broker(pki, require_certificate=True)
    try:
        with pytest.raises(ConnectionError, match="client certificate") as refused:
            bus(broker, ca_file=str(pki["ca"])).connect(timeout=5)
        assert "\n" not in str(refused.value)
        client = bus(
            broker,
            client_id="tls-client",
            ca_file=str(pki["ca"]),
            cert_file=str(pki["client"]),
            key_file=str(pki["client_key"]),
        ).connect(timeout=10)
        client.close()
    finally:
        broker.close()


def test_tls_files_are_checked_before_connecting(tmp_path):
    with pytest.raises(ValueError, match="need a TLS broker URL"):
        BrokerConfig.from_url("mqtt://127.0.0.1:1883", ca_file="ca.pem")
    with pytest.raises(ValueError, match="--key-file needs --cert-file"):
        BrokerConfig.from_url("mqtts://127.0.0.1", key_file="k.pem")
    assert BrokerConfig.from_url("mqtts://broker.example").port == 8883
    with pytest.raises(ValueError, match=f"TLS CA file not found: {tmp_path / 'nope.pem'}"):
        MqttBus(BrokerConfig.from_url("mqtts://127.0.0.1:1", ca_file=str(tmp_path / "nope.pem")), client_id="x")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(ValueError, match="cannot be used"):
        MqttBus(BrokerConfig.from_url("mqtts://127.0.0.1:1", ca_file=str(tmp_path / "junk.pem")), client_id="x")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (
            ["--broker", "mqtts://127.0.0.1:1", "--ca-file", "/nonexistent/ca.pem"],
            "TLS CA file not found: /nonexistent/ca.pem",
        ),
        (["--broker", "mqtt://127.0.0.1:1", "--ca-file", "ca.pem"], "need a TLS broker URL"),
    ],
)
def test_a_node_names_a_bad_tls_setting_in_one_line(args, fragment, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "predictor", "--model", "persistence", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and fragment in lines[0], out.stderr
    assert lines[0].startswith("predictor: error: ")


def test_a_run_over_tls_scores_exactly_as_over_tcp(broker_over_tls, pki, tmp_path):
    def run(*broker_args: str, store: str) -> dict:
        out = subprocess.run(
            [sys.executable, "-m", "wattcast", "run", *broker_args, "--limit", "200", "--models", "persistence", "linear"]
            + ["--json", "--quiet", "--store", str(tmp_path / store / "w.db")],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=300,
            env={k: v for k, v in os.environ.items() if not k.startswith("WATTCAST_MQTT")},
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout)

    over_tls = run("--broker", f"mqtts://127.0.0.1:{broker_over_tls.port}", "--ca-file", str(pki["ca"]), store="tls")
    over_tcp = run(store="tcp")  # a private plain broker
    assert over_tls["broker"] == {"kind": "external", "url": f"mqtts://127.0.0.1:{broker_over_tls.port}"}
    for model in ("persistence", "linear"):
        assert over_tls["models"][model]["n"] == over_tcp["models"][model]["n"] > 150
        assert over_tls["models"][model]["mse"] == pytest.approx(over_tcp["models"][model]["mse"], rel=1e-12)


def test_broker_certs_make_the_compose_broker_a_tls_listener(tmp_path):
    import secrets
    import shutil
    import stat

    from wattcast.broker import free_port
    from wattcast.credentials import USERS, deployment_conf, password_env_var

    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("needs mosquitto_passwd")
    certs = tmp_path / "certs"

    def certs_cli(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "wattcast", "broker", "certs", "--out", str(certs), "--host", "127.0.0.1", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    made = certs_cli()
    assert made.returncode == 0, made.stderr
    names = {p.name for p in certs.iterdir()}
    assert {"ca.pem", "ca.key", "broker.pem", "broker.key", "viewer.pem", "viewer.key"} <= names
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in certs.iterdir())
    again = certs_cli()
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "--force" in again.stderr

    passwords = {u: secrets.token_urlsafe(16) for u in USERS}
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTCAST_")}
    env.update({password_env_var(u): p for u, p in passwords.items()})
    tls_port = free_port()
    auth = tmp_path / "auth"
    env.update(WATTCAST_AUTH_DIR=str(auth), WATTCAST_CERTS_DIR=str(certs), WATTCAST_TLS_PORT=str(tls_port))
    init = subprocess.run(["sh", str(REPO / "mosquitto" / "init-auth.sh")], env=env, capture_output=True, text=True)
    assert init.returncode == 0 and f"TLS listener on port {tls_port}" in init.stdout, init.stderr
    broker = PrivateBroker(common=False, anonymous=False, extra_conf=deployment_conf(auth), prefer="mosquitto").start()
    try:
        # start() waits for the first listener; the TLS one (an included file) may open a moment later
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", tls_port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"no TLS listener on {tls_port}:\n{broker.log_tail()}"
                time.sleep(0.05)
        viewer = {"username": "viewer", "password": passwords["viewer"]}
        over_tls = BrokerConfig.from_url(f"mqtts://127.0.0.1:{tls_port}", ca_file=str(certs / "ca.pem"), **viewer)
        plain = BrokerConfig.from_url(broker.url, **viewer)
        for config, client_id in ((over_tls, "viewer-tls"), (plain, "viewer-plain")):
            b = MqttBus(config, client_id=client_id, session=False).connect(timeout=10)
            b.close()
        stranger = BrokerConfig.from_url(f"mqtts://127.0.0.1:{tls_port}", ca_file=str(certs / "ca.pem"), username="viewer")
        with pytest.raises(ConnectionError, match="Not authorized|Bad user name or password"):  # the same logins as 1883
            MqttBus(stranger, client_id="x", session=False).connect(timeout=10)
    finally:
        broker.close()
    # without certificates, no TLS listener
    env["WATTCAST_CERTS_DIR"] = str(tmp_path / "empty")
    init = subprocess.run(["sh", str(REPO / "mosquitto" / "init-auth.sh")], env=env, capture_output=True, text=True)
    assert init.returncode == 0 and "TLS" not in init.stdout and not (auth / "listeners" / "tls.conf").exists()
