"""The JSON Schemas of the contract, generated from the payload declarations.

    python -m wattcast.contract.schema --write    # refresh wattcast/schemas/*.json
    python -m wattcast.contract.schema --check    # exit 1 if a committed schema differs

The committed files are for people who write clients in other languages; they are
never edited by hand (tests/test_schemas.py fails when one differs from its
generated twin).  The few rules a JSON Schema cannot state are named in each
schema's description and enforced by :func:`wattcast.contract.codec.decode`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from wattcast.contract.payloads import KINDS, MAX_PAYLOAD_BYTES

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"

TITLES = {
    "reading": "wattcast reading",
    "end": "wattcast end of stream",
    "forecast": "wattcast forecast",
    "metrics": "wattcast metrics",
    "status": "wattcast node status",
    "progress": "wattcast node progress",
}
TOPICS = {
    "reading": "wattcast/v1/<house>/reading",
    "end": "wattcast/v1/<house>/end",
    "forecast": "wattcast/v1/<house>/forecast/<model>",
    "metrics": "wattcast/v1/<house>/metrics/<model>",
    "status": "wattcast/v1/status/<node>",
    "progress": "wattcast/v1/progress/<node>",
}
#: what the decoder checks beyond the schema, per kind
RULES = {
    "forecast": "target_ts must be later than issued_at (not expressible in JSON Schema; the reference decoder "
    "rejects it). ",
}
PAYLOAD = (
    f"Payload: a UTF-8 JSON object of at most {MAX_PAYLOAD_BYTES} bytes; integers are written without a "
    "fraction or exponent; members not listed here may be added in later v1 versions and must be ignored "
    "(additionalProperties is true)."
)
RUN = "20261202T150200Z-3fa9c1"
EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "reading": [
        {
            "run": RUN,
            "house": "h000",
            "seq": 0,
            "ts": 1196680920,
            "global_active_power": 2.882,
            "global_reactive_power": 0.23,
            "voltage": 236.52,
            "global_intensity": 12.2,
            "sub_metering_1": 0.0,
            "sub_metering_2": 1.0,
            "sub_metering_3": 17.0,
            "sent_at": 1763700000.123,
        },
        # your own meter's CSV with only a power column: the other measurements are left out
        {"run": RUN, "house": "h001", "seq": 0, "ts": 1709301900, "global_active_power": 0.412},
    ],
    "end": [{"run": RUN, "house": "h000", "readings": 4099, "last_seq": 4098, "last_ts": 1196926800}],
    "forecast": [
        {
            "run": RUN,
            "house": "h000",
            "model": "lstm",
            "model_version": "lstm-20261121-3033ceafab",
            "seq": 0,
            "issued_at": 1196680920,
            "target_ts": 1196681220,
            "value": 1.8473,
            "reading_sent_at": 1763700000.123,
        }
    ],
    "metrics": [
        {
            "run": RUN,
            "house": "h000",
            "model": "lstm",
            "as_of": 1196926800,
            "n": 4093,
            "mse": 0.3376,
            "rmse": 0.581,
            "mae": 0.2752,
            "rolling_n": 60,
            "rolling_mse": 0.0841,
            "window_s": 3600,
            "unmatched": 0,
            "pending": 5,
        }
    ],
    "status": [
        {
            "node": "predictor-lstm",
            "state": "online",
            "role": "predictor",
            "ts": 1763700002.5,
            "counters": {"received": 1200, "forecasts": 1199, "malformed": 0},
            "model": "lstm",
        },
        {"node": "collector", "state": "offline", "role": "collector"},
    ],
    "progress": [{"run": RUN, "node": "collector", "house": "h000", "seq": 4098, "complete": 4097, "houses": 1}],
}


def schema(kind: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one message kind, from its payload class."""
    cls = KINDS[kind]
    _, components = msgspec.json.schema_components([cls], ref_template="#/$defs/{name}")
    own = components[cls.__name__]
    doc = " ".join((cls.__doc__ or "").split()).replace("``", "")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:wattcast:schema:v1:{kind}",
        "title": TITLES[kind],
        "description": f"{doc} {RULES.get(kind, '')}Topic: {TOPICS[kind]}. {PAYLOAD}",
        "type": "object",
        "required": own.get("required", []),
        "properties": own["properties"],
        "additionalProperties": True,
        "examples": EXAMPLES[kind],
    }


def render(kind: str) -> str:
    return json.dumps(schema(kind), indent=2, ensure_ascii=False) + "\n"


def differing(folder: Path = SCHEMA_DIR) -> list[str]:
    """The kinds whose committed schema file is not the generated one."""
    return [
        kind
        for kind in KINDS
        if not (folder / f"{kind}.json").exists() or (folder / f"{kind}.json").read_text() != render(kind)
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m wattcast.contract.schema", description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help="write the generated schemas into wattcast/schemas/")
    p.add_argument("--check", action="store_true", help="exit 1 if a committed schema differs from the generated one")
    args = p.parse_args(argv)
    if args.write:
        for kind in KINDS:
            (SCHEMA_DIR / f"{kind}.json").write_text(render(kind))
        print(f"wrote {len(KINDS)} schemas into {SCHEMA_DIR}")
        return 0
    stale = differing()
    if stale:
        print(
            f"wattcast: error: generated schemas differ from wattcast/schemas/: {', '.join(stale)} "
            "(python -m wattcast.contract.schema --write)",
            file=sys.stderr,
        )
        return 1
    print("schemas up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
