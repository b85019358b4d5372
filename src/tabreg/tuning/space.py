"""The search space: what a trial draws, how a study is named, and checks made before work.

A trial draws the model family, then that family's parameters and the feature parameters;
parameter names are ``family``, ``features.<name>`` and ``<family>.<name>``, the same names the
candidate is logged under, so a trial's parameters rebuild its candidate exactly.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tabreg.config import Config, Range
from tabreg.errors import ConfigError
from tabreg.models.candidates import Candidate, make_estimator


def study_name(config: Config, data_version: str) -> str:
    """Same training data and same search space: same study (resumed); any change: a new one.
    ``data_version`` is the hash of the training split the trials are scored on. The budget,
    the guard, the storage and the workers do not name the study: changing them resumes it."""
    space = {
        "tune": config.tune.model_dump(mode="json", by_alias=True,
                                       exclude={"n_trials", "timeout", "storage", "blend",
                                                "blend_top", "workers", "oversubscribe",
                                                "launcher"}),
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


def family_schedule(families: tuple[str, ...], weights: dict[str, float] | None,
                    n: int) -> list[str | None]:
    """The family fixed for each of the first ``n`` trial numbers (None: the sampler picks).

    One trial of each family comes first, so that a study the time guard stops early has
    tried them all. Then, with ``weights``, the families take turns in proportion to their
    weights (each next trial to the family furthest below its share, so any prefix of the
    budget keeps the shares). Left to itself, TPE settles on the family with the best early
    trials and gives the others a handful of trials each, too few for it to learn their
    spaces, while the blend wants each family tuned well. Without weights the sampler picks,
    as in a plain Optuna study.
    """
    order: list[str | None] = list(families[:n])
    if weights is None:
        return order + [None] * (n - len(order))
    total = sum(weights[f] for f in families)
    given = {f: order.count(f) for f in families}
    while len(order) < n:
        # The family furthest below its share of the trials so far (the first of equals).
        due = len(order) + 1
        chosen = max(families, key=lambda f: weights[f] * due / total - given[f])
        given[chosen] += 1
        order.append(chosen)
    return order


def check_space(config: Config) -> None:
    """Fail at start when a search-space name is not a parameter of its estimator."""
    from tabreg.models.features import build_preprocessor

    for family in config.tune.families:
        for name, spec in config.tune.space.get(family, {}).items():
            value = spec.choices[0] if spec.choices is not None else spec.low
            try:
                make_estimator(Candidate(family, {}, {name: value}), config)
            except TypeError:
                raise ConfigError(f"tune.space.{family}.{name}: not a parameter of the "
                                  f"{family} model") from None
    for name, spec in config.tune.space.get("features", {}).items():
        override: dict[str, Any] = {name: spec.choices[0] if spec.choices is not None
                                    else spec.low}
        try:
            build_preprocessor(config.schema, config.features, **override)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"tune.space.features.{name}: cannot be tuned ({exc}); the "
                              "feature parameters are n_clusters and gamma of features.geo"
                              ) from None
