"""Shared fixtures: a private MQTT broker per test and connected MqttBus clients.

Tests that use ``broker``, ``broker_factory`` or ``mqtt_bus`` are marked
``integration`` automatically (deselect with ``-m "not integration"``).  They never
touch the system broker on port 1883: every broker listens on a free port of
127.0.0.1 with its own persistence directory under the test's ``tmp_path``.

With the ``CI`` environment variable set (to anything but ``""``, ``0`` or ``false``), a
skipped test fails: a skip there means CI lacks something (mosquitto, TensorFlow, the full
data set) and would hide a failure.  ``.ci/run`` sets ``CI=true``.
"""

from __future__ import annotations

import itertools
import os
import uuid

import pytest

from wattcast.broker import PrivateBroker, available_kind

BROKER_FIXTURES = {"broker", "broker_factory", "mqtt_bus"}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and _in_ci():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI={os.environ['CI']!r}), which must run every test: {reason}"


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="also run the tests marked slow (CI=true does too)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if BROKER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
    # The edit loop's default: the tests marked slow (a RabbitMQ cluster, a browser, whole deployments,
    # the full data set) run with --slow, in CI (CI=true) or when -m names what to run.
    if _in_ci() or config.getoption("--slow") or config.option.markexpr:
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


@pytest.fixture
def broker_factory(tmp_path):
    """``make(**kwargs)`` -> a started :class:`PrivateBroker`; all are stopped at teardown.

    Skips the test if kwargs ask for a broker that is not installed (``prefer=``),
    or if neither mosquitto nor amqtt is.
    """
    brokers: list[PrivateBroker] = []
    counter = itertools.count()

    def make(**kwargs) -> PrivateBroker:
        prefer = kwargs.get("prefer")
        if available_kind(prefer) is None:
            if prefer == "amqtt":
                pytest.skip("amqtt is not installed (pip install 'wattcast[embedded-broker]')")
            pytest.skip(
                f"no {prefer or 'MQTT'} broker: install mosquitto (apt-get install mosquitto) "
                "or amqtt (pip install 'wattcast[embedded-broker]')"
            )
        kwargs.setdefault("workdir", tmp_path / f"broker{next(counter)}")
        b = PrivateBroker(**kwargs)
        brokers.append(b)
        return b.start()

    yield make
    for b in brokers:
        b.close()
        # Shown by pytest only when the test fails.
        print(f"--- {b!r} log ({b.log_path}):\n{b.log_tail(40)}")


@pytest.fixture
def broker(broker_factory) -> PrivateBroker:
    """A private broker (mosquitto with the repo's mosquitto/conf.d settings if installed)."""
    return broker_factory()


@pytest.fixture
def mqtt_bus(request):
    """``make(client_id=None, *, on=None, connect=True, **MqttBus kwargs)`` -> an MqttBus.

    It connects to ``on`` (a PrivateBroker, e.g. from ``broker_factory``) or else to
    the ``broker`` fixture.  Client ids are unique unless given (give the same id
    twice to resume a persistent session).  Every bus is closed at teardown.
    """
    from wattcast.bus import BrokerConfig, MqttBus

    buses: list[MqttBus] = []
    counter = itertools.count()
    run = uuid.uuid4().hex[:6]

    def make(client_id: str | None = None, *, on: PrivateBroker | None = None, connect: bool = True, **kwargs) -> MqttBus:
        target = on if on is not None else request.getfixturevalue("broker")
        cid = client_id or f"test-{os.getpid()}-{run}-{next(counter)}"
        bus = MqttBus(BrokerConfig.from_url(target.url), cid, **kwargs)
        buses.append(bus)
        if connect:
            bus.connect(timeout=5)
        return bus

    yield make
    for bus in buses:
        try:
            bus.close()
        except Exception:  # teardown must close the others
            pass


@pytest.fixture(scope="session")
def split():
    """The default split (the shipped sample), loaded once for the whole session."""
    from wattcast.data import load_split

    return load_split()


@pytest.fixture(scope="session")
def val(split):
    """Its validation part (a DataFrame: what the simulator replays)."""
    return split.val


#: the PostgreSQL server the store tests create their databases on (the machine's own; trust auth on loopback)
POSTGRES_ADMIN_URL = os.environ.get("WATTCAST_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def postgres_url():
    """The URL of a fresh PostgreSQL database of this test's own, dropped at teardown (with its connections)."""
    try:
        import psycopg
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'wattcast[cluster]')")
    name = f"wattcast_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server at {POSTGRES_ADMIN_URL}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request, tmp_path):
    """Where a store goes: an SQLite file, then a PostgreSQL database (the same tests run on both back-ends)."""
    if request.param == "sqlite":
        return tmp_path / "store.db"
    return request.getfixturevalue("postgres_url")
