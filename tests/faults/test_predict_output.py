"""Where ``predict`` writes: an existing folder or a place it cannot write is a clear error
before any scoring (no traceback, nothing left behind); a missing folder is created, and the
command says so."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from tabreg.config import load_config
from tabreg.data import synthetic
from tests.conftest import ROOT

FEATURES = list(load_config(ROOT / "params.yaml", env={}).schema.features)


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "in.csv"
    synthetic.generate(50, seed=4)[FEATURES].to_csv(path, index=False)
    return path


@pytest.mark.parametrize("name", ["out", "out.csv"])
def test_an_existing_folder_is_refused(predict, source, tmp_path, name):
    folder = tmp_path / name
    folder.mkdir()
    code, err = predict(str(source), str(folder))
    assert code == 1 and "Traceback" not in err
    assert f"error: {folder}: is a folder; name the output file" in err
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize(("dest", "message"), [
    # As root every ordinary folder is writable: a path under a plain file is not, nor /proc.
    ("in.csv/out.csv", "cannot create the output folder"),
    ("/proc/tabreg-out.csv", "cannot write the output"),
])
def test_an_unwritable_place_is_refused(predict, source, tmp_path, dest, message):
    dest = tmp_path / dest
    code, err = predict(str(source), str(dest))
    assert code == 1 and "Traceback" not in err, err
    assert f"error: {dest}: {message}" in err


def test_a_missing_folder_is_created_and_said(predict, source, tmp_path, caplog):
    dest = tmp_path / "new" / "deeper" / "out.parquet"
    with caplog.at_level(logging.WARNING, logger="tabreg.serving.scoring"):
        code, err = predict(str(source), str(dest))
    assert code == 0, err
    assert f"created the output folder {dest.parent}" in caplog.text
    assert len(pd.read_parquet(dest)) == 50
