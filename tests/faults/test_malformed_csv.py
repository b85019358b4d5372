"""Malformed CSV files in the landing folder: a ragged row (more or fewer fields than the
header) or a quote that never closes. Each is a clear error naming the file and the line where
the bad record starts (ingest, ``check-file``), and the retrain flow quarantines the file with
that reason, so the batches after it still get in."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tabreg import cli
from tabreg.config import load_config
from tabreg.data import ingest, synthetic
from tabreg.data.landing import BatchRejected
from tabreg.errors import SchemaError
from tabreg.steps import ingest as steps
from tests.conftest import ROOT

SCHEMA = load_config(ROOT / "params.yaml", env={}).schema


def _long(line: str) -> str:
    return line + ",surplus"


def _short(line: str) -> str:
    return line.rsplit(",", 1)[0]


def _open_quote(line: str) -> str:
    head, last = line.rsplit(",", 1)
    return f'{head},"{last}'


#: A fault, how it spoils one line, and what the message says about that line.
FAULTS = {
    "long-row": (_long, r"a ragged row: 11 fields where the header has 10"),
    "short-row": (_short, r"a ragged row: 9 fields where the header has 10"),
    "open-quote": (_open_quote, r"a quoted field opened on this line is never closed"),
}


def spoiled(path: Path, fault: str, line: int = 6, rows: int = 300, seed: int = 1) -> Path:
    """A valid batch of ``rows`` rows with line ``line`` (1-based, header on 1) spoiled."""
    synthetic.write_csv(synthetic.generate(rows, seed=seed), path)
    lines = path.read_text().splitlines()
    lines[line - 1] = FAULTS[fault][0](lines[line - 1])
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("fault", FAULTS)
def test_read_csv_names_file_and_line(tmp_path, fault):
    path = spoiled(tmp_path / "2026-11-01.csv", fault, line=6)
    with pytest.raises(SchemaError, match=rf"^2026-11-01\.csv, line 6: {FAULTS[fault][1]}"):
        ingest.read_csv(path, SCHEMA)


def test_lines_are_lines_of_the_file(tmp_path):
    """Blank lines and quoted line breaks count: the line named is the one in an editor."""
    path = tmp_path / "b.csv"
    synthetic.write_csv(synthetic.generate(20, seed=2), path)
    lines = path.read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + ',"INLAND\nstill the same field"'
    lines.insert(4, "")
    lines[9] = _long(lines[9])  # after one blank line and one quoted break: line 11
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SchemaError, match=r"b\.csv, line 11: a ragged row"):
        ingest.read_csv(path, SCHEMA)


def test_a_compressed_batch_is_checked_too(tmp_path):
    plain = spoiled(tmp_path / "b.csv", "open-quote", line=40)
    packed = tmp_path / "b.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    with pytest.raises(SchemaError, match=r"b\.csv\.gz, line 40: a quoted field"):
        ingest.read_csv(packed, SCHEMA)


@pytest.mark.parametrize("fault", FAULTS)
def test_check_file_says_file_and_line_without_a_traceback(tmp_path, capsys, fault):
    path = spoiled(tmp_path / "new.csv", fault, line=120)
    assert cli.run(["--root", str(ROOT), "check-file", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: new.csv, line 120: ") and "Traceback" not in err, err


def test_ingest_refuses_a_ragged_batch_and_keeps_the_table(make_project):
    root = make_project(rows=1200)
    config = load_config(root / "params.yaml", env={})
    steps.ingest(config, root)
    before = (root / config.paths.raw).read_bytes()
    spoiled(root / config.data.landing_dir / "2026-11-01.csv", "long-row", line=30)
    with pytest.raises(BatchRejected, match=r"2026-11-01\.csv, line 30: a ragged row"):
        steps.ingest(config, root)
    assert (root / config.paths.raw).read_bytes() == before
    assert list((root / config.retrain.quarantine_dir).glob("*/2026-11-01.csv"))


def test_retrain_quarantines_malformed_batches_and_lets_the_next_in(make_project):
    from flows.retrain import check_new_batches
    from tabreg.promotion import registry
    from tabreg.promotion import retrain as rt

    root = make_project(rows=1200)
    config = load_config(root / "params.yaml", env={})
    steps.ingest(config, root)
    landing = root / config.data.landing_dir
    spoiled(landing / "2026-11-01.csv", "short-row", line=12, seed=3)
    spoiled(landing / "2026-11-02.csv", "open-quote", line=250, seed=4)
    with pytest.raises(rt.BatchRejected, match=r"(?s)2 new batch\(es\) rejected.*"
                                               r"2026-11-01\.csv, line 12: a ragged row.*"
                                               r"2026-11-02\.csv, line 250: a quoted field"):
        check_new_batches.fn(config, root, rt.detect_new_data(config, root))
    assert not [p for p in landing.iterdir() if not p.name.startswith(".")]
    quarantined = root / config.retrain.quarantine_dir
    reasons = {p.name: p.read_text() for p in quarantined.glob("*/*.reason.txt")}
    assert "line 12" in reasons["2026-11-01.csv.reason.txt"]
    assert "unterminated quote" in reasons["2026-11-02.csv.reason.txt"]
    entry = registry.read_ledger(root / config.registry.ledger)[-1]
    assert entry["action"] == "reject batch"
    assert entry["files"] == ["2026-11-01.csv", "2026-11-02.csv"]

    synthetic.write_csv(synthetic.generate(200, seed=8), landing / "2026-11-08.csv")
    new = rt.detect_new_data(config, root)
    assert [p.name for p in new.batches] == ["2026-11-08.csv"]
    assert list(check_new_batches.fn(config, root, new).accepted) == ["2026-11-08.csv"]
    assert steps.ingest(config, root)["rows"] == 1400
