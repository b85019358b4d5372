"""Quarantine does not depend on the entry point: a bad batch first met by ``python -m
tabreg ingest``, by ``validate`` or by ``dvc repro`` is moved to the quarantine folder with its
reason, as the retrain flow would, and the landing record (``data.landing_record``) that they
all keep says what became of every landing file; the retrain flow reads it too, so it does not
call a batch old just because the last ingest report names it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tabreg import cli
from tabreg.config import load_config
from tabreg.data import batches, landing, synthetic
from tabreg.io import file_md5
from tabreg.promotion import retrain as rt

BAD = "2026-11-01.csv"


def run(root: Path, step: str, capsys) -> tuple[int, str]:
    code = cli.run(["--root", str(root), "-q", step])
    return code, capsys.readouterr().err


def record(root: Path) -> dict:
    return json.loads((root / "data/landing.json").read_text())["files"]


def bad_batch(root: Path) -> Path:
    """The retrain test's corrupt batch: latitudes outside California."""
    path = root / "data/landing" / BAD
    synthetic.write_csv(batches.make_batch(500, seed=21, corrupt="out-of-range"), path)
    return path


def test_ingest_quarantines_a_bad_batch_it_meets_first(make_project, capsys):
    root = make_project(rows=1000)
    config = load_config(root / "params.yaml", env={})
    assert run(root, "ingest", capsys)[0] == 0
    raw = (root / config.paths.raw).read_bytes()
    md5 = file_md5(bad_batch(root))
    code, err = run(root, "ingest", capsys)
    assert code == 1 and "Traceback" not in err
    assert "1 new batch(es) rejected by the batch contract and moved to data/quarantine/" in err
    assert BAD in err and "latitude" in err
    assert not (root / "data/landing" / BAD).exists()
    (reason,) = (root / "data/quarantine").glob(f"*/{BAD}.reason.txt")
    assert "latitude" in reason.read_text()
    assert (root / config.paths.raw).read_bytes() == raw  # nothing ingested
    entry = record(root)[BAD]
    assert (entry["status"], entry["by"], entry["md5"]) == ("quarantined", "ingest", md5)
    assert entry["where"].startswith("data/quarantine/") and entry["reason"]

    # The next batch gets in, recorded with its rows; to the retrain flow it is no longer a
    # new batch file, but it is data no model was judged on (see test_retrain_bookkeeping).
    good = root / "data/landing/2026-11-08.csv"
    synthetic.write_csv(synthetic.generate(200, seed=8), good)
    assert run(root, "ingest", capsys)[0] == 0
    entry = record(root)["2026-11-08.csv"]
    assert (entry["status"], entry["rows"], entry["new_rows"]) == ("ingested", 200, 200)
    new = rt.detect_new_data(config, root)
    assert new.batches == [] and new.unmodelled and new.found

    # Rewritten under the same name: new data, though the last ingest report names the file.
    synthetic.write_csv(synthetic.generate(150, seed=9), good)
    assert [p.name for p in rt.detect_new_data(config, root).batches] == ["2026-11-08.csv"]


def test_validate_quarantines_a_bad_batch_already_in_the_table(make_project, capsys):
    root = make_project(rows=1000)
    config = load_config(root / "params.yaml", env={})
    path = bad_batch(root)
    # Accepted once (under an older contract, say): ingest appends it without judging it.
    landing.note(config, root, {BAD: {"status": "accepted", "md5": file_md5(path)}}, "test")
    assert run(root, "ingest", capsys)[0] == 0
    code, err = run(root, "validate", capsys)
    assert code == 1 and "Traceback" not in err
    assert f"{BAD} moved to data/quarantine/" in err and "run ingest again" in err
    assert not path.exists() and list((root / "data/quarantine").glob(f"*/{BAD}"))
    assert (record(root)[BAD]["status"], record(root)[BAD]["by"]) == ("quarantined", "validate")
    # Ingest rebuilds the table without it, and the contract passes.
    assert [run(root, step, capsys)[0] for step in ("ingest", "validate")] == [0, 0]


def test_dvc_repro_quarantines_a_bad_batch(make_project):
    root = make_project(rows=1000, git=True)
    bad_batch(root)
    done = subprocess.run(["dvc", "repro", "ingest"], cwd=root, capture_output=True, text=True)
    assert done.returncode != 0 and "rejected by the batch contract" in done.stderr
    assert record(root)[BAD]["status"] == "quarantined"
    assert list((root / "data/quarantine").glob(f"*/{BAD}"))
    again = subprocess.run(["dvc", "repro", "ingest"], cwd=root, capture_output=True,
                           text=True)
    assert again.returncode == 0, again.stderr[-2000:]
