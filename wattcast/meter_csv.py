"""Your own meter's CSV: named columns, kW or W, resampled to the one-minute stream wattcast replays.

A :class:`ColumnMap` names the time column, the global active power column and,
optionally, columns of the other measurements of a reading (``voltage=V_rms``...).
What is not mapped is absent from every reading (the contract makes all but global
active power optional); a model that needs an absent measurement is not run.

Rules, one line each in the notes the commands print (:func:`wattcast.data.data_notes`):

* Times: ISO 8601 (``2024-03-01 14:05``, ``2024-03-01T14:05:00+01:00``), a ``--time-format``
  (strftime), or unix seconds or milliseconds (told apart by size).  A time with a UTC
  offset is converted to UTC; a time without one is the meter's clock, used as it is.
* A row with an empty time or value is dropped (counted); a value that is not a number,
  a time that is not a time, or a value outside the contract's range fails with its line.
* Rows are put in time order (counted).  The readings of one minute (a meter that reports
  every 10 s, or a time on 14:05:30) become one reading of that minute, their mean (counted).
* A minute without a row is a gap: nothing is sent for it, as in the UCI data (counted,
  with the longest).  ``--fill-gaps N`` fills gaps of at most N minutes by linear
  interpolation (counted): a meter reporting every 15 minutes needs ``--fill-gaps 14``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wattcast.contract import READING_FIELDS, READING_MAX, READING_MIN, TS_MAX, TS_MIN

GAP = "global_active_power"
#: the measurements given in kW (divided by 1000 with ``unit="W"``)
POWER_FIELDS = ("global_active_power", "global_reactive_power")
#: the UCI column names, accepted as field names of ``--field`` too
UCI_NAMES = {
    "Global_active_power": "global_active_power",
    "Global_reactive_power": "global_reactive_power",
    "Voltage": "voltage",
    "Global_intensity": "global_intensity",
    "Sub_metering_1": "sub_metering_1",
    "Sub_metering_2": "sub_metering_2",
    "Sub_metering_3": "sub_metering_3",
}
MISSING = ["", "?", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "-"]


class ColumnError(ValueError):
    """A column mapping that makes no sense (one line, before any file is read)."""


@dataclass(frozen=True)
class ColumnMap:
    """Which columns of a CSV are the time, global active power (``value``) and other measurements."""

    time: str
    value: str
    unit: str = "kW"
    #: (reading field, column) of the other measurements
    fields: tuple[tuple[str, str], ...] = ()
    time_format: str | None = None
    fill_gaps: int = 0
    columns: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.unit not in ("kW", "W"):
            raise ColumnError(f"unit must be kW or W, not {self.unit!r}")
        if self.fill_gaps < 0:
            raise ColumnError(f"--fill-gaps must be 0 or more minutes, not {self.fill_gaps}")
        columns = {GAP: self.value}
        for name, column in self.fields:
            f = UCI_NAMES.get(name, name)
            if f not in READING_FIELDS:
                raise ColumnError(f"--field {name}=...: no such measurement (known: {', '.join(READING_FIELDS[1:])})")
            if f in columns:
                raise ColumnError(f"--field {name}: {f} is mapped twice")
            columns[f] = column
        object.__setattr__(self, "columns", columns)

    def argv(self) -> list[str]:
        """The command-line flags that make this map again (for a node started with the same data)."""
        argv = ["--time-col", self.time, "--value-col", self.value, "--unit", self.unit]
        for name, column in self.fields:
            argv += ["--field", f"{name}={column}"]
        if self.time_format:
            argv += ["--time-format", self.time_format]
        return argv + (["--fill-gaps", str(self.fill_gaps)] if self.fill_gaps else [])

    @classmethod
    def parse_field(cls, text: str) -> tuple[str, str]:
        """``FIELD=COLUMN`` of ``--field`` (ColumnError if it is not one)."""
        name, sep, column = text.partition("=")
        if not sep or not name.strip() or not column.strip():
            raise ColumnError(f"--field takes FIELD=COLUMN (e.g. voltage=V_rms), not {text!r}")
        return name.strip(), column.strip()


def read_csv(path: Path, fh: io.TextIOBase, cmap: ColumnMap, error: type[ValueError]) -> pd.DataFrame:
    """The one-minute meter frame of a CSV open at its start (columns of :func:`wattcast.data.read_meter_file`).

    ``error`` is the one-line error to raise (the caller's ``DataError``).  ``attrs`` hold
    the counts of what was done (``resampling``) and the measurements the file lacks (``absent``).
    """
    header = fh.readline().strip().lstrip("\ufeff")
    if not header:
        raise error(f"{path}: the file is empty")
    sep = max((",", ";", "\t"), key=header.count)
    names = [c.strip().strip('"').strip() for c in header.split(sep)]
    wanted = [cmap.time, *cmap.columns.values()]
    unknown = [c for c in wanted if c not in names]
    if unknown:
        raise error(f"{path}: line 1: no column {unknown[0]!r} (the header has: {', '.join(names)[:300]})")
    try:
        raw = pd.read_csv(
            fh,
            sep=sep,
            names=names,
            header=None,
            usecols=sorted(set(wanted), key=names.index),
            dtype=str,
            na_values=MISSING,
            keep_default_na=False,
            skip_blank_lines=False,
            skipinitialspace=True,
        )
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not a well-formed {sep!r}-separated file: {str(exc).splitlines()[0]}") from None
    except (OSError, EOFError) as exc:
        raise error(f"{path}: cannot read (damaged file?): {exc}") from None
    if raw.empty:
        raise error(f"{path}: the file has a header but no rows")
    rows_raw = len(raw)
    line = raw.index.to_numpy() + 2  # the file's line of each row (header: line 1)
    keep = raw[wanted].notna().all(axis=1).to_numpy()
    raw, line = raw[keep], line[keep]
    if raw.empty:
        raise error(f"{path}: no complete rows (every row misses the time or a value)")

    ts = _times(path, raw[cmap.time], line, cmap.time_format, error)
    values = np.full((len(raw), len(READING_FIELDS)), np.nan)
    for f, column in cmap.columns.items():
        col = pd.to_numeric(raw[column].str.strip(), errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(col)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise error(f"{path}: line {line[i]}: {column} is not a number: {raw[column].iloc[i]!r:.40}")
        if cmap.unit == "W" and f in POWER_FIELDS:
            col = col / 1000.0  # exact for whole watts: 1234 / 1000 is the double nearest 1.234
        outside = (col < READING_MIN) | (col > READING_MAX)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise error(
                f"{path}: line {line[i]}: {column} out of range [{READING_MIN:g}, {READING_MAX:g}] "
                f"of the message contract: {col[i]:g}"
            )
        values[:, READING_FIELDS.index(f)] = col
    out, counts = _to_minutes(ts, values, cmap.fill_gaps)
    if len(out) < 2:
        raise error(f"{path}: {len(out)} minute(s) of readings: too few to replay")
    counts["rows_dropped_missing"] = int((~keep).sum())
    out.attrs.update(
        rows_raw=rows_raw,
        out_of_order=counts.pop("out_of_order"),
        duplicates_dropped=0,
        resampling=counts,
        absent=[f for f in READING_FIELDS if f not in cmap.columns],
        columns=dict(cmap.columns),
        unit=cmap.unit,
    )
    return out


def _times(path: Path, text: pd.Series, line: np.ndarray, fmt: str | None, error: type[ValueError]) -> np.ndarray:
    """Unix seconds of the time column (int64); the first time that is none fails with its line."""
    text = text.str.strip()
    numeric = pd.to_numeric(text, errors="coerce").to_numpy(np.float64)
    if fmt is None and np.isfinite(numeric).all():
        # unix seconds or milliseconds: their contract ranges (1990..2100) do not overlap
        for scale in (1, 1000):
            if ((numeric >= TS_MIN * scale) & (numeric <= TS_MAX * scale)).all():
                return np.floor(numeric / scale).astype(np.int64)
        i = int(np.flatnonzero(~((numeric >= TS_MIN) & (numeric <= TS_MAX)))[0])
        raise error(
            f"{path}: line {line[i]}: time {text.iloc[i]!r} is a number but neither unix seconds nor milliseconds "
            "of 1990-01-01 .. 2100-01-01"
        )
    try:
        if fmt is None:
            stamp = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=True)
        else:
            stamp = pd.to_datetime(text, errors="coerce", format=fmt, utc=True)
    except ValueError as exc:  # a --time-format pandas cannot use
        raise error(f"{path}: time format {fmt!r}: {exc}") from None
    bad = stamp.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        expected = (
            f"a time of --time-format {fmt!r}"
            if fmt
            else "a time (ISO 8601 such as 2024-03-01 14:05:00, unix seconds, or give --time-format)"
        )
        raise error(f"{path}: line {line[i]}: {text.iloc[i]!r:.40} is not {expected}")
    seconds = ((stamp.dt.tz_localize(None) - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)
    outside = (seconds < TS_MIN) | (seconds > TS_MAX)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise error(f"{path}: line {line[i]}: time {text.iloc[i]!r} outside the message contract's 1990-01-01 .. 2100-01-01")
    return seconds


def _to_minutes(ts: np.ndarray, values: np.ndarray, fill_gaps: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per minute that has readings (their mean), gaps of at most ``fill_gaps`` minutes interpolated."""
    counts: dict[str, Any] = {}
    counts["out_of_order"] = int((ts[1:] < np.maximum.accumulate(ts)[:-1]).sum()) if len(ts) else 0
    order = np.argsort(ts, kind="stable")
    ts, values = ts[order], values[order]
    counts["off_the_minute"] = int((ts % 60 != 0).sum())
    minute = ts - ts % 60
    starts = np.flatnonzero(np.r_[True, minute[1:] != minute[:-1]])
    sizes = np.diff(np.r_[starts, len(minute)])
    if (sizes > 1).any():
        values = np.add.reduceat(values, starts, axis=0) / sizes[:, None]  # NaN columns stay NaN
    else:
        values = values[starts]
    minute = minute[starts]
    counts["rows_averaged"] = int(sizes[sizes > 1].sum())
    counts["minutes_averaged"] = int((sizes > 1).sum())
    steps = np.diff(minute) // 60 - 1  # missing minutes before each next minute
    holes = steps[steps > 0]
    counts.update(gaps=int(len(holes)), gap_minutes=int(holes.sum()), longest_gap=int(holes.max()) if len(holes) else 0)
    counts["step_minutes"] = int(np.median(steps)) + 1 if len(steps) else 1  # how often the meter reports
    filled = steps[(steps > 0) & (steps <= fill_gaps)]
    counts.update(gaps_filled=int(len(filled)), minutes_filled=int(filled.sum()))
    if len(filled):
        full = np.arange(minute[0], minute[-1] + 60, 60, dtype=np.int64)
        frame = pd.DataFrame(values, index=minute, columns=list(READING_FIELDS)).reindex(full)
        # interpolate inside every gap, then take back the minutes of gaps too long to fill
        known = np.isin(full, minute)
        run_id = np.cumsum(known)  # the minutes of one gap share the index of the reading before it
        gap_len = pd.Series(~known).groupby(run_id).transform("sum").to_numpy()
        present = [f for f in READING_FIELDS if not np.isnan(values[:, READING_FIELDS.index(f)]).all()]
        frame[present] = frame[present].interpolate(method="index", limit_area="inside")
        frame = frame[known | (gap_len <= fill_gaps)]
        minute, values = frame.index.to_numpy(np.int64), frame.to_numpy(np.float64)
    out = pd.DataFrame(values, columns=list(READING_FIELDS))
    out.insert(0, "ts", minute.astype(np.int64))
    # pandas 3 stores datetimes in microseconds: build them from integer microseconds
    out.insert(0, "datetime", (out["ts"].to_numpy(np.int64) * 1_000_000).astype("datetime64[us]"))
    return out, counts


def resampling_notes(counts: dict[str, Any]) -> list[str]:
    """What :func:`read_csv` did to make one reading a minute (one line each, for stderr)."""
    notes = []
    if counts.get("rows_dropped_missing"):
        notes.append(f"{counts['rows_dropped_missing']} row(s) without a time or a value: dropped")
    if counts.get("off_the_minute"):
        notes.append(f"{counts['off_the_minute']} time(s) not on a whole minute: counted to the minute they fall in")
    if counts.get("rows_averaged"):
        notes.append(
            f"{counts['rows_averaged']} row(s) sharing {counts['minutes_averaged']} minute(s): averaged to one reading each"
        )
    if counts.get("gaps"):
        filled, left = counts.get("gaps_filled", 0), counts["gaps"] - counts.get("gaps_filled", 0)
        what = f"{filled} filled by linear interpolation ({counts.get('minutes_filled', 0)} minutes), " if filled else ""
        notes.append(
            f"{counts['gaps']} gap(s) of {counts['gap_minutes']} minute(s) without a reading "
            f"(longest {counts['longest_gap']}): {what}{left} left as gaps, for which nothing is sent"
        )
        step = counts.get("step_minutes", 1)
        if left and step > 1 and not filled:
            notes.append(f"the meter reports every {step} minutes: --fill-gaps {step - 1} interpolates one reading a minute")
    return notes
