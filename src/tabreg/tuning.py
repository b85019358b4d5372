"""Hyper-parameter search: one Optuna study over model family, its parameters and the features.

Each trial is scored by K-fold cross-validation on the training split only (the test split is
never read here), reported fold by fold (and, for the MLP, epoch by epoch on the first fold) to a
median pruner. The study lives in persistent storage under a name derived from the data version
and the search space: rerunning after a crash resumes it, keeping every finished trial; a new
data version or a new space starts a new study. Trials whose process died are failed by
Optuna's heartbeat after a grace period, so several workers can share one PostgreSQL storage.

After the study, :func:`select_blend` tries a weighted average of the best trial of each family
(greedy ensemble selection with replacement on the trials' out-of-fold predictions, which cost
nothing extra): different families err differently, and the blend wins when it beats the best
single trial on the same cross-validation rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tabreg.config import Config, Range
from tabreg.errors import ConfigError, TabregError
from tabreg.models.candidates import Blend, Candidate, make_estimator, make_pipeline

log = logging.getLogger(__name__)

#: MLP epochs are reported at this offset + epoch, apart from the per-fold steps 0..k-1, so
#: the median pruner compares epochs with epochs and folds with folds.
EPOCH_STEP_OFFSET = 1000
#: Epochs before an MLP trial can be pruned (the first ones are noisy).
EPOCH_WARMUP = 5
FINISHED = ("COMPLETE", "PRUNED", "FAIL")


class TuningFailed(TabregError):
    """No trial of the study completed."""


def storage_url(config: Config, root: Path) -> str:
    return config.tune.storage or f"sqlite:///{(root / 'optuna.db').resolve()}"


def study_name(config: Config, data_version: str) -> str:
    """Same training data and same search space: same study (resumed); any change: a new one.
    ``data_version`` is the hash of the training split the trials are scored on."""
    space = {
        "tune": config.tune.model_dump(mode="json", by_alias=True,
                                       exclude={"n_trials", "timeout", "storage", "blend"}),
        "features": config.features.model_dump(mode="json"),
        "train": config.train.model_dump(mode="json", exclude={"device"}),
        "target": config.schema.target,
    }
    digest = hashlib.sha256(json.dumps(space, sort_keys=True).encode()).hexdigest()
    return f"{config.tracking.experiment}-{data_version[:10]}-{digest[:10]}"


def _suggest(trial: Any, name: str, spec: Range) -> Any:
    if spec.choices is not None:
        return trial.suggest_categorical(name, list(spec.choices))
    assert spec.low is not None and spec.high is not None
    if spec.int_:
        return trial.suggest_int(name, int(spec.low), int(spec.high), log=spec.log)
    return trial.suggest_float(name, float(spec.low), float(spec.high), log=spec.log)


def suggest(trial: Any, config: Config) -> Candidate:
    """Draw a candidate; parameter names are ``family``, ``features.x`` and ``<family>.x``."""
    space = config.tune.space
    family = trial.suggest_categorical("family", list(config.tune.families))
    features = {k: _suggest(trial, f"features.{k}", r)
                for k, r in space.get("features", {}).items()}
    params = {k: _suggest(trial, f"{family}.{k}", r) for k, r in space.get(family, {}).items()}
    return Candidate(family, features, params)


def check_space(config: Config) -> None:
    """Fail at start when a search-space name is not a parameter of its estimator."""
    from tabreg.features import build_preprocessor

    for family in config.tune.families:
        for name, spec in config.tune.space.get(family, {}).items():
            value = spec.choices[0] if spec.choices is not None else spec.low
            try:
                make_estimator(Candidate(family, {}, {name: value}), config)
            except TypeError:
                raise ConfigError(f"tune.space.{family}.{name}: not a parameter of the "
                                  f"{family} model") from None
    for name, spec in config.tune.space.get("features", {}).items():
        value = spec.choices[0] if spec.choices is not None else spec.low
        try:
            build_preprocessor(config.schema, config.features, **{name: value})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"tune.space.features.{name}: cannot be tuned ({exc}); the "
                              "feature parameters are n_clusters and gamma of features.geo"
                              ) from None


def _rmse(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred, dtype=float) - y) ** 2)))


def cross_validate(candidate: Candidate, config: Config, frame: pd.DataFrame,
                   report: Callable[[float, int], None] | None = None
                   ) -> tuple[list[float], np.ndarray]:
    """Fold RMSEs and out-of-fold predictions of ``candidate`` on ``frame``;
    ``report(value, step)`` may raise to prune."""
    from sklearn.model_selection import KFold

    y = frame[config.schema.target].to_numpy(dtype=float)
    folds = KFold(n_splits=config.tune.cv_folds, shuffle=True, random_state=config.tune.seed)
    scores: list[float] = []
    oof = np.full(len(frame), np.nan)
    for k, (fit_idx, val_idx) in enumerate(folds.split(frame)):
        pipeline = make_pipeline(candidate, config)
        fit_params = {}
        if candidate.family == "mlp" and report is not None and k == 0:
            def on_epoch(epoch: int, _loss: float, val_rmse: float) -> None:
                if epoch >= EPOCH_WARMUP and math.isfinite(val_rmse):
                    report(val_rmse, EPOCH_STEP_OFFSET + epoch)
            fit_params["model__epoch_callback"] = on_epoch
        pipeline.fit(frame.iloc[fit_idx], y[fit_idx], **fit_params)
        oof[val_idx] = pipeline.predict(frame.iloc[val_idx])
        scores.append(_rmse(y[val_idx], oof[val_idx]))
        if report is not None:
            report(float(np.mean(scores)), k)
    return scores, oof


def select_blend(members: list[tuple[Candidate, np.ndarray]], y: np.ndarray,
                 rounds: int = 20) -> tuple[list[float], float]:
    """Greedy ensemble selection with replacement (Caruana et al., 2004): repeatedly add the
    member whose addition most lowers the RMSE of the average. Returns weights and the RMSE."""
    predictions = np.stack([p for _, p in members])
    counts = np.zeros(len(members))
    total = np.zeros_like(y, dtype=float)
    for step in range(1, rounds + 1):
        trial = [(_rmse(y, (total + p) / step), i) for i, p in enumerate(predictions)]
        _, best = min(trial)
        counts[best] += 1
        total += predictions[best]
    weights = (counts / counts.sum()).tolist()
    return weights, _rmse(y, (predictions * np.array(weights)[:, None]).sum(axis=0))


@dataclass(frozen=True)
class TuneResult:
    study: str
    best: Candidate | Blend
    best_value: float
    trials: list[dict] = field(default_factory=list)
    importances: dict[str, float] = field(default_factory=dict)
    best_trial: int | None = None
    blend: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t["state"]] = out.get(t["state"], 0) + 1
        return out


def _storage(url: str) -> Any:
    import optuna

    if url.startswith("journal:"):  # journal:/path/file.log, for parallel workers on one host
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=90)


def _trial_record(t: Any) -> dict:
    return {"number": t.number, "state": t.state.name, "value": t.value,
            "family": t.params.get("family"), "params": t.params,
            "seconds": t.duration.total_seconds() if t.duration else None}


def tune(config: Config, train: pd.DataFrame, *, root: Path, data_version: str,
         parent_run_id: str | None = None) -> TuneResult:
    """Run (or resume) the study to ``tune.n_trials`` finished trials or ``tune.timeout``."""
    import mlflow
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = study_name(config, data_version)
    oof_dir = root / ".cache" / "oof" / name  # out-of-fold predictions, for the blend
    study = optuna.create_study(
        study_name=name, storage=_storage(storage_url(config, root)), load_if_exists=True,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=config.tune.seed, multivariate=True, group=True,
                                           n_startup_trials=min(10, config.tune.n_trials)),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0),
    )
    done = sum(t.state.name in FINISHED for t in study.trials)
    remaining = config.tune.n_trials - done
    log.info("tune: study %s has %d finished trials; running up to %d more", name, done,
             max(remaining, 0))

    def objective(trial: optuna.Trial) -> float:
        candidate = suggest(trial, config)
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=parent_run_id is not None,
                              parent_run_id=parent_run_id) as run:
            mlflow.set_tags({"kind": "trial", "study": name, "trial": trial.number,
                             "family": candidate.family})
            mlflow.log_params(candidate.flat())
            trial.set_user_attr("mlflow_run_id", run.info.run_id)

            def report(value: float, step: int) -> None:
                trial.report(value, step)
                if step < EPOCH_STEP_OFFSET:
                    mlflow.log_metric("cv_rmse_running", value, step=step)
                else:  # the MLP's learning curve on the first fold
                    mlflow.log_metric("fold0_val_rmse", value, step=step - EPOCH_STEP_OFFSET)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at step {step} (rmse {value:,.0f})")

            started = time.perf_counter()
            try:
                scores, oof = cross_validate(candidate, config, train, report)
            except optuna.TrialPruned:
                mlflow.set_tag("state", "pruned")
                raise
            except Exception as exc:
                mlflow.set_tag("state", "failed")
                mlflow.set_tag("error", f"{type(exc).__name__}: {exc}"[:5000])
                raise
            value = float(np.mean(scores))
            mlflow.log_metrics({"cv_rmse": value, "cv_rmse_std": float(np.std(scores)),
                                "seconds": time.perf_counter() - started})
            mlflow.set_tag("state", "complete")
            oof_dir.mkdir(parents=True, exist_ok=True)
            np.save(oof_dir / f"{trial.number}.npy", oof)
            return value

    if remaining > 0:
        study.optimize(objective, n_trials=remaining, timeout=config.tune.timeout,
                       catch=(Exception,), gc_after_trial=True)
    trials = [_trial_record(t) for t in study.trials]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not complete:
        errors = {t.number: t.system_attrs.get("fail_reason", "") for t in study.trials
                  if t.state.name == "FAIL"}
        raise TuningFailed(f"study {name}: no trial completed ({len(study.trials)} trials; "
                           f"failures: {errors or 'none'}); see the MLflow trial runs")
    importances: dict[str, float] = {}
    if len(complete) >= 3:
        try:
            importances = {k: float(v) for k, v in
                           optuna.importance.get_param_importances(study).items()}
        except (RuntimeError, ValueError) as exc:  # too few distinct values, for one
            log.warning("tune: parameter importances unavailable: %s", exc)
    best = study.best_trial
    single = Candidate.from_flat(best.params)
    y = train[config.schema.target].to_numpy(dtype=float)
    chosen, value, blend = single, float(best.value), _blend(study, oof_dir, y, config)
    if blend and blend["chosen"]:
        chosen, value = blend.pop("candidate"), blend["cv_rmse"]
    blend.pop("candidate", None)
    return TuneResult(name, chosen, value, trials, importances, best.number, blend)


def _blend(study: Any, oof_dir: Path, y: np.ndarray, config: Config) -> dict[str, Any]:
    """The blend of the best trial of each family, and whether it beats the best trial."""
    if not config.tune.blend:
        return {}
    best_of: dict[str, Any] = {}
    for t in study.trials:
        if t.state.name != "COMPLETE":  # running, pruned or failed trials have no value
            continue
        family = t.params.get("family")
        path = oof_dir / f"{t.number}.npy"
        better = family not in best_of or t.value < best_of[family].value
        if better and path.exists() and len(np.load(path, mmap_mode="r")) == len(y):
            best_of[family] = t  # scored on these rows
    if len(best_of) < 2:
        return {}
    trials = sorted(best_of.values(), key=lambda t: t.value)
    members = [(Candidate.from_flat(t.params), np.load(oof_dir / f"{t.number}.npy"))
               for t in trials]
    single = _rmse(y, members[0][1])
    weights, rmse = select_blend(members, y)
    kept = [(m, w) for (m, _), w in zip(members, weights, strict=True) if w > 0]
    chosen = len(kept) > 1 and rmse < single
    log.info("tune: blend of %s: OOF RMSE %.0f vs best trial %.0f (%s)",
             [f"{t.number}:{t.params['family']}" for t in trials], rmse, single,
             "chosen" if chosen else "not chosen")
    return {"trials": [t.number for t, w in zip(trials, weights, strict=True) if w > 0],
            "weights": [w for _, w in kept], "cv_rmse": rmse, "best_trial_oof_rmse": single,
            "chosen": chosen,
            "candidate": Blend(tuple(m for m, _ in kept), tuple(w for _, w in kept))}
