"""The offline report: accuracy and cost of every model, from the collector's store alone.

``build_report(db, out, run=None)`` reads one run of a collector SQLite store (a
finished ``wattcast run``, the compose volume, or a copy of either; opened without
writing to it; the newest run unless ``run`` names one) and writes into ``out``:

* ``report.html``: one self-contained file, every plot embedded as a base64 PNG;
* ``report.md``: the same tables, the plots referenced as the PNG files beside it;
* the plots (``FIGURES`` gives each one's size in inches, at ``DPI``):
  predicted vs actual over the whole replay and over its last 500 minutes, the
  rolling MSE of every model on one chart, the error distribution per model, skill
  against persistence with the MSE by hour of the day, the training loss curves of the
  LSTM models and accuracy against cost.

Where the numbers come from:

* n, MSE, RMSE, MAE, unmatched, pending: the ``summary`` table the collector writes
  at the end of the stream (if the run has not finished: the ``matches`` table, and
  forecasts without a match whose target is not after the house's newest reading);
  the aggregate of several houses is pooled (n-weighted);
* skill: ``1 - MSE / MSE(persistence)`` of the same house (or of the aggregate);
* inference latency: ``forecasts.received_at - forecasts.reading_sent_at`` (wall clock
  of this machine: reading published -> forecast stored), p50 / p99 per model;
* size on disk and parameters: the model's ``describe()`` (the artifact in
  ``models_dir`` for LSTMs, used only if its version is the one the run forecast with);
* node memory (``rss_kb``) and start-up time (``startup_ms``): the counters of the
  predictor node's newest status in the ``nodes`` table;
* training loss curves: the artifact's ``metadata.json`` history, if its version
  matches ``forecasts.model_version``.

Anything missing is shown as "n/a" with a note, never a failure.
"""

from __future__ import annotations

from pathlib import Path

from wattcast.report import plots
from wattcast.report.data import ReportData, Row, list_runs, load_report_data
from wattcast.report.plots import DPI, FIGURES
from wattcast.report.render import render_html, render_markdown, verdict
from wattcast.store import RunReader

__all__ = [
    "DPI",
    "FIGURES",
    "ReportData",
    "Row",
    "build_report",
    "list_runs",
    "load_report_data",
    "render_html",
    "render_markdown",
    "verdict",
]


def build_report(db: str | Path, out: Path, models_dir: Path | None = None, run: str | None = None) -> list[Path]:
    """Write report.html (self-contained), report.md and the PNG plots of one run (default: the
    newest) into ``out``; returns their paths.

    Raises FileNotFoundError / ValueError (one line) if ``db`` is not a collector store with
    forecasts of that run.
    """
    data = load_report_data(db, models_dir, run)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with RunReader(db, data.facts["run"]) as reader:
        images = [
            plots.plot_predicted(reader, data, out, "predicted_vs_actual.png", None),
            plots.plot_predicted(reader, data, out, "predicted_vs_actual_last500.png", plots.CLOSE_UP_MINUTES),
            plots.plot_rolling(reader, data, out),
            plots.plot_errors(reader, data, out),
            plots.plot_skill_by_hour(reader, data, out),
        ]
    loss = plots.plot_loss(data, out)
    if loss is not None:
        images.append(loss)
    else:
        stale = out / "loss_curves.png"
        if stale.exists():
            stale.unlink()  # from an earlier report into the same folder
        if not any("loss" in n for n in data.notes):
            data.notes.append("No LSTM model in this run: no training loss curves.")
    images.append(plots.plot_cost(data, out))
    html_path = out / "report.html"
    md_path = out / "report.md"
    html_path.write_text(render_html(data, images), encoding="utf-8")
    md_path.write_text(render_markdown(data, images), encoding="utf-8")
    return [html_path, md_path, *images]
