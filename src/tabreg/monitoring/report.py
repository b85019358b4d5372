"""The one-page HTML report of ``make monitor``: what a window of served traffic says about the
model serving it, for a person deciding whether to act.

The page reads top-down as that decision does: the verdict and its reasons first (coloured
``ok`` / ``warn`` / ``act``), then the window it judged, the action taken, and the evidence
(input drift, prediction drift, flagged rows, live quality against the champion's test figures,
the labels that arrived, the rows worth labelling next). Its input is the summary of
:func:`tabreg.monitoring.summary.summarize` (plus what the caller adds: ``model``,
``thresholds``, ``champion_slices``, ``action``, ``labels``, ``to_label``, any of them absent)
and, per drawn distribution, the reference's and the window's values.

It must open offline as one file, because it is read where it lands: a CI artifact, a mail
attachment, a folder on a machine without internet. So the figures are matplotlib PNGs inlined
as ``data:`` URIs and the stylesheet is inline, with no script at all: unlike the Vega pages
(:mod:`tabreg.evaluation.plots_page`), which need a few megabytes of JavaScript inlined to draw,
a page of images and tables reads the same in any browser, a mail client or a viewer that runs
no script. Everything taken from the summary is HTML-escaped (a feature or category name is
data, not markup), and a value that is missing shows as "–" rather than failing the page.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tabreg import offline
from tabreg.evaluation.card import number
from tabreg.io import write_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
MISSING = "–"
#: Bar colours of the drift levels, the same hues as the verdicts they lead to.
LEVEL_COLOURS = {"none": "#4caf50", "moderate": "#f0ad4e", "major": "#d9534f"}
VERDICT_WORDS = {"ok": "nothing needs doing", "warn": "worth a look",
                 "act": "action needed"}
#: Distribution histograms: bins over the 0.5th to 99.5th percentiles of both samples (values
#: beyond are counted in the end bins), so one outlier does not squash the picture.
BINS, TAIL = 40, 0.005
REFERENCE, WINDOW = "training reference", "this window"


class _Raw(str):
    """Markup this module built itself (a badge, a link): put in a cell as it is."""


# --------------------------------------------------------------------------------------------
# Values for people


def _float(value: Any) -> float:
    """A number, or NaN for anything that is not one (None, "", a string that json wrote)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _psi(stats: dict) -> float:
    """A feature's PSI for ordering (a missing one sorts as no drift)."""
    psi = _float(stats.get("psi"))
    return 0.0 if math.isnan(psi) else psi


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _fmt(value: Any, spec: str = "") -> str:
    """``value`` formatted by ``spec`` when it is a number; what it says otherwise, so that a
    summary written with ``default=str`` still shows; "–" when missing."""
    if _missing(value):
        return MISSING
    if spec and not isinstance(value, bool):
        number_ = _float(value)
        if not math.isnan(number_):
            whole = spec == "," and number_.is_integer()  # a count: 1,500, not 1,500.0
            return format(int(number_) if whole else number_, spec)
    return str(value)


def _amount(value: Any) -> str:
    """An amount in the target's or a feature's unit (``41,448``, ``3.921``)."""
    x = _float(value)
    return MISSING if math.isnan(x) else number(x)


def _pct(value: Any) -> str:
    return _fmt(value, ".1%")


def _e(value: Any) -> str:
    return html.escape(MISSING if _missing(value) else str(value))


def _interval(value: Any, low: Any, high: Any) -> str:
    return f"{_amount(value)} [{_amount(low)}, {_amount(high)}]"


def _change(before: str, after: str) -> str:
    return f"{before} → {after}"


def _badge(level: Any) -> _Raw:
    """A coloured level; the class only ever one of the known levels (the text is escaped)."""
    known = str(level) if str(level) in LEVEL_COLOURS else "unknown"
    return _Raw(f'<span class="level {known}">{_e(level)}</span>')


def _table(headers: Iterable[str], rows: Iterable[Iterable[Any]], numeric_from: int = 1
           ) -> str:
    """A table whose every cell is escaped, except markup this module made (:class:`_Raw`)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = [c if isinstance(c, _Raw) else _e(c) for c in row]
        body.append("<tr>" + "".join(
            f'<td class="num">{c}</td>' if i >= numeric_from else f"<td>{c}</td>"
            for i, c in enumerate(cells)) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# --------------------------------------------------------------------------------------------
# Figures


def _figure(width: float, height: float) -> Figure:
    """A figure outside pyplot's registry (as :mod:`tabreg.evaluation.plots` draws): nothing
    global to leak or close, safe in a worker; saving it to PNG uses Agg."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _plain(text: Any) -> str:
    """A name as matplotlib should print it: a ``$`` in a feature or category name is a
    character, not the start of mathtext (two of them would fail the figure)."""
    return str(text).replace("$", r"\$")


def _amount_axis(axis: Any) -> None:
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda x, _pos: number(x)))


def _drift_figure(drift: dict, thresholds: dict) -> Figure:
    """PSI per feature, largest on top, coloured by level: the feature to look at first is
    the longest red bar; the threshold lines say how far each is from the next level."""
    from matplotlib.patches import Patch

    items = sorted(drift["features"].items(), key=lambda kv: _psi(kv[1]))
    fig = _figure(7.5, 1.4 + 0.32 * len(items))
    ax = fig.add_subplot()
    levels = [str(stats.get("level")) for _, stats in items]
    ax.barh(range(len(items)), [_float(s.get("psi")) for _, s in items],
            color=[LEVEL_COLOURS.get(level, "grey") for level in levels])
    ax.set_yticks(range(len(items)), [_plain(name) for name, _ in items])
    handles: list[Any] = [Patch(color=colour, label=level)
                          for level, colour in LEVEL_COLOURS.items() if level in levels]
    for key, style in (("psi_moderate", ":"), ("psi_major", "--")):
        limit = _float(thresholds.get(key))
        if not math.isnan(limit):
            handles.append(ax.axvline(limit, color="black", linestyle=style, linewidth=1,
                                      label=f"{key.removeprefix('psi_')} from {limit:g}"))
    ax.set_title(f"Input drift: {len(items)} features against the training reference")
    ax.set_xlabel("PSI (population stability index)")
    ax.legend(handles=handles, loc="lower right", fontsize=8)
    return fig


def _finite(values: Any) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    return array[np.isfinite(array)]


def _bins(*samples: np.ndarray) -> np.ndarray:
    """Shared edges over both samples' central range, so the two shapes compare bin by bin."""
    present = [s for s in samples if s.size]
    low = min(float(np.quantile(s, TAIL)) for s in present)
    high = max(float(np.quantile(s, 1 - TAIL)) for s in present)
    if not high > low:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, BINS + 1)


def _distribution_figure(name: str, reference: Any, window: Any) -> Figure:
    """The window's distribution over the reference's: the shape behind a PSI number (a
    shifted peak, a new tail, a spike of one value)."""
    ref, cur = _finite(reference), _finite(window)
    fig = _figure(7, 3.4)
    ax = fig.add_subplot()
    if not ref.size and not cur.size:
        ax.set_title(_plain(name))
        ax.text(0.5, 0.5, "nothing to draw: every value is missing", ha="center",
                va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    edges = _bins(ref, cur)
    drawn: list[tuple[np.ndarray, str, str, Literal["stepfilled", "step"], float]] = [
        (ref, REFERENCE, "tab:blue", "stepfilled", 0.4), (cur, WINDOW, "tab:orange", "step", 1.0)]
    for values, label, colour, kind, alpha in drawn:
        if values.size:
            ax.hist(np.clip(values, edges[0], edges[-1]), bins=edges.tolist(), density=True,
                    histtype=kind, color=colour, alpha=alpha, linewidth=1.8, label=label)
    missing = 1 - cur.size / max(np.asarray(window).size, 1)
    note = f", {missing:.1%} missing" if missing > 0 else ""
    ax.set_title(f"{_plain(name)}: {ref.size:,} reference values, {cur.size:,} in this "
                 f"window{note}")
    ax.set_xlabel(_plain(name))
    ax.set_ylabel("density")
    ax.set_yticks([])
    _amount_axis(ax.xaxis)
    ax.legend(fontsize=8)
    return fig


def _slices_figure(slices: list[dict], champion_slices: list[dict] | None) -> Figure:
    """Live RMSE per slice value, with the champion's test RMSE on the same slice as a marker:
    a slice whose bar passes its marker got worse in production."""
    from matplotlib.patches import Patch

    names = list(dict.fromkeys(str(r.get("slice")) for r in slices))
    keys = [(str(r.get("slice")), str(r.get("value"))) for r in slices]
    ys = np.arange(len(slices))
    fig = _figure(8, 1.6 + 0.3 * len(slices))
    ax = fig.add_subplot()
    ax.barh(ys, [_float(r.get("rmse")) for r in slices], height=0.65,
            color=[f"C{names.index(s) % 10}" for s, _ in keys])
    handles: list[Any] = [Patch(color=f"C{i % 10}", label=f"{name} ({WINDOW})")
                          for i, name in enumerate(names)]
    tested = {(str(r.get("slice")), str(r.get("value"))): _float(r.get("rmse"))
              for r in champion_slices or []}
    marks = [(tested[key], y) for key, y in zip(keys, ys, strict=True) if key in tested]
    if marks:
        xs, yy = zip(*marks, strict=True)
        handles += ax.plot(xs, yy, "D", color="black", markersize=5, linestyle="none",
                           label="champion on its test split")
    ax.set_yticks(ys, [_plain(f"{s}={v}") for s, v in keys])
    ax.invert_yaxis()
    ax.set_title("Live RMSE by slice (labelled rows of this window)")
    ax.set_xlabel("RMSE")
    _amount_axis(ax.xaxis)
    fig.legend(handles=handles, loc="outside lower center", fontsize=8, frameon=False,
               ncols=min(4, len(handles)))
    return fig


def _overall_figure(live: dict, champion: dict | None) -> Figure:
    """Live RMSE and the champion's test RMSE, each with its bootstrap interval: overlapping
    intervals mean the difference may be noise."""
    rows = [(f"{WINDOW}\n({_fmt(live.get('rows'), ',')} labelled rows)", live, "tab:orange")]
    if champion and not math.isnan(_float(champion.get("rmse"))):
        rows.append((f"champion v{champion.get('version', '?')}\non its test split", champion,
                     "tab:blue"))
    fig = _figure(7, 1.3 + 0.75 * len(rows))
    ax = fig.add_subplot()
    for y, (_, figures_, colour) in enumerate(rows):
        value = _float(figures_.get("rmse"))
        low, high = _float(figures_.get("rmse_low")), _float(figures_.get("rmse_high"))
        err = None if math.isnan(low) or math.isnan(high) else \
            [[max(value - low, 0.0)], [max(high - value, 0.0)]]
        ax.errorbar([value], [y], xerr=err, fmt="o", capsize=6, color=colour, markersize=7)
    ax.set_yticks(range(len(rows)), [label for label, _, _ in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_title("RMSE with its bootstrap interval")
    ax.set_xlabel("RMSE")
    _amount_axis(ax.xaxis)
    return fig


def figures(summary: dict, samples: dict[str, tuple[np.ndarray, np.ndarray]]
            ) -> dict[str, Figure]:
    """The report's figures by name, before they are saved, so tests can check what each one
    shows without reading pixels; a figure whose data the summary lacks is left out."""
    if not summary.get("rows"):
        return {}
    out: dict[str, Figure] = {}
    drift = summary.get("input_drift") or {}
    if drift.get("features"):
        out["input_drift"] = _drift_figure(drift, summary.get("thresholds") or {})
    for name, (reference, window) in samples.items():
        out[f"dist:{name}"] = _distribution_figure(name, reference, window)
    live = summary.get("live") or {}
    if _float(live.get("rows")) > 0:
        if live.get("slices"):
            out["live_slices"] = _slices_figure(live["slices"], summary.get("champion_slices"))
        out["live_overall"] = _overall_figure(live, summary.get("champion"))
    return out


def _png_uri(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    fig.clear()  # the figure is done with: free its artists now, not at collection
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _image(images: dict[str, str], name: str, alt: str) -> str:
    if name not in images:
        return ""
    return f'<figure><img src="{images[name]}" alt="{html.escape(alt)}"></figure>'


# --------------------------------------------------------------------------------------------
# Sections


def _title(summary: dict) -> str:
    versions = [str(v) for v in summary.get("versions") or []]
    shown = ("version " if len(versions) == 1 else "versions ") + ", ".join(versions) \
        if versions else ""
    words = [str(w) for w in (summary.get("model"), shown) if w]
    return "Monitoring: " + (" ".join(words) if words else "the served model")


def _banner(summary: dict) -> str:
    """The verdict first: the one line a reader needs, with why."""
    verdict = str(summary.get("verdict") or "unknown")
    known = verdict if verdict in VERDICT_WORDS else "unknown"
    reasons = [str(r) for r in summary.get("reasons") or []] or ["no reason for concern found"]
    items = "".join(f"<li>{html.escape(r)}</li>" for r in reasons)
    return (f'<div class="verdict {known}"><p><strong>Verdict: {html.escape(verdict)}</strong>'
            f" ({html.escape(VERDICT_WORDS.get(verdict, 'not a known verdict'))})</p>"
            f"<ul>{items}</ul></div>")


def _window_section(summary: dict) -> str:
    versions = ", ".join(str(v) for v in summary.get("versions") or []) or None
    rows = [("from", _e(summary.get("from"))), ("to", _e(summary.get("to"))),
            ("scored rows", _e(_fmt(summary.get("rows"), ","))),
            ("requests", _e(_fmt(summary.get("requests"), ","))),
            ("model versions", _e(versions))]
    items = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return f"<section><h2>Window</h2><dl>{items}</dl></section>"


def _part(summary: dict, key: str) -> dict:
    """An optional part of the summary that the caller adds (empty when absent)."""
    part = summary.get(key)
    return part if isinstance(part, dict) else {}


def _action_section(summary: dict) -> str:
    action = _part(summary, "action")
    if not action:
        return ""
    return (f"<section><h2>Action</h2><p><strong>{_e(action.get('kind'))}</strong>: "
            f"{_e(action.get('detail'))}</p></section>")


def _drift_rows(features: dict) -> list[list[Any]]:
    """Worst first: by level, then PSI."""
    order = list(LEVEL_COLOURS)
    ranked = sorted(features.items(), key=lambda kv: (
        -order.index(kv[1].get("level")) if kv[1].get("level") in order else 1, -_psi(kv[1])))
    return [[name, stats.get("kind"), _fmt(stats.get("psi"), ".3f"),
             _fmt(stats.get("ks"), ".3f"),
             _change(_amount(stats.get("mean_reference")), _amount(stats.get("mean_current"))),
             _change(_pct(stats.get("missing_reference")), _pct(stats.get("missing_current"))),
             ", ".join(map(str, stats.get("new_categories") or [])) or MISSING,
             _badge(stats.get("level"))] for name, stats in ranked]


def _drift_section(summary: dict, images: dict[str, str]) -> str:
    drift = summary.get("input_drift") or {}
    if not drift:
        return ""
    limits = summary.get("thresholds") or {}
    said = (f" Levels: moderate from PSI {_e(_fmt(limits['psi_moderate'], 'g'))}, major from "
            f"{_e(_fmt(limits.get('psi_major'), 'g'))}." if "psi_moderate" in limits else "")
    rows = (_e(_fmt(drift.get("rows_reference"), ",")), _e(_fmt(drift.get("rows_current"), ",")))
    lead = (f"<p>Overall level {_badge(drift.get('level'))}; worst feature "
            f"<code>{_e(drift.get('worst_feature'))}</code> (PSI "
            f"{_e(_fmt(drift.get('max_psi'), '.3f'))}); {rows[0]} reference rows against "
            f"{rows[1]} in the window.{said}</p>")
    table = _table(["feature", "kind", "PSI", "KS", "mean reference → current",
                    "missing rate reference → current", "new categories", "level"],
                   _drift_rows(drift.get("features") or {}), numeric_from=2)
    shown = [name for name in images if name.startswith("dist:") and name != "dist:prediction"]
    dists = "".join(_image(images, n, f"distribution of {n[5:]}") for n in shown)
    return (f"<section><h2>Input drift</h2>{lead}{table}"
            f"{_image(images, 'input_drift', 'PSI per feature')}{dists}</section>")


def _prediction_section(summary: dict, images: dict[str, str]) -> str:
    drift = summary.get("prediction_drift")
    if not isinstance(drift, dict):
        return ""
    means = _change(_amount(drift.get("mean_reference")), _amount(drift.get("mean_current")))
    line = (f"<p>PSI {_e(_fmt(drift.get('psi'), '.3f'))}, KS {_e(_fmt(drift.get('ks'), '.3f'))},"
            f" mean {_e(means)}, level {_badge(drift.get('level'))}.</p>")
    figure = _image(images, "dist:prediction", "distribution of the predictions")
    return f"<section><h2>Prediction drift</h2>{line}{figure}</section>"


def _flags_section(summary: dict) -> str:
    flags = summary.get("flags")
    if not isinstance(flags, dict):
        return ""
    by_flag = flags.get("by_flag") or {}
    line = f"<p>{_e(_pct(flags.get('any')))} of the rows were scored with at least one flag.</p>"
    table = _table(["flag", "share of rows"], [[k, _pct(v)] for k, v in by_flag.items()]) \
        if by_flag else ""
    return f"<section><h2>Flags</h2>{line}{table}</section>"


def _live_lines(live: dict, champion: dict) -> list[str]:
    """The live figures beside the champion's test ones, as sentences (escaped)."""
    ours = _interval(live.get("rmse"), live.get("rmse_low"), live.get("rmse_high"))
    theirs = _interval(champion.get("rmse"), champion.get("rmse_low"),
                       champion.get("rmse_high"))
    lines = [f"{_fmt(live.get('rows'), ',')} labelled rows.",
             f"RMSE {ours} against the champion's test RMSE {theirs} (bootstrap intervals).",
             f"MAE {_amount(live.get('mae'))}."]
    if "interval_coverage" in live or "interval_width" in live:
        promised = champion.get("level")
        against = f" for intervals of level {_pct(promised)}" if not _missing(promised) else ""
        lines.append(f"Prediction intervals held the truth for "
                     f"{_pct(live.get('interval_coverage'))} of the rows{against}; mean width "
                     f"{_amount(live.get('interval_width'))}.")
    return [html.escape(line) for line in lines]


def _live_section(summary: dict, images: dict[str, str]) -> str:
    live = summary.get("live") or {}
    if not _float(live.get("rows")) > 0:
        return ("<section><h2>Live quality</h2><p>No row of this window has a label yet: live "
                "quality cannot be measured.</p></section>")
    items = "".join(f"<li>{line}</li>" for line in _live_lines(live, summary.get("champion")
                                                              or {}))
    rows = [[r.get("slice"), r.get("value"), r.get("range"), _fmt(r.get("n"), ","),
             _amount(r.get("rmse")), _amount(r.get("mae")), _amount(r.get("bias")),
             _pct(r.get("coverage")), _amount(r.get("width"))] for r in live.get("slices") or []]
    table = _table(["slice", "value", "range", "n", "RMSE", "MAE", "bias", "coverage",
                    "width"], rows, numeric_from=3) if rows else ""
    return (f"<section><h2>Live quality</h2><ul>{items}</ul>"
            f"{_image(images, 'live_overall', 'live RMSE against the champion test RMSE')}"
            f"{table}{_image(images, 'live_slices', 'live RMSE per slice')}</section>")


def _labels_section(summary: dict) -> str:
    labels = summary.get("labels")
    if not isinstance(labels, dict):
        return ""
    files = [str(f) for f in labels.get("files") or []]
    lines = [f"{_fmt(labels.get('labels'), ',')} labels read from {len(files):,} file"
             f"{'' if len(files) == 1 else 's'}"
             + (f" ({', '.join(files)})" if files else "") + ".",
             f"{_fmt(labels.get('joined'), ',')} logged rows got a label."]
    if _float(labels.get("duplicates")) > 0:
        lines.append(f"{_fmt(labels['duplicates'], ',')} duplicate labels replaced by later "
                     "ones.")
    if _float(labels.get("unknown")) > 0:
        ids = [str(i) for i in labels.get("unknown_ids") or []]
        example = f", e.g. {', '.join(ids)}" if ids else ""
        lines.append(f"{_fmt(labels['unknown'], ',')} labels match no row of this window (an "
                     f"earlier window's, or another deployment's){example}.")
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return f"<section><h2>Labels</h2><ul>{items}</ul></section>"


def _to_label_section(summary: dict) -> str:
    wanted = _part(summary, "to_label")
    if not wanted:
        return ""
    return (f"<section><h2>To label</h2><p>{_e(_fmt(wanted.get('rows'), ','))} unlabelled rows "
            f"the model was least sure of (widest intervals first) are in "
            f"<code>{_e(wanted.get('path'))}</code>: their labels say most about where it goes "
            f"wrong.</p></section>")


_CSS = """body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  margin: 2em auto; max-width: 72em; padding: 0 1.5em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.6em; }
h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
.verdict { padding: 0.8em 1.2em; border-left: 6px solid; border-radius: 4px; }
.verdict p { margin: 0 0 0.4em 0; font-size: 1.15em; } .verdict ul { margin: 0; }
.verdict.ok { background: #e8f5e9; border-color: #4caf50; }
.verdict.warn { background: #fff8e1; border-color: #f0ad4e; }
.verdict.act { background: #fdecea; border-color: #d9534f; }
.verdict.unknown { background: #eee; border-color: #888; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1.2em; }
dt { font-weight: 600; } dd { margin: 0; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { padding: 0.3em 0.7em; border-bottom: 1px solid #e3e3e3; text-align: left; }
th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.level { padding: 0.05em 0.5em; border-radius: 0.8em; font-size: 0.9em; color: #fff; }
.level.none { background: #4caf50; } .level.moderate { background: #e0962a; }
.level.major { background: #d9534f; } .level.unknown { background: #888; }
figure { margin: 1em 0; } img { max-width: 100%; height: auto; border: 1px solid #eee; }
code { background: #f3f3f3; padding: 0 0.3em; border-radius: 3px; }"""


def _page(title: str, body: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
{offline.style(_CSS)}
</head><body>
<h1>{html.escape(title)}</h1>
{body}
</body></html>
"""


def render(summary: dict, samples: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """The whole page as one string: figures inlined, so the page is one self-contained file
    (see the module docstring); an empty window gets a page that says so, without figures."""
    title = _title(summary)
    if not summary.get("rows"):
        body = [_banner(summary), "<p>Nothing to monitor: the window has no scored rows.</p>",
                _action_section(summary), _labels_section(summary)]
        return _page(title, "\n".join(part for part in body if part))
    images = {name: _png_uri(fig) for name, fig in figures(summary, samples).items()}
    body = [_banner(summary), _window_section(summary), _action_section(summary),
            _drift_section(summary, images), _prediction_section(summary, images),
            _flags_section(summary), _live_section(summary, images), _labels_section(summary),
            _to_label_section(summary)]
    return _page(title, "\n".join(part for part in body if part))


def write(summary: dict, samples: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """:func:`render` written to ``path`` (folders made, atomically: a reader never opens half
    a page)."""
    return write_text(render(summary, samples), path)
