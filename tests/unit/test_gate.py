"""The champion/challenger gate's decisions, on predictions made up for each case."""

from __future__ import annotations

import numpy as np
import pytest

from tabreg.config import PromotionConfig
from tabreg.promotion.gate import decide

RULES = PromotionConfig(max_rmse=60_000, min_improvement=0.01, max_slice_regression=0.05,
                        min_slice_rows=30, bootstrap=500)
N = 2000


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    y = rng.uniform(50_000, 500_000, N)
    region = np.where(np.arange(N) < N // 2, "north", "south")
    return y, rng, {"region": region}


def test_first_model_is_promoted_when_it_meets_the_bar(data):
    y, rng, _ = data
    good = decide(y, y + rng.normal(0, 40_000, N), None, rules=RULES)
    assert good.promote and "no champion yet" in good.reasons[0]
    bad = decide(y, y + rng.normal(0, 90_000, N), None, rules=RULES)
    assert bad.outcome == "keep" and "misses the bar" in bad.reasons[0]


def test_a_clearly_better_challenger_is_promoted(data):
    y, rng, slices = data
    champion = y + rng.normal(0, 50_000, N)
    challenger = y + rng.normal(0, 40_000, N)
    d = decide(y, challenger, champion, rules=RULES, slices=slices)
    assert d.promote, d.reasons
    assert d.difference["high"] < 0 and d.challenger_rmse < d.champion_rmse
    assert {r["value"] for r in d.slices} == {"north", "south"}
    assert not any(r["regressed"] for r in d.slices)


def test_a_worse_challenger_is_not_promoted(data):
    y, rng, slices = data
    champion = y + rng.normal(0, 40_000, N)
    d = decide(y, y + rng.normal(0, 50_000, N), champion, rules=RULES, slices=slices)
    assert d.outcome == "keep" and "promotion needs at least 1% lower" in d.reasons[0]


def test_a_tie_is_not_promoted(data):
    y, rng, _ = data
    pred = y + rng.normal(0, 40_000, N)
    d = decide(y, pred.copy(), pred, rules=RULES.model_copy(update={"min_improvement": 0.0}))
    assert d.outcome == "keep" and "a tie" in d.reasons[0]


def test_a_gain_inside_the_noise_needs_the_interval_switch_off(data):
    y, rng, _ = data
    champion = y + rng.normal(0, 40_000, N)
    # 1.5% better on average, but so noisy that the interval straddles zero.
    challenger = champion + rng.normal(0, 30_000, N)
    challenger = y + (challenger - y) * (0.985 * np.sqrt(np.mean((champion - y) ** 2))
                                         / np.sqrt(np.mean((challenger - y) ** 2)))
    strict = decide(y, challenger, champion, rules=RULES)
    assert strict.outcome == "keep" and strict.difference["high"] >= 0
    assert any("may be noise" in r for r in strict.reasons)
    point = decide(y, challenger, champion,
                   rules=RULES.model_copy(update={"require_interval": False}))
    assert point.promote, point.reasons


def test_one_regressing_slice_blocks_promotion(data):
    y, rng, slices = data
    champion = y + rng.normal(0, 50_000, N)
    challenger = y + rng.normal(0, 30_000, N)
    south = slices["region"] == "south"
    challenger[south] = y[south] + (champion[south] - y[south]) * 1.2  # 20% worse there
    d = decide(y, challenger, champion, rules=RULES, slices=slices)
    assert d.outcome == "keep"
    assert [r["value"] for r in d.slices if r["regressed"]] == ["south"]
    assert any("slice region=south" in r for r in d.reasons)


def test_small_slices_are_shown_but_do_not_gate(data):
    y, rng, _ = data
    champion = y + rng.normal(0, 50_000, N)
    challenger = y + rng.normal(0, 30_000, N)
    tiny = np.array(["rest"] * N, dtype=object)
    tiny[:5] = "island"
    challenger[:5] = y[:5] + 200_000
    d = decide(y, challenger, champion, rules=RULES, slices={"kind": tiny})
    island = next(r for r in d.slices if r["value"] == "island")
    assert island["change"] > 0.05 and not island["gated"] and d.promote


def test_an_unfair_comparison_is_refused(data):
    y, rng, _ = data
    d = decide(y, y + rng.normal(0, 10_000, N), y + rng.normal(0, 50_000, N), rules=RULES,
               unfair="trained on other rows")
    assert d.outcome == "refuse" and "not comparable: trained on other rows" in d.reasons[0]


def test_mismatched_predictions_are_an_error(data):
    y, _, _ = data
    with pytest.raises(ValueError, match="shape"):
        decide(y, y[:-1], None, rules=RULES)
