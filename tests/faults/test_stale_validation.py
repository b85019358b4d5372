"""Split trusts only a fresh validation: the result names the md5 of the table it judged (as
DVC computes it), and split refuses a table that the last validation did not judge (a
validate killed after an ingest, or never run) instead of building train and test from
unvalidated rows."""

from __future__ import annotations

import hashlib
import json

from tabreg import cli
from tabreg.data import synthetic
from tabreg.io import file_md5


def run(root, step, capsys) -> tuple[int, str]:
    code = cli.run(["--root", str(root), "-q", step])
    return code, capsys.readouterr().err


def test_split_refuses_a_table_the_last_validation_did_not_judge(make_project, capsys):
    root = make_project(rows=1000)
    raw = root / "data/raw/housing.parquet"
    summary = root / "reports/validation/summary.json"
    assert run(root, "ingest", capsys)[0] == 0
    code, err = run(root, "split", capsys)  # never validated
    assert code == 1 and "has not been validated" in err and "Traceback" not in err
    assert not (root / "data/split").exists()

    assert [run(root, step, capsys)[0] for step in ("validate", "split")] == [0, 0]
    judged = json.loads(summary.read_text())["table"]
    assert judged == {"path": "data/raw/housing.parquet",
                      "md5": hashlib.md5(raw.read_bytes()).hexdigest()}
    train = (root / "data/split/train.parquet").read_bytes()

    # A batch is ingested, then validate is killed before it writes: the old summary (a
    # success) is about other rows.
    synthetic.write_csv(synthetic.generate(300, seed=5), root / "data/landing/2026-11-01.csv")
    assert run(root, "ingest", capsys)[0] == 0
    code, err = run(root, "split", capsys)
    assert code == 1 and err.count("error: ") == 1 and "Traceback" not in err
    assert f"judged data/raw/housing.parquet with md5 {judged['md5']}" in err
    assert f"now has md5 {file_md5(raw)}" in err and "run the validate step first" in err
    assert (root / "data/split/train.parquet").read_bytes() == train

    assert [run(root, step, capsys)[0] for step in ("validate", "split")] == [0, 0]
    assert (root / "data/split/train.parquet").read_bytes() != train
