"""Write wattcast/sample/example_meter.csv: four synthetic days of a household meter, in watts.

Synthetic (no licence question): a base load, a fridge cycling, a kettle, cooking and
evening lights, with noise; a meter that reports once a minute with an ISO 8601 time
and its UTC offset, power in W and voltage in V, like many exports.  Three short
outages leave gaps and one row has no power value, so the example shows what
``--data`` does with them.  Deterministic: the same file every time.

    python scripts/make_example_meter.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parent.parent / "wattcast" / "sample" / "example_meter.csv"


def main() -> None:
    rng = np.random.default_rng(2024)
    minutes = 4 * 1440
    t = np.arange(minutes)
    hour = (t % 1440) / 60.0
    power = 140.0 + 25.0 * rng.standard_normal(minutes).cumsum() / np.sqrt(minutes)  # base load, slow drift
    power += np.where((t % 53) < 18, 95.0, 0.0)  # the fridge's compressor
    for day in range(4):
        d = day * 1440
        for start, length, watts in (
            (int(rng.integers(390, 450)), 3, 2100.0),  # kettle, morning
            (int(rng.integers(1050, 1110)), int(rng.integers(35, 70)), 1600.0),  # cooking
            (int(rng.integers(1000, 1030)), 300, 180.0),  # evening lights
            (int(rng.integers(600, 900)), int(rng.integers(60, 110)), 900.0),  # washing machine
        ):
            power[d + start : d + start + length] += watts * (0.9 + 0.2 * rng.random(length))
    power += np.where((hour > 7) & (hour < 23), 60.0, 0.0) + 15.0 * rng.standard_normal(minutes)
    power = np.maximum(power, 40.0).round()
    voltage = (231.0 + 2.5 * np.sin(2 * np.pi * (hour - 4) / 24) - power / 2000 + 0.6 * rng.standard_normal(minutes)).round(
        1
    )
    times = pd.date_range("2024-03-04 00:00", periods=minutes, freq="min", tz="Europe/Paris")
    df = pd.DataFrame(
        {
            "timestamp": times.strftime("%Y-%m-%dT%H:%M:%S%z").str.replace(r"(\d\d)(\d\d)$", r"\1:\2", regex=True),
            "power_W": power.astype(int).astype(str),
            "voltage_V": voltage,
        }
    )
    df.loc[2000, "power_W"] = ""  # a reading without a value
    outage = np.zeros(minutes, bool)
    for start, length in ((1300, 2), (3333, 5), (5000, 1)):
        outage[start : start + length] = True
    df[~outage].to_csv(OUT, index=False, lineterminator="\n")
    print(f"wrote {(~outage).sum()} rows to {OUT}")


if __name__ == "__main__":
    main()
