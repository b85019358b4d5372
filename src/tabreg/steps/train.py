"""The train stage: the chosen candidate fitted on the whole training split, in a nested MLflow
run holding the model and its learning curve.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tabreg.config import ROW_ID, Config
from tabreg.errors import TabregError
from tabreg.io import read_table, write_json
from tabreg.orchestration.dvc_stages import recorded_md5
from tabreg.steps import reports_dir
from tabreg.steps.records import log_dataset, read_json

log = logging.getLogger(__name__)


def _save_model_dir(model: Any, dest: Path, **kwargs: Any) -> None:
    """Save an MLflow model folder next to ``dest`` and swap it in (never half a model)."""
    from tabreg.models import pyfunc

    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}")
    try:
        pyfunc.save_model(model, str(tmp), **kwargs)
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


def _with_intervals(pipeline: Any, config: Config, root: Path, frame: Any) -> Any:
    """The fitted pipeline with its prediction intervals, calibrated on the study's
    out-of-fold predictions of the same candidate (``tabreg.models.intervals``)."""
    from tabreg.models.intervals import OOF, ConformalRegressor

    oof = read_table(root / config.paths.oof)
    if len(oof) != len(frame) or not (oof[ROW_ID].to_numpy() == frame[ROW_ID].to_numpy()).all():
        raise TabregError(f"{config.paths.oof} does not hold one prediction for each row of "
                          f"{config.paths.train} in its order ({len(oof)} vs {len(frame)} "
                          "rows): rerun the tune stage (`dvc repro tune`)")
    schema = config.schema
    model = ConformalRegressor(pipeline, schema.numeric, schema.categorical,
                               level=config.serve.interval, scale=config.serve.interval_scale,
                               random_state=config.train.seed)
    try:
        return model.calibrate(frame[list(schema.features)],
                               frame[schema.target].to_numpy(dtype=float),
                               oof[OOF].to_numpy(dtype=float))
    except ValueError as exc:
        raise TabregError(f"prediction intervals: {exc} ({config.paths.oof})") from None


def _calibrated(pipeline: Any, config: Config, root: Path, frame: Any,
                threads: int) -> Any:
    """The fitted pipeline with its prediction intervals, their settings and calibration
    logged to the training run."""
    import mlflow

    from tabreg.resources import thread_budget

    with thread_budget(threads):
        model = _with_intervals(pipeline, config, root, frame)
    mlflow.log_params({"serve.interval": config.serve.interval,
                       "serve.interval_scale": config.serve.interval_scale})
    mlflow.log_metrics({"interval_quantile": model.quantile_,
                        "interval_calibration_coverage": model.calibration_coverage_})
    return model


def train(config: Config, root: Path) -> dict:
    """Fit the chosen candidate on the whole training split and save it as an MLflow model."""
    import mlflow

    from tabreg.models import pyfunc
    from tabreg.models.candidates import from_flat, make_pipeline
    from tabreg.resources import fit_threads, thread_budget
    from tabreg.store import tracking

    tuning = read_json(root / config.paths.tuning, "tune")
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
        log_dataset(frame, config, "train", config.paths.train, "training")
        started = time.perf_counter()
        with thread_budget(threads, with_torch=mlp):
            pipeline.fit(X, y)
        seconds = time.perf_counter() - started
        history = _history(pipeline)
        for h in history:
            mlflow.log_metrics({"train_loss": h["train_loss"], "val_rmse": h["val_rmse"]},
                               step=int(h["epoch"]))
        model = _calibrated(pipeline, config, root, frame, threads)
        model_kwargs = {"input_example": X.head(5),
                        "code_paths": [str(Path(__file__).resolve().parents[1])],
                        "pip_requirements":
                            pyfunc.requirements(_family_requirements(candidate))}
        # Named as it is registered, so the model's page and the version's agree.
        info = pyfunc.log_model(model, name=config.registry.model_name, **model_kwargs)
        mlflow.log_metric("fit_seconds", seconds)
        _save_model_dir(model, root / config.paths.model, **model_kwargs)
    write_json(history, reports_dir(config, root) / "learning_curve.json")
    summary = {"run_id": run.info.run_id, "parent_run_id": tuning["parent_run_id"],
               "model_uri": info.model_uri, "family": candidate.family,
               "params": candidate.flat(), "fit_seconds": round(seconds, 2),
               "epochs": len(history), "data_version": tuning["data_version"],
               "interval": {"level": config.serve.interval, "scale": config.serve.interval_scale,
                            "quantile": model.quantile_,
                            "calibration_rows": model.n_calibration_,
                            "calibration_coverage": round(model.calibration_coverage_, 4)},
               "trained_at": datetime.now(UTC).isoformat(timespec="seconds")}
    write_json(summary, root / config.paths.model_record)
    log.info("train: %s refit on %d rows in %.1f s", candidate.family, len(frame), seconds)
    return summary
