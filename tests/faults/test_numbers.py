"""Numbers the model cannot take: infinities, magnitudes beyond float32's range (the model's
features are float32, where ``1e308`` is infinity) and text in numeric columns (only an empty
cell is missing). Each is a type error naming the file (or request), column, line (or row)
and value at every entry point: ingest of the base table and of landing batches,
``check-file``, the raw and batch contracts, the retrain flow's batch check (which then
quarantines the file), the server (a 422, never a 500) and ``predict`` (a message, no
traceback)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from tabreg import cli
from tabreg.config import load_config
from tabreg.data import ingest, synthetic
from tabreg.errors import SchemaError
from tabreg.steps import ingest as steps
from tests.conftest import ROOT, set_params

SCHEMA = load_config(ROOT / "params.yaml", env={}).schema
HUGE = "9" * 401
#: What a CSV cell may say, and what a float32 feature would make of it: infinity.
TOO_BIG = {"inf": "inf", "minus-inf": "-inf", "Infinity": "Infinity", "1e308": "1e308",
           "beyond-float32": "1e39", "401-digits": HUGE, "minus-401-digits": "-" + HUGE}
#: Text that pandas would read as missing by default; only an empty cell is missing here.
TEXT = ["n/a", "NaN", "NA", "null", "-"]
ROW = 7  # the data row that gets the bad value: line 9 of the file (header on line 1)


def frame_with(value: str, column: str = "total_rooms", rows: int = 400,
               seed: int = 5) -> pd.DataFrame:
    frame = synthetic.generate(rows, seed=seed)
    frame[column] = frame[column].astype(object)
    frame.loc[ROW, column] = value
    return frame


def csv_with(path: Path, value: str, column: str = "total_rooms") -> Path:
    synthetic.write_csv(frame_with(value, column), path)
    return path


def named(value: str) -> str:
    """The value as the messages quote it (cut at 40 characters), as a pattern."""
    return re.escape(repr(value[:40]))


# --- reading a CSV file ------------------------------------------------------------------------

@pytest.mark.parametrize("value", TOO_BIG.values(), ids=TOO_BIG.keys())
def test_numbers_beyond_float32_are_type_errors(tmp_path, value):
    path = csv_with(tmp_path / "batch.csv", value)
    with pytest.raises(SchemaError, match=rf"batch\.csv: .*column 'total_rooms': 1 infinite or "
                                          rf"too large values .*\(line 9: {named(value)}\)"):
        ingest.read_csv(path, SCHEMA)


def test_the_largest_float32_is_accepted(tmp_path):
    path = csv_with(tmp_path / "batch.csv", "3.4e38")
    assert ingest.read_csv(path, SCHEMA)["total_rooms"].iloc[ROW] == 3.4e38


@pytest.mark.parametrize("value", TEXT)
def test_text_in_a_numeric_column_is_not_a_missing_value(tmp_path, value):
    path = csv_with(tmp_path / "batch.csv", value, column="median_income")
    with pytest.raises(SchemaError, match=rf"batch\.csv: .*column 'median_income': 1 "
                                          rf"non-numeric values \(line 9: {named(value)}\)"):
        ingest.read_csv(path, SCHEMA)


def test_only_an_empty_cell_is_missing(tmp_path):
    frame = synthetic.generate(50, seed=3)
    frame.loc[ROW, "total_bedrooms"] = None
    frame["ocean_proximity"] = frame["ocean_proximity"].astype(object)
    frame.loc[ROW + 1, "ocean_proximity"] = None
    synthetic.write_csv(frame, tmp_path / "b.csv")
    read = ingest.read_csv(tmp_path / "b.csv", SCHEMA)
    assert read["total_bedrooms"].isna().tolist() == frame["total_bedrooms"].isna().tolist()
    assert read["ocean_proximity"].isna().sum() == 1 and pd.isna(read.loc[ROW + 1,
                                                                          "ocean_proximity"])


# --- ingest, check-file ------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["inf", HUGE])
def test_ingest_refuses_a_base_table_with_a_bad_number(make_project, value):
    root = make_project(rows=1200)
    config = load_config(root / "params.yaml", env={})
    steps.ingest(config, root)
    raw = (root / config.paths.raw).read_bytes()
    bad = root.parent / "source" / "bad.tgz"
    sha = synthetic.write_archive(frame_with(value, "households", rows=1200), bad)
    set_params(root, "data", source=str(bad), sha256=sha)
    with pytest.raises(SchemaError, match=r"bad\.tgz:housing/housing\.csv: .*column "
                                          rf"'households': 1 infinite .*line 9: {named(value)}"):
        steps.ingest(load_config(root / "params.yaml", env={}), root)
    assert (root / config.paths.raw).read_bytes() == raw


@pytest.mark.parametrize("value", ["1e308", "n/a"])
def test_ingest_refuses_a_landing_batch_with_a_bad_number(make_project, value):
    from tabreg.data.landing import BatchRejected

    root = make_project(rows=1200)
    csv_with(root / "data/landing/2026-11-01.csv", value)
    with pytest.raises(BatchRejected, match=rf"(?s)2026-11-01\.csv: .*'total_rooms'.*line 9: "
                                            rf"{named(value)}"):
        steps.ingest(load_config(root / "params.yaml", env={}), root)
    assert not (root / "data/raw/housing.parquet").exists()
    assert list((root / "data/quarantine").glob("*/2026-11-01.csv"))  # as retrain would


@pytest.mark.parametrize("value", ["-inf", HUGE, "null"])
def test_check_file_names_file_column_line_and_value(tmp_path, capsys, value):
    path = csv_with(tmp_path / "new.csv", value, column="population")
    assert cli.run(["--root", str(ROOT), "check-file", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path.name}: ") and "Traceback" not in err
    assert re.search(rf"column 'population': 1 .*\(line 9: {named(value)}\)", err), err


# --- the contracts (Great Expectations) --------------------------------------------------------

@pytest.fixture(scope="module")
def identified() -> pd.DataFrame:
    return ingest.with_identity(synthetic.generate(1200, seed=4), SCHEMA, "2026-11-01.csv")


@pytest.mark.parametrize("suite", ["raw", "batch"])
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), 1e308, -1e39])
def test_contracts_fail_numbers_beyond_float32(identified, suite, value):
    from tabreg.data import validate

    bad = identified.copy()
    bad.loc[[5, 9], "total_rooms"] = value
    report = validate.validate_frame(bad, ROOT / "expectations" / f"{suite}.json")
    assert not report.success
    failure = next(f for f in report.failures
                   if f.columns == ("total_rooms",) and "max_value=3.40282" in f.detail)
    assert failure.unexpected_count == 2
    assert set(failure.sample_row_ids) == set(bad.loc[[5, 9], "row_id"])


def test_contracts_cover_every_numeric_column():
    for suite in ("raw", "batch"):
        spec = json.loads((ROOT / "expectations" / f"{suite}.json").read_text())
        bounded = {e["kwargs"]["column"] for e in spec["expectations"]
                   if e["type"] == "expect_column_values_to_be_between"
                   and e["kwargs"].get("max_value") == pytest.approx(3.4028234663852886e38)
                   and e["kwargs"].get("min_value") == pytest.approx(-3.4028234663852886e38)}
        assert bounded == {*SCHEMA.numeric, SCHEMA.target}, suite


# --- the retrain flow's batch check --------------------------------------------------------------

def test_retrain_quarantines_a_batch_with_a_bad_number_and_lets_the_next_in(make_project):
    from flows.retrain import check_new_batches
    from tabreg.promotion import registry
    from tabreg.promotion import retrain as rt

    root = make_project(rows=1200)
    config = load_config(root / "params.yaml", env={})
    steps.ingest(config, root)
    landing = root / config.data.landing_dir
    csv_with(landing / "2026-11-01.csv", HUGE)
    new = rt.detect_new_data(config, root)
    with pytest.raises(rt.BatchRejected, match=r"(?s)2026-11-01\.csv.*'total_rooms'.*line 9"):
        check_new_batches.fn(config, root, new)
    (reason,) = (root / config.retrain.quarantine_dir).glob("*/2026-11-01.csv.reason.txt")
    assert "line 9" in reason.read_text() and not (landing / "2026-11-01.csv").exists()
    assert registry.read_ledger(root / config.registry.ledger)[-1]["action"] == "reject batch"

    synthetic.write_csv(synthetic.generate(200, seed=8), landing / "2026-11-08.csv")
    new = rt.detect_new_data(config, root)
    assert [p.name for p in new.batches] == ["2026-11-08.csv"]
    assert list(check_new_batches.fn(config, root, new).accepted) == ["2026-11-08.csv"]


# --- serving and predict -------------------------------------------------------------------------

def _records(n: int = 3) -> list[dict]:
    frame = synthetic.generate(n, seed=2)[list(SCHEMA.features)]
    return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")


@pytest.mark.parametrize("literal", ["1e300", "1e39", HUGE, "-" + HUGE, "Infinity"])
def test_server_answers_422_naming_row_and_column(http, literal):
    records = _records()
    # The literal goes into row 1 as JSON text (a 401-digit integer has no float form).
    row = json.dumps({**records[1], "population": 0}).replace('"population": 0',
                                                              f'"population": {literal}')
    text = json.dumps({"dataframe_records": records}).replace(json.dumps(records[1]), row, 1)
    assert literal in text
    answer = http.post("/invocations", content=text.encode(),
                       headers={"Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    (problem,) = answer.json()["problems"]
    assert problem["field"] == "population" and problem["rows"] == [1]
    assert "float32" in problem["problem"]


@pytest.mark.parametrize("value", ["inf", "1e308", HUGE, "n/a"])
def test_server_answers_422_for_a_csv_body(http, value):
    frame = synthetic.generate(4, seed=2)[list(SCHEMA.features)].astype({"latitude": object})
    frame.loc[2, "latitude"] = value
    answer = http.post("/invocations", content=frame.to_csv(index=False).encode(),
                       headers={"Content-Type": "text/csv"})
    assert answer.status_code == 422, answer.text
    (problem,) = answer.json()["problems"]
    assert problem["field"] == "latitude" and problem["rows"] == [2]


@pytest.mark.parametrize("value", ["1e308", HUGE, "-inf"])
def test_predict_names_line_and_column_without_a_traceback(predict, tmp_path, value):
    source = tmp_path / "in.csv"
    frame_with(value, column="median_income", rows=300)[list(SCHEMA.features)].to_csv(
        source, index=False)
    code, err = predict(str(source), str(tmp_path / "out.csv"))
    assert code == 1 and "Traceback" not in err, err
    assert re.search(r"'median_income': not a finite number within float32's range .* in 1 row "
                     r"\(line 9: ", err), err
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("value", ["n/a", "NaN"])
def test_predict_refuses_text_where_only_an_empty_cell_is_missing(predict, tmp_path, value):
    source = tmp_path / "in.csv"
    frame_with(value, column="households", rows=300)[list(SCHEMA.features)].to_csv(
        source, index=False)
    code, err = predict(str(source), str(tmp_path / "out.csv"))
    assert code == 1 and "Traceback" not in err, err
    assert f"'households': not a number in 1 row (line 9: {value!r})" in err, err
