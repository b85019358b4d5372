"""A stage that fails under ``dvc repro`` keeps the previous good outputs: every output in
``dvc.yaml`` is ``persist: true`` (DVC would otherwise delete them before running the stage),
and the steps replace their outputs atomically, only on success. One throwaway project runs the
whole pipeline once; each test then makes one stage fail and checks that its outputs are
byte for byte what they were, that ``dvc.lock`` still describes them, and that ``dvc status``
is clean again once the cause is undone. A successful rerun still updates the lock and the
cache."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tabreg.data import synthetic
from tests.conftest import PER_MACHINE, TINY, copy_project, init_repo, merge, set_params

pytestmark = pytest.mark.integration

UP_TO_DATE = "Data and pipelines are up to date."


def dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", *args], cwd=root, capture_output=True, text=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory, params) -> Path:
    """A git + DVC project on 1,500 generated rows, after one successful run of the pipeline
    (``python -m tabreg pipeline``, in this process: it records each stage in ``dvc.lock`` as
    ``dvc repro`` does, which ``dvc status`` checks, without a process and its imports for
    each stage)."""
    from tabreg import cli
    from tests.scoring_helpers import isolated_mlflow

    with pytest.MonkeyPatch.context() as env:
        for var in PER_MACHINE:
            env.delenv(var, raising=False)
        base = tmp_path_factory.mktemp("failed-stage")
        archive = base / "source" / "housing.tgz"
        sha = synthetic.write_archive(synthetic.generate(1500, seed=0), archive)
        tree = merge(yaml.safe_load(yaml.safe_dump(params)), TINY)
        tree["data"].update(source=str(archive), sha256=sha)
        tree = merge(tree, {"promotion": {"max_rmse": 1e9}})
        root = copy_project(base / "project", tree)
        init_repo(root)
        with isolated_mlflow():
            assert cli.run(["--root", str(root), "-q", "pipeline"]) == 0
        assert UP_TO_DATE in dvc(root, "status").stdout
        yield root


def locked_outs(root: Path, stage: str) -> dict[str, dict]:
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return {o["path"]: o for o in lock["stages"][stage]["outs"]}


def digest(path: Path) -> str:
    """A hash of a file, or of every file under a folder with its relative name."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def snapshot(root: Path, stage: str) -> dict[str, str]:
    outs = locked_outs(root, stage)
    missing = [p for p in outs if not (root / p).exists()]
    assert not missing, f"{stage}: outputs missing: {missing}"
    return {p: digest(root / p) for p in outs}


def in_cache(root: Path, md5: str) -> bool:
    return (root / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).exists()


# --- how each stage is made to fail (returns what to restore) ---------------------------------

def _truncated_source(root: Path) -> None:
    """The issue's case: a truncated archive (its checksum matches, its content is cut)."""
    tree = yaml.safe_load((root / "params.yaml").read_text())
    full = Path(tree["data"]["source"])
    cut = full.with_name("cut.tgz")
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    set_params(root, "data", source=str(cut),
               sha256=hashlib.sha256(cut.read_bytes()).hexdigest())


def _broken_suite(root: Path) -> None:
    (root / "expectations/raw.json").write_text('{"name": "raw", "expectations": [{"type": '
                                                '"expect_nothing_real", "kwargs": {}}]}')


def _param(section: str, **values) -> Callable[[Path], None]:
    def spoil(root: Path) -> None:
        tree = yaml.safe_load((root / "params.yaml").read_text())
        set_params(root, section, **merge(tree[section], values))
    return spoil


#: stage -> how it is made to fail, and the files that spoiling touches (restored after).
FAULTS: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "ingest": (_truncated_source, ("params.yaml",)),
    "validate": (_broken_suite, ("expectations/raw.json",)),
    "split": (_param("split", test_size=1.5), ("params.yaml",)),
    "features": (_param("features", geo={"n_clusters": 0}), ("params.yaml",)),
    "tune": (_param("tune", cv_folds=1), ("params.yaml",)),
    "train": (_param("train", max_epochs=0), ("params.yaml",)),
    "evaluate": (_param("evaluate", bootstrap=5), ("params.yaml",)),
    "register": (_param("promotion", confidence=2.0), ("params.yaml",)),
}


@pytest.mark.parametrize("stage", FAULTS)
def test_a_failed_stage_keeps_its_previous_outputs(project, stage):
    spoil, touched = FAULTS[stage]
    before = snapshot(project, stage)
    lock = (project / "dvc.lock").read_text()
    saved = {name: (project / name).read_bytes() for name in touched}
    try:
        spoil(project)
        # --single-item: this stage alone (tune reads the train section too, and would fail
        # first on a bad train.max_epochs).
        done = dvc(project, "repro", "--single-item", stage)
        assert done.returncode != 0, done.stdout[-2000:]
        assert f"failed to reproduce '{stage}'" in done.stderr, done.stderr[-2000:]
        assert snapshot(project, stage) == before
        assert (project / "dvc.lock").read_text() == lock
        assert not [p for p in project.rglob("*.tmp") if ".dvc" not in p.parts]
    finally:
        for name, data in saved.items():
            (project / name).write_bytes(data)
    # Cause undone: the outputs still match the lock, so nothing is out of date.
    assert UP_TO_DATE in dvc(project, "status", stage).stdout


def test_a_successful_rerun_still_updates_lock_and_cache(project):
    train = project / "data/split/train.parquet"
    first = train.read_bytes()
    saved = (project / "params.yaml").read_bytes()
    try:
        set_params(project, "split", seed=43)
        assert dvc(project, "repro", "split").returncode == 0
        assert train.read_bytes() != first
        out = locked_outs(project, "split")["data/split/train.parquet"]
        assert out["md5"] == hashlib.md5(train.read_bytes()).hexdigest()
        assert in_cache(project, out["md5"])
        assert UP_TO_DATE in dvc(project, "status", "split").stdout
    finally:
        (project / "params.yaml").write_bytes(saved)
    # Back to the first seed: persistent outputs are not restored from the run-cache, the
    # stage reruns and gives the first split again.
    assert dvc(project, "repro", "split").returncode == 0
    assert train.read_bytes() == first
    assert UP_TO_DATE in dvc(project, "status", "split").stdout
