"""What the training flow leaves in MLflow, and what fails before any work starts."""

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from flows.training import training
from tabreg.errors import TabregError
from tests.conftest import set_params

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(tmp_path_factory, params) -> Path:
    """One trained project for the module (the re-evaluation test, last, changes it only
    by a re-evaluation)."""
    from tests.conftest import PER_MACHINE, build_project
    from tests.scoring_helpers import isolated_mlflow

    with pytest.MonkeyPatch.context() as env, isolated_mlflow():
        for var in PER_MACHINE:
            env.delenv(var, raising=False)
        root = build_project(tmp_path_factory.mktemp("tracked"), params, rows=2500, git=True)
        training(root=str(root))
        mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
        yield root


def test_mlflow_holds_the_pipeline_run_trials_and_model(trained):
    root = trained
    tuning = json.loads((root / "models/tuning.json").read_text())
    train = json.loads((root / "models/train.json").read_text())
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    raw_md5 = lock["ingest"]["outs"][0]["md5"]

    parent = mlflow.get_run(tuning["parent_run_id"])
    assert parent.data.params["split.test_size"] == "0.2"
    assert parent.data.params["tune.n_trials"] == "4"
    # The configuration in force, each search range one value, no nulls.
    assert parent.data.params["tune.space.random_forest.n_estimators"] == "int [10, 30]"
    assert "null" not in parent.data.params.values()
    assert parent.data.tags["data_version"] == raw_md5
    assert len(parent.data.tags["git_commit"]) >= 40
    assert parent.data.metrics["test_rmse"] > 0
    inputs = parent.inputs.dataset_inputs
    train_md5 = next(o["md5"] for o in lock["split"]["outs"] if o["path"].endswith("train.parquet"))
    assert [i.dataset.digest for i in inputs] == [train_md5]

    runs = mlflow.search_runs(experiment_names=["housing"],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    trials = runs[runs["tags.kind"] == "trial"]
    assert len(trials) == 4
    assert set(trials["tags.state"]) <= {"complete", "pruned", "failed"}
    assert "complete" in set(trials["tags.state"])
    assert (runs["tags.kind"] == "train").sum() == 1
    trained_run = mlflow.get_run(train["run_id"]).data.params  # MLP settings on MLP runs only
    is_mlp = train["family"] == "mlp" or "mlp" in trained_run.get("blend.members", "")
    assert ("train.max_epochs" in trained_run) == is_mlp, trained_run
    client = mlflow.MlflowClient()
    for run_id in trials[trials["tags.family"] == "mlp"]["run_id"]:  # learning curves
        curve = client.get_metric_history(run_id, "fold0_val_rmse")
        assert [m.step for m in curve] == sorted(m.step for m in curve)

    run = mlflow.get_run(train["run_id"])
    for key in ("test_rmse", "test_mae", "test_r2", "test_mape", "test_rmse_low"):
        assert key in run.data.metrics
    # The evaluation is a run of its own: its settings as params, its metrics, its plots.
    evaluation = runs[runs["tags.kind"] == "evaluate"]
    assert len(evaluation) == 1
    assert evaluation.iloc[0]["params.evaluate.bootstrap"] == "100"
    evaluation_id = evaluation.iloc[0]["run_id"]
    assert mlflow.get_run(evaluation_id).data.metrics["test_rmse"] == run.data.metrics["test_rmse"]
    artifacts = {a.path for a in client.list_artifacts(evaluation_id, "plots")}
    assert {"plots/predicted_vs_actual.png", "plots/error_map.png"} <= artifacts

    # The logged model is named as it is registered, and carries the test metrics.
    logged = client.get_logged_model(train["model_uri"].removeprefix("models:/"))
    assert logged.name == "housing"
    assert "test_rmse" in {m.key for m in logged.metrics}
    version = client.get_model_version("housing", "1")
    assert version.description.startswith("housing version 1: a ")
    assert "The gate (pipeline)" in version.description
    assert all(value != "" for value in version.tags.values()), version.tags


def test_logged_model_predicts_the_same_in_a_fresh_process(trained):
    root = trained
    train = json.loads((root / "models/train.json").read_text())
    test = pd.read_parquet(root / "data/split/test.parquet").head(200)
    features = [c for c in test.columns if c not in ("row_id", "batch", "median_house_value")]
    test[features].to_parquet(root / "sample.parquet")
    here = mlflow.pyfunc.load_model(train["model_uri"]).predict(test[features])
    script = (
        "import sys, mlflow, pandas as pd\n"
        f"mlflow.set_tracking_uri('sqlite:///{root / 'mlflow.db'}')\n"
        f"m = mlflow.pyfunc.load_model('{train['model_uri']}')\n"
        f"m.predict(pd.read_parquet('{root / 'sample.parquet'}')).to_numpy(float)"
        ".tofile(sys.argv[1])\n")
    out = root / "pred.bin"
    done = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True,
                          text=True, cwd=root)
    assert done.returncode == 0, done.stderr
    # The pyfunc output is the prediction and its interval, in this order.
    assert list(here.columns) == ["prediction", "lower", "upper"]
    assert (here["lower"] < here["prediction"]).all() and \
        (here["prediction"] < here["upper"]).all()
    np.testing.assert_array_equal(np.fromfile(out), here.to_numpy(dtype=float).ravel())
    assert mlflow.models.get_model_info(train["model_uri"]).signature.inputs.input_names() == \
        features


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("train", {"device": "cuda"}, "train.device is 'cuda'"),
        ("tracking", {"uri": "http://127.0.0.1:9"}, r"http://127\.0\.0\.1:9 cannot be reached"),
    ],
)
def test_fails_at_start_before_any_work(make_project, section, values, message):
    import torch

    if section == "train" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    root = make_project(rows=1500, store=False)
    set_params(root, section, **values)
    with pytest.raises(TabregError, match=message):  # ConfigError, or ServiceError for a URL
        training(root=str(root))
    assert not (root / "data/raw").exists()
    assert not (root / "mlflow.db").exists()


def test_quality_on_generated_data(trained):
    metrics = json.loads((trained / "reports/metrics.json").read_text())
    assert metrics["rmse_low"] <= metrics["rmse"] <= metrics["rmse_high"]
    assert metrics["r2"] > 0.5  # a tiny budget still learns the generator's structure
    card = (trained / "reports/model_card.md").read_text()
    assert f"{metrics['rmse']:,.0f}" in card
    # Intervals calibrated on the ~2,000 training rows hold on the ~500 test rows.
    assert 0.85 <= metrics["interval_coverage"] <= 0.95, metrics
    assert f"held the truth for {metrics['interval_coverage']:.1%}" in card
    slices = json.loads((trained / "reports/slices.json").read_text())
    assert all(0 <= r["coverage"] <= 1 and r["width"] > 0 for r in slices)
    train = json.loads((trained / "models/train.json").read_text())
    rows = len(pd.read_parquet(trained / "data/split/train.parquet"))
    assert train["interval"]["level"] == 0.9 and train["interval"]["calibration_rows"] == rows
    run = mlflow.get_run(train["run_id"])
    assert run.data.metrics["test_interval_coverage"] == pytest.approx(
        metrics["interval_coverage"], abs=1e-4)
    assert run.data.params["serve.interval"] == "0.9"


def test_reevaluating_the_same_model_registers_no_new_version(trained):
    root = trained
    versions = mlflow.MlflowClient().search_model_versions("name='housing'")
    assert len(versions) == 1
    set_params(root, "evaluate", bootstrap=200)
    stages = training(root=str(root))
    assert [s["stage"] for s in stages if s["ran"]] == ["evaluate", "register"]
    assert len(mlflow.MlflowClient().search_model_versions("name='housing'")) == 1
    decision = json.loads((root / "reports/promotion.json").read_text())
    assert decision["action"] in ("none", "keep champion")  # nothing new to judge


def test_the_fast_path_equals_the_registered_model_on_the_test_split(trained):
    """What the server computes (``tabreg.serving.fast``) is what the registered pyfunc model
    computes, on every row of the test split, at once and a row at a time."""
    from tabreg.config import load_config
    from tabreg.serving import fast, scoring

    train = json.loads((trained / "models/train.json").read_text())
    loaded = mlflow.pyfunc.load_model(train["model_uri"])
    test = pd.read_parquet(trained / "data/split/test.parquet")
    spec = scoring.spec_for(loaded, load_config(trained / "params.yaml").schema)
    features = scoring.check_frame(test, spec).features
    expected = loaded.predict(features)
    run = fast.compile_model(scoring.raw_model(loaded), threads=2)  # as the server does
    assert len(features) >= fast.SPLIT  # so the rows are shared by the two threads
    for got, column in zip(run(features), ("prediction", "lower", "upper"), strict=True):
        np.testing.assert_allclose(got, expected[column], rtol=1e-6)
    for i in range(0, len(features), 25):  # one-row requests, as the server mostly gets
        np.testing.assert_allclose(run(features.iloc[[i]])[0], expected["prediction"].iloc[i],
                                   rtol=1e-6)
