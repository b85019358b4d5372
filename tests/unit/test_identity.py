import numpy as np
import pandas as pd

from tabreg.data.identity import row_ids, unit_interval


def frame() -> pd.DataFrame:
    return pd.DataFrame({"a": [1.0, 2.0, np.nan, -0.0], "b": pd.Series(["x", "y", "x", None],
                                                                       dtype="str")})


def test_ids_are_pinned():
    # The identity defines the split and de-duplication of every stored data version: a change
    # of these values would silently move rows between train and test.
    assert row_ids(frame(), ["a", "b"]).tolist() == [
        "e92cce02d5a11a21", "e47c9f3c4d0eb2d6",
        "0937719d154542b0", "562de08890093abf"]


def test_ids_ignore_position_index_and_column_order_of_the_frame():
    f = frame()
    shuffled = f.iloc[[3, 1, 0, 2]][["b", "a"]].set_index(pd.Index([10, 11, 12, 13]))
    assert dict(zip(row_ids(shuffled, ["a", "b"]), shuffled.index, strict=True)) == dict(
        zip(row_ids(f, ["a", "b"]).loc[[3, 1, 0, 2]], [10, 11, 12, 13], strict=True))


def test_ids_see_every_value_and_zero_sign_is_one_value():
    ids = row_ids(frame(), ["a", "b"])
    assert ids.nunique() == 4
    zero = pd.DataFrame({"a": [0.0], "b": pd.Series([None], dtype="str")})
    assert row_ids(zero, ["a", "b"]).iloc[0] == ids.iloc[3]
    assert row_ids(frame(), ["b", "a"]).iloc[0] != ids.iloc[0]  # key order is part of the id


def test_unit_interval_is_uniform_and_seeded():
    ids = pd.Series([f"{i:016x}" for i in range(20000)])
    u = unit_interval(ids, 42)
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.01
    assert np.histogram(u, bins=10, range=(0, 1))[0].min() > 1850
    assert not np.array_equal(u, unit_interval(ids, 43))
