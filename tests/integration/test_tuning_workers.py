"""Tuning with several worker processes on one shared study (a journal file here; the same
code runs on PostgreSQL in tests/services): an exact budget, no trial run twice, a dead
worker's trial failed and not left running, the same trials from one worker idle or beside a
busy process, workers with other data refused, and a killed study resumed keeping its
finished trials."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

from tabreg.tuning.study import ATTR_WORKER, open_storage
from tests.conftest import ROOT, build_project, set_params

pytestmark = pytest.mark.integration
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
#: Random forests only, small: each trial takes about a second.
FOREST = {"families": ["random_forest"], "timeout": None,
          "space": {"random_forest": {"n_estimators": {"low": 5, "high": 15, "int": True},
                                      "max_features": {"low": 2, "high": 8, "int": True}}}}


def cli(root: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tabreg", "-q", *args], cwd=root,
                            env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def prepare(root: Path) -> None:
    """ingest, validate and split, in this process (only tuning needs processes here)."""
    from tabreg import cli as entry

    for step in ("ingest", "validate", "split"):
        assert entry.run(["--root", str(root), "-q", step]) == 0


def trials(root: Path) -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(f"journal:{root / 'optuna.journal'}")
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if not names:
        return []
    assert len(names) == 1
    return optuna.load_study(study_name=names[0], storage=storage).trials


def tune(root: Path, timeout: float = 600) -> str:
    proc = cli(root, "tune")
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return err


@pytest.fixture(scope="module")
def prepared(params, tmp_path_factory) -> Path:
    """A project whose split is done (ingest, validate and split through the CLI):
    built once, copied by each test, which then sets its own tuning budget."""
    root = build_project(tmp_path_factory.mktemp("prepared"), params, rows=1200)
    prepare(root)
    return root


@pytest.fixture
def project(prepared, tmp_path) -> Callable[..., Path]:
    """A copy of the prepared project with ``tune`` settings of the test's own."""

    def build(**tune: object) -> Path:
        root = tmp_path / "project"
        shutil.copytree(prepared, root, symlinks=True)
        set_params(root, "tune", **{"launcher": "local", **tune})  # worker processes
        return root

    return build


@pytest.fixture
def forest_project(project):
    return project(**FOREST, n_trials=8, workers=2)


def test_two_workers_share_the_budget_exactly(forest_project):
    err = tune(forest_project)
    done = trials(forest_project)
    assert sorted(t.number for t in done) == list(range(8))  # no number twice, no extra
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in done)
    pids = {t.system_attrs[ATTR_WORKER]["pid"] for t in done}
    assert len(pids) == 2, "both workers ran trials"
    # One progress line per trial, with the budget and an estimate.
    lines = [line for line in err.splitlines() if line.startswith("tune: trial ")]
    assert len(lines) == 8 and all("/8 random_forest" in line for line in lines)
    study = json.loads((forest_project / "reports/tuning/study.json").read_text())
    assert study["workers"] == 2 and study["stopped_by_guard"] is False
    assert study["per_family"]["random_forest"] == {"COMPLETE": 8} or \
        sum(study["per_family"]["random_forest"].values()) == 8


def test_a_killed_worker_leaves_a_failed_trial_and_the_other_finishes(project):
    slow = {**FOREST, "space": {"random_forest": {"n_estimators": {"low": 200, "high": 300,
                                                                   "int": True}}}}
    root = project(**slow, n_trials=6, workers=2)
    proc = cli(root, "tune")
    victim, deadline = None, time.time() + 180
    while victim is None and time.time() < deadline:
        running = [t for t in trials(root) if t.state.name == "RUNNING"
                   and ATTR_WORKER in t.system_attrs]
        if running:
            victim = running[0]
        time.sleep(0.2)
    assert victim is not None, "no trial started"
    os.kill(victim.system_attrs[ATTR_WORKER]["pid"], signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    done = {t.number: t for t in trials(root)}
    assert sorted(done) == list(range(6))
    assert done[victim.number].state.name == "FAIL"
    assert "died" in done[victim.number].system_attrs["fail_reason"]
    others = [t for n, t in done.items() if n != victim.number]
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in others)


def _busy() -> subprocess.Popen:
    """A CPU-bound neighbour, like a browser or another test run."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _trial_rows(root: Path) -> list[tuple]:
    return [(t.number, t.params, t.value, t.state.name) for t in trials(root)]


def test_the_same_trials_from_one_worker_two_beside_a_busy_process_and_inline(project,
                                                                              tmp_path):
    """A trial is proposed and pruned from the trials ``tune.lag`` before it, once they are
    finished: one worker, two workers beside a busy process, and the tune step's own process
    run the same trials (parameters, values, pruned or not). 16 trials, so that the last ones
    come from TPE's model, past its 10 random start-up trials (and the pruner's start-up)."""
    from tabreg.config import load_config
    from tabreg.tuning.worker import sampler

    mixed = {"families": ["random_forest", "hist_gradient_boosting"], "timeout": None,
             "n_trials": 16, "workers": 1}
    root = project(**mixed)
    config = load_config(root / "params.yaml", env={})
    startup = sampler(config, 0, mixed["n_trials"])._n_startup_trials
    assert mixed["n_trials"] - 1 - config.tune.lag > startup, "no trial would use TPE's model"
    tune(root)
    alone = _trial_rows(root)
    assert len(alone) == 16 and {p["family"] for _, p, _, _ in alone} == set(mixed["families"])

    (root / "optuna.journal").rename(tmp_path / "first.journal")
    set_params(root, "tune", workers=2)
    busy = _busy()
    try:
        tune(root)
    finally:
        busy.kill()
    assert _trial_rows(root) == alone

    # In the tune step's own process (no worker process): the same trials, each reported.
    (root / "optuna.journal").rename(tmp_path / "second.journal")
    set_params(root, "tune", launcher="inline", workers=1)
    err = tune(root)
    assert _trial_rows(root) == alone
    assert len([line for line in err.splitlines() if line.startswith("tune: trial ")]) == 16
    study = json.loads((root / "reports/tuning/study.json").read_text())
    assert study["workers"] == 1 and study["launcher"] == "inline"


def test_the_time_guard_says_it_fired(forest_project):
    set_params(forest_project, "tune", n_trials=2)
    tune(forest_project)
    set_params(forest_project, "tune", n_trials=200, timeout=3)  # resumes the same study
    err = tune(forest_project)
    assert "stopped by the time guard" in err
    study = json.loads((forest_project / "reports/tuning/study.json").read_text())
    assert study["stopped_by_guard"] and "of 200 trials" in study["guard"]
    ended = sum(n for state, n in study["trials"].items() if state != "WAITING")
    assert 2 <= ended < 200 and study["trials"]["WAITING"] == 200 - ended


def test_a_worker_with_other_data_is_refused(forest_project, tmp_path):
    tune(forest_project)
    name = optuna.get_all_study_summaries(
        open_storage(f"journal:{forest_project / 'optuna.journal'}"))[0].study_name
    (forest_project / "data/split/train.parquet").write_bytes(
        (forest_project / "data/split/test.parquet").read_bytes())
    proc = cli(forest_project, "tune-worker", "--study", name)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "was made from training data" in err and "this worker has" in err
    assert "Traceback" not in err


def _study_trials(root) -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(f"journal:{root / 'optuna.journal'}")
    studies = optuna.get_all_study_summaries(storage)
    if not studies:
        return []
    assert len(studies) == 1  # the same study, resumed
    return optuna.load_study(study_name=studies[0].study_name, storage=storage).trials


def _finished(root) -> list[optuna.trial.FrozenTrial]:
    return [t for t in _study_trials(root) if t.state.name in ("COMPLETE", "PRUNED", "FAIL")]


def test_killed_study_resumes_keeping_finished_trials(project):
    root = project(n_trials=40, timeout=None, workers=2, families=["random_forest"])
    proc = cli(root, "tune")
    deadline = time.time() + 120
    while time.time() < deadline and len(_finished(root)) < 3:
        time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)  # the workers die with it and fail their trials
    proc.wait()
    deadline = time.time() + 120  # for the workers to fail their trials and exit
    while time.time() < deadline and any(t.state.name == "RUNNING" for t in _study_trials(root)):
        time.sleep(0.3)
    before = {t.number: (t.params, t.value, t.state) for t in _finished(root)}
    assert len(before) >= 3 and sorted(before) == list(range(len(before)))

    set_params(root, "tune", n_trials=len(before) + 2)
    resumed = cli(root, "tune")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    after = _finished(root)
    assert {t.number: (t.params, t.value, t.state) for t in after
            if t.number in before} == before  # kept, untouched
    assert len(after) == len(before) + 2  # only the missing trials ran
