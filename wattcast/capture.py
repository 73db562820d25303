"""Captures of a live MQTT stream: ``wattcast record`` writes them, ``python -m simulator --capture`` replays them.

A capture is a text file of JSON lines (gzip-compressed when its name ends in ``.gz``),
one message per line, in arrival order::

    {"t": 1796236581.8144, "topic": "wattcast/v1/h000/reading", "payload": "{\\"house\\":...}", "retain": false}

``t`` is the arrival time (unix seconds, as the recorder's clock saw it); ``payload`` is
the payload as text (UTF-8), or ``payload_b64`` (base64) for one that is not text.
Anything can be recorded (``--topic`` filters, default ``wattcast/v1/#``); a replay
publishes every line again on its topic.
"""

from __future__ import annotations

import base64
import gzip
import json
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from wattcast.bus import Bus, Message


class CaptureError(ValueError):
    """A capture file that cannot be read (one line naming the file and line)."""


@dataclass(frozen=True, slots=True)
class Captured:
    t: float
    topic: str
    payload: bytes
    retain: bool = False


def _open(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="utf-8")  # type: ignore[return-value]
    return path.open(mode, encoding="utf-8")


def to_line(message: Message, t: float) -> str:
    try:
        body: dict = {"payload": message.payload.decode("utf-8")}
    except UnicodeDecodeError:
        body = {"payload_b64": base64.b64encode(message.payload).decode("ascii")}
    return json.dumps({"t": round(t, 6), "topic": message.topic, **body, "retain": message.retain}) + "\n"


def record(
    bus: Bus,
    out: Path,
    stop: Callable[[], bool],
    duration: float | None = None,
    count: int | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """Write what ``bus`` receives (its subscriptions) to ``out`` until ``stop()``, ``duration`` s or
    ``count`` messages; the number of messages written."""
    written = 0
    deadline = None if duration is None else time.monotonic() + duration
    with _open(out, "w") as fh:
        while not stop() and (count is None or written < count):
            if deadline is not None and time.monotonic() >= deadline:
                break
            try:
                message = bus.inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            fh.write(to_line(message, message.received_at or clock()))
            written += 1
    return written


def read_capture(path: str | Path) -> Iterator[Captured]:
    """The messages of a capture, in order; CaptureError (file and line) for a line that is not one."""
    path = Path(path)
    if not path.is_file():
        raise CaptureError(f"{path}: no such capture file")
    try:
        with _open(path, "r") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                yield _parse(path, number, line)
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise CaptureError(f"{path}: cannot read: {exc}") from None


def _parse(path: Path, number: int, line: str) -> Captured:
    where = f"{path}: line {number}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CaptureError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise CaptureError(f"{where}: not a JSON object")
    t, topic = obj.get("t"), obj.get("topic")
    if isinstance(t, bool) or not isinstance(t, int | float) or not isinstance(topic, str) or not topic:
        raise CaptureError(f"{where}: needs a number t and a topic")
    if isinstance(obj.get("payload"), str):
        payload = obj["payload"].encode("utf-8")
    elif isinstance(obj.get("payload_b64"), str):
        try:
            payload = base64.b64decode(obj["payload_b64"], validate=True)
        except ValueError:
            raise CaptureError(f"{where}: payload_b64 is not base64") from None
    else:
        raise CaptureError(f"{where}: needs a payload (text) or payload_b64")
    return Captured(float(t), topic, payload, bool(obj.get("retain", False)))
