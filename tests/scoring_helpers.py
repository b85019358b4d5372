"""A registered model for the scoring and serving tests, without running the pipeline: a small
gradient-boosting pipeline fitted on generated districts, with its prediction intervals, logged
with its signature to a throwaway MLflow store, registered, and made champion."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tabreg.config import Config, load_config
from tests.conftest import ROOT, seed_store


@dataclass(frozen=True)
class Store:
    uri: str  # the tracking (and registry) URI
    name: str  # the registered model's name
    config: Config
    train: pd.DataFrame  # what the model was fitted on


def fit_small(config: Config, rows: int = 800, seed: int = 0, max_iter: int = 20):
    from tabreg.data import synthetic
    from tabreg.models.candidates import Candidate, make_pipeline

    frame = synthetic.generate(rows, seed=seed)
    features = list(config.schema.features)
    pipeline = make_pipeline(Candidate("hist_gradient_boosting", {"n_clusters": 4},
                                       {"max_iter": max_iter}), config)
    pipeline.fit(frame[features], frame[config.schema.target])
    return pipeline, frame


def requirements() -> list[str]:
    """The pinned requirements of the models logged here (all tree models), as the train stage
    names them: MLflow would otherwise infer them in a fresh process, 6-10 s a model."""
    from tabreg.models.pyfunc import requirements

    return requirements("hist_gradient_boosting")


def log_and_register(store: Store, pipeline, example: pd.DataFrame, champion: bool = True) -> str:
    """Log ``pipeline`` as a new version of the store's model; returns the version."""
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    from tabreg.promotion import registry

    mlflow.set_tracking_uri(store.uri)
    mlflow.set_registry_uri(store.uri)
    client = MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)
    with mlflow.start_run():
        if hasattr(pipeline, "predict_interval"):  # as the train stage logs it
            from tabreg.models import pyfunc

            info = pyfunc.log_model(pipeline, name="model", input_example=example,
                                    pip_requirements=requirements())
        else:  # as versions registered before intervals were logged
            signature = infer_signature(example, pipeline.predict(example))
            info = mlflow.sklearn.log_model(pipeline, name="model", signature=signature,
                                            input_example=example,
                                            serialization_format="cloudpickle",
                                            pip_requirements=requirements())
    version = registry.register(client, store.name, info.model_uri, {})
    if champion:
        client.set_registered_model_alias(store.name, registry.CHAMPION, version.version)
    return str(version.version)


def with_intervals(pipeline, frame: pd.DataFrame, config: Config):
    """``pipeline`` with its prediction intervals, calibrated as the train stage does, on
    out-of-fold predictions of the same pipeline (3 folds of ``frame``)."""
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_predict

    from tabreg.models.intervals import ConformalRegressor

    schema = config.schema
    X, y = frame[list(schema.features)], frame[schema.target].to_numpy(dtype=float)
    oof = cross_val_predict(clone(pipeline), X, y, cv=3)
    return ConformalRegressor(pipeline, schema.numeric, schema.categorical,
                              level=config.serve.interval).calibrate(X, y, oof)


def write_test_split_and_store(root: Path, config: Config) -> Path:
    """A project holding only a test split (1,500 generated rows) and an empty MLflow store
    (created with its experiment): what the gate needs to judge models registered by hand."""
    from tabreg.config import ROW_ID
    from tabreg.data import synthetic
    from tabreg.promotion import registry

    test = synthetic.generate(1500, seed=12)
    test.insert(0, ROW_ID, range(len(test)))
    path = root / config.paths.test
    path.parent.mkdir(parents=True)
    test.to_parquet(path, index=False)
    seed_store(root)
    registry.client(config, root)
    return root


def register_by_hand(root: Path, config: Config, model, **tags: str) -> str:
    """Log ``model`` and register it, with the split lineage the gate checks (``tags`` add
    to or override it); returns the new version."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    from tabreg.data import synthetic
    from tabreg.promotion import registry

    client = registry.client(config, root)  # first: the run is logged to this store
    example = synthetic.generate(5, seed=1)[list(config.schema.features)]
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", input_example=example,
                                        serialization_format="cloudpickle",
                                        pip_requirements=requirements(),
                                        signature=infer_signature(example,
                                                                  model.predict(example)))
    lineage = {"split_signature": registry.split_signature(config),
               "data_version": "unrecorded", **tags}
    return str(registry.register(client, config.registry.model_name, info.model_uri,
                                 lineage).version)


def make_store(tmp: Path, rows: int = 800) -> Store:
    """A fresh store in ``tmp`` holding one champion fitted on ``rows`` generated rows."""
    import mlflow

    config = load_config(ROOT / "params.yaml", env={})
    seed_store(tmp)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("scoring-tests",
                                          artifact_location=(tmp / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=experiment)
    pipeline, frame = fit_small(config, rows)
    store = Store(uri, config.registry.model_name, config, frame)
    log_and_register(store, with_intervals(pipeline, frame, config),
                     frame[list(config.schema.features)].head(5))
    return store


def _point_mlflow(uris: dict[str, str | None]) -> None:
    """Set MLflow's tracking and registry URIs, in MLflow and in the environment (None:
    unset)."""
    if "mlflow" in sys.modules:  # nothing to set if MLflow was never loaded
        import mlflow

        mlflow.set_tracking_uri(uris["MLFLOW_TRACKING_URI"])
        mlflow.set_registry_uri(uris["MLFLOW_REGISTRY_URI"])  # type: ignore[arg-type]
    for name, value in uris.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextmanager
def isolated_mlflow(fresh: bool = False) -> Iterator[None]:
    """Give back MLflow's tracking and registry URIs as they were: ``mlflow.set_tracking_uri``
    also sets ``MLFLOW_TRACKING_URI`` in the environment, which ``load_config`` (and every
    subprocess) would otherwise read in the tests that follow. ``fresh``: clear them first,
    whatever was set before (a session fixture is set up before a module's, so what it set is
    what a module would otherwise save and give back)."""
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved = {name: os.environ.get(name) for name in names}
    if fresh:
        _point_mlflow(dict.fromkeys(names))
    try:
        yield
    finally:
        _point_mlflow(saved)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(options: Sequence[str], serve_args: Sequence[str], *, cwd: Path,
                 env: dict[str, str], log: Path, timeout: float = 120
                 ) -> tuple[subprocess.Popen, str]:
    """``python -m tabreg <options> serve --port <free> <serve_args>`` in its own process,
    answering ``/health``: (the process, its URL). Shared by the tests and the serving bench;
    raises with the log's tail when the server does not start in time."""
    from tabreg.serving.server import wait_until_healthy

    port = free_port()
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "tabreg", *options, "serve", "--port",
                                    str(port), *serve_args], cwd=cwd, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    if not wait_until_healthy(url, process, timeout):
        process.kill()
        raise RuntimeError(f"the server did not start:\n{log.read_text()[-3000:]}")
    return process, url
