"""Tests of the synthetic California-housing generator.

The generator stands in for the real file in every other test, so these tests pin down the
properties the pipeline relies on: exact reproducibility, the real schema, the invariants,
the caps and missing values, the category mix, a learnable target and byte-stable archives.
"""

from __future__ import annotations

import hashlib
import io
import tarfile

import numpy as np
import pandas as pd
import pytest

from tabreg.data import synthetic
from tabreg.data.synthetic import COLUMNS, generate, write_archive, write_csv

NUMERIC = [c for c in COLUMNS if c != "ocean_proximity"]
COUNTS = ["total_rooms", "total_bedrooms", "population", "households"]


@pytest.fixture(scope="module")
def big() -> pd.DataFrame:
    return generate(50_000, seed=7)


def test_columns_are_the_real_files_in_order(real_archive, params) -> None:
    """The header of the real archive, read from it (not a copy that could drift with it)."""
    with tarfile.open(real_archive) as tar:
        member = tar.extractfile(params["data"]["member"])
        assert member is not None
        header = member.readline().decode().strip().split(",")
    assert tuple(header) == COLUMNS


def test_same_seed_gives_identical_frames() -> None:
    pd.testing.assert_frame_equal(generate(3_000, seed=3), generate(3_000, seed=3))


def test_different_seeds_give_different_data() -> None:
    a, b = generate(3_000, seed=3), generate(3_000, seed=4)
    for column in NUMERIC:
        assert not a[column].equals(b[column]), column


def test_schema_dtypes_and_index(big: pd.DataFrame) -> None:
    assert tuple(big.columns) == COLUMNS
    assert len(big) == 50_000
    assert isinstance(big.index, pd.RangeIndex)
    assert big.index.start == 0 and big.index.step == 1
    for column in NUMERIC:
        assert big[column].dtype == np.float64, column
    assert big["ocean_proximity"].dtype == "str"
    assert big["ocean_proximity"].notna().all()


@pytest.mark.parametrize("n_rows", [1, 2, 7, 99, 100])
def test_small_sizes_work(n_rows: int) -> None:
    frame = generate(n_rows, seed=1)
    assert len(frame) == n_rows
    assert tuple(frame.columns) == COLUMNS


@pytest.mark.parametrize("n_rows", [0, -5])
def test_non_positive_size_is_rejected(n_rows: int) -> None:
    with pytest.raises(ValueError, match="n_rows"):
        generate(n_rows)


def test_bounding_box(big: pd.DataFrame) -> None:
    assert big["latitude"].between(32.54, 41.95).all()
    assert big["longitude"].between(-124.35, -114.31).all()
    # Spread over the state, not collapsed onto a few points.
    assert big["latitude"].std() > 1.0
    assert big["longitude"].std() > 1.0


def test_counts_are_positive_integers_with_invariants(big: pd.DataFrame) -> None:
    for column in COUNTS:
        values = big[column].dropna()
        assert (values >= 1).all(), column
        assert (values == np.round(values)).all(), column
    assert (big["total_rooms"] >= 2).all()
    assert (big["population"] >= 3).all()
    bedrooms = big["total_bedrooms"]
    known = bedrooms.notna()
    assert (bedrooms[known] <= big.loc[known, "total_rooms"]).all()
    assert (big["households"] <= big["population"]).all()
    for column in NUMERIC:
        if column != "total_bedrooms":
            assert big[column].notna().all(), column


def test_count_medians_are_realistic(big: pd.DataFrame) -> None:
    assert 1_700 < big["total_rooms"].median() < 2_600
    assert 950 < big["population"].median() < 1_400
    assert 330 < big["households"].median() < 500
    ratio = (big["total_bedrooms"] / big["total_rooms"]).median()
    assert 0.17 < ratio < 0.23
    # Heavy right tail, as in the real file.
    assert big["total_rooms"].max() > 8 * big["total_rooms"].median()


def test_age_is_integer_capped_with_pile_up(big: pd.DataFrame) -> None:
    age = big["housing_median_age"]
    assert age.between(1, 52).all()
    assert (age == np.round(age)).all()
    assert 0.03 < (age == 52).mean() < 0.10
    # The pile-up is a pile-up: 52 is far commoner than its neighbour.
    assert (age == 52).sum() > 3 * (age == 51).sum()


def test_income_floor_and_cap(big: pd.DataFrame) -> None:
    income = big["median_income"]
    assert income.between(0.4999, 15.0001).all()
    assert 3.0 < income.median() < 4.0
    assert (income == 15.0001).sum() >= 1
    assert (income == 0.4999).sum() >= 1
    assert (income == 15.0001).mean() < 0.01


def test_house_value_range_and_cap(big: pd.DataFrame) -> None:
    value = big["median_house_value"]
    assert value.between(14_999, 500_001).all()
    assert 0.02 < (value == 500_001.0).mean() < 0.08
    assert 130_000 < value.median() < 230_000
    assert np.corrcoef(big["median_income"], value)[0, 1] > 0.5


def test_bedrooms_null_rate_near_one_percent(big: pd.DataFrame) -> None:
    rate = big["total_bedrooms"].isna().mean()
    assert 0.007 < rate < 0.013


def test_category_shares(big: pd.DataFrame) -> None:
    shares = big["ocean_proximity"].value_counts(normalize=True)
    expected = {"<1H OCEAN": 0.44, "INLAND": 0.32, "NEAR OCEAN": 0.13, "NEAR BAY": 0.11}
    for label, share in expected.items():
        assert abs(shares[label] - share) < 0.03, label
    assert set(shares.index) == set(expected) | {"ISLAND"}
    assert shares["ISLAND"] < 0.002


def test_categories_follow_location(big: pd.DataFrame) -> None:
    by_label = big.groupby("ocean_proximity")
    lon, lat = by_label["longitude"].median(), by_label["latitude"].median()
    assert lat["NEAR BAY"] > 37.0 and lon["NEAR BAY"] < -121.5
    island = big[big["ocean_proximity"] == "ISLAND"]
    assert island["latitude"].between(33.2, 33.6).all()
    assert island["longitude"].between(-118.7, -118.2).all()
    value = by_label["median_house_value"].median()
    assert value["INLAND"] < value["<1H OCEAN"] < value["NEAR BAY"]


def test_island_present_from_200_rows() -> None:
    for seed in range(5):
        assert (generate(200, seed=seed)["ocean_proximity"] == "ISLAND").any(), seed


@pytest.mark.parametrize("seed", range(5))
def test_edge_cases_present_from_100_rows(seed: int) -> None:
    frame = generate(100, seed=seed)
    assert frame["total_bedrooms"].isna().any()
    assert (frame["median_income"] == 15.0001).any()
    assert (frame["median_income"] == 0.4999).any()
    assert (frame["housing_median_age"] == 52).any()
    assert (frame["median_house_value"] == 500_001).any()


def test_target_is_learnable_but_noisy() -> None:
    ensemble = pytest.importorskip("sklearn.ensemble")
    metrics = pytest.importorskip("sklearn.metrics")
    frame = generate(5_000, seed=11)
    features = pd.get_dummies(
        frame.drop(columns="median_house_value"), columns=["ocean_proximity"], dtype=float
    )
    features["total_bedrooms"] = features["total_bedrooms"].fillna(
        features["total_bedrooms"].median()
    )
    target = frame["median_house_value"]
    train, test = slice(0, 4_000), slice(4_000, None)
    model = ensemble.RandomForestRegressor(n_estimators=30, random_state=0, n_jobs=-1)
    model.fit(features.iloc[train], target.iloc[train])
    r2 = metrics.r2_score(target.iloc[test], model.predict(features.iloc[test]))
    assert 0.5 < r2 < 0.95, r2


def _read_member(path, member: str) -> pd.DataFrame:
    with tarfile.open(path, "r:gz") as tar:
        names = tar.getnames()
        assert names == [member]
        info = tar.getmember(member)
        assert info.mtime == 0 and info.uid == 0 and info.gid == 0
        data = tar.extractfile(member).read()
    return pd.read_csv(io.BytesIO(data))


def test_write_archive_round_trip_and_stable_checksum(tmp_path) -> None:
    frame = generate(2_000, seed=5)
    first = write_archive(frame, tmp_path / "a" / "housing.tgz")
    second = write_archive(frame, tmp_path / "b" / "housing.tgz")
    assert first == second
    assert len(first) == 64
    assert first == hashlib.sha256((tmp_path / "a" / "housing.tgz").read_bytes()).hexdigest()
    back = _read_member(tmp_path / "a" / "housing.tgz", "housing/housing.csv")
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    assert back["total_bedrooms"].isna().sum() == frame["total_bedrooms"].isna().sum()


def test_write_archive_checksum_depends_on_content_and_member(tmp_path) -> None:
    frame = generate(500, seed=5)
    base = write_archive(frame, tmp_path / "base.tgz")
    other_member = write_archive(frame, tmp_path / "member.tgz", member="data/housing.csv")
    other_frame = write_archive(generate(500, seed=6), tmp_path / "frame.tgz")
    assert len({base, other_member, other_frame}) == 3
    assert _read_member(tmp_path / "member.tgz", "data/housing.csv").shape == frame.shape


def test_write_csv_has_header_and_no_index(tmp_path) -> None:
    frame = generate(300, seed=2)
    path = tmp_path / "landing" / "batch.csv"
    write_csv(frame, path)
    text = path.read_text()
    assert text.splitlines()[0] == ",".join(COLUMNS)
    assert "\r" not in text
    pd.testing.assert_frame_equal(pd.read_csv(path), frame, check_dtype=False)


def test_large_generation_stays_vectorised() -> None:
    frame = generate(200_000, seed=0)
    assert len(frame) == 200_000
    assert frame["ocean_proximity"].isin(synthetic.OCEAN_PROXIMITY).all()
