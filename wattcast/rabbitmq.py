"""A private RabbitMQ cluster on loopback: N nodes of our own, never the machine's broker.

The scale-out engine of issue 15 (docs/deployment.md): meters and viewers speak MQTT to
RabbitMQ's MQTT plugin; sharded nodes will use AMQP.  :class:`RabbitCluster` starts
``size`` nodes (Debian's ``rabbitmq-server``, run directly from ``/usr/lib/rabbitmq/bin``
so that it keeps our environment instead of switching to the ``rabbitmq`` user), joins
them into one cluster and creates the users it is given; nothing listens beyond
127.0.0.1 and there is no ``guest`` (a random administrator instead).

What keeps it apart from the machine's own RabbitMQ (its node ``rabbit@localhost``,
ports 5672, 25672 and epmd's 4369):

- each node has its own ``RABBITMQ_NODENAME``, ``RABBITMQ_MNESIA_BASE``, ``RABBITMQ_LOG_BASE``,
  ``RABBITMQ_CONFIG_FILE``, ``RABBITMQ_ENABLED_PLUGINS_FILE`` and an empty
  ``RABBITMQ_CONF_ENV_FILE`` (Debian's ``rabbitmq-env.conf`` would force ``rabbit@localhost``);
- the cluster has an epmd of its own (``ERL_EPMD_PORT``) and an Erlang cookie of its own
  (``HOME`` is the cluster's folder);
- every port (AMQP, MQTT, distribution, epmd) is a free one below the ephemeral range
  (32768 and up collided with ``eaddrinuse`` while the node started);
- ``-detached`` returns before the node is up: ``rabbitmqctl await_startup`` waits for it.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
PLUGINS = ("rabbitmq_mqtt", "rabbitmq_consistent_hash_exchange")
#: ports are taken from here: below Linux's ephemeral range, away from the usual services
PORT_RANGE = (20000, 32000)
BOOTSTRAP = "wattcast-bootstrap"


def _key_regex(mqtt_filter: str, binding: bool) -> str:
    """An ACL topic (``+``, ``#``) as a regex over RabbitMQ routing keys (``/`` becomes ``.``).

    ``binding``: the keys a subscription binds with, where a level may also be the wildcard
    itself (``wattcast/v1/+/reading`` binds ``wattcast.v1.*.reading``)."""
    level = r"(\*|[^.*#]+)" if binding else r"[^.*#]+"
    parts = []
    for part in mqtt_filter.split("/"):
        if part == "+":
            parts.append(level)
        elif part == "#":
            parts.append(r"(#|[^.]+(\.[^.]+)*(\.#)?)" if binding else r"[^.]+(\.[^.]+)*")
        else:
            parts.append(re.escape(part))
    return r"\.".join(parts)


def topic_permissions(acl: str) -> dict[str, tuple[str, str]]:
    """mosquitto's ACL file as RabbitMQ topic permissions on ``amq.topic``: user -> (write, read) regexes.

    Only ``user``/``topic`` lines are read (pattern lines and ``$SYS`` topics have no RabbitMQ twin);
    a user without a line of a kind gets a regex that matches nothing (``^$``)."""
    grants: dict[str, tuple[list[str], list[str]]] = {}
    user = None
    for raw in acl.splitlines():
        words = raw.split("#", 1)[0].split() if not raw.strip().startswith("topic") else raw.split()
        if not words:
            continue
        if words[0] == "user" and len(words) == 2:
            user = words[1]
            grants.setdefault(user, ([], []))
        elif words[0] == "topic" and user is not None and len(words) in (2, 3):
            access, topic = ("readwrite", words[1]) if len(words) == 2 else (words[1], words[2])
            if topic.startswith("$"):
                continue
            if access in ("write", "readwrite"):
                grants[user][0].append(_key_regex(topic, binding=False))
            if access in ("read", "readwrite"):
                grants[user][1].append(_key_regex(topic, binding=True))
    return {u: (_any_of(w), _any_of(r)) for u, (w, r) in grants.items()}


def node_permissions(user: str, acl: str) -> tuple[tuple[str, str, str], tuple[str, str]]:
    """A node of a sharded deployment over AMQP (``collector``, ``predictor-<model>``): RabbitMQ's
    (configure, write, read) over the vhost's queues and exchanges, and its topic (write, read) on
    ``amq.topic``.  Its own queues only (its group's shard queues, its durable queue, server-named
    ones), the shard exchanges to bind them to; the topics of its lines in mosquitto's ACL, and its
    status and progress also under a replica's id (``<user>-<replica>``).  The ring and the
    exchanges are declared by an administrator (``wattcast shards``)."""
    group = re.escape(user)
    own = rf"wattcast\.{group}(\.shard\.\d+)?|amq\.gen-.+"
    configure, write = f"^({own})$", rf"^({own}|amq\.topic)$"
    read = rf"^({own}|amq\.topic|wattcast\.shard\.\d+|wattcast\.forecasts)$"
    topic_write, topic_read = topic_permissions(acl).get(user, ("^$", "^$"))
    # a replica's id: <user>-<n> (wattcast run) or -<container id> (compose), never another model's name
    replica = rf"wattcast\.v1\.(status|progress)\.{group}-(\d+|[0-9a-f]{{12}})"
    topic_write = f"^({topic_write[2:-2]}|{replica})$" if topic_write != "^$" else f"^({replica})$"
    return (configure, write, read), (topic_write, topic_read)


#: the MQTT users' rights on the vhost: their own subscription queues and amq.topic, nothing else
MQTT_RIGHTS = (r"^mqtt-subscription-.*$", r"^(amq\.topic|mqtt-subscription-.*)$", r"^(amq\.topic|mqtt-subscription-.*)$")


def role_grants(acl: str, users: list[str]) -> str:
    """``rabbitmq/users``: one line per user of ``users`` with its RabbitMQ rights from mosquitto's ACL,
    ``amqp <user> <configure> <write> <read> <topic-write> <topic-read>`` for the nodes that speak AMQP
    (the collector, the predictors) and ``mqtt <user> ...`` for the others; ``rabbitmq/init-users.sh``
    applies them.  Generated (``wattcast.rabbitmq``), never written by hand: a test compares."""
    lines = [
        "# Generated from mosquitto/acl by wattcast.rabbitmq.role_grants: do not edit (tests/test_shards.py compares).",
        "# kind user configure write read topic-write topic-read (regexes; topic rights on amq.topic)",
    ]
    topics = topic_permissions(acl)
    for user in users:
        if user == "collector" or user.startswith("predictor-"):
            (configure, write, read), (tw, tr) = node_permissions(user, acl)
            lines.append(f"amqp {user} {configure} {write} {read} {tw} {tr}")
        else:
            tw, tr = topics.get(user, ("^$", "^$"))
            lines.append(f"mqtt {user} {' '.join(MQTT_RIGHTS)} {tw} {tr}")
    return "\n".join(lines) + "\n"


def _any_of(regexes: list[str]) -> str:
    return f"^({'|'.join(regexes)})$" if regexes else "^$"


class RabbitError(RuntimeError):
    """A cluster that could not start or answer (one line; the node's log has more)."""


def rabbit_available() -> bool:
    return (RABBIT_BIN / "rabbitmq-server").exists() and (RABBIT_BIN / "rabbitmqctl").exists()


def low_free_port(taken: set[int] | None = None) -> int:
    """A TCP port on 127.0.0.1 in :data:`PORT_RANGE` that is free right now."""
    taken = taken if taken is not None else set()
    for _ in range(500):
        port = random.randrange(*PORT_RANGE)
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise RabbitError(f"no free port in {PORT_RANGE[0]}-{PORT_RANGE[1]}")


@dataclass
class RabbitNode:
    name: str  # wct-<cluster>-<k>@localhost
    folder: Path
    amqp_port: int
    mqtt_port: int
    dist_port: int

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    @property
    def amqp_url(self) -> str:
        return f"amqp://127.0.0.1:{self.amqp_port}"


@dataclass
class RabbitCluster:
    """``size`` RabbitMQ nodes clustered on loopback, their data under ``workdir``."""

    workdir: Path
    size: int = 3
    users: dict[str, str] = field(default_factory=dict)  # user -> password (all permissions on vhost /)
    plugins: tuple[str, ...] = PLUGINS
    start_timeout: float = 180.0
    nodes: list[RabbitNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.tag = secrets.token_hex(3)
        self.admin = ("wattcast-admin", secrets.token_hex(18))  # hex: a leading "-" would read as an option
        self._epmd_port = 0

    # -- the environment every command of this cluster runs with ----------------------
    def _env(self, node: RabbitNode | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(self.workdir),  # the cluster's Erlang cookie: $HOME/.erlang.cookie
            ERL_EPMD_PORT=str(self._epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        if node is not None:
            env.update(
                RABBITMQ_NODENAME=node.name,
                RABBITMQ_MNESIA_BASE=str(node.folder / "mnesia"),
                RABBITMQ_LOG_BASE=str(node.folder / "log"),
                RABBITMQ_CONFIG_FILE=str(node.folder / "rabbitmq.conf"),
                RABBITMQ_ENABLED_PLUGINS_FILE=str(node.folder / "enabled_plugins"),
                RABBITMQ_CONF_ENV_FILE=str(node.folder / "rabbitmq-env.conf"),
                RABBITMQ_PID_FILE=str(node.folder / "pid"),
                RABBITMQ_DIST_PORT=str(node.dist_port),
            )
        return env

    def ctl(self, node: RabbitNode, *args: str, timeout: float = 120.0) -> str:
        """``rabbitmqctl -n NODE args...``; RabbitError with its last line if it fails."""
        try:
            r = subprocess.run(
                [str(RABBIT_BIN / "rabbitmqctl"), "-n", node.name, *args],
                env=self._env(),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise RabbitError(f"rabbitmqctl {' '.join(args[:2])} on {node.name}: no answer in {timeout:.0f} s") from None
        if r.returncode != 0:
            why = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:] or ["?"]
            raise RabbitError(f"rabbitmqctl {' '.join(args[:2])} on {node.name} failed: {why[0]}")
        return r.stdout

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> RabbitCluster:
        if not rabbit_available():
            raise RabbitError("RabbitMQ is not installed (apt-get install rabbitmq-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cookie = self.workdir / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20))
        cookie.chmod(0o400)
        taken: set[int] = set()
        self._epmd_port = low_free_port(taken)
        for k in range(self.size):
            folder = self.workdir / f"node{k}"
            node = RabbitNode(f"wct-{self.tag}-{k}@localhost", folder, *(low_free_port(taken) for _ in range(3)))
            self._configure(node)
            self.nodes.append(node)
        try:
            for node in self.nodes:
                self.start_node(node)
            first = self.nodes[0]
            for node in self.nodes[1:]:  # join the first one
                self.ctl(node, "stop_app")
                self.ctl(node, "join_cluster", first.name)
                self.ctl(node, "start_app")
            user, password = self.admin
            self.ctl(first, "add_user", user, password)
            self.ctl(first, "set_user_tags", user, "administrator")
            self.ctl(first, "set_permissions", "-p", "/", user, ".*", ".*", ".*")
            self.ctl(first, "delete_user", BOOTSTRAP)
            for name, pw in self.users.items():
                self.add_user(name, pw)
        except BaseException:
            self.close()
            raise
        return self

    def _configure(self, node: RabbitNode) -> None:
        for sub in ("mnesia", "log"):
            (node.folder / sub).mkdir(parents=True, exist_ok=True)
        (node.folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{node.amqp_port}\n"
            f"mqtt.listeners.tcp.1 = 127.0.0.1:{node.mqtt_port}\n"
            "mqtt.allow_anonymous = false\n"
            # no guest: a bootstrap user with a random password, deleted once the administrator exists
            f"default_user = {BOOTSTRAP}\n"
            f"default_pass = {secrets.token_hex(18)}\n"
        )
        (node.folder / "enabled_plugins").write_text(f"[{','.join(self.plugins)}].\n")
        (node.folder / "rabbitmq-env.conf").write_text("")

    def start_node(self, node: RabbitNode) -> None:
        """Start (or start again) one node and wait until it runs."""
        r = subprocess.run(
            [str(RABBIT_BIN / "rabbitmq-server"), "-detached"],
            env=self._env(node),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if r.returncode != 0:
            raise RabbitError(f"rabbitmq-server {node.name} did not start: {r.stderr.strip()[-200:]}")
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                self.ctl(node, "await_startup", "--timeout", "30", timeout=60)
                return
            except RabbitError as exc:
                if time.monotonic() > deadline:
                    raise RabbitError(f"{exc} (log: {node.folder / 'log'})") from None
                time.sleep(1)

    def add_user(self, user: str, password: str, topics: tuple[str, str] | None = None) -> None:
        """A user of vhost ``/``; with ``topics`` (write, read regexes over routing keys, as
        :func:`topic_permissions` makes them) it may publish and bind on ``amq.topic`` only there."""
        first = self.running()[0]
        self.ctl(first, "add_user", user, password)
        if topics is None:
            self.ctl(first, "set_permissions", "-p", "/", user, ".*", ".*", ".*")
        else:  # MQTT only: its own subscription queues and amq.topic, nothing else of the vhost
            self.ctl(first, "set_permissions", "-p", "/", user, *MQTT_RIGHTS)
            self.ctl(first, "set_topic_permissions", "-p", "/", user, "amq.topic", *topics)

    def add_node_user(self, user: str, password: str, acl: str) -> None:
        """An AMQP node of a sharded deployment, held to its role (:func:`node_permissions`)."""
        (configure, write, read), topics = node_permissions(user, acl)
        first = self.running()[0]
        try:
            self.ctl(first, "add_user", user, password)
        except RabbitError as exc:
            if "already exists" not in str(exc):
                raise
            self.ctl(first, "change_password", user, password)
        self.ctl(first, "set_permissions", "-p", "/", user, configure, write, read)
        self.ctl(first, "set_topic_permissions", "-p", "/", user, "amq.topic", *topics)

    def add_users_by_role(self, passwords: dict[str, str], acl: str) -> None:
        """Every user of ``passwords`` limited to its role in mosquitto's ACL file (``acl``: its text)."""
        roles = topic_permissions(acl)
        for user, password in passwords.items():
            self.add_user(user, password, roles.get(user, ("^$", "^$")))

    def running(self) -> list[RabbitNode]:
        """The nodes whose Erlang VM answers."""
        return [n for n in self.nodes if self._pid(n) is not None]

    def _pid(self, node: RabbitNode) -> int | None:
        try:
            pid = int((node.folder / "pid").read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the running nodes' Erlang VMs have used so far (Linux /proc)."""
        total = 0.0
        for node in self.running():
            pid = self._pid(node)
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, ValueError, IndexError):
                continue
        return total

    def kill(self, node: RabbitNode) -> None:
        """SIGKILL one node (a crash)."""
        pid = self._pid(node)
        if pid is not None:
            os.kill(pid, 9)
            deadline = time.monotonic() + 30
            while self._pid(node) is not None and time.monotonic() < deadline:
                time.sleep(0.05)

    def close(self) -> None:
        """Stop every node, then the cluster's epmd."""
        for node in reversed(self.nodes):
            self.kill(node)  # a test cluster keeps nothing: no orderly stop needed
        epmd = shutil.which("epmd") or "/usr/bin/epmd"
        if self._epmd_port and os.access(epmd, os.X_OK):  # the cluster's own epmd (ERL_EPMD_PORT)
            subprocess.run([epmd, "-kill"], env=self._env(), capture_output=True, check=False, timeout=30)

    def __enter__(self) -> RabbitCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
