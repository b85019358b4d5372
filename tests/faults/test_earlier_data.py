"""``make evaluate-version VERSION=n DATA=<rev>``: a registered version scored on the test split
of an earlier data version, read through DVC at that git revision, in a real git + DVC
repository with two data versions; the working tree is never touched, and a data version the
cache lacks, or a revision that does not exist, is a clear error."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from tabreg.promotion import registry
from tests.conftest import PER_MACHINE, ROOT
from tests.faults.conftest import CONFIG
from tests.scoring_helpers import fit_small, isolated_mlflow, register_by_hand

pytestmark = pytest.mark.integration

TEST = CONFIG.paths.test


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                          cwd=root, check=True, capture_output=True, text=True).stdout


def write_split(root: Path, rows: int, seed: int):
    from tabreg.config import ROW_ID
    from tabreg.data import synthetic

    frame = synthetic.generate(rows, seed=seed)
    frame.insert(0, ROW_ID, range(len(frame)))
    (root / TEST).parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(root / TEST, index=False)
    return frame


def commit_data(root: Path, message: str) -> None:
    """Record the split as DVC does after a run (dvc.lock, the cache), then commit."""
    from tabreg.orchestration.dvc_stages import record_stage

    record_stage(root, "split")
    git(root, "add", "-A")
    git(root, "commit", "-qm", message)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """Two data versions (400 then 500 test rows), and version 1 registered in the store."""
    from dvc.repo import Repo

    root = tmp_path_factory.mktemp("repo")
    git(root, "init", "-q")
    Repo.init(str(root)).close()
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    (root / "dvc.yaml").write_text(yaml.safe_dump(
        {"stages": {"split": {"cmd": "true", "outs": [TEST]}}}))
    (root / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n/registry/\n")
    old = write_split(root, 400, seed=21)
    commit_data(root, "data v1")
    write_split(root, 500, seed=22)
    commit_data(root, "data v2")
    model = fit_small(CONFIG, rows=800)[0]
    with isolated_mlflow():
        registry.client(CONFIG, root)  # creates the project's store, as a first run does
        version = register_by_hand(root, CONFIG, model)
    return root, version, model, old


@pytest.fixture
def run(repo, monkeypatch, capsys):
    for var in PER_MACHINE:
        monkeypatch.delenv(var, raising=False)

    def evaluate(*args: str) -> tuple[int, str, str]:
        from tabreg import cli

        root = repo[0]
        with isolated_mlflow():
            code = cli.run(["--params", str(root / "params.yaml"), "--root", str(root),
                            "evaluate-version", *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return evaluate


def snapshot(root: Path) -> tuple[str, str, str]:
    """The checked-out commit, git's view of the tree, and the working tree's test split."""
    return (git(root, "rev-parse", "HEAD"), git(root, "status", "--porcelain"),
            hashlib.md5((root / TEST).read_bytes()).hexdigest())


def test_scores_a_version_on_the_earlier_test_split_without_touching_the_tree(repo, run):
    from tabreg.evaluation.metrics import regression_metrics

    root, version, model, old = repo
    before = snapshot(root)
    code, out, err = run("--version", version, "--data", "HEAD~1")
    assert code == 0, err
    result = json.loads(out)

    features = list(CONFIG.schema.features)
    expected = regression_metrics(old[CONFIG.schema.target], model.predict(old[features]))
    assert result["data"]["rows"] == 400 and result["data"]["commit"] == git(
        root, "rev-parse", "HEAD~1").strip()
    assert result["rmse"] == pytest.approx(expected["rmse"], abs=1e-3)
    assert result["rmse_low"] < result["rmse"] < result["rmse_high"]
    assert result["model"]["version"] == version and result["caveats"] == []
    assert snapshot(root) == before  # same commit, clean tree, the newer split in place

    code, out, _ = run("--version", version, "--data", "HEAD")
    assert code == 0 and json.loads(out)["data"]["rows"] == 500
    assert not np.isclose(json.loads(out)["rmse"], result["rmse"])


def test_a_changed_split_is_a_caveat(repo, run, tmp_path):
    """At a revision whose split parameters differ from the version's, its training rows may
    be in that test split: the score comes with the caveat."""
    from tabreg.evaluation.earlier_data import evaluate_version

    root, version, *_ = repo
    clone = tmp_path / "clone"
    shutil.copytree(root, clone)
    tree = yaml.safe_load((clone / "params.yaml").read_text())
    tree["split"]["test_size"] = 0.3
    (clone / "params.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    git(clone, "commit", "-qam", "another split")

    with isolated_mlflow():
        result = evaluate_version(CONFIG, clone, version, "HEAD")
    assert result["data"]["rows"] == 500
    assert len(result["caveats"]) == 1 and "split with other parameters" in result["caveats"][0]


def test_a_revision_or_data_version_that_is_not_there_is_a_clear_error(repo, run, tmp_path):
    root, version, *_ = repo
    code, _, err = run("--version", version, "--data", "no-such-rev")
    assert code != 0 and "'no-such-rev' is not a commit" in err and "Traceback" not in err

    cache = root / ".dvc" / "cache"
    shutil.move(cache, tmp_path / "cache")  # the data versions are gone from this machine
    try:
        code, _, err = run("--version", version, "--data", "HEAD~1")
    finally:
        shutil.move(tmp_path / "cache", cache)
    assert code != 0 and "Traceback" not in err
    assert "cannot be read through DVC" in err and "make restore" in err
