"""Labels that arrive later, joined to the inference log by row id and by request id; the
faults the issue lists: unknown ids, duplicates, wrong columns."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from tabreg.errors import SchemaError
from tabreg.monitoring.labels import join, read_labels

TARGET = "median_house_value"


def logged() -> pd.DataFrame:
    """Three requests: two of one row (r1, r2) and one of two rows (r3), ids a..d."""
    return pd.DataFrame({"request_id": ["r1", "r2", "r3", "r3"], "row": [0, 0, 0, 1],
                         "row_id": ["a", "b", "c", "d"],
                         "prediction": [1.0, 2.0, 3.0, 4.0]})


def drop(folder, name: str, text: str, age: int) -> None:
    """A label file that arrived ``age`` seconds ago."""
    path = folder / name
    path.write_text(text)
    when = 1_700_000_000 - age
    os.utime(path, (when, when))


def test_labels_join_by_row_id_and_by_request_id(tmp_path):
    drop(tmp_path, "by_id.csv", f"row_id,{TARGET}\na,10\nd,40\n", age=20)
    drop(tmp_path, "by_request.csv", f"request_id,{TARGET}\nr2,20\n", age=10)
    drop(tmp_path, "rows.csv", f"request_id,row,{TARGET}\nr3,0,30\n", age=5)
    labels, report = read_labels(tmp_path, TARGET)
    out = join(logged(), labels, TARGET, report)
    assert out[TARGET].tolist() == [10.0, 20.0, 30.0, 40.0]
    assert report.to_dict() == {"files": ["by_id.csv", "by_request.csv", "rows.csv"],
                                "labels": 4, "duplicates": 0, "joined": 4, "unknown": 0,
                                "unknown_ids": []}


def test_unknown_ids_are_counted_and_the_later_duplicate_wins(tmp_path):
    drop(tmp_path, "monday.csv", f"row_id,{TARGET}\na,10\nzz,99\n", age=100)
    drop(tmp_path, "tuesday.csv", f"row_id,{TARGET}\na,11\n", age=50)
    drop(tmp_path, "lost.csv", f"request_id,row,{TARGET}\nr9,0,5\nr3,7,5\n", age=10)
    labels, report = read_labels(tmp_path, TARGET)
    out = join(logged(), labels, TARGET, report)
    assert out[TARGET].tolist()[0] == 11.0 and out[TARGET].isna().sum() == 3
    assert report.duplicates == 1 and report.joined == 1
    assert report.unknown == 3 and report.unknown_ids == ["zz", "r9/0", "r3/7"]


@pytest.mark.parametrize(("text", "message"), [
    ("id,price\n1,2\n", "needs the columns 'median_house_value' and 'row_id'.*"
                        r"it has \['id', 'price'\]"),
    (f"row_id,{TARGET}\na,\nb,cheap\nc,3\n", "not a number on 2 line.*: 2, 3"),
    (f"row_id,request_id,{TARGET}\n,,3\n", "no row_id or request_id on line.*2"),
])
def test_a_wrong_label_file_is_a_clear_error(tmp_path, text, message):
    drop(tmp_path, "bad.csv", text, age=1)
    with pytest.raises(SchemaError, match=message):
        read_labels(tmp_path, TARGET)


def test_no_labels_yet(tmp_path):
    labels, report = read_labels(tmp_path, TARGET)
    out = join(logged(), labels, TARGET, report)
    assert out[TARGET].isna().all() and report.joined == 0 and report.files == []
    assert np.isnan(out[TARGET]).all()
