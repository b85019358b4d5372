"""What the console shows: stage decisions as sentences, the libraries' bookkeeping kept off
it, and the few by-design warnings dropped while every other warning still shows."""

from __future__ import annotations

import logging

import pytest

from tabreg import logs
from tabreg.orchestration.dvc_stages import describe_changes

NAMES = {"data/split/train.parquet": "training data"}


@pytest.mark.parametrize(("changes", "ran_before", "expected"), [
    ({}, True, "tune: up to date, skipped"),
    ({"tune": [{"changed deps": {"data/split/train.parquet": "modified"}}]}, True,
     "tune: training data changed, running"),
    ({"split": [{"changed deps": {"params.yaml": {"split.test_size": "modified"}}}]}, True,
     "split: parameters changed (split.test_size), running"),
    ({"train": [{"changed deps": {"src/tabreg/models": "modified",
                                  "src/tabreg/resources.py": "modified"}}]}, True,
     "train: code changed (src/tabreg/models, src/tabreg/resources.py), running"),
    ({"evaluate": [{"changed outs": {"reports/plots": "deleted"}}]}, True,
     "evaluate: output reports/plots is missing, running"),
    ({"ingest": [{"changed deps": {"src/tabreg/data/ingest.py": "modified",
                                   "params.yaml": "new"}},
                 {"changed outs": {"data/raw/housing.parquet": "deleted"}}]}, False,
     "ingest: not run before, running"),
    ({"register": ["changed checksum"]}, True,
     "register: its definition in dvc.yaml changed, running"),
])
def test_stage_decisions_read_as_sentences(changes, ran_before, expected):
    stage = expected.split(":")[0]
    assert describe_changes(stage, changes, ran_before=ran_before, names=NAMES) == expected


@pytest.fixture
def console(monkeypatch):
    """A handler on the root logger (where Prefect's and the CLI's console handlers sit);
    the touched loggers are put back as they were afterwards."""
    monkeypatch.setenv("MLFLOW_CONFIGURE_LOGGING", "false")
    names = [*logs.LIBRARY_LOGGERS, "great_expectations.data_context.types.base",
             *(name for name, _ in logs.EXPECTED_WARNINGS)]
    saved = {n: (lg.level, list(lg.handlers), list(lg.filters), lg.propagate)
             for n in names for lg in [logging.getLogger(n)]}
    seen: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.DEBUG)
    handler.emit = seen.append
    root = logging.getLogger()
    root.addHandler(handler)
    yield seen
    root.removeHandler(handler)
    for name, (level, handlers, filters, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers, logger.filters, logger.propagate = handlers, filters, propagate


def test_library_bookkeeping_stays_off_the_console_and_problems_show(console):
    logs.quiet_libraries(dvc=True)
    logs.quiet_libraries(dvc=True)  # twice: still one filter each
    gx = logging.getLogger("great_expectations.data_context.types.base")
    gx.setLevel(logging.INFO)  # as Great Expectations does when imported
    assert sum(isinstance(f, logs._WarningsOnly) for f in gx.filters) == 1
    gx.info("Created temporary directory '/tmp/x' for ephemeral docs site")
    logging.getLogger("dvc.dvcfile").info("Updating lock file 'dvc.lock'")
    logging.getLogger("mlflow.store.db.utils").info("Creating initial MLflow database tables...")
    logging.getLogger("mlflow.sklearn").warning(
        "Saving scikit-learn models in the pickle or cloudpickle format requires caution")
    assert console == []
    assert not any(type(h).__name__ == "LoggerHandler" for h in logging.getLogger("dvc").handlers)

    # A real problem still reaches the console, through the one (root) handler.
    logging.getLogger("dvc.output").warning("'data/landing' is empty.")
    logging.getLogger("mlflow.sklearn").warning("Model logged without a signature")
    gx.error("a checkpoint failed")
    assert [r.getMessage() for r in console] == ["'data/landing' is empty.",
                                                 "Model logged without a signature",
                                                 "a checkpoint failed"]
