"""The gate on damaged evaluation data: a champion that scores far from what it scored when it
was promoted means the test split itself changed (the issue's shuffled ``median_house_value``),
so the gate refuses to judge instead of promoting whichever model suffers less; and the
``promotion.max_rmse`` bar holds for every challenger, not only the first."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tabreg.promotion import registry
from tabreg.promotion.gate import Recorded, decide
from tabreg.promotion.registry import CHALLENGER, CHAMPION
from tabreg.steps import register as steps
from tests.conftest import PER_MACHINE
from tests.faults.conftest import CONFIG as PARAMS
from tests.scoring_helpers import (
    fit_small,
    isolated_mlflow,
    register_by_hand,
    write_test_split_and_store,
)

pytestmark = pytest.mark.integration

#: Any first model may become champion here; each test sets the bar it is about.
CONFIG = PARAMS.model_copy(update={"promotion": PARAMS.promotion.model_copy(
    update={"max_rmse": 1e9})})
NAME = CONFIG.registry.model_name
CHANGED = "the evaluation data changed under the champion"


@pytest.fixture(scope="module")
def fitted():
    return {"strong": fit_small(CONFIG, rows=3000, seed=11, max_iter=80)[0],
            "weak": fit_small(CONFIG, rows=3000, seed=11, max_iter=3)[0]}


@pytest.fixture
def project(tmp_path: Path, monkeypatch):
    """A project holding only a test split (1,500 generated rows) and an empty store."""
    for var in PER_MACHINE:
        monkeypatch.delenv(var, raising=False)
    with isolated_mlflow():
        yield write_test_split_and_store(tmp_path, CONFIG)


def register(root: Path, model) -> str:
    return register_by_hand(root, CONFIG, model, data_version="v1")


def alias(root: Path, name: str) -> str | None:
    version = registry.alias_version(registry.client(CONFIG, root), NAME, name)
    return version and str(version.version)


def test_a_shuffled_target_in_the_test_split_is_refused_not_judged(project, fitted):
    v1 = register(project, fitted["strong"])
    assert steps.gate(CONFIG, project, trigger="test")["action"] == "promote"
    tags = registry.client(CONFIG, project).get_model_version(NAME, v1).tags
    recorded = registry.recorded_score(tags)
    assert recorded.low < recorded.rmse < recorded.high
    assert tags["promoted.test_rows"] == "1500"

    # The labels of the test split are shuffled: every model scores badly on it, the weak
    # one less badly than the strong champion (the 117,978 against 156,238).
    path = project / CONFIG.paths.test
    test = pd.read_parquet(path)
    target = CONFIG.schema.target
    test[target] = np.random.default_rng(0).permutation(test[target].to_numpy())
    test.to_parquet(path, index=False)
    v2 = register(project, fitted["weak"])
    decision = steps.gate(CONFIG, project, trigger="test")

    assert decision["action"] == "refuse", decision["reasons"]
    reason = decision["reasons"][0]
    assert reason.startswith(CHANGED) and f"scored {recorded.rmse:,.0f}" in reason
    assert "max_champion_drift = 5%" in reason
    assert {CHAMPION: alias(project, CHAMPION), CHALLENGER: alias(project, CHALLENGER)} == {
        CHAMPION: v1, CHALLENGER: v2}
    # Recorded like any other decision: ledger, promotion.json, tags on the challenger.
    assert registry.read_ledger(project / CONFIG.registry.ledger)[-1]["action"] == "refuse"
    on_disk = json.loads((project / "reports/promotion.json").read_text())
    assert on_disk["action"] == "refuse" and on_disk["challenger"] == v2
    tags = registry.client(CONFIG, project).get_model_version(NAME, v2).tags
    assert tags["gate.outcome"] == "refuse" and CHANGED in tags["gate.reasons"]

    # Turned off, the gate judges the same rows again (and the weak model does not win).
    off = CONFIG.model_copy(update={"promotion": CONFIG.promotion.model_copy(
        update={"max_champion_drift": None})})
    assert steps.gate(off, project, trigger="test")["action"] != "refuse"


def test_max_rmse_holds_for_every_challenger(project, fitted):
    v1 = register(project, fitted["weak"])
    steps.gate(CONFIG, project, trigger="test")
    register(project, fitted["strong"])
    strict = CONFIG.model_copy(update={"promotion": CONFIG.promotion.model_copy(
        update={"max_rmse": 1.0})})
    decision = steps.gate(strict, project, trigger="test")
    assert decision["action"] == "keep champion"
    assert any("misses the bar promotion.max_rmse = 1" in r for r in decision["reasons"])
    assert alias(project, CHAMPION) == v1
    # Everything else about the strong challenger was better: only the bar kept it out.
    assert decision["evidence"]["challenger_rmse"] < decision["evidence"]["champion_rmse"]


def test_the_drift_rule_on_arrays():
    rng = np.random.default_rng(3)
    y = rng.uniform(50_000, 500_000, 2000)
    champion, challenger = y + rng.normal(0, 50_000, y.size), y + rng.normal(0, 40_000, y.size)
    rules = CONFIG.promotion
    # Within its interval plus the margin: judged as usual.
    near = Recorded(52_000, 49_000, 51_000)
    assert decide(y, challenger, champion, rules=rules, recorded=near).outcome == "promote"
    far = Recorded(40_000, 38_000, 42_000, "data version v1")
    refused = decide(y, challenger, champion, rules=rules, recorded=far)
    assert refused.outcome == "refuse" and refused.reasons[0].startswith(CHANGED)
    assert "(data version v1)" in refused.reasons[0]
    # A champion that improved beyond what sampling explains is as suspicious.
    high = Recorded(70_000, 68_000, 72_000)
    assert decide(y, challenger, champion, rules=rules, recorded=high).outcome == "refuse"


def test_older_champions_fall_back_to_their_evaluation_tags():
    old = registry.recorded_score({"test_rmse": "40000.00",
                                   "test_rmse_interval": "39000.00-41000.00",
                                   "data_version": "abc"})
    assert (old.rmse, old.low, old.high) == (40_000, 39_000, 41_000)
    assert old.where == "data version abc"
    assert registry.recorded_score({"test_rmse": "x"}) is None
