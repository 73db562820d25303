"""The offline report, from the store of a real short run (and of hand-made stores).

One ``python -m wattcast run --limit 300 --report`` per module (private mosquitto on
a free port, a few seconds); the report is built again from its store and checked
against the store: files, PNG sizes, embedded images, table numbers.
"""

from __future__ import annotations

import base64
import json
import math
import shutil
import sqlite3
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO
from PIL import Image

from wattcast import report
from wattcast.broker import available_kind
from wattcast.contract import MODELS
from wattcast.report import DPI, FIGURES, build_report

MODELS_DIR = REPO / "models"
ALL_FILES = {"report.html", "report.md", *FIGURES}
T0 = 1196680920


# ------------------------------------------------------------------------- helpers


class TableParser(HTMLParser):
    """{table id: {(house, model): {col: (data-value, text)}}} of the report's tables."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict[tuple[str, str], dict[str, tuple[str, str]]]] = {}
        self.table: str | None = None
        self.row: dict[str, tuple[str, str]] | None = None
        self.cell: tuple[str, str] | None = None
        self.text = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.table = a.get("id")
            self.tables[self.table] = {}
        elif tag == "tr" and self.table and "data-model" in a:
            self.row = self.tables[self.table].setdefault((a["data-house"], a["data-model"]), {})
        elif tag == "td" and self.row is not None and "data-col" in a:
            self.cell = (a["data-col"], a["data-value"])
            self.text = ""

    def handle_data(self, data):
        if self.cell:
            self.text += data

    def handle_endtag(self, tag):
        if tag == "td" and self.cell and self.row is not None:
            self.row[self.cell[0]] = (self.cell[1], self.text)
            self.cell = None
        elif tag == "tr":
            self.row = None
        elif tag == "table":
            self.table = None


def tables(html_text: str):
    p = TableParser()
    p.feed(html_text)
    return p.tables


def query(db: Path, sql: str, *args):
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def check_pngs(paths: list[Path]) -> None:
    for p in paths:
        if p.suffix == ".png":
            w, h = FIGURES[p.name]
            with Image.open(p) as img:
                img.load()  # decodes the whole image
                assert img.size == (round(w * DPI), round(h * DPI)), p.name


# ------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real short run: its store, its --report folder and its JSON result."""
    if available_kind() is None:
        pytest.skip("no MQTT broker installed (mosquitto or amqtt)")
    d = tmp_path_factory.mktemp("run")
    db, out = d / "w.db", d / "run-report"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "wattcast",
            "run",
            "--limit",
            "300",
            "--store",
            str(db),
            "--json",
            "--quiet",
            "--report",
            str(out),
            "--models-dir",
            str(MODELS_DIR),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    return db, out, json.loads(proc.stdout)


@pytest.fixture(scope="module")
def built(run, tmp_path_factory):
    db = run[0]
    out = tmp_path_factory.mktemp("report")
    paths = build_report(db, out, models_dir=MODELS_DIR)
    return db, out, paths


# ------------------------------------------------------------------ the real run


@pytest.mark.integration
def test_run_writes_the_report_at_the_end(run):
    _, out, result = run
    assert sorted(Path(p).name for p in result["report"]) == sorted(ALL_FILES)
    assert {p.name for p in out.iterdir()} == ALL_FILES
    check_pngs([Path(p) for p in result["report"]])


@pytest.mark.integration
def test_every_file_exists_and_every_png_decodes_at_its_size(built):
    _, out, paths = built
    assert paths[0] == out / "report.html" and paths[1] == out / "report.md"
    assert {p.name for p in paths} == ALL_FILES
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    check_pngs(paths)


@pytest.mark.integration
def test_html_is_self_contained(built):
    _, out, paths = built
    text = (out / "report.html").read_text(encoding="utf-8")
    pngs = [p for p in paths if p.suffix == ".png"]
    assert text.count("data:image/png;base64,") == len(pngs) == len(FIGURES)
    for p in pngs:  # each image embedded is the file written
        assert f'src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}"' in text
    assert "<img" in text and 'src="http' not in text and '.png"' not in text


@pytest.mark.integration
def test_html_table_holds_the_stores_numbers(built):
    db, out, _ = built
    t = tables((out / "report.html").read_text(encoding="utf-8"))["summary"]
    summary = {
        m: (n, mse, rmse, mae, u, p)
        for m, n, mse, rmse, mae, u, p in query(
            db, "SELECT model, n, mse, rmse, mae, unmatched, pending FROM summary WHERE house = 'h000'"
        )
    }
    assert {model for _, model in t} == set(summary) == set(MODELS)
    pooled = {
        m: (n, mse) for m, n, mse in query(db, "SELECT model, COUNT(*), AVG(error * error) FROM matches GROUP BY model")
    }
    for (house, model), row in t.items():
        assert house == "h000"
        n, mse, rmse, mae, unmatched, pending = summary[model]
        assert int(row["n"][0]) == n == pooled[model][0] and row["n"][1] == str(n)
        for col, value in (("mse", mse), ("rmse", rmse), ("mae", mae)):
            assert float(row[col][0]) == value, col  # the store's number, exactly
            assert row[col][1] == f"{value:.4f}"
        assert float(row["mse"][0]) == pytest.approx(pooled[model][1], rel=1e-9)
        assert (int(row["unmatched"][0]), int(row["pending"][0])) == (unmatched, pending)
        skill = 1 - mse / summary["persistence"][1]
        assert float(row["skill"][0]) == pytest.approx(skill, abs=1e-12) and row["skill"][1] == f"{skill:.3f}"
        lat = np.array(
            [
                r[0]
                for r in query(
                    db,
                    "SELECT (received_at - reading_sent_at) * 1000 FROM forecasts "
                    "WHERE model = ? AND reading_sent_at IS NOT NULL",
                    model,
                )
            ]
        )
        assert float(row["latency_p50_ms"][0]) == pytest.approx(np.percentile(lat, 50))
        assert float(row["latency_p99_ms"][0]) == pytest.approx(np.percentile(lat, 99))
    assert float(t[("h000", "persistence")]["skill"][0]) == 0.0
    assert t[("h000", "persistence")]["skill"][1] == "0.000"
    assert (t[("h000", "persistence")]["parameters"][0], t[("h000", "linear")]["parameters"][0]) == ("0", "2")
    assert t[("h000", "linear")]["size_bytes"][1] == "0 B"
    from wattcast.forecasters import LstmModel

    for model in ("lstm", "lstm-augmented"):
        d = LstmModel(MODELS_DIR / model).describe()
        assert int(t[("h000", model)]["parameters"][0]) == d["parameters"]
        assert int(t[("h000", model)]["size_bytes"][0]) == d["size_bytes"]
    text = (out / "report.html").read_text(encoding="utf-8")
    best = min(summary, key=lambda m: summary[m][1])
    assert f"Most accurate (house h000): <strong>{best}</strong>" in text
    assert "per-house" not in tables(text)  # one house: no per-house table


@pytest.mark.integration
def test_markdown_has_the_table_and_references_the_pngs(built):
    _, out, _ = built
    md = (out / "report.md").read_text(encoding="utf-8")
    for name in FIGURES:
        assert f"]({name})" in md and (out / name).is_file()
    t = tables((out / "report.html").read_text(encoding="utf-8"))["summary"]
    for (_, model), row in t.items():
        cells = [c.strip() for c in next(line for line in md.splitlines() if line.startswith(f"| {model} |")).split("|")]
        assert [row[k][1] for k in ("n", "mse", "rmse", "mae", "skill")] == cells[2:7]
    assert "data:image" not in md


@pytest.mark.integration
def test_report_from_a_copy_and_other_artifacts(run, built, tmp_path):
    """A copy of the store alone is enough; an artifact of another version or none at all is a note, not a failure."""
    db, out, _ = built
    copy = tmp_path / "copy" / "store.db"
    copy.parent.mkdir()
    shutil.copy(db, copy)
    before = copy.read_bytes()
    models = tmp_path / "models"
    shutil.copytree(MODELS_DIR / "lstm", models / "lstm")
    meta = json.loads((models / "lstm" / "metadata.json").read_text())
    meta["version"] = "lstm-retrained"
    (models / "lstm" / "metadata.json").write_text(json.dumps(meta))
    paths = build_report(copy, tmp_path / "out", models_dir=models)  # no lstm-augmented in there at all
    assert copy.read_bytes() == before and sorted(p.name for p in copy.parent.iterdir()) == ["store.db"]  # read only
    check_pngs(paths)
    names = {p.name for p in paths}
    assert names == ALL_FILES - {"loss_curves.png"}
    text = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "is version lstm-retrained, but the run forecast with lstm-" in text
    assert "lstm-augmented: no usable artifact in" in text
    assert text.count("data:image/png;base64,") == len(names) - 2
    new, old = tables(text)["summary"], tables((out / "report.html").read_text(encoding="utf-8"))["summary"]
    for key, row in new.items():
        for col in ("n", "mse", "rmse", "mae", "skill", "unmatched", "pending", "latency_p50_ms"):
            assert row[col] == old[key][col]
        if key[1].startswith("lstm"):
            assert row["parameters"][1] == row["size_bytes"][1] == "n/a"


# ----------------------------------------------------------------- bad input


def test_a_store_that_is_not_one_is_a_clear_error(tmp_path, capsys):
    from wattcast.cli import main
    from wattcast.store import Store

    missing = tmp_path / "nope.db"
    with pytest.raises(FileNotFoundError, match="no collector store at"):
        build_report(missing, tmp_path / "out")
    assert not missing.exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(ValueError, match="is empty"):
        build_report(empty, tmp_path / "out")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(ValueError, match="not a readable SQLite database"):
        build_report(junk, tmp_path / "out")
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(ValueError, match="not a wattcast collector store"):
        build_report(other, tmp_path / "out")
    fresh = tmp_path / "fresh.db"
    Store(fresh).close()
    with pytest.raises(ValueError, match="holds no run yet"):
        build_report(fresh, tmp_path / "out")
    with pytest.raises(ValueError, match="is a folder"):
        build_report(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    capsys.readouterr()
    assert main(["report", "--db", str(missing), "--out", str(tmp_path / "out")]) == 1
    assert main(["report", "--db", str(junk), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("wattcast: error: ") for line in err)


# ------------------------------------------------------ hand-made multi-house stores


def make_store(path: Path, houses=("h000", "h001"), summary: bool = True) -> Path:
    """Two houses, linear and persistence, 120 minutes; h001 misses the reading of minute 50."""
    from wattcast.contract import Forecast, Reading, Status
    from wattcast.scoring import Scoreboard
    from wattcast.store import Store

    store, board = Store(path), Scoreboard(3600)
    store.set_meta("collector", {"models": ["linear", "persistence"], "window_s": 3600, "started_at": 0})
    rng = np.random.default_rng(7)
    for k, house in enumerate(houses):
        readings, forecasts, matches = [], [], []
        for i in range(120):
            ts, sent = T0 + 60 * i, 1000.0 + i
            gap = 1.0 + 0.5 * math.sin(i / 9 + k) + rng.normal(0, 0.05)
            if not (house == "h001" and i == 50):
                r = Reading(house, i, ts, gap, 0.1, 240.0, 4.0, 0.0, 0.0, 1.0, sent)
                matches += board.add_reading(r)
                readings.append((r, sent + 0.001))
            for j, (model, version, value) in enumerate(
                (("linear", "linear-mu0.9", gap + 0.2 * rng.normal()), ("persistence", "persistence-1", gap))
            ):
                f = Forecast(house, model, version, i, ts, ts + 300, value, sent)
                _, m = board.add_forecast(f)
                forecasts.append((f, sent + 0.01 * (j + 1) + 0.001 * k))
                if m:
                    matches.append(m)
        store.add_readings(readings)
        store.add_forecasts(forecasts)
        store.add_matches("default", matches)
    store.set_node(Status("predictor-linear-1111", "offline", "predictor", 5.0, {"rss_kb": 999, "startup_ms": 1}))
    store.set_node(Status("predictor-linear-4242", "online", "predictor", 9.0, {"rss_kb": 51200, "startup_ms": 1234}))
    store.set_node(Status("predictor-persistence", "online", "predictor", 9.0, {"received": 5}))
    if summary:
        store.set_summary([board.metrics(h, m) for h in houses for m in ("linear", "persistence")])
    store.commit()
    store.close()
    return path


@pytest.mark.parametrize("summary", [True, False], ids=["finished", "unfinished"])
def test_multi_house_rows_and_aggregate(tmp_path, summary):
    db = make_store(tmp_path / "w.db", summary=summary)
    paths = build_report(db, tmp_path / "out")
    check_pngs(paths)
    assert {p.name for p in paths} == ALL_FILES - {"loss_curves.png"}
    text = paths[0].read_text(encoding="utf-8")
    t = tables(text)
    per_house = list(t["per-house"])
    assert per_house == [
        ("all", "linear"),
        ("all", "persistence"),
        ("h000", "linear"),
        ("h000", "persistence"),
        ("h001", "linear"),
        ("h001", "persistence"),
    ]  # aggregate first
    counts = {
        (h, m): (n, mse)
        for h, m, n, mse in query(db, "SELECT house, model, COUNT(*), AVG(error * error) FROM matches GROUP BY house, model")
    }
    for (house, model), row in t["per-house"].items():
        if house == "all":
            n = sum(c[0] for (h, m), c in counts.items() if m == model)
            mse = sum(c[0] * c[1] for (h, m), c in counts.items() if m == model) / n
        else:
            n, mse = counts[(house, model)]
        assert int(row["n"][0]) == n and float(row["mse"][0]) == pytest.approx(mse, rel=1e-12)
        assert row["unmatched"][0] == ("1" if house in ("h001", "all") else "0")  # the reading of minute 50
        assert row["pending"][0] == ("10" if house == "all" else "5")
        assert row["skill"][1] == ("0.000" if model == "persistence" else f"{float(row['skill'][0]):.3f}")
    for model in ("linear", "persistence"):
        assert t["summary"][("all", model)]["mse"] == t["per-house"][("all", model)]["mse"]
    linear, persistence = t["summary"][("all", "linear")], t["summary"][("all", "persistence")]
    assert (linear["rss_kb"][1], linear["startup_ms"][1]) == ("50.0 MiB", "1.23")  # the newest status
    assert (persistence["rss_kb"][1], persistence["startup_ms"][1]) == ("n/a", "n/a")
    assert float(persistence["latency_p50_ms"][0]) == pytest.approx(20.5, abs=1.0)
    assert "persistence has no rss_kb / startup_ms counter" in text
    assert "No LSTM model in this run: no training loss curves." in text
    assert ("no summary (the run had not finished)" in text) == (not summary)
    assert "house h000 (one of 2; the tables hold all)" in text
    md = paths[1].read_text(encoding="utf-8")
    assert "| all | linear |" in md and "| h001 | persistence |" in md


def test_node_ids_map_to_models():
    assert report.data._node_model("predictor-lstm") == "lstm"
    assert report.data._node_model("predictor-lstm-augmented") == "lstm-augmented"
    assert report.data._node_model("predictor-lstm-4242") == "lstm"
    assert report.data._node_model("predictor-lstm-augmented-4242") == "lstm-augmented"
    assert report.data._node_model("predictor-unknown-1") is None
    assert report.data._node_model("collector") is None


def test_rolling_mse_is_the_mean_over_the_event_time_window():
    from wattcast.scoring import rolling_mse

    rng = np.random.default_rng(1)
    ts = np.cumsum(rng.integers(1, 200, 400)) + T0
    err = rng.normal(0, 1, 400)
    # by brute force: every match whose target lies in (t - 3600, t]
    expected = [float(np.mean(err[(ts > t - 3600) & (ts <= t)] ** 2)) for t in ts]
    assert rolling_mse(ts, err, 3600) == pytest.approx(expected, rel=1e-9)


def test_skill_and_error_by_hour_of_the_day_are_computed_from_the_matches():
    from wattcast.report.plots import skill_and_hours

    day = 1_200_009_600  # a midnight (unix seconds)
    persistence = np.array([[day + 3600 * 1, 1.0], [day + 3600 * 1 + 60, 3.0], [day + 3600 * 5, 2.0]])
    model = np.array([[day + 3600 * 1, 0.5], [day + 3600 * 1 + 60, 0.5], [day + 3600 * 5, 1.0]])
    skill, hours = skill_and_hours({"persistence": persistence, "gbm": model})
    assert skill["gbm"] == pytest.approx(1 - (0.25 + 0.25 + 1.0) / 3 / ((1 + 9 + 4) / 3))
    assert hours["persistence"][1] == pytest.approx(5.0) and hours["persistence"][5] == pytest.approx(4.0)
    assert np.isnan(hours["gbm"][0]) and hours["gbm"][1] == pytest.approx(0.25)
    assert skill_and_hours({"gbm": model})[0] == {}  # no persistence: no skill
