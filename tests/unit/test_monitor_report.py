"""The page of ``make monitor``: its figures show what the summary says (a bar per feature, two
overlaid distributions, live figures only with labels), and the page is one file that asks
the network for nothing, every image inlined and every value from the summary escaped. The
browser check is in tests/integration/test_offline_reports.py."""

from __future__ import annotations

import base64
import copy
import html
import json
import re

import numpy as np
import pytest
from matplotlib.colors import to_hex

from tabreg import offline
from tabreg.data import synthetic
from tabreg.monitoring import report
from tabreg.monitoring.summary import summarize
from tests.unit.test_monitor_summary import (
    CHAMPION,
    CONFIG,
    FEATURES,
    reference_predictions,
    window,
)

PNG = b"\x89PNG\r\n\x1a\n"
DRIFT = CONFIG.retrain.drift
IMG = re.compile(r"<img\b[^>]*\bsrc=\"([^\"]*)\"")


def monitored(labelled: bool = True, rows: int = 600) -> tuple[dict, dict]:
    """A summary of a drifted window (median income × 1.8, a few incomes missing) with what
    the caller adds, and the samples the page draws: the predictions and median income."""
    reference = synthetic.generate(4000, seed=1)
    traffic = synthetic.generate(rows, seed=3)
    traffic["median_income"] *= 1.8
    log = window(traffic, 40_000, labelled=labelled)
    log.loc[:4, "median_income"] = np.nan
    summary = summarize(log, reference[FEATURES], reference_predictions(reference), CHAMPION,
                        CONFIG)
    summary.update(model="housing", thresholds={"psi_moderate": DRIFT.psi_moderate,
                                                "psi_major": DRIFT.psi_major})
    if labelled:
        summary["champion_slices"] = [dict(r, rmse=0.9 * r["rmse"])
                                      for r in summary["live"]["slices"][:3]]
    samples = {"prediction": (reference_predictions(reference),
                              log["prediction"].to_numpy(dtype=float)),
               "median_income": (reference["median_income"].to_numpy(dtype=float),
                                 log["median_income"].to_numpy(dtype=float))}
    return summary, samples


@pytest.fixture(scope="module")
def labelled() -> tuple[dict, dict]:
    return monitored(labelled=True)


@pytest.fixture(scope="module")
def unlabelled() -> tuple[dict, dict]:
    return monitored(labelled=False)


def images(page: str) -> list[bytes]:
    """Every <img>'s bytes, failing on any that is not an inline PNG."""
    out = []
    for src in IMG.findall(page):
        assert src.startswith("data:image/png;base64,"), src[:80]
        out.append(base64.b64decode(src.removeprefix("data:image/png;base64,"), validate=True))
    return out


def test_the_drift_figure_has_a_bar_per_feature_coloured_by_level(labelled):
    summary, samples = labelled
    ax = report.figures(summary, samples)["input_drift"].axes[0]
    assert len(ax.patches) == len(FEATURES)
    assert ax.get_xlabel() == "PSI (population stability index)"
    widths = {t.get_text(): p for t, p in zip(ax.get_yticklabels(), ax.patches, strict=True)}
    assert set(widths) == set(FEATURES)
    worst = max(widths, key=lambda k: widths[k].get_width())
    assert worst == summary["input_drift"]["worst_feature"] == "median_income"
    assert to_hex(widths[worst].get_facecolor()) == report.LEVEL_COLOURS["major"]
    assert sorted(line.get_xdata()[0] for line in ax.lines) == [DRIFT.psi_moderate,
                                                                DRIFT.psi_major]
    bare = {k: v for k, v in summary.items() if k != "thresholds"}
    assert len(report.figures(bare, {})["input_drift"].axes[0].lines) == 0


def test_the_distribution_figure_overlays_the_reference_and_the_window(labelled):
    summary, samples = labelled
    drawn = report.figures(summary, samples)
    for name in samples:
        ax = drawn[f"dist:{name}"].axes[0]
        assert ax.get_legend_handles_labels()[1] == ["training reference", "this window"]
        assert len(ax.patches) == 2  # one histogram each
    assert "missing" in drawn["dist:median_income"].axes[0].get_title()  # the NaNs are said
    empty = report.figures(summary, {"x": (np.full(3, np.nan), np.array([]))})["dist:x"]
    assert len(empty.axes[0].patches) == 0 and "missing" in empty.axes[0].texts[0].get_text()


def test_live_figures_exist_only_with_labelled_rows(labelled, unlabelled):
    summary, samples = labelled
    drawn = report.figures(summary, samples)
    slices = drawn["live_slices"].axes[0]
    table = summary["live"]["slices"]
    assert len(slices.patches) == len(table)
    assert [t.get_text() for t in slices.get_yticklabels()] == \
        [f"{r['slice']}={r['value']}" for r in table]
    champion = [line for line in slices.lines if line.get_label() == "champion on its test split"]
    assert len(champion) == 1 and len(champion[0].get_xdata()) == 3
    assert len(drawn["live_overall"].axes[0].containers) == 2  # live and champion errorbars
    assert set(report.figures(*unlabelled)) == {"input_drift", "dist:prediction",
                                                "dist:median_income"}
    assert "No row of this window has a label yet" in report.render(*unlabelled)


def test_the_page_is_one_offline_file_with_the_verdict_and_its_reasons(labelled):
    summary, samples = labelled
    page = report.render(summary, samples)
    assert offline.external_assets(page) == []
    assert "<script" not in page.lower()
    assert summary["verdict"] == "act" and "Verdict: act" in page
    assert 'class="verdict act"' in page
    assert summary["reasons"] and all(html.escape(r) in page for r in summary["reasons"])
    pngs = images(page)
    assert len(pngs) == len(report.figures(summary, samples)) == 5
    assert all(png.startswith(PNG) for png in pngs)
    assert "Monitoring: housing version 3" in page


def test_values_from_the_summary_are_escaped_and_missing_ones_shown_as_a_dash(labelled):
    summary, samples = copy.deepcopy(labelled)
    bad = "<script>alert(1)</script>"
    features = summary["input_drift"]["features"]
    features[bad] = features.pop("median_income")
    summary["input_drift"]["worst_feature"] = bad
    summary["reasons"][0] = f"major input drift: {bad} (PSI 1.00)"
    summary["action"] = {"kind": "retrain", "detail": "<b>now</b> & then"}
    summary["labels"] = {"files": ["a.csv"], "labels": 20, "duplicates": 3, "joined": 5,
                         "unknown": 12, "unknown_ids": ["<id>", "q9"]}
    summary["to_label"] = {"rows": 100, "path": "reports/<to_label>.csv"}
    summary["live"]["mae"] = None
    page = report.render(summary, samples)
    assert "<script" not in page.lower() and "<b>now" not in page and "<id>" not in page
    assert html.escape(bad) in page and "&lt;b&gt;now&lt;/b&gt; &amp; then" in page
    assert "3 duplicate labels replaced by later ones" in page
    assert ("12 labels match no row of this window (an earlier window&#x27;s, or another "
            "deployment&#x27;s), e.g. &lt;id&gt;, q9") in page
    assert "reports/&lt;to_label&gt;.csv" in page
    assert "MAE –." in page


def test_a_summary_read_back_from_json_renders_the_same_figures(labelled):
    summary, samples = labelled
    again = json.loads(json.dumps(summary, default=str))
    assert set(report.figures(again, samples)) == set(report.figures(summary, samples))
    assert offline.external_assets(report.render(again, {})) == []


def test_an_empty_window_says_there_was_nothing_to_monitor(labelled, tmp_path):
    reference = synthetic.generate(200, seed=1)
    empty = summarize(window(reference, 1.0).head(0), reference[FEATURES],
                      reference_predictions(reference), CHAMPION, CONFIG)
    samples = labelled[1]
    assert report.figures(empty, samples) == {}
    path = report.write(empty, samples, tmp_path / "deep/er/monitor.html")
    page = path.read_text(encoding="utf-8")
    assert "Nothing to monitor" in page and "<img" not in page
    assert html.escape(empty["reasons"][0]) in page and 'class="verdict ok"' in page
    assert offline.external_assets(page) == []


def test_write_makes_the_folders_and_returns_the_path(labelled, tmp_path):
    summary, samples = labelled
    target = tmp_path / "a/b/report.html"
    assert report.write(summary, {}, target) == target
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
