"""Fixtures shared by the fault modules: the server's app in-process (no port, no MLflow
store) around a small fitted model, and a registered champion for ``predict``."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest

from tabreg.config import load_config
from tests.conftest import ROOT
from tests.scoring_helpers import fit_small, isolated_mlflow, make_store

CONFIG = load_config(ROOT / "params.yaml", env={})


@pytest.fixture(scope="session")
def http():
    """A test client of the serving app, serving a small model fitted on generated rows."""
    from tabreg.promotion import registry
    from tabreg.serving import scoring
    from tabreg.serving import server as serving

    with warnings.catch_warnings():  # starlette prefers httpx2, which is not installed
        warnings.simplefilter("ignore", DeprecationWarning)
        from starlette.testclient import TestClient

    pipeline, _ = fit_small(CONFIG)
    served = serving.Served(pipeline, scoring.spec_for(pipeline, CONFIG.schema),
                            registry.ModelRef(CONFIG.registry.model_name, "1", None, None), 0.0)
    slot = serving.ModelSlot(lambda: SimpleNamespace(version="1"), lambda _: served, None)
    with TestClient(serving.create_app(slot), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    """A throwaway MLflow store holding one champion (see tests.scoring_helpers)."""
    with isolated_mlflow():
        yield make_store(tmp_path_factory.mktemp("store"))


@pytest.fixture
def predict(store, monkeypatch, capsys):
    """Run ``python -m tabreg predict`` in-process against the store's champion; returns the
    exit code and what it printed on stderr."""
    from tabreg import cli

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)

    def run(*args: str) -> tuple[int, str]:
        code = cli.run(["--params", str(ROOT / "params.yaml"), "-q", "predict", *args])
        return code, capsys.readouterr().err

    return run


@pytest.fixture(scope="session")
def prefect_api(prefect_server):
    """The session's temporary Prefect server, for the modules that run a flow in-process."""
    yield
