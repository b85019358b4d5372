"""The model steps (features, tune, train, evaluate) as callables of (config, project root).

MLflow lineage: ``tune`` opens the pipeline's parent run (every param, git commit, data version,
the training data as an input) with one nested run per trial; ``train`` adds a nested run holding
the model and its learning curve; ``evaluate`` logs test metrics, plots and the model card to the
training run and the headline metrics to the parent, so runs compare side by side in the UI.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tabreg.config import Config
from tabreg.errors import TabregError
from tabreg.io import read_table, write_json, write_text
from tabreg.pipeline import data_version as recorded_data_version
from tabreg.pipeline import recorded_md5
from tabreg.steps import reports_dir

log = logging.getLogger(__name__)

MODELS = "models"
TUNING_FILE = "models/tuning.json"
TRAIN_FILE = "models/train.json"
MODEL_DIR = "models/model"
#: Sections of the configuration that decide the model, logged as params of the parent run.
MODEL_SECTIONS = ("data", "schema", "split", "features", "tune", "train")



def read_json(path: Path, what: str) -> dict:
    if not path.exists():
        raise TabregError(f"{path}: not found; run the {what} step first")
    return json.loads(path.read_text())


def _data_version(config: Config, root: Path) -> str:
    return recorded_data_version(root, config.paths.raw) or "unrecorded"


def preflight(config: Config, root: Path) -> None:
    """Everything that can fail before work starts: the tracking store, the search space and
    the training device. Called by the flow before ingest and by the tune step."""
    import os

    from tabreg import store_health, tracking, tuning
    from tabreg.resources import resolve_workers
    from tabreg.services.reachability import check_reachable

    # Every shared service named by configuration answers, or one error names each that
    # does not: in seconds, before an hour of tuning.
    check_reachable(tracking.tracking_uri(config, root), tuning.storage_url(config, root),
                    os.environ.get("PREFECT_API_URL"))
    tracking.check_reachable(tracking.tracking_uri(config, root))
    store_health.check(config, root)  # a lost or damaged store stops the run here, named
    tuning.check_space(config)
    if config.tune.launcher != "prefect":  # Prefect's workers may run on other hosts
        resolve_workers(config.tune.workers, oversubscribe=config.tune.oversubscribe)
    if "mlp" in config.tune.families:
        from tabreg.models.mlp import resolve_device

        resolve_device(config.train.device)


def features(config: Config, root: Path) -> dict:
    """Fit the feature pipeline (default parameters) on train and describe what it makes."""
    from tabreg.features import build_preprocessor, feature_names

    train = read_table(root / config.paths.train)
    pre = build_preprocessor(config.schema, config.features)
    matrix = pre.fit_transform(train)
    names = feature_names(pre)
    result = {
        "rows": int(matrix.shape[0]),
        "features": [{"name": n, "mean": round(float(m), 6), "std": round(float(s), 6)}
                     for n, m, s in zip(names, matrix.mean(axis=0), matrix.std(axis=0),
                                        strict=True)],
    }
    write_json(result, reports_dir(config, root) / "features.json")
    log.info("features: %d features from %d training rows", len(names), matrix.shape[0])
    return {"rows": result["rows"], "n_features": len(names)}


def _file_source(path: str) -> Any:
    """MLflow's local-file dataset source for ``path``, named explicitly: given the bare
    path, MLflow finds two equal candidates (its "" and "file" schemes) and warns that the
    source "can be interpreted in multiple ways" on every logged dataset."""
    from mlflow.data.dataset_source_registry import get_registered_sources

    local = next(s for s in get_registered_sources() if s._get_source_type() == "local")
    return local(path)


def _log_dataset(frame: pd.DataFrame, config: Config, name: str, path: str,
                 context: str) -> Any:
    """Log a split as a run input whose digest is its DVC hash (``frame.attrs["md5"]``);
    returns the dataset (metrics can name it)."""
    import mlflow

    dataset = mlflow.data.from_pandas(frame, source=_file_source(path),
                                      targets=config.schema.target, name=name,
                                      digest=frame.attrs.get("md5"))
    mlflow.log_input(dataset, context=context)
    return dataset


def tune(config: Config, root: Path) -> dict:
    import mlflow

    from tabreg import tracking, tuning
    from tabreg.evaluation import card, plots

    preflight(config, root)
    tracking.start(config, root)
    train = read_table(root / config.paths.train)
    version = _data_version(config, root)
    train.attrs["md5"] = recorded_md5(root, config.paths.train)
    tags = {"kind": "pipeline", "git_commit": tracking.git_commit(root), "data_version": version,
            "profile": config.profile, "split.strategy": config.split.strategy}
    with tracking.start_run(run_name=f"pipeline-{version[:8]}", tags=tags) as parent:
        mlflow.log_params(tracking.config_params(config, MODEL_SECTIONS,
                                                 mlp="mlp" in config.tune.families))
        _log_dataset(train, config, "train", config.paths.train, "training")
        started = time.perf_counter()
        # The study is keyed on the training split it scores (a new split is a new study).
        result = tuning.tune(config, root, parent_run_id=parent.info.run_id)
        seconds = time.perf_counter() - started
        out = reports_dir(config, root) / "tuning"
        write_json(result.trials, out / "trials.json")
        study = {"study": result.study, "budget": result.budget, "trials": result.counts(),
                 "per_family": result.per_family(), "stopped_by_guard": result.guard is not None,
                 "guard": result.guard, "seconds": round(seconds, 1), **result.workers}
        write_json(study, out / "study.json")
        figures = [plots.tuning_history(result.trials, out / "history.png",
                                        unit=config.problem.unit),
                   _importances_plot(result, out / "importances.png")]
        for figure in figures:
            mlflow.log_artifact(str(figure), "tuning")
        mlflow.log_metrics({"best_cv_rmse": result.best_value, "tuning_seconds": seconds})
        mlflow.set_tags({"study": result.study, "best_family": result.best.family,
                         "best_trial": str(result.best_trial),
                         "tuning.guard": result.guard or "not fired",
                         "tuning.trials_per_family": json.dumps(result.per_family())})
        mlflow.log_dict(study, "tuning/study.json")
        if result.blend:
            mlflow.log_dict(result.blend, "tuning/blend.json")
    summary = {
        "study": result.study,
        "best": result.best.flat(),
        "best_cv_rmse": round(result.best_value, 2),
        "best_trial": result.best_trial,
        "blend": result.blend,
        "trials": result.counts(),
        "budget": result.budget,
        "per_family": result.per_family(),
        "guard": result.guard,
        "workers": result.workers,
        "seconds": round(seconds, 1),
        "parent_run_id": parent.info.run_id,
        "data_version": version,
    }
    write_json(summary, root / TUNING_FILE)
    log.info("tune: best %s, CV RMSE %s (%s)", result.best.family,
             card.number(result.best_value),
             ", ".join(f"{n} {state.lower()}" for state, n in result.counts().items()))
    return summary


def _importances_plot(result: Any, path: Path) -> Path:
    """The parameter importances, or a placeholder saying why this study has none."""
    from tabreg.evaluation import plots

    if result.importances:
        return plots.param_importances(result.importances, path)
    complete = sum(str(t.get("state", "")).upper() == "COMPLETE" for t in result.trials)
    reason = (f"not computed: this study has {complete} complete trial(s);\n"
              "importances need at least 3 (raise tune.n_trials)" if complete < 3 else
              "not computed: Optuna could not estimate them\n(see the tune step's log)")
    return plots.not_drawn(path, "Hyperparameter importance", reason)


def _requirements(family: str) -> list[str]:
    names = ["mlflow", "scikit-learn", "pandas", "numpy", "pyarrow", "pydantic", "pyyaml"]
    if family == "mlp":
        names.append("torch")
    return [f"{n}=={metadata.version(n)}" for n in names]


def _save_model_dir(pipeline: Any, dest: Path, **kwargs: Any) -> None:
    """Save an MLflow model folder next to ``dest`` and swap it in (never half a model)."""
    import mlflow.sklearn

    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}")
    try:
        mlflow.sklearn.save_model(pipeline, str(tmp), **kwargs)
        old = dest.with_name(f".{dest.name}.old")
        if dest.exists():
            dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _history(model: Any) -> list[dict]:
    """The MLP's per-epoch learning curve, if the model (or a blend member) is an MLP."""
    steps = getattr(model, "named_steps", None)
    if steps is not None:
        return list(getattr(steps["model"], "history_", []))
    for member in getattr(model, "estimators_", []):
        if history := _history(member):
            return history
    return []


def _family_requirements(candidate: Any) -> str:
    members = getattr(candidate, "members", (candidate,))
    return "mlp" if any(m.family == "mlp" for m in members) else candidate.family


def train(config: Config, root: Path) -> dict:
    import mlflow
    from mlflow.models import infer_signature

    from tabreg import tracking
    from tabreg.models.candidates import from_flat, make_pipeline
    from tabreg.resources import fit_threads, thread_budget

    tuning = read_json(root / TUNING_FILE, "tune")
    candidate = from_flat(tuning["best"])
    tracking.start(config, root)
    frame = read_table(root / config.paths.train)
    frame.attrs["md5"] = recorded_md5(root, config.paths.train)
    features = list(config.schema.features)
    X, y = frame[features], frame[config.schema.target].to_numpy(dtype=float)
    threads = fit_threads(1)
    pipeline = make_pipeline(candidate, config, n_jobs=threads)
    with tracking.start_run(run_name=f"train-{candidate.family}", nested=True,
                          parent_run_id=tuning["parent_run_id"],
                          tags={"kind": "train", "family": candidate.family,
                                "git_commit": tracking.git_commit(root),
                                "data_version": tuning["data_version"]}) as run:
        mlp = _family_requirements(candidate) == "mlp"  # the MLP's settings on MLP runs only
        mlflow.log_params({**candidate.flat(),
                           **tracking.config_params(config, ("train",), mlp=mlp)})
        _log_dataset(frame, config, "train", config.paths.train, "training")
        started = time.perf_counter()
        with thread_budget(threads, with_torch=mlp):
            pipeline.fit(X, y)
        seconds = time.perf_counter() - started
        history = _history(pipeline)
        for h in history:
            mlflow.log_metrics({"train_loss": h["train_loss"], "val_rmse": h["val_rmse"]},
                               step=int(h["epoch"]))
        example = X.head(5)
        signature = infer_signature(example, pipeline.predict(example))
        model_kwargs = {"signature": signature, "input_example": example,
                        "serialization_format": "cloudpickle",
                        "code_paths": [str(Path(__file__).resolve().parents[1])],
                        "pip_requirements": _requirements(_family_requirements(candidate))}
        # Named as it is registered, so the model's page and the version's agree.
        info = mlflow.sklearn.log_model(pipeline, name=config.registry.model_name,
                                        **model_kwargs)
        mlflow.log_metric("fit_seconds", seconds)
        _save_model_dir(pipeline, root / MODEL_DIR, **model_kwargs)
    write_json(history, reports_dir(config, root) / "learning_curve.json")
    summary = {"run_id": run.info.run_id, "parent_run_id": tuning["parent_run_id"],
               "model_uri": info.model_uri, "family": candidate.family,
               "params": candidate.flat(), "fit_seconds": round(seconds, 2),
               "epochs": len(history), "data_version": tuning["data_version"],
               "trained_at": datetime.now(UTC).isoformat(timespec="seconds")}
    write_json(summary, root / TRAIN_FILE)
    log.info("train: %s refit on %d rows in %.1f s", candidate.family, len(frame), seconds)
    return summary


def _evaluation_plots(config: Config, test: pd.DataFrame, y: np.ndarray, pred: np.ndarray,
                      table: list[dict], reports: Path, family: str) -> list[Path]:
    """The evaluation figures in ``reports/plots``: the map only when ``evaluate.error_map``
    names coordinates, and the learning curves, or a note saying why there are none."""
    from tabreg.evaluation import plots

    figures, unit, rows = reports / "plots", config.problem.unit, config.problem.rows
    made = [plots.predicted_vs_actual(y, pred, figures / "predicted_vs_actual.png", unit=unit,
                                      rows=rows),
            plots.residuals(y, pred, figures / "residuals.png", unit=unit, rows=rows),
            plots.rmse_by_slice(table, figures / "rmse_by_slice.png", unit=unit)]
    if (where := config.evaluate.error_map) is not None:
        made.append(plots.error_map(test[where.longitude], test[where.latitude], pred - y,
                                    figures / "error_map.png", unit=unit))
    history = json.loads((reports / "learning_curve.json").read_text())
    curves = figures / "learning_curves.png"
    if history:
        made.append(plots.learning_curves(history, curves, unit=unit))
    else:
        made.append(plots.not_drawn(curves, "Learning curves", f"not drawn: the trained model "
                                    f"is a {family},\nnot an MLP (only an MLP trains in epochs)"))
    return made


def _log_evaluation(config: Config, trained: dict, test: pd.DataFrame,
                    headline: dict[str, float], figures: list[Path], reports: Path,
                    table: list[dict]) -> None:
    """The evaluation as a run of its own in the pipeline run: its settings as params (a
    re-evaluation with other settings is another run; MLflow params never change), the test
    metrics, linked to the logged model so that its page shows them, the plots and the card.
    The training and pipeline runs get the headline metrics, to compare runs side by side."""
    import mlflow

    from tabreg import tracking

    uri = trained["model_uri"]
    model_id = uri.removeprefix("models:/") if uri.startswith("models:/m-") else None
    tags = {"kind": "evaluate", "family": trained["family"], "train_run_id": trained["run_id"],
            "data_version": trained["data_version"]}
    with tracking.start_run(run_name=f"evaluate-{trained['family']}", nested=True,
                            parent_run_id=trained["parent_run_id"], tags=tags):
        mlflow.log_params(tracking.config_params(config, ("evaluate",)))
        dataset = _log_dataset(test, config, "test", config.paths.test, "evaluation")
        mlflow.log_metrics(headline, model_id=model_id, dataset=dataset)
        for figure in figures:
            mlflow.log_artifact(str(figure), "plots")
        mlflow.log_artifact(str(reports / "model_card.md"))
        mlflow.log_dict({"slices": table}, "slices.json")
    for run_id in (trained["run_id"], trained["parent_run_id"]):
        with tracking.start_run(run_id=run_id):
            mlflow.log_metrics(headline)


def evaluate(config: Config, root: Path) -> dict:
    import mlflow
    import mlflow.sklearn

    from tabreg import tracking
    from tabreg.evaluation import card, metrics, slices
    from tabreg.resources import fit_threads, thread_budget

    trained = read_json(root / TRAIN_FILE, "train")
    tuning = read_json(root / TUNING_FILE, "tune")
    model = mlflow.sklearn.load_model(str(root / MODEL_DIR))
    test = read_table(root / config.paths.test)
    test.attrs["md5"] = recorded_md5(root, config.paths.test)
    y = test[config.schema.target].to_numpy(dtype=float)
    with thread_budget(fit_threads(1)):
        pred = np.asarray(model.predict(test[list(config.schema.features)]), dtype=float)
    ev = config.evaluate
    scores = metrics.regression_metrics(y, pred)
    low, high = metrics.bootstrap_rmse(y, pred, n_resamples=ev.bootstrap,
                                       confidence=ev.confidence, seed=ev.seed)
    table = slices.slice_table(test, y, pred, ev.slices)
    reports = reports_dir(config, root)
    made = _evaluation_plots(config, test, y, pred, table, reports, trained["family"])
    split = json.loads((reports / "split.json").read_text())
    text = card.model_card(
        name=config.tracking.experiment, data_version=trained["data_version"],
        git_commit=tracking.git_commit(root), family=trained["family"], params=trained["params"],
        metrics=scores, interval=(low, high), confidence=ev.confidence, slices=table,
        split={"strategy": split["strategy"], **split["rows"]},
        trained_at=trained["trained_at"], problem=config.problem,
        target=f"`{config.schema.target}`",
        limitations=card.data_limitations(y, table, config.problem.rows))
    write_text(text, reports / "model_card.md")
    measured = {**{k: round(float(v), 4) for k, v in scores.items()},
                "rmse_low": round(low, 2), "rmse_high": round(high, 2),
                "best_cv_rmse": tuning["best_cv_rmse"]}
    # `dvc metrics show/diff` list this file: measurements only (settings are params).
    write_json(measured, reports / "metrics.json")
    result = {**measured, "confidence": ev.confidence, "family": trained["family"]}
    write_json(table, reports / "slices.json")
    pd.DataFrame({"actual": y, "predicted": pred}).to_csv(reports / "predictions.csv",
                                                          index=False)
    tracking.start(config, root)
    headline = {f"test_{k}": float(v) for k, v in scores.items() if k != "n"}
    headline.update(test_rmse_low=low, test_rmse_high=high)
    _log_evaluation(config, trained, test, headline, made, reports, table)
    log.info("evaluate: test RMSE %s (%.0f%% interval %s-%s)", card.number(scores["rmse"]),
             100 * ev.confidence, card.number(low), card.number(high))
    return result
