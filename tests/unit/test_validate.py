"""Data tests: the expectation suites accept good data and catch the bad inputs they claim to.

Most tests use a hand-made valid frame (1,200 rows that satisfy every rule) and corrupt one
thing; the failing expectations must be exactly the intended ones, with the column named and
the count right. Great Expectations is imported once, by the first validation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tabreg.data import validate as V
from tabreg.errors import TabregError, ValidationFailed

ROOT = Path(__file__).resolve().parents[2]
RAW = ROOT / "expectations" / "raw.json"
BATCH = ROOT / "expectations" / "batch.json"
NUMERIC = ["longitude", "latitude", "housing_median_age", "total_rooms", "total_bedrooms",
           "population", "households", "median_income", "median_house_value"]
COLUMNS = ["row_id", "batch", *NUMERIC, "ocean_proximity"]
CATEGORIES = ["<1H OCEAN", "INLAND", "NEAR OCEAN", "NEAR BAY", "ISLAND"]

BETWEEN = "expect_column_values_to_be_between"
NOT_NULL = "expect_column_values_to_not_be_null"
OF_TYPE = "expect_column_values_to_be_of_type"
PAIR = "expect_column_pair_values_a_to_be_greater_than_b"
COLUMN_SET = "expect_table_columns_to_match_set"


def _hex_ids(n: int, seed: int = 0) -> pd.Series:
    values = np.random.default_rng(seed).choice(2**62, size=n, replace=False)
    return pd.Series([f"{int(v):016x}" for v in values], dtype="str")


def make_valid(n: int = 1200, seed: int = 7, batch: str = "housing.tgz") -> pd.DataFrame:
    """A frame that satisfies every expectation of both suites (1% of bedrooms missing)."""
    rng = np.random.default_rng(seed)
    rooms = rng.integers(100, 6000, n).astype(float)
    bedrooms = np.maximum(1.0, np.round(rooms * rng.uniform(0.1, 0.3, n)))
    bedrooms[::100] = np.nan
    population = rng.integers(50, 4000, n).astype(float)
    households = np.maximum(1.0, np.round(population * rng.uniform(0.2, 0.6, n)))
    income = np.round(rng.uniform(0.4999, 15.0001, n), 4)
    frame = pd.DataFrame({
        "row_id": _hex_ids(n, seed),
        "batch": pd.Series([batch] * n, dtype="str"),
        "longitude": np.round(rng.uniform(-124.3, -114.4, n), 2),
        "latitude": np.round(rng.uniform(32.6, 41.9, n), 2),
        "housing_median_age": rng.integers(1, 53, n).astype(float),
        "total_rooms": rooms,
        "total_bedrooms": bedrooms,
        "population": population,
        "households": households,
        "median_income": income,
        # The value follows income (rank correlation about 0.8), as in the real data.
        "median_house_value": np.clip(np.round(income * 30000 + rng.normal(0, 60000, n)),
                                      14999, 500001),
        "ocean_proximity": pd.Series(rng.choice(CATEGORIES, n), dtype="str"),
    })
    return frame


@pytest.fixture(scope="module")
def valid() -> pd.DataFrame:
    return make_valid()


@pytest.fixture(scope="module")
def real(real_archive, tmp_path_factory) -> pd.DataFrame:
    """The real table exactly as ingest builds it (identity and batch columns included)."""
    from tabreg.config import load_config
    from tabreg.data import archive, ingest

    schema = load_config(ROOT / "params.yaml", env={}).schema
    csv = archive.extract_member(real_archive, "housing/housing.csv",
                                 tmp_path_factory.mktemp("real") / "housing.csv")
    return ingest.with_identity(ingest.read_csv(csv, schema), schema, "housing.tgz")


@pytest.fixture(scope="module")
def valid_report(valid: pd.DataFrame) -> V.ValidationReport:
    return V.validate_frame(valid, RAW)  # the first validation imports Great Expectations


def failed(report: V.ValidationReport) -> set[tuple[str, tuple[str, ...]]]:
    return {(f.expectation, f.columns) for f in report.failures}


def only(report: V.ValidationReport, expectation: str, columns: tuple[str, ...]) -> V.Failure:
    assert failed(report) == {(expectation, columns)}, report.summary()
    return report.failures[0]


# --------------------------------------------------------------------------------------------
# Good data passes


def test_valid_frame_passes_raw(valid: pd.DataFrame, valid_report: V.ValidationReport) -> None:
    assert list(valid.columns) == COLUMNS
    column_set = json.loads(RAW.read_text())["expectations"][0]["kwargs"]["column_set"]
    assert column_set == COLUMNS
    assert valid_report.success, valid_report.summary()
    assert valid_report.failures == ()
    suite = json.loads(RAW.read_text())
    own = suite["meta"]["tabreg_checks"]  # the project's checks: one per pair, one per column
    assert valid_report.evaluated == len(suite["expectations"]) + sum(
        len(c["kwargs"].get("column_list", [None])) for c in own)
    assert "passed" in valid_report.summary()


def test_valid_frame_passes_batch(valid: pd.DataFrame, valid_report: V.ValidationReport) -> None:
    report = V.validate_frame(valid, BATCH)
    assert report.success, report.summary()


def test_real_data_passes_both_suites(real: pd.DataFrame, valid_report) -> None:
    raw = V.validate_frame(real, RAW)
    assert raw.success, raw.summary()
    batch = V.validate_frame(real, BATCH)
    assert batch.success, batch.summary()


def test_real_data_households_rule_is_tolerated_not_absent(real: pd.DataFrame) -> None:
    # The 3 real rows with households > population are why that expectation has mostly=0.999.
    assert (real["households"] > real["population"]).sum() == 3


@pytest.mark.parametrize("path", [RAW, BATCH], ids=["raw", "batch"])
def test_suites_are_gx1_json_with_reasons(path: Path, valid_report) -> None:
    data = json.loads(path.read_text())
    assert set(data) == {"name", "expectations", "meta", "notes"}
    assert data["name"] == path.stem
    for item in data["expectations"]:
        assert set(item) == {"type", "kwargs", "meta"}
        assert item["meta"].get("why"), item
    suite = V.load_suite(path)
    assert suite.name == path.stem
    assert len(suite.expectations) == len(data["expectations"])


# --------------------------------------------------------------------------------------------
# Each corruption is caught by the expectation meant for it (and only that one)


def test_latitude_outside_california(valid: pd.DataFrame, valid_report) -> None:
    bad = valid.copy()
    bad.loc[[3, 50, 700], "latitude"] = 45.0
    report = V.validate_frame(bad, RAW)
    failure = only(report, BETWEEN, ("latitude",))
    assert failure.unexpected_count == 3
    assert failure.sample == (45.0, 45.0, 45.0)
    assert set(failure.sample_row_ids) == set(bad.loc[[3, 50, 700], "row_id"])
    text = report.summary()
    assert text.startswith("suite raw: 1 of ")
    assert "latitude" in text and "3 unexpected" in text and "max_value=42" in text
    assert bad.loc[50, "row_id"] in text


def test_longitude_with_wrong_sign(valid: pd.DataFrame, valid_report) -> None:
    bad = valid.copy()
    bad.loc[[1, 2], "longitude"] = 120.0
    assert only(V.validate_frame(bad, RAW), BETWEEN, ("longitude",)).unexpected_count == 2


def test_negative_population(valid: pd.DataFrame, valid_report) -> None:
    bad = valid.copy()
    bad.loc[[10, 20, 30], "population"] = -5.0
    report = V.validate_frame(bad, RAW)
    # A negative population is also smaller than its households: 3 of 1,200 rows > 0.1%.
    assert failed(report) == {(BETWEEN, ("population",)), (PAIR, ("population", "households"))}
    by_kind = {f.expectation: f for f in report.failures}
    assert by_kind[BETWEEN].unexpected_count == 3
    assert "population" in report.summary() and "3 unexpected" in report.summary()


@pytest.mark.parametrize("column", ["total_bedrooms", "households"])
def test_zero_counts(valid: pd.DataFrame, valid_report, column: str) -> None:
    bad = valid.copy()
    bad.loc[[5, 6], column] = 0.0
    failure = only(V.validate_frame(bad, RAW), BETWEEN, (column,))
    assert failure.unexpected_count == 2
    assert failure.sample == (0.0, 0.0)


@pytest.mark.parametrize(("column", "value"), [
    ("median_income", 20.0),
    ("median_income", 0.1),
    ("housing_median_age", 60.0),
    ("housing_median_age", 0.0),
    ("median_house_value", 600000.0),
    ("median_house_value", -1.0),
])
def test_caps(valid: pd.DataFrame, valid_report, column: str, value: float) -> None:
    bad = valid.copy()
    bad.loc[[7, 8, 9, 11], column] = value
    report = V.validate_frame(bad, RAW)
    failure = only(report, BETWEEN, (column,))
    assert failure.unexpected_count == 4
    assert f"[{column}]" in report.summary() and "4 unexpected" in report.summary()


def test_unknown_category(valid: pd.DataFrame, valid_report) -> None:
    bad = valid.copy()
    bad.loc[[0, 1], "ocean_proximity"] = "MARS"
    report = V.validate_frame(bad, RAW)
    failure = only(report, "expect_column_values_to_be_in_set", ("ocean_proximity",))
    assert failure.unexpected_count == 2
    assert failure.sample == ("MARS", "MARS")
    assert "'MARS'" in report.summary()


def test_more_bedrooms_than_rooms(valid: pd.DataFrame, valid_report) -> None:
    bad = valid.copy()
    rows = [1, 2, 3, 4]
    bad.loc[rows, "total_bedrooms"] = bad.loc[rows, "total_rooms"] + 10
    report = V.validate_frame(bad, RAW)
    failure = only(report, PAIR, ("total_rooms", "total_bedrooms"))
    assert failure.unexpected_count == 4
    first = (bad.loc[1, "total_rooms"], bad.loc[1, "total_bedrooms"])
    assert first in failure.sample
    assert set(failure.sample_row_ids) == set(bad.loc[rows, "row_id"])


def test_missing_bedrooms_do_not_break_the_pair_rule(valid: pd.DataFrame, valid_report) -> None:
    assert valid["total_bedrooms"].isna().sum() == 12
    assert valid_report.success


def test_households_above_population_on_5_percent(valid: pd.DataFrame, valid_report) -> None:
    bad = valid.copy()
    rows = bad.index[::20]  # 60 rows = 5%
    bad.loc[rows, "households"] = bad.loc[rows, "population"] + 1
    report = V.validate_frame(bad, RAW)
    failure = only(report, PAIR, ("population", "households"))
    assert failure.unexpected_count == 60
    assert failure.unexpected_percent == pytest.approx(5.0)
    assert "60 unexpected (5%)" in report.summary()


def test_households_above_population_on_a_few_rows_is_tolerated(valid: pd.DataFrame,
                                                                 valid_report) -> None:
    bad = valid.copy()
    bad.loc[4, "households"] = bad.loc[4, "population"] + 1  # 1 of 1,200 < 0.1%
    assert V.validate_frame(bad, RAW).success


def test_bedrooms_null_rate_over_bound(valid: pd.DataFrame, valid_report) -> None:
    bad = valid.copy()
    bad.loc[bad.index[5::10], "total_bedrooms"] = np.nan  # 120 more: 132 of 1,200 = 11%
    report = V.validate_frame(bad, RAW)
    failure = only(report, NOT_NULL, ("total_bedrooms",))
    assert failure.unexpected_count == 132
    assert failure.unexpected_percent == pytest.approx(11.0)
    assert "total_bedrooms" in report.summary() and "132 unexpected" in report.summary()


def test_null_in_longitude(valid: pd.DataFrame, valid_report) -> None:
    bad = valid.copy()
    bad.loc[[8, 9], "longitude"] = np.nan
    report = V.validate_frame(bad, RAW)
    failure = only(report, NOT_NULL, ("longitude",))
    assert failure.unexpected_count == 2
    assert set(failure.sample_row_ids) == set(bad.loc[[8, 9], "row_id"])


def test_extra_column(valid: pd.DataFrame, valid_report) -> None:
    bad = valid.assign(extra=1.0)
    report = V.validate_frame(bad, RAW)
    failure = only(report, COLUMN_SET, ("extra",))
    assert "unexpected ['extra']" in failure.detail


def test_missing_column(valid: pd.DataFrame, valid_report) -> None:
    bad = valid.drop(columns=["median_income"])
    report = V.validate_frame(bad, RAW)  # reports, does not raise
    assert failed(report) == {
        (COLUMN_SET, ("median_income",)),
        (OF_TYPE, ("median_income",)),
        (NOT_NULL, ("median_income",)),
        (BETWEEN, ("median_income",)),
        (V.NOT_CONSTANT, ("median_income",)),
        (V.RANK_CORRELATION, ("median_income", "median_house_value")),
    }
    assert "no column 'median_income'" in report.summary()
    assert report.summary().splitlines()[1].lstrip(" -").startswith(COLUMN_SET)


def test_renamed_column(valid: pd.DataFrame, valid_report) -> None:
    bad = valid.rename(columns={"population": "pop"})
    report = V.validate_frame(bad, RAW)
    assert failed(report) == {
        (COLUMN_SET, ("population", "pop")),
        (OF_TYPE, ("population",)),
        (NOT_NULL, ("population",)),
        (BETWEEN, ("population",)),
        (PAIR, ("population", "households")),
        (V.NOT_CONSTANT, ("population",)),
    }


def test_text_in_numeric_column(valid: pd.DataFrame, valid_report) -> None:
    bad = valid.copy()
    bad["total_rooms"] = bad["total_rooms"].astype("str")
    bad.loc[3, "total_rooms"] = "n/a"
    report = V.validate_frame(bad, RAW)
    got = failed(report)
    assert (OF_TYPE, ("total_rooms",)) in got
    assert all("total_rooms" in columns for _, columns in got), report.summary()
    assert "observed str" in report.summary()  # the dtype GX saw


def test_text_in_numeric_column_as_object(valid: pd.DataFrame, valid_report) -> None:
    bad = valid.copy()
    bad["median_income"] = bad["median_income"].astype(object)
    bad.loc[3, "median_income"] = "high"
    report = V.validate_frame(bad, RAW)
    assert (OF_TYPE, ("median_income",)) in failed(report)
    assert all("median_income" in columns for _, columns in failed(report))


def test_narrower_float_type(valid: pd.DataFrame, valid_report) -> None:
    bad = valid.astype({"latitude": "float32"})
    report = V.validate_frame(bad, RAW)
    assert only(report, OF_TYPE, ("latitude",)).detail.endswith("observed float32")


def test_duplicated_row_id(valid: pd.DataFrame, valid_report) -> None:
    bad = valid.copy()
    bad.loc[9, "row_id"] = bad.loc[4, "row_id"]
    report = V.validate_frame(bad, RAW)
    failure = only(report, "expect_column_values_to_be_unique", ("row_id",))
    assert failure.unexpected_count == 2
    assert failure.sample_row_ids == (bad.loc[4, "row_id"],) * 2


def test_null_row_id(valid: pd.DataFrame, valid_report) -> None:
    bad = valid.copy()
    bad.loc[2, "row_id"] = None
    assert only(V.validate_frame(bad, RAW), NOT_NULL, ("row_id",)).unexpected_count == 1


def test_malformed_row_id(valid: pd.DataFrame, valid_report) -> None:
    bad = valid.copy()
    bad.loc[2, "row_id"] = "ABC"
    failure = only(V.validate_frame(bad, RAW), "expect_column_values_to_match_regex", ("row_id",))
    assert failure.sample == ("ABC",)


def test_too_few_rows_for_raw_but_fine_as_a_batch(valid: pd.DataFrame, valid_report) -> None:
    small = valid.iloc[1:11].reset_index(drop=True)
    report = V.validate_frame(small, RAW)
    failure = only(report, "expect_table_row_count_to_be_between", ())
    assert "observed 10" in failure.detail and "min_value=1000" in failure.detail
    assert V.validate_frame(small, BATCH).success


def test_empty_batch(valid: pd.DataFrame, valid_report) -> None:
    report = V.validate_frame(valid.iloc[0:0], BATCH)
    assert failed(report) == {("expect_table_row_count_to_be_between", ()),
                              ("expect_column_unique_value_count_to_be_between", ("batch",))}
    assert "observed 0" in report.summary()


def test_batch_suite_sees_one_batch(valid: pd.DataFrame, valid_report) -> None:
    bad = valid.copy()
    bad.loc[:99, "batch"] = "batch-2026-11-01.csv"
    report = V.validate_frame(bad, BATCH)
    only(report, "expect_column_unique_value_count_to_be_between", ("batch",))
    assert V.validate_frame(bad, RAW).success


def test_without_row_id_column_reports_without_row_ids(valid: pd.DataFrame,
                                                       valid_report) -> None:
    bad = valid.drop(columns=["row_id"])
    bad.loc[[1, 2], "latitude"] = 50.0
    report = V.validate_frame(bad, RAW)
    lat = next(f for f in report.failures if f.columns == ("latitude",))
    assert lat.unexpected_count == 2 and lat.sample_row_ids == ()
    assert (COLUMN_SET, ("row_id",)) in failed(report)


# --------------------------------------------------------------------------------------------
# Reports, check() and suite loading


@pytest.fixture(scope="module")
def bad_report(valid: pd.DataFrame, valid_report) -> V.ValidationReport:
    bad = valid.copy()
    bad.loc[[3, 4, 5], "latitude"] = 45.0
    bad.loc[[6], "ocean_proximity"] = "MARS"
    return V.validate_frame(bad, RAW)


def test_write_report(bad_report: V.ValidationReport, tmp_path: Path) -> None:
    paths = V.write_report(bad_report, tmp_path / "reports", "raw")
    assert set(paths) == {"json", "html"}
    data = json.loads(paths["json"].read_text())
    assert data["summary"]["suite"] == "raw"
    assert data["summary"]["success"] is False
    assert data["summary"]["failed"] == 2
    assert data["summary"]["text"] == bad_report.summary()
    assert data["result"]["statistics"]["unsuccessful_expectations"] == 2
    html = paths["html"].read_text()
    assert html.lstrip().lower().startswith("<!doctype html")
    assert "Expectation Suite:</span> raw<br>" in html  # GX Data Docs' page header
    assert "Data asset: raw<br>" in html and "__none__" not in html  # named table and run
    assert "latitude" in html and "ocean_proximity" in html
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["raw.html", "raw.json"]
    V.write_report(bad_report, tmp_path / "reports", "raw")  # overwrites in place
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["raw.html", "raw.json"]


def test_write_report_of_a_passing_run(valid_report: V.ValidationReport, tmp_path: Path) -> None:
    paths = V.write_report(valid_report, tmp_path, "ok")
    assert json.loads(paths["json"].read_text())["summary"]["success"] is True
    assert paths["html"].stat().st_size > 1000


def test_check_raises_naming_expectation_and_column(bad_report: V.ValidationReport,
                                                    tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed) as info:
        V.check(bad_report, "validate raw")
    message = str(info.value)
    assert message.startswith("validate raw: suite raw: 2 of ")
    assert BETWEEN in message and "latitude" in message and "3 unexpected" in message
    assert "expect_column_values_to_be_in_set" in message and "ocean_proximity" in message
    paths = V.write_report(bad_report, tmp_path, "raw")
    with pytest.raises(ValidationFailed, match=str(paths["html"]).replace(".", r"\.")):
        V.check(bad_report, "validate raw", files=paths)


def test_check_passes_silently(valid_report: V.ValidationReport) -> None:
    assert valid_report.success and not valid_report.failures
    assert V.check(valid_report, "validate raw") is None  # no exception, nothing returned


def test_load_suite_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(ValidationFailed, match=r"nope\.json: expectation suite not found"):
        V.load_suite(path)


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "not valid JSON"),
    ("[]", "must be a JSON object"),
    ('{"expectation_suite_name": "x", "expectations": []}', "0.x suite"),
    ('{"name": "x"}', "lacks the key 'expectations'"),
    ('{"name": "x", "expectations": [{"type": "expect_nothing_real", "kwargs": {}}]}',
     "expectation #0 (expect_nothing_real)"),
    # GX itself would log and drop these (a typo would silently weaken the contract).
    ('{"name": "x", "expectations": [{"type": "expect_column_values_to_not_be_null", '
     '"kwargs": {"column": "a", "mostyl": 0.9}}]}', "mostyl"),
    ('{"name": "x", "expectations": [{"type": "expect_column_values_to_be_between", '
     '"kwargs": {"column": "a"}}]}', "min_value and max_value cannot both be None"),
    ('{"name": "", "expectations": []}', "name must be provided"),
])
def test_load_suite_bad_content(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(TabregError) as info:
        V.load_suite(path)
    assert str(path) in str(info.value) and message in str(info.value)
