"""Batch scoring: input checks, flags, row identity, chunked CSV / Parquet files, and the
``predict`` command against a registered champion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tabreg import cli
from tabreg.config import ROW_ID, load_config
from tabreg.data.identity import row_ids
from tabreg.serving import scoring
from tabreg.serving.scoring import FLAGS, PREDICTION, InputError
from tests.conftest import ROOT
from tests.scoring_helpers import fit_small, isolated_mlflow, make_store

CONFIG = load_config(ROOT / "params.yaml", env={})
SCHEMA = CONFIG.schema
FEATURES = list(SCHEMA.features)


@pytest.fixture(scope="module")
def fitted():
    pipeline, _ = fit_small(CONFIG)
    return pipeline, scoring.spec_for(pipeline, SCHEMA)


@pytest.fixture(scope="module")
def rows():
    from tabreg.data import synthetic

    frame = synthetic.generate(2500, seed=7)
    frame.loc[[3, 1500], "ocean_proximity"] = "LAKESIDE"
    return frame


def test_spec_reads_the_model(fitted):
    _, spec = fitted
    assert spec.columns == SCHEMA.features  # no signature: the configured schema
    assert spec.categories["ocean_proximity"] >= {"INLAND", "<1H OCEAN", "NEAR BAY"}
    assert "LAKESIDE" not in spec.categories["ocean_proximity"]
    assert SCHEMA.target in spec.ignored and ROW_ID in spec.ignored


def test_unknown_category_and_missing_value_are_scored_and_flagged(fitted, rows):
    model, spec = fitted
    frame = rows.iloc[20:30].reset_index(drop=True)
    frame["total_bedrooms"] = frame["total_bedrooms"].fillna(300.0)
    frame["ocean_proximity"] = "INLAND"
    frame.loc[1, "total_bedrooms"] = np.nan
    frame.loc[2, "ocean_proximity"] = "LAKESIDE"
    checked = scoring.check_frame(frame, spec)
    assert checked.flags[1] == "missing:total_bedrooms"
    assert checked.flags[2] == "unknown_category:ocean_proximity"
    assert checked.counts == {"unknown_category:ocean_proximity": 1, "missing:total_bedrooms": 1}
    assert set(checked.flags[3:]) == {""} and checked.flags[0] == ""
    assert np.isfinite(scoring.predict(model, checked.features)).all()


def _request_rows(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A few rows of a request: clean; with missing values and unknown or missing
    categories; with an integer column."""
    base = rows[FEATURES].iloc[100:106].reset_index(drop=True)
    odd = base.copy()
    odd.loc[0, "total_bedrooms"] = np.nan
    odd.loc[1, "ocean_proximity"] = "LAKESIDE"
    odd.loc[2, "ocean_proximity"] = None
    odd.loc[3, ["longitude", "ocean_proximity"]] = [np.nan, "ISLAND"]
    whole = base.assign(housing_median_age=base["housing_median_age"].astype(int))
    return base, odd, whole


def _small_requests(rows: pd.DataFrame, spec) -> list[pd.DataFrame]:
    """Small frames as the server parses JSON bodies: clean, with missing values, unknown or
    missing categories, integers, and types the quick check leaves to the full one."""
    from tabreg.serving.server import frame_from_json

    def parsed(frame: pd.DataFrame) -> pd.DataFrame:
        clean = frame.astype(object).where(frame.notna(), None)
        return frame_from_json({"dataframe_split": {"columns": list(clean.columns),
                                                    "data": clean.values.tolist()}}, spec)

    base, odd, whole = _request_rows(rows)
    text = parsed(base).assign(median_income=base["median_income"].astype(str))
    return [parsed(base), parsed(base.head(1)), parsed(odd), parsed(whole), text,
            base.assign(ocean_proximity=base["ocean_proximity"].astype("category")),
            parsed(base.assign(**{ROW_ID: "a"})), parsed(odd.iloc[[2]])]


def test_the_quick_check_of_small_requests_is_the_full_check(fitted, rows, monkeypatch):
    _, spec = fitted
    frames = _small_requests(rows, spec)
    quick = [scoring.check_frame(f, spec) for f in frames]
    assert scoring._check_plain(frames[0], spec) is not None  # the usual request: quick
    assert scoring._check_plain(frames[4], spec) is None  # numbers as text: the full check
    monkeypatch.setattr(scoring, "PLAIN_ROWS", 0)
    for frame, got in zip(frames, quick, strict=True):
        full = scoring.check_frame(frame, spec)
        pd.testing.assert_frame_equal(got.features, full.features)
        assert got.flags.tolist() == full.flags.tolist() and got.counts == full.counts
    assert quick[2].flags.tolist()[:4] == [
        "missing:total_bedrooms", "unknown_category:ocean_proximity",
        "missing:ocean_proximity", "missing:longitude"]


def test_the_quick_check_of_json_values_is_the_full_check(fitted, rows, monkeypatch):
    """The server checks a small JSON request of the model's columns from its values, with
    no frame; what it finds, and the frame it builds when the log asks, are the full
    check's. Anything unusual (another column, numbers as text, out of range) goes the
    full way, which names what is wrong."""
    from tabreg.serving import fast
    from tabreg.serving.server import _ids_of_values, frame_from_json, values_from_json

    _, spec = fitted
    base, odd, whole = _request_rows(rows)

    def split(frame: pd.DataFrame) -> dict:
        clean = frame.astype(object).where(frame.notna(), None)
        return {"dataframe_split": {"columns": list(clean.columns),
                                    "data": clean.values.tolist()}}

    def records(frame: pd.DataFrame) -> dict:
        clean = frame.astype(object).where(frame.notna(), None)
        return {"dataframe_records": clean.to_dict(orient="records")}

    named = base.assign(**{ROW_ID: [f"id{i}" for i in range(len(base))]})
    quick_ones = [split(base), split(base.head(1)), split(odd), records(odd), split(whole),
                  split(odd.iloc[[2]]), split(odd.iloc[[0]]), split(base[FEATURES[::-1]]),
                  split(named), records(named)]
    full_ones = [split(base.assign(median_income=base["median_income"].astype(str))),
                 split(base.assign(population=1e300)), split(base.assign(other="a")),
                 {"dataframe_records": [dict(r, extra=1) for r in
                                        records(base)["dataframe_records"]]},
                 split(base.assign(total_rooms=True))]
    assert all(values_from_json(p, spec) is None or scoring.check_values(
        values_from_json(p, spec), spec) is None for p in full_ones)
    checked = []
    for payload in quick_ones:
        values = values_from_json(payload, spec)
        assert values is not None
        quick = scoring.check_values(values, spec)
        assert quick is not None and quick.arrays is not None
        checked.append((payload, quick))
    # The ids of the rows, as the frame path gives them: text ids, or none (numbers: the
    # frame path names them).
    assert _ids_of_values(values_from_json(split(named), spec)).tolist() == named[
        ROW_ID].tolist()
    assert _ids_of_values(values_from_json(split(base), spec)) is None
    assert values_from_json(split(base.assign(**{ROW_ID: 7})), spec) is None
    monkeypatch.setattr(scoring, "PLAIN_ROWS", 0)
    for payload, quick in checked:
        full = scoring.check_frame(frame_from_json(payload, spec), spec)
        pd.testing.assert_frame_equal(quick.features, full.features)
        assert quick.flags.tolist() == full.flags.tolist() and quick.counts == full.counts
        assert len(quick) == len(full.features)
        expected = fast._columns(full.features)  # what the fast path reads from a frame
        for name, values in expected.items():
            got = quick.arrays[name]
            assert got.dtype == values.dtype
            assert (pd.isna(got) == pd.isna(values)).all()
            assert (got[~pd.isna(got)] == values[~pd.isna(values)]).all()
    assert checked[2][1].flags.tolist()[:4] == [
        "missing:total_bedrooms", "unknown_category:ocean_proximity",
        "missing:ocean_proximity", "missing:longitude"]


def test_numbers_written_as_text_are_numbers(fitted, rows):
    _, spec = fitted
    frame = rows.head(3)[FEATURES].astype(object)
    frame["median_income"] = [str(v) for v in rows["median_income"].head(3)]
    checked = scoring.check_frame(frame, spec)
    assert checked.features["median_income"].tolist() == rows["median_income"].head(3).tolist()


@pytest.mark.parametrize("change, field, words", [
    (lambda f: f.drop(columns=["median_income"]), "median_income", "missing column"),
    (lambda f: f.rename(columns={"households": "homes"}), "homes",
     "unexpected column (a renamed column?)"),
    (lambda f: f.assign(colour="red"), "colour", "unexpected column;"),
])
def test_wrong_columns_name_the_field(fitted, rows, change, field, words):
    _, spec = fitted
    with pytest.raises(InputError) as caught:
        scoring.check_frame(change(rows.head(5)[FEATURES]), spec)
    assert f"{field!r}: {words}" in str(caught.value)
    assert field in [p.field for p in caught.value.problems]


@pytest.mark.parametrize("column, values, words", [
    ("median_income", ["3.1", "abc", "2.0", "n/a"], "not a number"),
    ("median_income", [1.0, True, 2.0, False], "not a number"),
    ("population", [1.0, np.inf, 2.0, -np.inf], "not a finite number"),
    ("ocean_proximity", ["INLAND", 5, "INLAND", ["x"]], "not text"),
])
def test_wrong_values_name_the_field_and_rows(fitted, rows, column, values, words):
    _, spec = fitted
    frame = rows.head(4)[FEATURES].copy()
    frame[column] = pd.Series(values, dtype=object)
    with pytest.raises(InputError) as caught:
        scoring.check_frame(frame, spec, first_row=100)
    (problem,) = caught.value.problems
    assert problem.field == column and words in problem.problem
    assert problem.rows == (101, 103) and problem.count == 2
    assert "in 2 rows (row 101: " in str(caught.value)


def test_no_rows_is_an_error(fitted):
    _, spec = fitted
    with pytest.raises(InputError, match="no rows"):
        scoring.check_frame(pd.DataFrame(columns=FEATURES), spec)


# --- files ----------------------------------------------------------------------------------

def _write(frame: pd.DataFrame, path):
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def _read(path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype={ROW_ID: "str", FLAGS: "str"}, keep_default_na=False)
    return pd.read_parquet(path)


@pytest.mark.parametrize("source, dest", [("csv", "parquet"), ("parquet", "csv"),
                                          ("csv", "csv"), ("parquet", "parquet")])
def test_file_scoring_matches_the_model_in_chunks(fitted, rows, tmp_path, source, dest):
    model, spec = fitted
    src = _write(rows, tmp_path / f"in.{source}")
    out = tmp_path / f"out.{dest}"
    result = scoring.score_file(model, spec, src, out, schema=SCHEMA, chunk_rows=777)
    scored = _read(out)
    assert result["rows"] == len(rows) == len(scored)
    expected = model.predict(rows[FEATURES])
    np.testing.assert_allclose(scored[PREDICTION].to_numpy(), expected, rtol=1e-12)
    # No row_id column: the value hash over the features, as ingest computes it.
    assert scored[ROW_ID].tolist() == row_ids(rows, FEATURES).tolist()
    lakeside = scored[FLAGS].str.contains("unknown_category:ocean_proximity")
    assert lakeside.to_numpy().nonzero()[0].tolist() == [3, 1500]
    assert result["flags"]["unknown_category:ocean_proximity"] == 2


def test_file_scoring_keeps_a_row_id_column(fitted, rows, tmp_path):
    model, spec = fitted
    frame = rows.head(50).assign(row_id=[f"id-{i}" for i in range(50)])
    src = _write(frame, tmp_path / "in.csv")
    scoring.score_file(model, spec, src, tmp_path / "out.csv", schema=SCHEMA, chunk_rows=20)
    assert _read(tmp_path / "out.csv")[ROW_ID].tolist() == frame[ROW_ID].tolist()


def test_file_scoring_uses_the_configured_id_column(fitted, rows, tmp_path):
    model, spec = fitted
    src = _write(rows.head(30), tmp_path / "in.parquet")
    scoring.score_file(model, spec, src, tmp_path / "out.parquet", schema=SCHEMA,
                       id_column="median_income")
    expected = row_ids(rows.head(30), ["median_income"]).tolist()
    assert _read(tmp_path / "out.parquet")[ROW_ID].tolist() == expected


def test_the_server_names_rows_as_file_scoring_does(rows):
    from tabreg.serving.server import given_ids

    frame = rows.head(5).reset_index(drop=True)
    # The configured id column: its hash, as ingest and `make predict` compute it.
    assert given_ids(frame, "median_income").tolist() == row_ids(frame, [
        "median_income"]).tolist()
    named = frame.assign(**{ROW_ID: [f"d{i}" for i in range(5)]})
    assert given_ids(named, "median_income").tolist() == [f"d{i}" for i in range(5)]
    assert given_ids(frame) is None  # then the log hashes the inputs, as scoring does
    assert given_ids(frame.assign(median_income=[1.0, None, 2.0, 3.0, 4.0]),
                     "median_income") is None


def test_missing_column_fails_before_any_output(fitted, rows, tmp_path):
    model, spec = fitted
    src = _write(rows.drop(columns=["median_income"]), tmp_path / "in.csv")
    with pytest.raises(InputError, match="'median_income': missing column"):
        scoring.score_file(model, spec, src, tmp_path / "out.csv", schema=SCHEMA)
    assert list(tmp_path.iterdir()) == [src]


def test_text_in_a_numeric_column_names_the_line_and_keeps_the_old_output(fitted, rows,
                                                                          tmp_path):
    model, spec = fitted
    frame = rows.astype({"population": object})
    frame.loc[2100, "population"] = "many"
    src = _write(frame, tmp_path / "in.csv")
    out = tmp_path / "out.csv"
    out.write_text("previous output\n")
    with pytest.raises(InputError) as caught:
        scoring.score_file(model, spec, src, out, schema=SCHEMA, chunk_rows=1000)
    assert "'population': not a number in 1 row (line 2102: 'many')" in str(caught.value)
    assert out.read_text() == "previous output\n"  # the failed run left no trace
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv"]


def test_unknown_file_types_are_refused(fitted, rows, tmp_path):
    model, spec = fitted
    src = _write(rows.head(5), tmp_path / "in.csv")
    with pytest.raises(scoring.TabregError, match="unknown file type"):
        scoring.score_file(model, spec, src, tmp_path / "out.xlsx", schema=SCHEMA)


# --- the predict command ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with isolated_mlflow():
        yield make_store(tmp_path_factory.mktemp("store"))


def test_predict_command_scores_with_the_champion(store, rows, tmp_path, monkeypatch):
    import mlflow.pyfunc

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    monkeypatch.setenv("INFERENCE_LOG", str(tmp_path / "log"))
    src = _write(rows, tmp_path / "in.parquet")
    params = ["--params", str(ROOT / "params.yaml"), "-q"]
    assert cli.run([*params, "predict", "--chunk-rows", "1000", str(src),
                    str(tmp_path / "out.csv")]) == 0
    champion = mlflow.pyfunc.load_model(f"models:/{store.name}@champion")
    expected = champion.predict(rows[FEATURES])
    scored = _read(tmp_path / "out.csv")
    # Each row's prediction and its interval, as the registered model gives them.
    assert list(scored.columns) == ["row_id", "prediction", "lower", "upper", "flags"]
    for column in ("prediction", "lower", "upper"):
        np.testing.assert_allclose(scored[column], expected[column], rtol=1e-12)

    # Every scored row is in the inference log, under the run's id.
    logged = pd.read_parquet(tmp_path / "log").sort_values("row")
    assert len(logged) == len(rows) and logged["request_id"].nunique() == 1
    # Numbered through the whole file, across its three chunks: (request, row) names one row.
    assert logged["row"].tolist() == list(range(len(rows)))
    assert set(logged["source"]) == {"predict"} and set(logged["model_version"]) == {"1"}
    np.testing.assert_allclose(logged["prediction"], expected["prediction"], rtol=1e-12)
    assert logged["row_id"].tolist() == scored["row_id"].astype(str).tolist()

    assert cli.run([*params, "predict", "--version", "1", str(src),
                    str(tmp_path / "v1.parquet")]) == 0
    assert cli.run([*params, "predict", "--version", "7", str(src),
                    str(tmp_path / "v7.parquet")]) == 1
    assert not (tmp_path / "v7.parquet").exists()


def test_predict_command_explains_a_missing_store(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none.db'}")
    src = tmp_path / "in.csv"
    src.write_text("a\n1\n")
    code = cli.run(["--params", str(ROOT / "params.yaml"), "predict", str(src),
                    str(tmp_path / "out.csv")])
    assert code == 1 and "no MLflow store" in capsys.readouterr().err
