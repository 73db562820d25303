"""Bytes to messages and back: the strict decoder every node uses for what arrives.

``decode(topic, payload)`` checks the size, parses and validates the payload against
its declaration (:mod:`wattcast.contract.payloads`: types, ranges, ids; integers
written as integers; no NaN or infinity; unknown members ignored) and then the rules
a JSON Schema cannot state, which live here and nowhere else:

* the payload's ``house``, ``node`` and ``model`` equal the topic's;
* a forecast's ``target_ts`` is after its ``issued_at``;
* a payload is at most 4096 bytes.

Anything else raises :class:`MessageError` with a one-line reason; nodes count and
log such rejections instead of crashing.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from typing import Any, TypeVar

import msgspec

from wattcast.contract.payloads import ID_PATTERN, KINDS, MAX_PAYLOAD_BYTES, Forecast, Payload
from wattcast.contract.topics import MessageError, parse_topic

P = TypeVar("P", bound=Payload)
_ID = re.compile(ID_PATTERN)
_DECODERS: dict[type, msgspec.json.Decoder] = {cls: msgspec.json.Decoder(cls) for cls in KINDS.values()}


def _checked(msg: P) -> P:
    if isinstance(msg, Forecast) and msg.target_ts <= msg.issued_at:
        raise MessageError("target_ts must be after issued_at")
    return msg


def decode_payload(cls: type[P], payload: bytes | str) -> P:
    """One payload of a known kind, validated (MessageError if it breaks the contract)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MessageError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        msg = _DECODERS[cls].decode(payload)
    except msgspec.ValidationError as exc:
        raise MessageError(f"{cls.__name__}: {exc}") from None
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise MessageError(f"invalid JSON: {exc}") from None
    return _checked(msg)


def from_builtins(cls: type[P], obj: object) -> P:
    """A message from already-parsed JSON (a dict), validated as :func:`decode_payload` does."""
    try:
        msg = msgspec.convert(obj, cls)
    except msgspec.ValidationError as exc:
        raise MessageError(f"{cls.__name__}: {exc}") from None
    return _checked(msg)


def decode(topic: str, payload: bytes | str) -> Any:
    """Parse any wattcast message; checks that the payload agrees with its topic."""
    kind, key, model = parse_topic(topic)
    msg: Any = decode_payload(KINDS[kind], payload)
    if kind in ("status", "progress"):
        if msg.node != key:
            raise MessageError(f"{kind} of node {msg.node!r} on topic of {key!r}")
    elif msg.house != key:
        raise MessageError(f"message of house {msg.house!r} on topic of house {key!r}")
    if model is not None and msg.model != model:
        raise MessageError(f"message of model {msg.model!r} on topic of model {model!r}")
    return msg


def check_run(value: Any) -> str:
    """A run id as the contract allows it (1-64 characters of [A-Za-z0-9_.-]); MessageError if not."""
    if not isinstance(value, str) or not _ID.search(value):
        raise MessageError(f"run must be 1-64 characters of [A-Za-z0-9_.-], got {value!r:.80}")
    return value


def new_run_id(now: float | None = None) -> str:
    """A fresh run id: the UTC start time and 6 random hex digits (``20261202T150200Z-3fa9c1``);
    ids sort by start time and two simulators started in the same second still differ."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(3)}"


# ------------------------------------------------- other untrusted JSON (a predictor's state)


def check_int(name: str, value: Any, lo: int = 0, hi: int = 2**53) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageError(f"{name} must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise MessageError(f"{name} out of range [{lo}, {hi}]: {value}")
    return value


def check_float(name: str, value: Any, lo: float = -math.inf, hi: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MessageError(f"{name} must be a number, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:  # an integer of hundreds of digits
        raise MessageError(f"{name} is out of range: an integer of {len(str(value))} digits") from None
    if not math.isfinite(value):
        raise MessageError(f"{name} must be finite, got {value}")
    if not lo <= value <= hi:
        raise MessageError(f"{name} out of range [{lo}, {hi}]: {value}")
    return value


def parse_json(text: str) -> Any:
    """Strict JSON: NaN and Infinity are refused, and so is nesting too deep to parse (MessageError)."""
    try:
        return _DECODER.decode(text)
    except MessageError:
        raise
    except (ValueError, RecursionError) as exc:
        raise MessageError(f"invalid JSON: {exc}") from None


def _reject_constant(name: str) -> None:
    raise MessageError(f"{name} is not allowed in a payload")


# One decoder for every payload (json.loads with options builds a new one per call).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


# One decoder for every document (json.loads with options builds a new one per call).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
