"""Split: the hash strategy is stable under appends and balanced per stratum; the random one
is sklearn's stratified split (the book's exact reproduction is in tests/e2e)."""

import numpy as np
import pandas as pd
import pytest

from tabreg.config import ROW_ID, SplitConfig, load_config
from tabreg.data import ingest, split, synthetic
from tabreg.errors import SchemaError
from tests.conftest import ROOT

CONFIG = load_config(ROOT / "params.yaml", env={})
SCHEMA = CONFIG.schema


def table(rows: int, seed: int = 0, batch: str = "base") -> pd.DataFrame:
    return ingest.with_identity(synthetic.generate(rows, seed=seed), SCHEMA, batch)


def config(**changes) -> SplitConfig:
    return CONFIG.split.model_copy(update=changes)


def test_appending_rows_never_moves_an_existing_row():
    base = table(5000, seed=1)
    before = split.split(base, config())
    grown, _ = ingest.append_batches(base, [table(3000, seed=2, batch="b1.csv"),
                                            table(700, seed=3, batch="b2.csv")])
    after = split.split(grown, config())
    assert set(before.test[ROW_ID]) <= set(after.test[ROW_ID])
    assert set(before.train[ROW_ID]) <= set(after.train[ROW_ID])
    assert len(after.train) + len(after.test) == len(grown)


@pytest.mark.parametrize("test_size", [0.2, 0.25, 0.1, 0.33])
def test_every_stratum_within_one_point_of_test_size(test_size):
    base = table(6000, seed=4)
    cfg = config(test_size=test_size)
    for frame in (base, ingest.append_batches(base, [table(1234, 5, "b.csv")])[0]):
        rep = split.report(frame, split.split(frame, cfg), cfg)
        large = [s for s in rep["strata"] if s["rows"] >= 100]
        assert len(large) >= 4  # the table has strata large enough for the claim to bite
        for stratum in large:
            assert abs(stratum["test_share_of_stratum"] - test_size) <= 0.01, stratum


def test_reordering_lines_of_a_file_changes_nothing():
    base = table(3000, seed=6)
    shuffled = base.sample(frac=1, random_state=0).reset_index(drop=True)
    assert set(split.split(base, config()).test[ROW_ID]) == set(
        split.split(shuffled, config()).test[ROW_ID])


def test_seed_changes_the_test_set():
    base = table(3000, seed=7)
    a = set(split.split(base, config(seed=1)).test[ROW_ID])
    b = set(split.split(base, config(seed=2)).test[ROW_ID])
    assert a != b and abs(len(a) - len(b)) <= 5


def test_random_strategy_is_sklearn_stratified_split():
    from sklearn.model_selection import train_test_split

    base = table(2000, seed=8)
    got = split.split(base, config(strategy="random"))
    cats = pd.cut(base["median_income"], [0, 1.5, 3, 4.5, 6, np.inf], labels=[1, 2, 3, 4, 5])
    _, expected = train_test_split(base, test_size=0.2, stratify=cats, random_state=42)
    assert got.test[ROW_ID].tolist() == expected[ROW_ID].tolist()


def test_rows_outside_the_strata_bins_are_reported():
    base = table(200, seed=9)
    base.loc[[3, 4], "median_income"] = -1.0
    with pytest.raises(SchemaError,
                       match=r"2 rows of 'median_income' fall outside .*\[-1\.0, -1\.0\]"):
        split.split(base, config())


def test_report_is_the_books_figure_2_10():
    base = table(4000, seed=10)
    rep = split.report(base, split.split(base, config()), config())
    assert [s["stratum"] for s in rep["strata"]] == ["1", "2", "3", "4", "5"]
    assert sum(s["overall_pct"] for s in rep["strata"]) == pytest.approx(100, abs=0.1)
    assert sum(s["rows"] for s in rep["strata"]) == 4000
    stratified = sum(abs(s["test_error_pct"]) for s in rep["strata"])
    random = sum(abs(s["random_error_pct"]) for s in rep["strata"])
    assert stratified < random
    text = split.report_markdown(rep)
    assert "| stratum | range | rows | overall %" in text
    # each income category says which incomes it holds, not only its label
    assert "| 1 | 0 < median_income ≤ 1.5 |" in text and "| 5 | median_income > 6 |" in text
