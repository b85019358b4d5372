"""Shared fixtures: the project's own files, the real dataset when reachable, and throwaway
projects (a copy of the pipeline definition with generated data) for integration tests."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
REAL_SHA256 = "354f441b3af4eb54e07818501dafc9b0865162d85a24769d754238acedc82ae1"
PROJECT_FILES = ("params.yaml", "profile.yaml", "dvc.yaml", ".dvcignore", "expectations",
                 "plots", "src/tabreg")
#: Environment variables that would point a throwaway project at the user's data or stores.
PER_MACHINE = ("DATA_SOURCE", "MLFLOW_TRACKING_URI", "OPTUNA_STORAGE", "INFERENCE_LOG")

#: Lines a run on good data must not print: library bookkeeping and warnings a user cannot
#: act on, DVC's status dictionaries, and the formats other than Prefect's one.
NOISE = {
    "MLflow's dataset source warning": r"can be interpreted in multiple ways",
    "Optuna's ExperimentalWarning": r"ExperimentalWarning",
    "mlflow.sklearn's pickle warning": r"pickle or cloudpickle format",
    "Great Expectations' temporary folders": r"ephemeral docs site",
    "DVC's lock-file lines": r"lock file 'dvc\.lock'",
    "MLflow's table creation": r"database tables",
    "MLflow's download progress bars": r"Downloading artifacts",
    "MLflow's registration prints": r"Successfully registered model|Created version '",
    "DVC's status dictionaries": r"changed deps|changed outs",
    "MLflow's log format": r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d ",
    "DVC's log format": r"^(WARNING|INFO|ERROR): ",
    "any warning": r"\| WARNING \|",
}


def noise(lines: list[str]) -> dict[str, list[str]]:
    """The lines of :data:`NOISE` found in ``lines``, by what they are (empty: none)."""
    found = {what: [line for line in lines if re.search(pattern, line)]
             for what, pattern in NOISE.items()}
    return {what: hits for what, hits in found.items() if hits}

#: A budget small enough for tests: every family, a few trials, seconds each, run in the tune
#: step's own process (a worker process's start-up would cost more than its trials; the tests
#: of worker processes, tests/integration/test_tuning_workers.py and the services', ask for
#: them).
TINY = {
    "tune": {
        "n_trials": 4, "timeout": 120, "cv_folds": 2, "launcher": "inline",
        "space": {
            "features": {"n_clusters": {"low": 3, "high": 8, "int": True},
                         "gamma": {"low": 0.5, "high": 1.5}},
            "random_forest": {"n_estimators": {"low": 10, "high": 30, "int": True},
                              "max_features": {"low": 2, "high": 8, "int": True}},
            "hist_gradient_boosting": {"max_iter": {"low": 20, "high": 60, "int": True},
                                       "learning_rate": {"low": 0.05, "high": 0.2}},
            "mlp": {"depth": {"low": 1, "high": 2, "int": True},
                    "width": {"choices": [16, 32]},
                    "learning_rate": {"low": 0.001, "high": 0.01, "log": True}},
        },
    },
    "train": {"max_epochs": 6, "patience": 3},
    "evaluate": {"bootstrap": 100},
}

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session", autouse=True)
def _inference_log_outside_the_repository(tmp_path_factory) -> Iterator[None]:
    """Rows that tests score in-process against the repository's own params.yaml (root ".")
    go to a throwaway folder, not the repository's ``logs/``; a test that clears
    PER_MACHINE logs into its own project, as a user's would."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("INFERENCE_LOG", str(tmp_path_factory.mktemp("inference-log")))
        yield


class _OneSpinningThread:
    """The test process's spinning pools (OpenMP, BLAS, torch's intra-op threads) at one thread,
    as :mod:`tabreg.resources` holds the pipeline's own fits. Why: the tests fit models
    themselves too (fixtures, scikit-learn's estimator checks, scoring in-process), and two
    xdist workers whose OpenMP regions spin on 2 cores collapse each other: measured, the unit
    tests took 105-235 s instead of 69. Set before every test's setup (module fixtures fit
    there) and call, so that a fixture and its test fit alike (k-means on 1 or 2 OpenMP
    threads differs in the 12th digit). Only this process: the commands the tests start keep
    the budgets they set themselves, which is what the tests of those budgets check.

    threadpoolctl's limit applies to the libraries loaded when it is set, and finding them
    costs about 5 ms, so they are looked up again only when a module was imported since."""

    def __init__(self) -> None:
        self._controller: Any = None
        self._modules = -1

    def __call__(self) -> None:
        import sys

        if len(sys.modules) != self._modules:
            from threadpoolctl import ThreadpoolController

            self._controller, self._modules = ThreadpoolController(), len(sys.modules)
        self._controller.limit(limits=1)
        if (torch := sys.modules.get("torch")) is not None:
            torch.set_num_threads(1)


_one_spinning_thread = _OneSpinningThread()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _one_spinning_thread()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    _one_spinning_thread()


def real_dataset() -> Path | None:
    """The real archive: $DATA_SOURCE when it is a local file, else ../shared/datasets/."""
    candidates = [os.environ.get("DATA_SOURCE", ""),
                  str(ROOT.parent / "shared/datasets/housing.tgz")]
    for candidate in candidates:
        path = Path(candidate.removeprefix("file://")) if candidate else None
        if path and not path.is_absolute():
            path = ROOT / path
        if path and path.is_file():
            return path
    return None


#: Read once, before any test clears DATA_SOURCE for its own throwaway project.
REAL_ARCHIVE = real_dataset()
# Then the caller's per-machine settings leave the session: a test that wants one sets it, so
# `DATA_SOURCE=../x make test` (or a shell pointed at a tracking server) steers no test.
for _var in PER_MACHINE:
    os.environ.pop(_var, None)


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """How ``make test`` (``pytest -n 2``) shares the tests between its workers: a module's
    tests stay in one worker, in order (several modules build one project in a module fixture
    and take its scenarios in turn), and the services tests share one worker, so the session
    starts one real stack, not one a worker.

    A scheduler rather than ``--dist loadgroup`` with ``xdist_group`` marks: pytest-xdist 3.8
    renames the grouped tests through ``item._nodeid``, which pytest 9 no longer reads, so the
    marks are silently ignored there.
    """
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "tests/services" if module.startswith("tests/services/") else module

    config.option.loadscopereorder = False  # the order below, not "most tests first"
    return ByModule(config, log)


#: The order in which ``make test`` hands modules to its workers: the long ones first, so that
#: the many short ones fill the end, where the other worker would otherwise wait alone. (xdist's
#: own order, most tests first, put the unit modules first and the real-flow modules, few tests
#: each but minutes long, last: in a run of 15:40, about the last minute had one worker.)
SUITES = ("tests/e2e/", "tests/services/", "tests/integration/", "tests/faults/", "tests/unit/")
#: Within its suite, each of these modules goes first, longest first (seconds in a run of
#: ``make test`` on 2 cores): the rest are shorter and fill in behind them. Alphabetical order
#: left the unit tests' longest module for the end, and in ``make test-fast`` one worker ran
#: it alone for 17 s. A module missing here only costs balance, never a result.
LONGEST_FIRST = ("tests/integration/test_bench.py",  # 161
                 "tests/integration/test_tuning_workers.py",  # 141
                 "tests/integration/test_training_flow.py",  # 125
                 "tests/integration/test_retrain_flow.py",  # 113
                 "tests/faults/test_failed_stage.py",  # 69
                 "tests/faults/test_fault_messages.py",  # 62
                 "tests/unit/test_validate.py",  # 19
                 "tests/unit/test_cli.py",  # 10
                 "tests/unit/test_retrain.py",  # 7
                 "tests/unit/test_ingest.py")  # 7


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def order(item: pytest.Item) -> tuple[int, int]:
        path = item.nodeid
        module = path.split("::", 1)[0]
        suite = next((i for i, prefix in enumerate(SUITES) if path.startswith(prefix)),
                     len(SUITES))
        rank = LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)
        return suite, rank

    items.sort(key=order)  # stable: a module's tests keep their order


@pytest.fixture(scope="module", autouse=True)
def _mlflow_uris_per_module() -> Iterator[None]:
    """Each test module starts with MLflow pointed nowhere in particular: a module that sets
    a tracking or registry URI must not steer the next module to a store that is gone."""
    from tests.scoring_helpers import isolated_mlflow

    with isolated_mlflow(fresh=True):
        yield


@pytest.fixture(scope="session")
def real_archive() -> Path:
    path = REAL_ARCHIVE
    if path is None:
        pytest.skip("real dataset not reachable: set DATA_SOURCE to housing.tgz "
                    "(CI uses ../shared/datasets/housing.tgz)")
    return path


@pytest.fixture(scope="session")
def params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def merge(base: dict, overlay: dict) -> dict:
    """Deep merge (overlay wins), on copies."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "space":
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _write_params(root: Path, params: dict) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def copy_project(root: Path, params: dict) -> Path:
    """Copy the pipeline definition (params, dvc.yaml, suites, code) into ``root``."""
    root.mkdir(parents=True)
    for name in PROJECT_FILES:
        src, dst = ROOT / name, root / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    (root / "data/landing").mkdir(parents=True)
    (root / "data/landing/.gitkeep").touch()  # as in the repository (DVC warns on empty dirs)
    _write_params(root, params)
    return root


def init_repo(root: Path) -> None:
    """Make ``root`` a git + DVC repository with one commit, as a user's clone is."""

    def run(*cmd: str) -> None:
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)

    run("git", "init", "-q")
    run("dvc", "init", "-q")
    run("dvc", "config", "core.analytics", "false")
    run("git", "add", "-A")
    run("git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "init")


_EMPTY_STORE: list[Path] = []


def seed_store(root: Path) -> None:
    """Put an empty MLflow store in ``root/mlflow.db``, as MLflow creates it in that folder.

    Why: creating a SQLite store runs MLflow's schema migrations, about 3 s, and the suite
    makes some forty projects and stores. Each test process has MLflow create one, once, in a
    folder of its own; a copy points its default experiment at ``root`` as MLflow would have.
    The user's path, where the pipeline creates the store, is still what the real-data
    end-to-end test, the another-problem test and the tests of a lost store run."""
    if not _EMPTY_STORE:
        from mlflow import MlflowClient

        folder = Path(tempfile.mkdtemp(prefix="empty-mlflow-store-"))
        atexit.register(shutil.rmtree, folder, True)
        here = Path.cwd()
        os.chdir(folder)  # MLflow places the default experiment's artifacts under the cwd
        try:
            MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
        finally:
            os.chdir(here)
        _EMPTY_STORE.append(folder)
    folder = _EMPTY_STORE[0]
    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / "mlflow.db", root / "mlflow.db")
    repoint_store(root / "mlflow.db", folder, root)


#: Where an MLflow SQLite store names its artifacts by absolute path.
ARTIFACT_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                    ("logged_models", "artifact_location"),
                    ("model_versions", "storage_location"))


def repoint_store(db: Path, old: Path, new: Path) -> None:
    """Point a copied store's artifact locations from ``old`` to ``new``."""
    with closing(sqlite3.connect(db)) as connection, connection:
        for table, column in ARTIFACT_COLUMNS:
            connection.execute(f"update {table} set {column} = replace({column}, ?, ?)",
                               (str(old), str(new)))


def build_project(base: Path, params: dict, rows: int = 3000, seed: int = 0, git: bool = False,
                  tiny: bool = True, store: bool = True, **overrides: dict) -> Path:
    """A project in ``base/project`` whose source archive holds ``rows`` generated districts
    (what :func:`make_project` builds; a module-scoped fixture calls this directly), with an
    empty MLflow store (:func:`seed_store`) unless ``store`` is false."""
    from tabreg.data import synthetic

    archive = base / "source" / "housing.tgz"
    sha = synthetic.write_archive(synthetic.generate(rows, seed=seed), archive)
    tree = yaml.safe_load(yaml.safe_dump(params))
    tree["data"].update(source=str(archive), sha256=sha)
    tree = merge(tree, TINY) if tiny else tree
    tree = merge(tree, overrides)
    root = copy_project(base / "project", tree)
    if git:
        init_repo(root)
    if store:  # after the first commit: the store is not part of the user's repository
        seed_store(root)
    return root


@pytest.fixture
def make_project(tmp_path: Path, params: dict, monkeypatch) -> Callable[..., Path]:
    """Build a project in tmp_path whose source archive holds ``rows`` generated districts.

    Per-machine variables (DATA_SOURCE, MLFLOW_TRACKING_URI, OPTUNA_STORAGE) are cleared: the
    project keeps its own source and its own embedded stores. ``overrides`` are deep-merged
    into params.yaml (e.g. ``tiny=True`` for the test budget, ``split={"test_size": 0.25}``).
    """
    for var in PER_MACHINE:
        monkeypatch.delenv(var, raising=False)

    def build(rows: int = 3000, seed: int = 0, git: bool = False, tiny: bool = True,
              store: bool = True, **overrides: dict) -> Path:
        return build_project(tmp_path, params, rows=rows, seed=seed, git=git, tiny=tiny,
                             store=store, **overrides)

    return build


def set_params(root: Path, section: str, **values) -> None:
    tree = yaml.safe_load((root / "params.yaml").read_text())
    tree[section].update(values)
    _write_params(root, tree)


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server (real API and database) for the whole session, started
    on first use (about 20 s). One only: Prefect's events client, which records task runs, is
    a process-wide service that stays bound to the first server it talked to, so the task runs
    of a flow on a second server in the same session were lost."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
