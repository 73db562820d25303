"""A private MQTT broker on a free loopback port, for tests and local runs.

:class:`PrivateBroker` runs ``mosquitto`` with a generated config::

    listener <port> 127.0.0.1
    allow_anonymous true
    persistence_location <workdir>/
    include_dir <repo>/mosquitto/conf.d      # the settings every wattcast broker shares
    <extra_conf>                             # e.g. password_file / acl_file for auth tests

If no mosquitto binary is installed it falls back to an embedded amqtt broker (a
pure-Python broker, ``pip install wattcast[embedded-broker]``) in a subprocess;
``kind`` says which one runs.  amqtt has no persistence across restarts and does not
read the mosquitto settings, so tests of those features skip when ``kind != "mosquitto"``.

    with PrivateBroker() as broker:
        bus = MqttBus(BrokerConfig.from_url(broker.url), "node-1").connect()
"""

from __future__ import annotations

import getpass
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from wattcast.assets import PACKAGE_DIR, mosquitto_dir

COMMON_CONF_DIR = mosquitto_dir() / "conf.d"
KINDS = ("mosquitto", "amqtt")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_binary() -> str | None:
    """Path of the mosquitto executable, also where Debian puts it outside a user's PATH."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def amqtt_available() -> bool:
    return importlib.util.find_spec("amqtt") is not None


def available_kind(prefer: str | None = None) -> str | None:
    """The broker :class:`PrivateBroker` would run ("mosquitto" or "amqtt"), or None if neither is installed."""
    have = {"mosquitto": mosquitto_binary() is not None, "amqtt": amqtt_available()}
    if prefer is not None:
        if prefer not in KINDS:
            raise ValueError(f"unknown broker kind {prefer!r}; known: {', '.join(KINDS)}")
        return prefer if have[prefer] else None
    return next((k for k in KINDS if have[k]), None)


class PrivateBroker:
    """A broker process of our own on ``127.0.0.1:<port>``; a context manager.

    ``restart()`` keeps the port and the persistence directory, so clients with
    persistent sessions can reconnect and get what was queued for them.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        config_dir: str | Path | None = None,
        common: bool = True,
        anonymous: bool = True,
        extra_conf: str = "",
        persistence: bool = True,
        prefer: str | None = None,
        workdir: str | Path | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        """
        port: fixed port, or None for a free one.  config_dir: folder of *.conf with the
        shared settings (default: the repo's mosquitto/conf.d); common=False runs with
        mosquitto's defaults instead.  anonymous=False refuses clients without a
        login (extra_conf then names the password file and ACL).  extra_conf: lines appended last (they override).
        prefer: "mosquitto" or "amqtt"; default mosquitto if installed.  workdir: where
        config, log and database go (default: a temp dir removed by close()).
        """
        kind = available_kind(prefer)
        if kind is None:
            raise RuntimeError(
                f"no {prefer} broker available"
                if prefer
                else "no MQTT broker available: install mosquitto (apt-get install mosquitto) "
                "or amqtt (pip install 'wattcast[embedded-broker]')"
            )
        self.kind = kind
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.host = "127.0.0.1"
        self.config_dir = Path(config_dir) if config_dir is not None else COMMON_CONF_DIR
        self.common = common
        self.anonymous = anonymous
        self.extra_conf = extra_conf
        self.persistence = persistence
        self.start_timeout = start_timeout
        self._own_workdir = workdir is None
        # absolute: the broker runs with the workdir as its current directory
        self.workdir = (
            Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="wattcast-broker-"))
        ).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "broker.log"
        self.config_path = self.workdir / "mosquitto.conf"
        self.proc: subprocess.Popen | None = None
        self._started_once = False

    # -- addresses ------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<PrivateBroker {self.kind} {self.url} {state}>"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- config -----------------------------------------------------------------------
    def config_text(self) -> str:
        lines = [
            "# generated by wattcast.broker.PrivateBroker",
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'true' if self.anonymous else 'false'}",
            f"persistence_location {self.workdir}/",
        ]
        if os.geteuid() == 0:
            # Run as root, mosquitto would switch to the "mosquitto" user, which cannot
            # write our temp dir: stay the current user.
            lines.append(f"user {getpass.getuser()}")
        if self.common:
            if not self.config_dir.is_dir():
                raise FileNotFoundError(f"broker settings folder not found: {self.config_dir}")
            lines.append(f"include_dir {self.config_dir}")
        if not self.persistence:
            lines.append("persistence false")
        if self.extra_conf:
            lines.append(self.extra_conf.strip())
        return "\n".join(lines) + "\n"

    def _command(self) -> tuple[list[str], dict[str, str] | None]:
        if self.kind == "mosquitto":
            self.config_path.write_text(self.config_text())
            return [mosquitto_binary() or "mosquitto", "-c", str(self.config_path)], None
        code = "import sys; from wattcast.broker import _run_amqtt; _run_amqtt(int(sys.argv[1]))"
        env = dict(os.environ)
        # the folder that holds this wattcast package first, so that no other wattcast can shadow it
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_DIR.parent), env.get("PYTHONPATH")) if p)
        return [sys.executable, "-P", "-c", code, str(self.port)], env

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> PrivateBroker:
        """Start the broker and wait until its port accepts connections."""
        if self.running:
            return self
        for attempt in range(3):
            try:
                self._start_once()
                break
            except RuntimeError:
                # A free port taken by someone else in between: pick another one,
                # unless the port is fixed or clients already know it (restart).
                if self._fixed_port or self._started_once or attempt == 2 or "in use" not in self.log_tail().lower():
                    raise
                self.port = free_port()
        self._started_once = True
        return self

    def _start_once(self) -> None:
        cmd, env = self._command()
        with open(self.log_path, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {self.kind} on {self.url}\n".encode())
            log.flush()
            # its own session: a Ctrl-C at the terminal (SIGINT to the foreground process group)
            # must not stop the broker under the nodes; its owner stops it, last
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.kind} broker on port {self.port} exited with code {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.kind} broker did not open port {self.port} within {self.start_timeout:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (mosquitto saves its database), wait, then SIGKILL."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL: a crash; mosquitto keeps only what autosave wrote."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self) -> PrivateBroker:
        """Stop and start again on the same port with the same persistence directory."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop, and remove the working directory if this object created it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no broker log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> PrivateBroker:
        try:
            return self.start()
        except BaseException:
            self.close()  # the error message already holds the log tail
            raise

    def __exit__(self, *exc) -> None:
        self.close()


def _run_amqtt(port: int) -> None:
    """Run an anonymous amqtt broker on 127.0.0.1:<port> until SIGTERM (subprocess entry point)."""
    import asyncio
    import logging

    from amqtt.broker import Broker

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }

    async def main() -> None:
        broker = Broker(config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await broker.start()
        print(f"amqtt broker listening on 127.0.0.1:{port}", flush=True)
        await stop.wait()
        await broker.shutdown()

    asyncio.run(main())
