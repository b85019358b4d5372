"""The tune stage: the Optuna study, in the pipeline's MLflow parent run (every param, git
commit, data version, the training data as an input) with one nested run per trial.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from tabreg.config import ROW_ID, Config
from tabreg.io import read_table, write_json, write_table
from tabreg.orchestration.dvc_stages import recorded_md5
from tabreg.orchestration.preflight import preflight
from tabreg.steps import reports_dir
from tabreg.steps.records import MODEL_SECTIONS, data_version_of, log_dataset

log = logging.getLogger(__name__)


def tune(config: Config, root: Path) -> dict:
    """Run the study in the pipeline's parent MLflow run and record its result."""
    import mlflow

    from tabreg import tuning
    from tabreg.evaluation import card
    from tabreg.models.intervals import OOF
    from tabreg.store import tracking

    preflight(config, root)
    tracking.start(config, root)
    train = read_table(root / config.paths.train)
    version = data_version_of(config, root)
    train.attrs["md5"] = recorded_md5(root, config.paths.train)
    tags = {"kind": "pipeline", "git_commit": tracking.git_commit(root), "data_version": version,
            "profile": config.profile, "split.strategy": config.split.strategy}
    with tracking.start_run(run_name=f"pipeline-{version[:8]}", tags=tags) as parent:
        mlflow.log_params(tracking.config_params(config, MODEL_SECTIONS,
                                                 mlp="mlp" in config.tune.families))
        log_dataset(train, config, "train", config.paths.train, "training")
        started = time.perf_counter()
        # The study is keyed on the training split it scores (a new split is a new study).
        result = tuning.tune(config, root, parent_run_id=parent.info.run_id)
        seconds = time.perf_counter() - started
        _record_study(config, root, result, seconds)
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
    # What the prediction intervals are calibrated on (the train stage): the chosen
    # candidate's predictions for rows its fold models did not see.
    write_table(pd.DataFrame({ROW_ID: train[ROW_ID].to_numpy(), OOF: result.oof}),
                root / config.paths.oof)
    write_json(summary, root / config.paths.tuning)
    log.info("tune: best %s, CV RMSE %s (%s)", result.best.family,
             card.number(result.best_value),
             ", ".join(f"{n} {state.lower()}" for state, n in result.counts().items()))
    return summary


def _record_study(config: Config, root: Path, result: Any, seconds: float) -> None:
    """The study in ``reports/tuning/`` (trials, summary, plots) and in the open parent run."""
    import mlflow

    from tabreg.evaluation import plots

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
