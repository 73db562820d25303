"""Bad input files: one clear line on stderr, a non-zero exit, never a traceback.

Every case is checked at unit level through :func:`wattcast.data.read_meter_file`;
the cases in ``CLI_CASES`` also through ``python -m wattcast evaluate`` as a
subprocess (all started at once, to keep the test fast).
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import REPO

from wattcast.data import DataError, load_split, read_meter_file, sample_path


def _lines(n: int) -> list[str]:
    with gzip.open(sample_path(), "rt", newline="") as fh:
        return [next(fh).rstrip("\r\n") for _ in range(n + 1)]


def _text(lines: list[str]) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


def _replace_field(line: str, index: int, value: str) -> str:
    cells = line.split(";")
    cells[index] = value
    return ";".join(cells)


def _zip(member: str, content: bytes) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, content)
    return buf.getvalue()


def _damaged(content: bytes, at: int) -> bytes:
    """``content`` with 50 bytes scrambled from ``at`` on."""
    out = bytearray(content)
    for j in range(at, at + 50):
        out[j] ^= 0x5A
    return bytes(out)


def _damaged_zip_crc() -> bytes:
    """A stored (uncompressed) zip whose data no longer matches its CRC-32."""
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("household_power_consumption.txt", _text(L * 20))
    out = bytearray(buf.getvalue())
    out[out.index(b"246.980")] = ord("3")
    return bytes(out)


L = _lines(40)
HEADER = L[0]

#: name -> (file content, or "missing" / "directory"; a fragment the error line must hold, or a tuple of them)
CASES: dict[str, tuple[bytes | str, str | tuple[str, ...]]] = {
    "missing_columns": (
        _text(["Date;Time;Global_active_power;Voltage", "22/11/2007;02:08:00;0.226;246.980"]),
        "missing column(s) Global_reactive_power",
    ),
    "no_time_columns": (_text([HEADER.replace("Date;Time", "Day;Hour")] + L[1:]), "Date;Time or Datetime"),
    "empty": (b"", "empty"),
    "blank_lines_only": (b"\r\n\r\n", "empty"),
    "header_only": (_text([HEADER]), "header but no rows"),
    "junk_value": (_text(L[:20] + [_replace_field(L[20], 4, "n/a")] + L[21:]), "row 20: Voltage is not a number: 'n/a'"),
    "infinite_value": (_text(L[:5] + [_replace_field(L[5], 2, "inf")] + L[6:]), "non-finite"),
    "decimal_comma": (_text([HEADER] + [ln.replace(".", ",") for ln in L[1:]]), "is not a number"),
    "tab_separated": (_text([ln.replace(";", "\t") for ln in L]), "wrong separator"),
    "comma_rows_semicolon_header": (_text([HEADER] + [ln.replace(";", ",") for ln in L[1:]]), "no complete rows"),
    "too_many_fields": (_text(L[:3] + [L[3] + ";1;2"] + L[4:]), "not a well-formed"),
    "bad_date": (_text(L[:7] + ["31/02/2007" + L[7][L[7].index(";") :]] + L[8:]), "row 7: Date/Time"),
    "bad_time": (_text(L[:2] + [L[2].replace("02:09:00", "25:09:00")] + L[3:]), "row 2: Date/Time"),
    "us_dates": (_text([HEADER] + ["11/22/2007" + ln[ln.index(";") :] for ln in L[1:]]), "Date/Time"),
    "bad_csv_datetime": (
        b",Datetime,Global_active_power,Global_reactive_power,Voltage,Global_intensity,"
        b"Sub_metering_1,Sub_metering_2,Sub_metering_3\n0,2007-11-22 02:08:00,1,0,240,4,0,0,0\n"
        b"1,yesterday,1,0,240,4,0,0,0\n",
        "row 2: Datetime",
    ),
    "all_rows_missing": (_text([HEADER] + [ln[: ln.index(";", 11)] + ";?" * 7 for ln in L[1:]]), "no complete rows"),
    "binary_junk": (bytes(range(256)) * 8, "missing column(s)"),
    "truncated_gzip": (gzip.compress(_text(L))[:40], "cannot"),
    "zip_without_data": (_zip("readme.md", b"# nothing"), "no .txt or .csv"),
    # A zip cut short has no central directory, so it is read as text (poor message, but one line).
    "truncated_zip": (_zip("household_power_consumption.txt", _text(L * 20))[:-30], ("cannot", "damaged", "missing column")),
    "damaged_zip_crc": (_damaged_zip_crc(), ("cannot", "damaged", "CRC")),
    "damaged_zip_deflate": (
        _damaged(_zip("household_power_consumption.txt", _text(L * 200)), 200),
        ("cannot", "damaged", "decompress"),
    ),
    "damaged_gzip_deflate": (_damaged(gzip.compress(_text(L * 200)), 20), ("cannot", "damaged", "decompress")),
    "nonexistent": ("missing", "no such file"),
    "directory": ("directory", "is a directory"),
}


def _cases(names: list[str]) -> list:
    return list(names)


#: the cases also run through the CLI (a process each; the others are checked at unit level only)
CLI_CASES = [
    "missing_columns",
    "empty",
    "header_only",
    "junk_value",
    "tab_separated",
    "comma_rows_semicolon_header",
    "bad_date",
    "nonexistent",
    "directory",
    "truncated_zip",
    "damaged_zip_deflate",
]


def _holds_fragment(message: str, name: str) -> bool:
    fragments = CASES[name][1]
    return any(f in message for f in ((fragments,) if isinstance(fragments, str) else fragments))


def _make(tmp: Path, name: str) -> Path:
    content, _ = CASES[name]
    path = tmp / f"{name}.txt"
    if content == "directory":
        path.mkdir()
    elif content != "missing":
        path.write_bytes(content)
    return path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTCAST_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Run ``wattcast evaluate --data <case>`` for every case, all processes at once."""
    tmp = tmp_path_factory.mktemp("bad_inputs")
    procs = {}
    for name in CLI_CASES:
        cmd = [sys.executable, "-m", "wattcast", "evaluate", "--data", str(_make(tmp, name)), "--models", "persistence"]
        procs[name] = (
            cmd,
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp),
        )
    results = {}
    for name, (cmd, proc) in procs.items():
        out, err = proc.communicate(timeout=120)
        results[name] = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    return results


@pytest.mark.parametrize("name", _cases(CLI_CASES))
def test_cli_reports_bad_input_in_one_line(cli_results, name):
    result = cli_results[name]
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("wattcast: error: ")
    assert _holds_fragment(lines[0], name)
    assert f"{name}.txt" in lines[0]  # names the file
    assert result.stdout == ""


@pytest.mark.parametrize("name", _cases(list(CASES)))
def test_read_meter_file_raises_data_error(tmp_path, name):
    path = _make(tmp_path, name)
    with pytest.raises(DataError) as info:
        read_meter_file(path)
    message = str(info.value)
    assert "\n" not in message
    assert _holds_fragment(message, name)
    with pytest.raises(DataError):
        load_split(path, fraction=1.0)


def test_cli_accepts_a_good_small_file(tmp_path):
    # the counterpart: the same command on a well-formed file (','-separated UCI, which is accepted) works
    path = tmp_path / "comma.txt"
    path.write_bytes(_text([ln.replace(";", ",") for ln in L]))
    result = subprocess.run(
        [sys.executable, "-m", "wattcast", "evaluate", "--data", str(path), "--fraction", "1", "--models", "persistence"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "persistence" in result.stdout


def test_cli_too_small_a_fraction(tmp_path):
    path = tmp_path / "small.txt"
    path.write_bytes(_text(L))
    result = subprocess.run(
        [sys.executable, "-m", "wattcast", "evaluate", "--data", str(path), "--models", "persistence"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert result.returncode != 0
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("wattcast: error: ") and "too few" in result.stderr
