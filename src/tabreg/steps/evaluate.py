"""The evaluate stage: test metrics with their interval, slices, plots and the model card,
logged to the training run (and the headline metrics to the parent), so runs compare side
by side in the MLflow UI.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from tabreg.config import Config
from tabreg.io import read_table, write_json, write_text
from tabreg.orchestration.dvc_stages import recorded_md5
from tabreg.steps import reports_dir
from tabreg.steps.records import log_dataset, read_json

log = logging.getLogger(__name__)


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

    from tabreg.store import tracking

    uri = trained["model_uri"]
    model_id = uri.removeprefix("models:/") if uri.startswith("models:/m-") else None
    tags = {"kind": "evaluate", "family": trained["family"], "train_run_id": trained["run_id"],
            "data_version": trained["data_version"]}
    with tracking.start_run(run_name=f"evaluate-{trained['family']}", nested=True,
                            parent_run_id=trained["parent_run_id"], tags=tags):
        mlflow.log_params(tracking.config_params(config, ("evaluate",)))
        dataset = log_dataset(test, config, "test", config.paths.test, "evaluation")
        mlflow.log_metrics(headline, model_id=model_id, dataset=dataset)
        for figure in figures:
            mlflow.log_artifact(str(figure), "plots")
        mlflow.log_artifact(str(reports / "model_card.md"))
        mlflow.log_dict({"slices": table}, "slices.json")
    for run_id in (trained["run_id"], trained["parent_run_id"]):
        with tracking.start_run(run_id=run_id):
            mlflow.log_metrics(headline)


def evaluate(config: Config, root: Path) -> dict:
    """Score the trained model on the test split: metrics with their interval, slices,
    plots and the model card, in ``reports/`` and MLflow."""
    import mlflow
    import mlflow.pyfunc

    from tabreg.evaluation import card, metrics, slices
    from tabreg.models.intervals import split_output
    from tabreg.resources import fit_threads, thread_budget
    from tabreg.store import tracking

    trained = read_json(root / config.paths.model_record, "train")
    tuning = read_json(root / config.paths.tuning, "tune")
    model = mlflow.pyfunc.load_model(str(root / config.paths.model))  # as it is served
    test = read_table(root / config.paths.test)
    test.attrs["md5"] = recorded_md5(root, config.paths.test)
    y = test[config.schema.target].to_numpy(dtype=float)
    with thread_budget(fit_threads(1)):
        pred, lower, upper = split_output(model.predict(test[list(config.schema.features)]))
    ev = config.evaluate
    scores = metrics.regression_metrics(y, pred)
    low, high = metrics.bootstrap_rmse(y, pred, n_resamples=ev.bootstrap,
                                       confidence=ev.confidence, seed=ev.seed)
    bounds = (lower, upper) if lower is not None and upper is not None else None
    table = slices.slice_table(test, y, pred, ev.slices, bounds=bounds)
    level = config.serve.interval if bounds is not None else None
    if bounds is not None:
        scores.update({f"interval_{k}": v for k, v in metrics.coverage(y, *bounds).items()})
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
        limitations=card.data_limitations(y, table, config.problem.rows, level),
        level=level)
    write_text(text, reports / "model_card.md")
    measured = {**{k: round(float(v), 4) for k, v in scores.items()},
                "rmse_low": round(low, 2), "rmse_high": round(high, 2),
                "best_cv_rmse": tuning["best_cv_rmse"]}
    # `dvc metrics show/diff` list this file: measurements only (settings are params).
    write_json(measured, reports / "metrics.json")
    result = {**measured, "confidence": ev.confidence, "family": trained["family"]}
    write_json(table, reports / "slices.json")
    shown = {"actual": y, "predicted": pred}
    if bounds is not None:
        shown.update(lower=bounds[0], upper=bounds[1])
    pd.DataFrame(shown).to_csv(reports / "predictions.csv", index=False)
    tracking.start(config, root)
    headline = {f"test_{k}": float(v) for k, v in scores.items() if k != "n"}
    headline.update(test_rmse_low=low, test_rmse_high=high)
    _log_evaluation(config, trained, test, headline, made, reports, table)
    log.info("evaluate: test RMSE %s (%.0f%% interval %s-%s)", card.number(scores["rmse"]),
             100 * ev.confidence, card.number(low), card.number(high))
    return result
