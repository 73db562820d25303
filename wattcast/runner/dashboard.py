"""``wattcast run --dashboard``: the live web page of the run, a child process like the nodes.

It logs in as the broker's ``dashboard`` user (read-only), serves on 127.0.0.1 (a free
port unless ``--dashboard-port``) and is started, subscribed, before the nodes, so that
it sees the replay from its first reading.  On a terminal the run keeps the page up
after the replay until Enter is pressed, so the final state can be looked at.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from wattcast.runner.options import RunError
from wattcast.runner.processes import Child, spawn


def start_dashboard(
    broker_url: str, port: int, log_dir: Path, env: dict[str, str], timeout: float = 60.0
) -> tuple[Child, str]:
    """The dashboard's process and its URL, once it serves and is subscribed."""
    url_file = log_dir / "dashboard.url"
    url_file.unlink(missing_ok=True)
    args = ["dashboard", "--broker", broker_url, "--port", str(port), "--url-file", str(url_file)]
    child = spawn("dashboard", "wattcast", args, log_dir, env)
    deadline = time.monotonic() + timeout
    while not url_file.exists():
        if child.proc.poll() is not None:
            raise RunError(f"the dashboard exited with code {child.proc.returncode} at start-up: {child.tail(2)}")
        if time.monotonic() > deadline:
            raise RunError(f"the dashboard did not serve within {timeout:.0f} s: {child.tail(2)}")
        time.sleep(0.05)
    return child, url_file.read_text().strip()


def linger(url: str, say: Callable[[str], None], stdin=None) -> None:
    """On a terminal: keep the run (and so its broker and page) until Enter, after the replay."""
    stdin = stdin if stdin is not None else sys.stdin
    try:
        interactive = stdin.isatty()
    except (AttributeError, ValueError):
        interactive = False
    if not interactive:
        return
    say(f"dashboard: the finished replay stays at {url}; press Enter to end the run")
    try:
        stdin.readline()
    except (OSError, ValueError):
        pass
