"""Candidate model families, each a scikit-learn Pipeline from the raw table to a prediction.

A candidate is (family, feature parameters, model parameters). The same function builds it for
an Optuna trial, for the final refit and for the logged MLflow model, so what was tuned is what
ships. The preprocessing sits inside the pipeline: a fitted candidate takes the raw columns.
A :class:`Blend` is a weighted average of candidates chosen after the study (see
``tuning.select_blend``); each member keeps its own preprocessing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from tabreg.config import FAMILIES, Config


@dataclass(frozen=True)
class Candidate:
    """One point of the search space."""

    family: str
    features: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def flat(self) -> dict[str, Any]:
        """As logged: ``family``, ``features.<name>``, ``<family>.<name>``."""
        out: dict[str, Any] = {"family": self.family}
        out.update({f"features.{k}": v for k, v in self.features.items()})
        out.update({f"{self.family}.{k}": v for k, v in self.params.items()})
        return out

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> Candidate:
        family = flat["family"]
        features = {k.split(".", 1)[1]: v for k, v in flat.items() if k.startswith("features.")}
        params = {k.split(".", 1)[1]: v for k, v in flat.items() if k.startswith(f"{family}.")}
        return cls(family, features, params)


@dataclass(frozen=True)
class Blend:
    """A weighted average of candidates' predictions (weights sum to 1)."""

    members: tuple[Candidate, ...]
    weights: tuple[float, ...]
    family: str = "blend"

    def flat(self) -> dict[str, Any]:
        return {"family": self.family,
                "blend.members": json.dumps([m.flat() for m in self.members]),
                "blend.weights": json.dumps([round(w, 6) for w in self.weights])}


def from_flat(flat: dict[str, Any]) -> Candidate | Blend:
    """Inverse of ``flat()`` for either kind."""
    if flat["family"] == "blend":
        members = tuple(Candidate.from_flat(m) for m in json.loads(flat["blend.members"]))
        return Blend(members, tuple(json.loads(flat["blend.weights"])))
    return Candidate.from_flat(flat)


def make_estimator(candidate: Candidate, config: Config, *, n_jobs: int = 1) -> BaseEstimator:
    """The model part of a candidate, seeded from the configuration. ``n_jobs`` is the fit's
    share of the cores (``tabreg.resources``); it stays in the saved model, where 1 suits
    serving (starting threads costs more than a few rows' prediction)."""
    seed = config.tune.seed
    params = dict(candidate.params)
    if candidate.family == "random_forest":
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(random_state=seed, n_jobs=n_jobs, **params)
    if candidate.family == "hist_gradient_boosting":
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(random_state=seed, early_stopping=False, **params)
    if candidate.family == "mlp":
        from tabreg.models.mlp import TorchMLPRegressor

        train = config.train
        return TorchMLPRegressor(max_epochs=train.max_epochs, patience=train.patience,
                                 validation_fraction=train.validation_fraction,
                                 device=train.device, random_state=train.seed, **params)
    raise ValueError(f"unknown model family {candidate.family!r}; expected one of {FAMILIES}")


def make_pipeline(candidate: Candidate | Blend, config: Config, *,
                  n_jobs: int = 1) -> BaseEstimator:
    """Preprocessing (the book's features, with the candidate's overrides) + the model; for a
    blend, sklearn's VotingRegressor over one such pipeline per member."""
    from tabreg.models.features import build_preprocessor

    if isinstance(candidate, Blend):
        from sklearn.ensemble import VotingRegressor

        members = [(f"{m.family}_{i}", make_pipeline(m, config, n_jobs=n_jobs))
                   for i, m in enumerate(candidate.members)]
        return VotingRegressor(members, weights=list(candidate.weights))

    preprocessor = build_preprocessor(config.schema, config.features, **candidate.features)
    return Pipeline([("features", preprocessor),
                     ("model", make_estimator(candidate, config, n_jobs=n_jobs))])
