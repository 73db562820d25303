"""The report as text: the verdict, the tables, and the HTML and Markdown pages."""

from __future__ import annotations

import base64
import html
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wattcast.report.data import ALL, ReportData, Row
from wattcast.report.plots import CLOSE_UP_MINUTES

#: a model whose MSE is within this share of the best one counts as "as accurate"
NEAR_BEST = 0.10
#: fewer matched forecasts than this per model: the ranking comes with a warning
FEW_MATCHES = 1000
# Columns of the tables: (key, heading, kind); kind picks the formatting.
ACCURACY_COLUMNS = [
    ("n", "n", "int"),
    ("mse", "MSE (kW²)", "f4"),
    ("rmse", "RMSE (kW)", "f4"),
    ("mae", "MAE (kW)", "f4"),
    ("skill", "skill vs persistence", "f3"),
    ("unmatched", "unmatched", "int"),
    ("pending", "pending", "int"),
]
COST_COLUMNS = [
    ("latency_p50_ms", "latency p50 (ms)", "f1"),
    ("latency_p99_ms", "latency p99 (ms)", "f1"),
    ("size_bytes", "size on disk", "bytes"),
    ("parameters", "parameters", "int"),
    ("rss_kb", "node memory (RSS)", "kb"),
    ("startup_ms", "node start-up (s)", "ms_as_s"),
]


def _bytes(v: int) -> str:
    if v < 1000:
        return f"{v} B"
    if v < 1_000_000:
        return f"{v / 1000:.1f} kB"
    return f"{v / 1_000_000:.2f} MB"


def fmt(value: Any, kind: str) -> str:
    """The text a table cell shows; "n/a" for a missing value."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if kind == "int":
        return f"{int(value):d}"
    if kind == "f4":
        return f"{value:.4f}"
    if kind == "f3":
        return f"{value:.3f}"
    if kind == "f1":
        return f"{value:.1f}"
    if kind == "bytes":
        return _bytes(int(value))
    if kind == "kb":
        return f"{value / 1024:.1f} MiB"
    if kind == "ms_as_s":
        return f"{value / 1000:.2f}"
    return str(value)


def _raw(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def _cost_key(data: ReportData, model: str) -> tuple[float, float, float]:
    c = data.costs[model]
    inf = math.inf
    return (
        c.parameters if c.parameters is not None else inf,
        c.size_bytes if c.size_bytes is not None else inf,
        c.latency_p50_ms if c.latency_p50_ms is not None else inf,
    )


def verdict(data: ReportData) -> list[str]:
    """The "which model for an IoT device" paragraphs, computed from the numbers (Markdown emphasis)."""
    scored = [r for r in data.aggregate if r.n and r.mse is not None]
    if not scored:
        return ["No model has a matched forecast yet: no comparison possible."]
    mse = {r.model: float(r.mse or 0.0) for r in scored}  # every one is set (scored)
    where = f"pooled over {len(data.houses)} houses" if len(data.houses) > 1 else f"house {data.plot_house}"
    best = min(scored, key=lambda r: mse[r.model])
    near = [r for r in scored if mse[r.model] <= mse[best.model] * (1 + NEAR_BEST)]
    cheap = min(near, key=lambda r: _cost_key(data, r.model))

    def cost_text(model: str) -> str:
        c = data.costs[model]
        parts = [
            f"{fmt(c.parameters, 'int')} parameters",
            f"{fmt(c.size_bytes, 'bytes')} on disk",
            f"p50 latency {fmt(c.latency_p50_ms, 'f1')} ms",
        ]
        if c.rss_kb is not None:
            parts.append(f"{fmt(c.rss_kb, 'kb')} RSS")
        return ", ".join(parts)

    lines = [
        f"Most accurate ({where}): **{best.model}**, MSE {mse[best.model]:.4f} kW²"
        + (
            f", skill {best.skill:+.3f} against persistence"
            if best.skill is not None and best.model != "persistence"
            else ""
        )
        + f"; {cost_text(best.model)}."
    ]
    if cheap.model == best.model:
        others = [r.model for r in near if r.model != best.model]
        lines.append(
            f"It is also the cheapest model within {NEAR_BEST:.0%} of the best MSE"
            + (f" (also within: {', '.join(others)})" if others else "")
            + "."
        )
    else:
        lines.append(
            f"Cheapest model within {NEAR_BEST:.0%} of the best MSE: **{cheap.model}**, "
            f"MSE {mse[cheap.model]:.4f} kW² ({(mse[cheap.model] / mse[best.model] - 1):+.1%} against the "
            f"best); {cost_text(cheap.model)}."
        )
    winners = [r for r in scored if r.skill is not None and r.skill > 0]
    if winners:
        w = min(winners, key=lambda r: _cost_key(data, r.model))
        if w.model not in (best.model, cheap.model):
            lines.append(
                f"Cheapest model that beats persistence: **{w.model}**, skill {w.skill:+.3f}; {cost_text(w.model)}."
            )
    losers = [r.model for r in scored if r.skill is not None and r.skill <= 0 and r.model != "persistence"]
    if losers:
        lines.append(f"Not better than persistence (the newest reading as the forecast): {', '.join(losers)}.")
    lines.append(
        f"Suggested for an IoT device predicting 5 minutes ahead: **{cheap.model}**: it is the cheapest model "
        f"whose MSE is within {NEAR_BEST:.0%} of the best one in this run; a more expensive model would have to "
        f"earn its memory, flash and compute with more accuracy than that."
    )
    few = min(r.n for r in scored)
    if few < FEW_MATCHES:
        lines.append(f"Caution: only {few} matched forecasts for some model; over a longer replay the ranking may change.")
    return lines


def _md_inline(text: str) -> str:
    """Markdown emphasis -> HTML, after escaping."""
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text))


def _table_rows(data: ReportData, rows: list[Row], with_cost: bool):
    """(house, model, [(key, raw, text)]) per row."""
    for r in rows:
        cells = [(k, r.get(k), fmt(r.get(k), kind)) for k, _, kind in ACCURACY_COLUMNS]
        if with_cost:
            c = data.costs[r.model]
            cells += [(k, c.get(k), fmt(c.get(k), kind)) for k, _, kind in COST_COLUMNS]
        yield r.house, r.model, cells


def _html_table(data: ReportData, table_id: str, rows: list[Row], with_cost: bool, with_house: bool, caption: str) -> str:
    heads = (["house"] if with_house else []) + ["model"] + [h for _, h, _ in ACCURACY_COLUMNS]
    if with_cost:
        heads += [h for _, h, _ in COST_COLUMNS]
    out = [
        f'<table id="{table_id}">',
        f"<caption>{html.escape(caption)}</caption>",
        "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in heads) + "</tr></thead>",
        "<tbody>",
    ]
    for house, model, cells in _table_rows(data, rows, with_cost):
        tds = [f'<td class="key">{html.escape(house)}</td>'] if with_house else []
        tds.append(f'<td class="key">{html.escape(model)}</td>')
        tds += [
            f'<td data-col="{k}" data-value="{html.escape(_raw(raw))}">{html.escape(text)}</td>' for k, raw, text in cells
        ]
        out.append(f'<tr data-house="{html.escape(house)}" data-model="{html.escape(model)}">' + "".join(tds) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _md_table(data: ReportData, rows: list[Row], with_cost: bool, with_house: bool) -> str:
    heads = (["house"] if with_house else []) + ["model"] + [h for _, h, _ in ACCURACY_COLUMNS]
    if with_cost:
        heads += [h for _, h, _ in COST_COLUMNS]
    keys = 1 + int(with_house)
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join(["---"] * keys + ["---:"] * (len(heads) - keys)) + "|"]
    for house, model, cells in _table_rows(data, rows, with_cost):
        lines.append("| " + " | ".join(([house] if with_house else []) + [model] + [t for _, _, t in cells]) + " |")
    return "\n".join(lines)


def _when(ts: int | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M") if ts is not None else "n/a"


def _facts(data: ReportData) -> list[str]:
    f = data.facts
    c = f["collector"]
    others = len(f.get("runs", [])) - 1
    lines = [
        f"Store: {f['db']}, run {f['run']}"
        + (
            f" (the store holds {others} other run{'s' if others > 1 else ''}: `wattcast report --run`)"
            if others > 0
            else ""
        ),
        f"{f['houses']} house(s), {f['readings']} readings from {_when(f['first_ts'])} to {_when(f['last_ts'])} "
        f"(meter time), {f['forecasts']} forecasts, {f['matches']} matched, {f['rejections']} rejected messages.",
        f"Models: {', '.join(data.models)}. Rolling window {data.window_s // 60} minutes of event time; "
        f"forecast horizon 5 minutes.",
    ]
    if c.get("lag_ms_p50") is not None:
        lines.append(
            f"Collector: bus lag p50 {c['lag_ms_p50']:.1f} ms, p99 {c['lag_ms_p99']:.1f} ms"
            + (f", memory {fmt(f['collector_rss_kb'], 'kb')}" if f.get("collector_rss_kb") else "")
            + "."
        )
    if data.from_summary:
        lines.append("Scores: the collector's end-of-stream summary.")
    return lines


DEFINITIONS = [
    "n: matched forecasts (a forecast and the reading at its target time). MSE / RMSE / MAE of forecast − actual "
    "global active power; an aggregate over houses pools every matched forecast.",
    "skill vs persistence: 1 − MSE / MSE(persistence) of the same houses; > 0 beats 'the newest reading', 0 is persistence.",
    "unmatched: forecasts whose target reading is inside the stream but never arrived; "
    "pending: target after the last reading.",
    "latency: wall clock from the simulator publishing a reading to the collector storing the forecast made from it "
    "(bus, queueing and inference; all on this machine); at full replay speed queueing dominates.",
    "size on disk: the model artifact (model.keras + weights.npz; 0 for closed-form models); parameters: trainable "
    "weights; node memory: peak RSS of the predictor process; start-up: process start to online (node status counters).",
]


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1250px;
color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3} td.key{text-align:left;font-weight:600}
caption{text-align:left;font-weight:600;padding:4px 0}
figure{margin:1.5em 0} figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:14px}
.verdict{background:#f5f9ff;border-left:4px solid #3b7ddd;padding:0.5em 1em}
.notes li{color:#8a5a00}
"""


def _captions(data: ReportData) -> dict[str, str]:
    many = len(data.houses) > 1
    house = f"house {data.plot_house}" + (f" (one of {len(data.houses)}; the tables hold all)" if many else "")
    return {
        "predicted_vs_actual.png": f"Forecast (5 minutes ahead, drawn at its target time) against the actual reading, "
        f"{house}, whole replay.",
        "predicted_vs_actual_last500.png": f"The same, last {CLOSE_UP_MINUTES} minutes, as in the course notebook.",
        "rolling_mse.png": f"Rolling MSE over {data.window_s // 60} minutes of event time, every model, {house}.",
        "error_distribution.png": "Distribution of forecast − actual per model"
        + (f", all {len(data.houses)} houses." if many else "."),
        "skill_by_hour.png": "Skill of each model against persistence over the run, and the MSE of the forecasts "
        "whose target falls in each hour of the day.",
        "loss_curves.png": "Training and validation loss per epoch of the LSTM models (artifact metadata).",
        "accuracy_vs_cost.png": "MSE against parameters and against measured latency: the cheap, accurate corner "
        "is lower left.",
    }


def render_html(data: ReportData, images: list[Path]) -> str:
    captions = _captions(data)
    where = f"pooled over {len(data.houses)} houses" if len(data.houses) > 1 else f"house {data.plot_house}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>wattcast report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>wattcast report: which model would you put on an IoT device?</h1>",
        "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in _facts(data)) + "</ul>",
        '<h2 id="verdict">Which model for an IoT device?</h2>',
        '<div class="verdict">' + "".join(f"<p>{_md_inline(x)}</p>" for x in verdict(data)) + "</div>",
        "<h2>Accuracy and cost</h2>",
        _html_table(
            data,
            "summary",
            data.aggregate,
            with_cost=True,
            with_house=False,
            caption=f"Per model, {where}; cost as measured in the run",
        ),
    ]
    if data.per_house:
        rows = data.aggregate + data.per_house
        parts += [
            "<h2>Per house</h2>",
            _html_table(
                data,
                "per-house",
                rows,
                with_cost=False,
                with_house=True,
                caption=f"Aggregate ({ALL}) first, then each of the {len(data.houses)} houses",
            ),
        ]
    if data.notes:
        parts += [
            "<h2>Notes</h2>",
            '<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in data.notes) + "</ul>",
        ]
    parts.append("<h2>Plots</h2>")
    for img in images:
        b64 = base64.b64encode(img.read_bytes()).decode("ascii")
        cap = captions.get(img.name, img.name)
        parts.append(
            f'<figure id="{html.escape(img.stem)}"><img alt="{html.escape(cap)}" '
            f'src="data:image/png;base64,{b64}"><figcaption>{html.escape(cap)}</figcaption></figure>'
        )
    parts += [
        "<h2>How the numbers are measured</h2>",
        "<ul>" + "".join(f"<li>{html.escape(d)}</li>" for d in DEFINITIONS) + "</ul>",
        f"<p><small>Generated by wattcast from {html.escape(str(data.db))} at "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}.</small></p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def render_markdown(data: ReportData, images: list[Path]) -> str:
    captions = _captions(data)
    where = f"pooled over {len(data.houses)} houses" if len(data.houses) > 1 else f"house {data.plot_house}"
    lines = ["# wattcast report: which model would you put on an IoT device?", ""]
    lines += [f"- {x}" for x in _facts(data)]
    lines += ["", "## Which model for an IoT device?", ""]
    for x in verdict(data):
        lines += [x, ""]
    lines += [
        "## Accuracy and cost",
        "",
        f"Per model, {where}; cost as measured in the run.",
        "",
        _md_table(data, data.aggregate, with_cost=True, with_house=False),
        "",
    ]
    if data.per_house:
        lines += [
            "## Per house",
            "",
            f"Aggregate ({ALL}) first, then each of the {len(data.houses)} houses.",
            "",
            _md_table(data, data.aggregate + data.per_house, with_cost=False, with_house=True),
            "",
        ]
    if data.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in data.notes] + [""]
    lines += ["## Plots", ""]
    for img in images:
        lines += [f"![{captions.get(img.name, img.name)}]({img.name})", "", f"*{captions.get(img.name, img.name)}*", ""]
    lines += ["## How the numbers are measured", ""] + [f"- {d}" for d in DEFINITIONS] + [""]
    return "\n".join(lines)
