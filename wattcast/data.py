"""The meter data: read, clean, subset and split exactly like the course notebook.

Readers accept the UCI file as distributed (``household_power_consumption.txt``,
``;``-separated, ``d/m/yyyy`` dates, ``?`` for missing, or the zip holding it,
or a gzip of it like the shipped sample) and the course's cleaned CSV (with a
``Datetime`` column).  Cleaning drops every row with a missing value.

Time order, one policy for offline and live (both see what the reader returns): rows
are put in time order (a stable sort: a row older than the one before it moves back
to its place, ``out_of_order`` counts them) and of rows with the same timestamp the
first in the file is kept (``duplicates_dropped`` counts the others).  Every value is
checked at read time against the message contract's ranges: a file the live pipeline
would reject fails here, with its row, before anything starts.

The split: ``size = int(rows * fraction)``, ``start = randint(0, rows - size)``
from NumPy's legacy Mersenne Twister seeded with ``seed`` (what the notebook's
``np.random.seed(1234); np.random.randint(...)`` draws, without touching the
global RNG), the contiguous block ``[start, start + size)``, first 80 % train.
"""

from __future__ import annotations

import gzip
import io
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wattcast.contract import READING_FIELDS, READING_MAX, READING_MIN, TS_MAX, TS_MIN, Reading
from wattcast.meter_csv import ColumnMap, read_csv, resampling_notes

UCI_COLUMNS = [
    "Global_active_power",
    "Global_reactive_power",
    "Voltage",
    "Global_intensity",
    "Sub_metering_1",
    "Sub_metering_2",
    "Sub_metering_3",
]
UCI_HEADER = "Date;Time;" + ";".join(UCI_COLUMNS)
FIELD_OF = dict(zip(UCI_COLUMNS, READING_FIELDS, strict=True))
UCI_MEMBER = "household_power_consumption.txt"

DEFAULT_FRACTION = 0.01
DEFAULT_SEED = 1234
TRAIN_SHARE = 0.8

SAMPLE_NAME = "household_power_2007-11-22_2007-12-06.txt.gz"


class DataError(ValueError):
    """An input file that cannot be read as meter data (one-line message)."""


def sample_path() -> Path:
    """The 20,492-row block shipped with wattcast (the course's 1 % subset)."""
    from wattcast.assets import sample_dir

    return sample_dir() / SAMPLE_NAME


def example_path() -> Path:
    """The synthetic example of your own meter's CSV (``wattcast data example``)."""
    from wattcast.assets import sample_dir

    return sample_dir() / "example_meter.csv"


# ---------------------------------------------------------------------------- reading


def _open_text(path: Path) -> io.TextIOBase:
    """A text stream of the file's content: plain, gzip, or the data member of a zip."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a data file")
    try:
        if zipfile.is_zipfile(path):
            zf = zipfile.ZipFile(path)
            names = [n for n in zf.namelist() if n.lower().endswith((".txt", ".csv")) and not n.startswith("__MACOSX/")]
            if not names:
                raise DataError(f"{path}: the zip holds no .txt or .csv file")
            uci = [n for n in names if n.rsplit("/", 1)[-1] == UCI_MEMBER]
            name = min(uci, key=len) if uci else names[0]
            return io.TextIOWrapper(zf.open(name), encoding="utf-8", errors="replace", newline="")
        with path.open("rb") as fh:
            magic = fh.read(4)
        if magic == b"PK\x03\x04":
            raise DataError(f"{path}: damaged zip archive (no central directory; an incomplete download?)")
        if magic[:2] == b"\x1f\x8b":
            return io.TextIOWrapper(gzip.open(path), encoding="utf-8", errors="replace", newline="")
        return path.open(encoding="utf-8", errors="replace", newline="")
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: cannot open: {exc}") from None


def read_meter_file(path: str | Path, own: ColumnMap | None = None) -> pd.DataFrame:
    """Read and clean a meter file.

    Returns one row per minute with columns ``datetime``, ``ts`` (unix seconds)
    and the seven measurements named as in :data:`wattcast.contract.READING_FIELDS`.
    Rows with a missing value are dropped; ``df.attrs["rows_raw"]`` keeps the count before.
    With ``own``, the file is your own meter's CSV (:mod:`wattcast.meter_csv`): a
    measurement it does not map is NaN in every row.
    """
    path = Path(path)
    if own is not None:
        with _open_text(path) as fh:
            try:
                return read_csv(path, fh, own, DataError)
            except (EOFError, zipfile.BadZipFile, zlib.error) as exc:
                raise DataError(f"{path}: cannot read (damaged file?): {exc}") from None
    with _open_text(path) as fh:
        try:
            header = fh.readline().strip().lstrip("\ufeff")
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise DataError(f"{path}: cannot read (damaged file?): {exc}") from None
        if not header:
            raise DataError(f"{path}: the file is empty")
        sep = ";" if header.count(";") >= header.count(",") else ","
        columns = [c.strip().strip('"') for c in header.split(sep)]
        missing = [c for c in UCI_COLUMNS if c not in columns]
        has_time = {"Date", "Time"} <= set(columns) or "Datetime" in columns
        if missing or not has_time:
            what = missing + ([] if has_time else ["Date;Time or Datetime"])
            hint = ""
            if len(columns) == 1:
                hint = " (wrong separator? the UCI file uses ';', the cleaned CSV ',')"
            elif "Global_active_power" not in columns:
                hint = " (your own meter's CSV? name its columns with --time-col and --value-col)"
            raise DataError(f"{path}: missing column(s) {', '.join(what)}{hint}")
        raw = _read_rows(path, fh, sep, columns, numeric=True)
    if raw is None:  # a value that is not a number: read as text again, to name it (below)
        with _open_text(path) as fh:
            fh.readline()
            raw = _read_rows(path, fh, sep, columns, numeric=False)
    assert raw is not None
    if raw.empty:
        raise DataError(f"{path}: the file has a header but no rows")
    rows_raw = len(raw)
    raw = raw.dropna(subset=UCI_COLUMNS + (["Datetime"] if "Datetime" in columns else ["Date", "Time"]))

    out = pd.DataFrame(index=raw.index)
    if "Datetime" in columns:
        stamp = pd.to_datetime(raw["Datetime"], errors="coerce", format="ISO8601")
        bad_what = "Datetime"
    else:
        stamp = _date_and_time(raw["Date"], raw["Time"])
        bad_what = "Date/Time"
    if stamp.isna().any():
        i = int(np.flatnonzero(stamp.isna().to_numpy())[0])
        raise DataError(f"{path}: row {raw.index[i] + 1}: {bad_what} is not a d/m/yyyy hh:mm:ss time")
    for col in UCI_COLUMNS:
        values = pd.to_numeric(raw[col], errors="coerce")
        if values.isna().any():
            i = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise DataError(f"{path}: row {raw.index[i] + 1}: {col} is not a number: {raw[col].iloc[i]!r:.40}")
        out[FIELD_OF[col]] = values.astype(np.float64)
    bad = ~np.isfinite(out.to_numpy()).all(axis=1)
    if bad.any():
        raise DataError(f"{path}: row {out.index[int(np.flatnonzero(bad)[0])] + 1}: non-finite value")
    values = out.to_numpy()
    outside = (values < READING_MIN) | (values > READING_MAX)
    if outside.any():
        r, c = np.argwhere(outside)[0]
        raise DataError(
            f"{path}: row {out.index[r] + 1}: {UCI_COLUMNS[c]} out of range "
            f"[{READING_MIN:g}, {READING_MAX:g}] of the message contract: {values[r, c]:g}"
        )
    out.insert(0, "datetime", stamp.dt.tz_localize(None) if stamp.dt.tz is not None else stamp)
    # Explicit conversion: pandas 3 stores datetimes in microseconds, not nanoseconds.
    out.insert(1, "ts", ((out["datetime"] - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)).astype(np.int64))
    ts = out["ts"].to_numpy()
    bad_ts = (ts < TS_MIN) | (ts > TS_MAX)
    if bad_ts.any():
        r = int(np.flatnonzero(bad_ts)[0])
        raise DataError(
            f"{path}: row {out.index[r] + 1}: {bad_what} {out['datetime'].iloc[r]} outside the message "
            "contract's 1990-01-01 .. 2100-01-01"
        )
    if out.empty:
        raise DataError(f"{path}: no complete rows (every row has a missing value)")
    # time order and unique timestamps (module docstring): offline and live see the same stream
    out_of_order = int((ts[1:] < np.maximum.accumulate(ts)[:-1]).sum())
    if out_of_order:
        out = out.sort_values("ts", kind="stable")
    dup = out["ts"].duplicated(keep="first").to_numpy()
    duplicates = int(dup.sum())
    if duplicates:
        out = out[~dup]
    source_rows = out.index.to_numpy(np.int64)  # 0-based data rows of the file (extract_block copies them)
    out = out.reset_index(drop=True)
    out.attrs["rows_raw"] = rows_raw
    out.attrs["out_of_order"] = out_of_order
    out.attrs["duplicates_dropped"] = duplicates
    out.attrs["source_rows"] = source_rows
    return out


def _read_rows(path: Path, fh: io.TextIOBase, sep: str, columns: list[str], numeric: bool) -> pd.DataFrame | None:
    """The rows after the header; with ``numeric`` the measurements parsed as floats by the CSV
    reader itself (None if one is not a number), else every column as text."""
    dtype: Any = {c: np.float64 if c in UCI_COLUMNS else str for c in columns} if numeric else str
    try:
        return pd.read_csv(
            fh,
            sep=sep,
            names=columns,
            header=None,
            dtype=dtype,
            na_values=["?", ""],
            keep_default_na=False,
            engine="c",
        )
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: cannot read (damaged file?): {exc}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a well-formed {sep!r}-separated file: {str(exc).splitlines()[0]}") from None
    except ValueError:
        if numeric:
            return None
        raise


def _date_and_time(date: pd.Series, time: pd.Series) -> pd.Series:
    """The UCI file's ``d/m/yyyy`` and ``hh:mm:ss`` columns as one datetime column (NaT where invalid).

    A day has 1,440 minutes: each distinct date and each distinct time is parsed once
    (strptime over every row of the full data set took about 10 s of CPU).
    """
    date_codes, dates = pd.factorize(date)
    time_codes, times = pd.factorize(time)
    epoch = pd.Timestamp("1970-01-01")
    day_s = (pd.to_datetime(pd.Series(dates), format="%d/%m/%Y", errors="coerce") - epoch) // pd.Timedelta(seconds=1)
    clock = pd.to_datetime(pd.Series(times), format="%H:%M:%S", errors="coerce")
    clock_s = (clock - clock.dt.normalize()) // pd.Timedelta(seconds=1)
    seconds = day_s.to_numpy(np.float64)[date_codes] + clock_s.to_numpy(np.float64)[time_codes]  # NaN: invalid
    stamp = pd.Series(pd.NaT, index=date.index, dtype="datetime64[us]")
    ok = ~np.isnan(seconds)
    stamp[ok] = (seconds[ok].astype(np.int64) * 1_000_000).astype("datetime64[us]")
    return stamp


def data_notes(info: dict[str, Any]) -> list[str]:
    """What the reader changed in the file's order (one line each, for stderr)."""
    notes = []
    if info.get("out_of_order"):
        notes.append(f"{info['out_of_order']} row(s) older than a row before them: put in time order")
    if info.get("duplicates_dropped"):
        notes.append(f"{info['duplicates_dropped']} row(s) with the timestamp of an earlier row: dropped (first kept)")
    notes += resampling_notes(info.get("resampling") or {})
    if info.get("absent"):
        notes.append(f"not in the data (absent from its readings): {', '.join(info['absent'])}")
    return notes


def absent_fields(df: pd.DataFrame) -> list[str]:
    """The measurements a meter frame lacks (NaN in every row: your own CSV's unmapped fields)."""
    return [f for f in READING_FIELDS if len(df) and bool(df[f].isna().all())]


def lacking_note(model: str, lacking: list[str]) -> str:
    """Why ``model`` is not run on data without the measurements ``lacking`` (one line)."""
    return (
        f"{model} needs {', '.join(lacking)}, which the data does not have "
        f"(map a column with --field {lacking[0]}=COLUMN): not run"
    )


# ------------------------------------------------------------------------------ split


def subset_bounds(rows: int, fraction: float, seed: int) -> tuple[int, int]:
    """The notebook's contiguous block ``[start, start + size)`` over ``rows`` cleaned rows."""
    if not 0.0 < fraction <= 1.0:
        raise DataError(f"fraction must be in (0, 1], got {fraction}")
    size = int(rows * fraction)
    if size < 10:
        raise DataError(f"a fraction of {fraction} of {rows} rows leaves {size} rows: too few to split")
    start = int(np.random.RandomState(seed).randint(0, rows - size)) if rows > size else 0
    return start, size


@dataclass
class Split:
    train: pd.DataFrame
    val: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)


def load_split(
    path: str | Path | None = None,
    fraction: float | None = None,
    seed: int = DEFAULT_SEED,
    columns: ColumnMap | None = None,
) -> Split:
    """Read ``path`` (default: the shipped sample) and cut the notebook's train/validation split.

    ``fraction`` defaults to 0.01 for a data file (the UCI data set's four years) and to
    1.0 for the shipped sample, which already is that 1 % block, and for your own meter's
    CSV (``columns``: the whole file, 80 % to train, 20 % to replay).
    """
    is_sample = path is None
    if is_sample and columns is not None:
        raise DataError("--time-col and --value-col describe your own CSV: give it with --data")
    path = sample_path() if path is None else Path(path)
    if fraction is None:
        fraction = 1.0 if is_sample or columns is not None else DEFAULT_FRACTION
    return split_frame(read_meter_file(path, columns), fraction, seed, "shipped sample" if is_sample else str(path))


def split_frame(df: pd.DataFrame, fraction: float, seed: int, source: str) -> Split:
    """The notebook's split of an already read meter file (:func:`read_meter_file`): one window per seed."""
    start, size = subset_bounds(len(df), fraction, seed)
    block = df.iloc[start : start + size]
    cut = int(size * TRAIN_SHARE)
    train, val = block.iloc[:cut].reset_index(drop=True), block.iloc[cut:].reset_index(drop=True)
    fmt = "%Y-%m-%d %H:%M:%S"
    info = {
        "source": source,
        "fraction": fraction,
        "seed": seed,
        "rows_raw": df.attrs.get("rows_raw"),
        "rows_clean": len(df),
        "out_of_order": df.attrs.get("out_of_order", 0),
        "duplicates_dropped": df.attrs.get("duplicates_dropped", 0),
        **{k: df.attrs[k] for k in ("columns", "unit", "resampling", "absent") if k in df.attrs},
        "start_index": start,
        "block": [block["datetime"].iloc[0].strftime(fmt), block["datetime"].iloc[-1].strftime(fmt)],
        "train_rows": len(train),
        "val_rows": len(val),
        "train_window": [train["datetime"].iloc[0].strftime(fmt), train["datetime"].iloc[-1].strftime(fmt)],
        "val_window": [val["datetime"].iloc[0].strftime(fmt), val["datetime"].iloc[-1].strftime(fmt)],
    }
    return Split(train, val, info)


def to_readings(df: pd.DataFrame, house: str = "h000", seq0: int = 0) -> list[Reading]:
    """The rows of ``df`` as :class:`Reading` messages of ``house``, numbered from ``seq0``."""
    array = df[list(READING_FIELDS)].to_numpy(np.float64)
    values = array.astype(object) if np.isnan(array).any() else array  # a measurement the meter lacks: None
    if values is not array:
        values[np.isnan(array)] = None
    ts = df["ts"].to_numpy(np.int64).tolist()
    return [Reading(house, seq0 + i, t, *v) for i, (t, v) in enumerate(zip(ts, values.tolist(), strict=True))]


# ----------------------------------------------------------------------- write a block


def extract_block(source: str | Path, out: str | Path, fraction: float = DEFAULT_FRACTION, seed: int = DEFAULT_SEED) -> int:
    """Write the notebook's block of ``source`` to ``out`` (gzip if it ends in .gz) in the UCI format.

    The lines are copied verbatim from the source (rows with a missing value left
    out), so the result reads back to exactly the same rows.  Returns the row count.
    """
    source, out = Path(source), Path(out)
    df = read_meter_file(source)  # validates the whole file first
    start, size = subset_bounds(len(df), fraction, seed)
    with _open_text(source) as fh:
        header = fh.readline().strip()
        if header.split(";")[:2] != ["Date", "Time"]:
            raise DataError(f"{source}: extract needs the UCI text format (Date;Time;...), not a CSV")
        # exactly the rows read_meter_file keeps, in its order (data rows as pandas counts them: no blank lines)
        lines = [ln for ln in (raw.rstrip("\r\n") for raw in fh) if ln.strip()]
    block = [lines[k] for k in df.attrs["source_rows"][start : start + size]]
    out.parent.mkdir(parents=True, exist_ok=True)
    text = UCI_HEADER + "\r\n" + "\r\n".join(block) + "\r\n"
    if out.suffix == ".gz":
        with gzip.GzipFile(out, "wb", mtime=0) as gz:
            gz.write(text.encode())
    else:
        out.write_text(text, newline="")
    return len(block)
