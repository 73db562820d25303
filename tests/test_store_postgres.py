"""The collector's store on PostgreSQL: the same schema, scores and report as on SQLite.

Each test creates a database of its own on the machine's PostgreSQL server and drops it
(the ``postgres_url`` fixture); the store's unit tests run on both back-ends through the
``store_location`` fixture (tests/test_runs.py).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
from helpers import REPO, stop_all
from test_pipeline import offline_mse, spawn, wait_online

from wattcast.store import RunReader, Store
from wattcast.store.database import shown, sql_types
from wattcast.store.schema import SCHEMA

pytestmark = pytest.mark.integration


def with_password(url: str, password: str) -> str:
    """``url`` with a password (the test server trusts loopback and never asks for it)."""
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{password}@{host}"


def test_the_schema_keeps_every_number_exact_on_postgresql():
    pg = sql_types(SCHEMA)
    assert " REAL" not in pg and "BLOB" not in pg and "INTEGER" not in pg  # real would be 4 bytes there
    assert pg.count("DOUBLE PRECISION") == SCHEMA.count(" REAL") and "BYTEA" in pg
    assert shown("postgresql://u:secret@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert shown("postgresql://u@h/d") == "postgresql://u@h/d" and shown("a/b.db") == "a/b.db"


def test_a_live_collector_scores_into_postgresql_as_offline_and_the_report_reads_it(broker, val, tmp_path, postgres_url):
    url, limit = broker.url, 300
    store = with_password(postgres_url, "s3cret-pw")
    models = ("persistence", "linear")
    env_store = {"WATTCAST_STORE": store}  # a password stays out of ps
    collector = subprocess.Popen(
        [sys.executable, "-m", "collector", "--broker", url, "--models", *models, "--exit-on-end", "--node", "collector-pg"],
        stdout=(tmp_path / "collector.log").open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **env_store},
        cwd=REPO,
    )
    procs = [collector]
    procs += [
        spawn("predictor", "--broker", url, "--model", m, "--node", f"predictor-{m}-pg", log=tmp_path / f"{m}.log")
        for m in models
    ]
    try:
        wait_online(url, ["collector-pg", "predictor-persistence-pg", "predictor-linear-pg"])
        sim = spawn("simulator", "--broker", url, "--limit", str(limit), "--node", "simulator-pg", log=tmp_path / "sim.log")
        procs.append(sim)
        assert sim.wait(timeout=180) == 0, (tmp_path / "sim.log").read_text()[-2000:]
        assert collector.wait(timeout=180) == 0, (tmp_path / "collector.log").read_text()[-2000:]
    finally:
        stop_all(procs)
    with RunReader(store) as reader:
        summary = {row[1]: row for row in reader.summary()}
        assert reader.counts()["readings"] == limit
        assert reader.counts()["forecasts"] == len(models) * (limit - 1)
    for model in models:
        n, mse = offline_mse(model, val.iloc[:limit])
        _, _, got_n, got_mse, *_ = summary[model]
        assert got_n == n and math.isclose(got_mse, mse, rel_tol=1e-9), (model, got_n, got_mse, n, mse)
    s = Store(store)
    try:
        assert s.missing(s.run(), models) == [] and s.published(s.run()) == limit
    finally:
        s.close()
    out = tmp_path / "report"
    r = subprocess.run(
        [sys.executable, "-m", "wattcast", "report", "--db", store, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr
    text = (out / "report.md").read_text()
    assert "| linear" in text or "linear" in text
    for path in [*out.iterdir(), tmp_path / "collector.log"]:
        if path.suffix in (".md", ".html", ".log"):
            assert "s3cret-pw" not in path.read_text(), path  # the URL is shown without its password


def test_an_unreachable_postgresql_store_is_one_clear_line(tmp_path):
    bad = "postgresql://wattcast:pw@127.0.0.1:1/nothing"
    for argv in (
        [sys.executable, "-m", "collector", "--broker", "mqtt://u:p@127.0.0.1:1", "--store", bad],
        [sys.executable, "-m", "wattcast", "report", "--db", bad, "--out", str(tmp_path / "r")],
        [sys.executable, "-m", "wattcast", "runs", "--db", bad],
    ):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO)
        lines = r.stderr.strip().splitlines()
        assert r.returncode != 0 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        assert "cannot open the PostgreSQL store postgresql://wattcast:***@127.0.0.1:1/nothing" in lines[0], lines
        assert ":pw@" not in r.stderr
