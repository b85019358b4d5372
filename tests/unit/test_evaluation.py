"""Unit tests of tabreg.evaluation: metrics, bootstrap intervals, slices, plots, model card."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from tabreg.config import Slice, load_config
from tabreg.data import synthetic
from tabreg.evaluation import card, metrics, plots, slices
from tests.conftest import ROOT

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _noisy(n: int, seed: int = 0, scale: float = 40_000.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.uniform(15_000, 500_001, n)
    return y, y + rng.normal(0, scale, n)


def _rmse(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.sqrt(np.mean((p - y) ** 2)))


# --- metrics -----------------------------------------------------------------------------


def test_metrics_match_sklearn() -> None:
    y, p = _noisy(1000, seed=1)
    m = metrics.regression_metrics(y, p)
    assert m["rmse"] == pytest.approx(math.sqrt(mean_squared_error(y, p)))
    assert m["mae"] == pytest.approx(mean_absolute_error(y, p))
    assert m["r2"] == pytest.approx(r2_score(y, p))
    assert m["n"] == 1000


def test_mape_by_hand() -> None:
    m = metrics.regression_metrics([100.0, 200.0, 400.0], [110.0, 180.0, 400.0])
    assert m["mape"] == pytest.approx((10 + 10 + 0) / 3)  # percent


def test_metrics_accept_lists_series_and_column_vectors() -> None:
    y, p = _noisy(50)
    expected = metrics.regression_metrics(y, p)
    assert metrics.regression_metrics(pd.Series(y), list(p)) == expected
    assert metrics.regression_metrics(y.reshape(-1, 1), p) == expected


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        ([1.0, 2.0], [1.0], "lengths differ"),
        ([], [], "empty"),
        ([1.0, np.nan], [1.0, 2.0], "non-finite"),
        ([1.0, 2.0], [1.0, np.inf], "non-finite"),
        (np.ones((2, 2)), np.ones((2, 2)), "one-dimensional"),
    ],
)
def test_inputs_are_validated(y_true: object, y_pred: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metrics.regression_metrics(y_true, y_pred)
    with pytest.raises(ValueError, match=message):
        metrics.bootstrap_rmse(y_true, y_pred, n_resamples=10)
    with pytest.raises(ValueError, match=message):
        metrics.paired_bootstrap_diff(y_true, y_pred, y_pred, n_resamples=10)


def test_bootstrap_arguments_are_validated() -> None:
    y, p = _noisy(20)
    with pytest.raises(ValueError, match="confidence"):
        metrics.bootstrap_rmse(y, p, confidence=1.0)
    with pytest.raises(ValueError, match="n_resamples"):
        metrics.bootstrap_rmse(y, p, n_resamples=0)


# --- bootstrap ---------------------------------------------------------------------------


def test_bootstrap_interval_contains_point_and_is_seeded() -> None:
    y, p = _noisy(2000, seed=2)
    low, high = metrics.bootstrap_rmse(y, p, n_resamples=500, seed=7)
    assert low < _rmse(y, p) < high
    assert metrics.bootstrap_rmse(y, p, n_resamples=500, seed=7) == (low, high)
    other = metrics.bootstrap_rmse(y, p, n_resamples=500, seed=8)
    assert other != (low, high)
    assert other == pytest.approx((low, high), rel=0.02)


def test_bootstrap_narrows_with_more_rows_and_lower_confidence() -> None:
    y_small, p_small = _noisy(500, seed=3)
    y_big, p_big = _noisy(20_000, seed=3)
    small = metrics.bootstrap_rmse(y_small, p_small, n_resamples=400)
    big = metrics.bootstrap_rmse(y_big, p_big, n_resamples=400)
    assert big[1] - big[0] < (small[1] - small[0]) / 3  # width ~ 1/sqrt(n): 6x narrower
    half = metrics.bootstrap_rmse(y_big, p_big, n_resamples=400, confidence=0.5)
    assert half[1] - half[0] < big[1] - big[0]
    assert big[0] < half[0] < half[1] < big[1]


def test_bootstrap_result_does_not_depend_on_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    y, p = _noisy(300, seed=4)
    whole = metrics.bootstrap_rmse(y, p, n_resamples=200)
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 300 * 7)  # 7 resamples per chunk
    assert metrics.bootstrap_rmse(y, p, n_resamples=200) == pytest.approx(whole)


# --- paired bootstrap --------------------------------------------------------------------


def test_paired_identical_predictions_give_zero() -> None:
    y, p = _noisy(1000, seed=5)
    result = metrics.paired_bootstrap_diff(y, p, p, n_resamples=200)
    assert result == {"diff": 0.0, "low": 0.0, "high": 0.0, "n_resamples": 200}


def test_paired_clearly_better_model_b() -> None:
    y, worse = _noisy(2000, seed=6, scale=60_000)
    better = y + np.random.default_rng(60).normal(0, 30_000, y.size)
    result = metrics.paired_bootstrap_diff(y, worse, better, n_resamples=300)
    assert result["diff"] == pytest.approx(_rmse(y, worse) - _rmse(y, better))
    assert 0 < result["low"] <= result["diff"] <= result["high"]
    flipped = metrics.paired_bootstrap_diff(y, better, worse, n_resamples=300)
    assert flipped["high"] < 0


def test_paired_uses_the_same_rows_for_both_models() -> None:
    # B is A plus a constant 1: on any common set of rows RMSE(B) - RMSE(A) is small and
    # tightly determined; with independent resamples it would swing by the RMSE's own spread.
    y, a = _noisy(1000, seed=9)
    b = a + 1.0
    result = metrics.paired_bootstrap_diff(y, a, b, n_resamples=500)
    single = metrics.bootstrap_rmse(y, a, n_resamples=500)
    assert result["high"] - result["low"] < (single[1] - single[0]) / 100


def test_paired_matches_a_reimplementation_with_the_same_rng() -> None:
    y, a = _noisy(200, seed=10)
    b = a + np.random.default_rng(11).normal(0, 5_000, y.size)
    rng = np.random.default_rng(3)
    idx = rng.integers(0, y.size, size=(100, y.size), dtype=np.int32)
    diffs = [_rmse(y[i], a[i]) - _rmse(y[i], b[i]) for i in idx]
    expected = np.quantile(diffs, [0.05, 0.95])
    result = metrics.paired_bootstrap_diff(y, a, b, n_resamples=100, confidence=0.9, seed=3)
    assert (result["low"], result["high"]) == pytest.approx(tuple(expected))
    single = metrics.bootstrap_rmse(y, a, n_resamples=100, confidence=0.9, seed=3)
    assert single == pytest.approx(tuple(np.quantile([_rmse(y[i], a[i]) for i in idx],
                                                     [0.05, 0.95])))


# --- slices ------------------------------------------------------------------------------


def test_slice_labels_binned_with_labels_and_missing() -> None:
    frame = pd.DataFrame({"income": [0.5, 1.5, 1.6, 7.0, np.nan, 100.0]})
    spec = Slice(name="band", column="income", bins=(0.0, 1.5, 6.0, 50.0),
                 labels=("low", "mid", "high"))
    labels = slices.slice_labels(frame, spec)
    assert labels.tolist() == ["low", "low", "mid", "high", "missing", "out of range"]
    assert labels.index.equals(frame.index)


def test_slice_labels_binned_default_interval_names() -> None:
    frame = pd.DataFrame({"lat": [34.0, 36.0, 38.5]}, index=[10, 20, 30])
    spec = Slice(name="region", column="lat", bins=(-math.inf, 36.0, math.inf))
    labels = slices.slice_labels(frame, spec)
    assert labels.tolist() == ["(-inf, 36]", "(-inf, 36]", "(36, inf]"]
    assert labels.index.tolist() == [10, 20, 30]


def test_slice_labels_categorical_and_missing() -> None:
    frame = pd.DataFrame({"ocean": ["INLAND", None, "ISLAND", "INLAND"]})
    labels = slices.slice_labels(frame, Slice(name="ocean", column="ocean"))
    assert labels.tolist() == ["INLAND", "missing", "ISLAND", "INLAND"]


def test_slice_labels_unknown_column() -> None:
    with pytest.raises(ValueError, match="not in the frame"):
        slices.slice_labels(pd.DataFrame({"a": [1]}), Slice(name="x", column="b"))


def test_slice_table_rows_and_order() -> None:
    frame = pd.DataFrame({"cat": ["b", "a", "b", None], "num": [1.0, 5.0, 9.0, 2.0]})
    y = np.array([10.0, 20.0, 30.0, 40.0])
    p = np.array([12.0, 20.0, 27.0, 40.0])
    specs = [Slice(name="num", column="num", bins=(0, 4, 10), labels=("10", "2")),
             Slice(name="cat", column="cat")]
    table = slices.slice_table(frame, y, p, specs)
    assert [(r["slice"], r["value"]) for r in table] == [
        ("num", "10"), ("num", "2"), ("cat", "a"), ("cat", "b"), ("cat", "missing")]
    b = table[3]
    assert b["n"] == 2 and b["share"] == 0.5
    assert b["rmse"] == pytest.approx(math.sqrt((4 + 9) / 2))
    assert b["mae"] == pytest.approx(2.5) and b["bias"] == pytest.approx(-0.5)
    assert all(type(r["n"]) is int and type(r["rmse"]) is float for r in table)


def test_slice_table_length_mismatch() -> None:
    with pytest.raises(ValueError, match="rows"):
        slices.slice_table(pd.DataFrame({"a": [1, 2]}), [1.0], [1.0], [])


def test_slices_recombine_to_the_total_on_the_project_slices() -> None:
    specs = load_config(ROOT / "params.yaml", env={}, profile="default").evaluate.slices
    assert specs, "params.yaml defines no evaluate.slices"
    frame = synthetic.generate(5000, seed=3)
    y = frame["median_house_value"].to_numpy(dtype=float)
    p = y * np.exp(np.random.default_rng(0).normal(0, 0.25, y.size))
    table = slices.slice_table(frame, y, p, specs)
    total = metrics.regression_metrics(y, p)["rmse"] ** 2
    for spec in specs:
        rows = [r for r in table if r["slice"] == spec.name]
        assert sum(r["n"] for r in rows) == len(frame)
        assert sum(r["share"] for r in rows) == pytest.approx(1.0)
        assert sum(r["n"] * r["rmse"] ** 2 for r in rows) / len(frame) == pytest.approx(total)


# --- plots -------------------------------------------------------------------------------


def _is_png(path: object) -> bool:
    data = open(path, "rb").read()  # noqa: SIM115
    return len(data) > 1000 and data.startswith(PNG_SIGNATURE)


TABLE = [
    {"slice": "income_cat", "value": "1", "n": 120, "share": 0.3, "rmse": 50_000.0,
     "mae": 40_000.0, "bias": -3_000.0},
    {"slice": "income_cat", "value": "2", "n": 280, "share": 0.7, "rmse": 45_000.0,
     "mae": 33_000.0, "bias": 1_000.0},
    {"slice": "ocean_proximity", "value": "ISLAND", "n": 3, "share": 0.0075,
     "rmse": 150_000.0, "mae": 140_000.0, "bias": -120_000.0},
    {"slice": "ocean_proximity", "value": "INLAND", "n": 397, "share": 0.9925,
     "rmse": 46_000.0, "mae": 35_000.0, "bias": 500.0},
]


def test_prediction_plots(tmp_path) -> None:
    y, p = _noisy(30_000, seed=12)
    y[:500] = 500_001.0  # a capped target
    rng = np.random.default_rng(1)
    lon, lat = rng.uniform(-124, -114, y.size), rng.uniform(32, 42, y.size)
    out = [
        plots.predicted_vs_actual(y, p, tmp_path / "pva.png"),
        plots.residuals(y, p, tmp_path / "sub" / "residuals.png"),  # parent is created
        plots.error_map(lon, lat, p - y, tmp_path / "map.png"),
        plots.predicted_vs_actual(y[:3], p[:3], tmp_path / "tiny.png"),
        plots.residuals([1.0], [2.0], tmp_path / "one.png"),
    ]
    assert all(_is_png(path) for path in out)
    # What is drawn, as the figures' own text says it: titles with the row counts (a sample
    # of 30,000 rows), the axes, the capped target's note, the residuals' mean.
    pva = _png_text(out[0])
    assert "Actual value" in pva and "Predicted value" in pva and "perfect (y = x)" in pva
    assert any(line.startswith("Predicted vs actual (sample of") for line in pva), pva
    assert any(line.startswith("target capped at 500,001") for line in pva), pva
    res = _png_text(out[1])
    assert "Residuals (30,000 rows)" in res and "Predicted − actual" in res
    assert any(line.startswith("mean ") for line in res)
    assert "Error by location" + " (sample of" in " ".join(_png_text(out[2]))
    assert "Predicted vs actual (3 rows)" in _png_text(out[3])
    assert not any(line.startswith("target capped") for line in _png_text(out[3]))


def _png_text(path) -> list[str]:
    """What a plot says, as :func:`plots.figure_text` wrote it into the PNG."""
    from PIL import Image

    with Image.open(path) as image:
        return image.info["Description"].splitlines()


def test_slice_plot(tmp_path) -> None:
    assert _is_png(plots.rmse_by_slice(TABLE, tmp_path / "slices.png"))
    assert _is_png(plots.rmse_by_slice(TABLE[:1], tmp_path / "one.png"))
    assert _is_png(plots.rmse_by_slice([], tmp_path / "none.png"))
    assert "no slices configured (evaluate.slices)" in _png_text(tmp_path / "none.png")


def test_slice_plot_legend_covers_no_bar_and_bins_show_their_range(tmp_path) -> None:
    specs = load_config(ROOT / "params.yaml", env={}).evaluate.slices
    frame = synthetic.generate(3000, seed=4)
    y = frame["median_house_value"].to_numpy()
    table = slices.slice_table(frame, y, y * 1.1, specs)
    fig = plots.slice_figure(table, unit="$")
    fig.draw_without_rendering()
    legend = fig.legends[0].get_window_extent()
    (ax,) = fig.axes
    assert not legend.overlaps(ax.get_window_extent())
    assert not any(legend.overlaps(bar.get_window_extent()) for bar in ax.patches)
    text = _png_text(plots.rmse_by_slice(table, tmp_path / "slices.png", unit="$"))
    assert any(line.startswith("2: 1.5 < median_income ≤ 3 (n=") for line in text), text
    assert any(line.startswith("south: latitude ≤ 36 (n=") for line in text)
    assert "RMSE ($)" in text and "income_cat" in text


def test_training_and_tuning_plots(tmp_path) -> None:
    history = [{"epoch": e, "train_loss": 1 / e, "val_rmse": 60_000 - 100 * e, "seconds": 0.1}
               for e in range(1, 21)]
    trials = [
        {"number": 0, "value": 52_000.0, "state": "COMPLETE", "family": "random_forest"},
        {"number": 1, "value": 61_000.0, "state": "PRUNED", "family": "mlp"},
        {"number": 2, "value": None, "state": "PRUNED", "family": "mlp"},
        {"number": 3, "value": None, "state": "FAIL", "family": "mlp"},
        {"number": 4, "value": 48_000.0, "state": "COMPLETE", "family": "hist_gradient_boosting"},
    ]
    out = [
        plots.learning_curves(history, tmp_path / "curves.png"),
        plots.learning_curves(history[:1], tmp_path / "one_epoch.png"),
        plots.tuning_history(trials, tmp_path / "history.png"),
        plots.tuning_history(trials[1:4], tmp_path / "none_complete.png"),
        plots.param_importances({"n_estimators": 0.6, "max_features": 0.3, "gamma": 0.1},
                                tmp_path / "importances.png"),
        plots.param_importances({"only": 1.0}, tmp_path / "one_param.png"),
    ]
    assert all(_is_png(path) for path in out)
    # trials are counted: whole numbers on the axis, never 0.5 or 2.5
    ticks = _png_text(tmp_path / "history.png")
    assert {"0", "1", "2", "3", "4"} <= set(ticks)
    assert not {"0.5", "1.5", "2.5", "3.5", "0.0", "1.0"} & set(ticks), ticks


def test_a_plot_not_drawn_says_why(tmp_path) -> None:
    path = plots.not_drawn(tmp_path / "importances.png", "Hyperparameter importance",
                           "not computed: 2 complete trials")
    assert _is_png(path)
    assert set(_png_text(path)) == {"Hyperparameter importance",
                                    "not computed: 2 complete trials"}


def test_plots_use_the_target_unit_and_row_name(tmp_path) -> None:
    rng = np.random.default_rng(3)
    y = rng.uniform(3.0, 20.0, 400)
    p = y + rng.normal(0, 0.8, y.size)
    text = _png_text(plots.residuals(y, p, tmp_path / "r.png", unit="L/100 km", rows="trips"))
    assert "Predicted − actual (L/100 km)" in text and "Test trips" in text
    text = _png_text(plots.predicted_vs_actual(y, p, tmp_path / "p.png", unit="L/100 km",
                                               rows="trips"))
    assert "Actual value (L/100 km)" in text and "test trips" in text
    assert not any("capped" in line or "$" in line for line in text)
    # ticks of a small-valued target keep their decimals instead of rounding to whole units
    small = _png_text(plots.residuals(y / 100, p / 100, tmp_path / "s.png"))
    assert any("." in line and line.replace(".", "").lstrip("−-").isdigit() for line in small)


# --- model card --------------------------------------------------------------------------


def _card(slices: list[dict], **kwargs) -> str:
    defaults = dict(
        name="tabreg", data_version="abc123def", git_commit="0123456789ab",
        family="hist_gradient_boosting", params={"max_iter": 300, "learning_rate": 0.08},
        metrics={"rmse": 41_448.3, "mae": 28_001.9, "r2": 0.8712, "mape": 15.43, "n": 4128},
        interval=(40_120.4, 42_876.6), confidence=0.95, slices=slices,
        split={"strategy": "hash", "total": 20640, "train": 16512, "test": 4128},
        trained_at="2024-05-01T12:00:00+00:00")
    return card.model_card(**{**defaults, **kwargs})


def test_model_card_contents() -> None:
    problem = load_config(ROOT / "params.yaml", env={}).problem
    y = np.r_[np.full(200, 500_001.0), np.linspace(15_000, 499_000, 3928)]
    text = _card(TABLE, problem=problem,
                 limitations=card.data_limitations(y, TABLE, problem.rows))
    for expected in ["41,448", "28,002", "0.8712", "15.4%", "4,128", "40,120", "42,877",
                     "95%", "abc123def", "0123456789ab", "hash", "16,512", "max_iter",
                     "median house value of a California census district ($)",
                     "valuing individual properties", "1990",
                     "capped at 500,001: 200 of 4,128 test districts (4.8%)",
                     "slice ocean_proximity: ISLAND (3 rows)", "dvc repro", "make run"]:
        assert expected in text, expected
    for row in TABLE:
        assert f"| {row['slice']} | {row['value']} | {row['n']:,} |" in text or (
            f"| **{row['slice']}** | **{row['value']}** | **{row['n']:,}** |" in text)
    # the worst slice with enough rows is highlighted, not the 3-row ISLAND
    assert "| **income_cat** | **1** | **120** | **50,000** |" in text
    assert "**ISLAND**" not in text
    assert card.worst_slice([]) is None


def test_slice_table_and_card_with_prediction_intervals() -> None:
    frame = pd.DataFrame({"cat": ["a", "a", "b", "b"]})
    y = np.array([10.0, 20.0, 30.0, 40.0])
    lower, upper = np.array([9.0, 21.0, 25.0, 35.0]), np.array([11.0, 25.0, 35.0, 45.0])
    table = slices.slice_table(frame, y, y, [Slice(name="cat", column="cat")],
                               bounds=(lower, upper))
    assert [(r["coverage"], r["width"]) for r in table] == [(0.5, 3.0), (1.0, 10.0)]
    assert metrics.coverage(y, lower, upper) == {"coverage": 0.75, "width": 6.5}

    covered = [{**r, "coverage": c, "width": 60_000.0}
               for r, c in zip(TABLE, (0.91, 0.83, 0.5, 0.9), strict=True)]
    found = card.data_limitations(np.linspace(1, 2, 400), covered, "districts", 0.9)
    # After the tiny ISLAND: only the slice with enough rows that misses the level by > 5.
    assert found[1:] == ["The 90% prediction intervals miss their level by more than 5% in "
                     "income_cat = 2 (83.0% of 280): trust their width less there."]
    text = _card(covered, level=0.9, metrics={"rmse": 41_448.3, "interval_coverage": 0.8964,
                                              "interval_width": 131_002.0, "n": 4128})
    assert "Each prediction comes with a 90% interval: on the test set it held the truth " \
           "for 89.6% of the rows (mean width 131,002)." in text
    assert "| Prediction interval coverage (level 90%) | 89.6% |" in text
    assert "| interval coverage | interval width |" in text and "| 83.0% | 60,000 |" in text


def test_limitations_follow_the_data() -> None:
    """A cap or a tiny slice is stated only when the test data shows it."""
    problem = load_config(ROOT / "params.yaml", env={}).problem
    without_island = [r for r in TABLE if r["value"] != "ISLAND"]
    smooth = np.linspace(15_000, 499_000, 4128)  # no pile-up at the top
    assert card.data_limitations(smooth, without_island, "districts") == []
    text = _card(without_island, problem=problem,
                 limitations=card.data_limitations(smooth, without_island, "districts"))
    assert "ISLAND" not in text and "capped" not in text and "1990" in text
    # a couple of equal top values is a coincidence, not a cap
    assert card.capped_at(np.r_[smooth, smooth.max()]) is None


def test_a_card_without_a_problem_says_nothing_about_housing() -> None:
    from tabreg.config import ProblemConfig

    text = _card([], target="`fuel_l_per_100km`")
    assert "predicting `fuel_l_per_100km`." in text and "Not stated" in text
    assert "None stated" in text
    tonnes = ProblemConfig(target="the payload of a delivery van", unit="t", rows="trips",
                           intended_use="Planning loads.", out_of_scope=("billing",))
    text = _card([], problem=tonnes, metrics={"rmse": 0.8123, "mae": 0.61, "n": 50},
                 interval=(0.7011, 0.9344))
    assert "payload of a delivery van (t). Test RMSE 0.8123 (95% interval 0.7011 – 0.9344)" \
        in text
    assert "- billing" in text and "Planning loads." in text
    for word in ("housing", "district", "california", "island", "$"):
        assert word not in text.lower(), word


def test_numbers_keep_their_precision_in_any_unit() -> None:
    assert card.number(41_448.3) == "41,448" and card.number(-3_000.0, signed=True) == "-3,000"
    assert card.number(0.81234) == "0.8123" and card.number(12.345) == "12.35"
    assert card.number(0.5, signed=True) == "+0.5" and card.number(0.0) == "0"


def test_card_checkout_command_is_a_valid_ref_for_a_dirty_tree():
    from tabreg.evaluation.card import model_card

    text = model_card(name="m", data_version="v", git_commit="abc123-dirty", family="rf",
                      params={}, metrics={"rmse": 1.0, "mae": 1.0, "r2": 0.5, "mape": 1.0,
                                          "n": 10},
                      interval=(0.5, 1.5), confidence=0.95, slices=[],
                      split={"strategy": "hash", "total": 10}, trained_at="t")
    assert "git checkout abc123\n" in text and "uncommitted changes" in text


def test_a_run_from_a_clean_clone_is_not_dirty(tmp_path):
    import subprocess

    from tabreg.store.tracking import git_commit

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    for name in ("dvc.lock", "reports/metrics.json", "params.yaml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("a\n")
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "init")
    clean = git_commit(tmp_path)
    assert len(clean) == 40
    (tmp_path / "dvc.lock").write_text("b\n")  # the run's own records change as it runs
    (tmp_path / "reports/metrics.json").write_text("b\n")
    assert git_commit(tmp_path) == clean
    (tmp_path / "params.yaml").write_text("b\n")  # a changed configuration is a difference
    assert git_commit(tmp_path) == clean + "-dirty"
