"""The serving fast path computes what the fitted model computes: every family, a blend of
members with different features, the interval's difficulty model, missing values and
categories never seen in training, one row or many."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_predict

from tabreg.config import load_config
from tabreg.data import synthetic
from tabreg.models.candidates import Blend, Candidate, make_pipeline
from tabreg.models.intervals import ConformalRegressor
from tabreg.serving import fast, scoring
from tests.conftest import ROOT

CONFIG = load_config(ROOT / "params.yaml", env={})
SCHEMA = CONFIG.schema
FEATURES = list(SCHEMA.features)
MEMBERS = (Candidate("random_forest", {"n_clusters": 4}, {"n_estimators": 15}),
           Candidate("hist_gradient_boosting", {"n_clusters": 6, "gamma": 0.5},
                     {"max_iter": 30}),
           Candidate("mlp", {}, {"depth": 1, "width": 16}))


@pytest.fixture(scope="module")
def train():
    return synthetic.generate(1500, seed=3)


@pytest.fixture(scope="module")
def new_rows():
    """Rows the model never saw, with missing values and an unknown category, as the server
    checks them."""
    frame = synthetic.generate(400, seed=4)[FEATURES]
    frame.loc[::7, "total_bedrooms"] = np.nan
    frame.loc[::11, "ocean_proximity"] = "LAKESIDE"
    frame.loc[::13, "ocean_proximity"] = None
    return frame


def fitted(candidate, train, scale="difficulty"):
    config = CONFIG.model_copy(update={"train": CONFIG.train.model_copy(
        update={"max_epochs": 3})})
    pipeline = make_pipeline(candidate, config)
    X, y = train[FEATURES], train[SCHEMA.target].to_numpy(dtype=float)
    oof = cross_val_predict(clone(pipeline), X, y, cv=2)
    return ConformalRegressor(pipeline.fit(X, y), SCHEMA.numeric, SCHEMA.categorical,
                              scale=scale).calibrate(X, y, oof)


def checked(model, frame):
    return scoring.check_frame(frame, scoring.spec_for(model, SCHEMA)).features


@pytest.mark.parametrize("candidate", [*MEMBERS, Blend(MEMBERS, (0.5, 0.3, 0.2))],
                         ids=["forest", "boosting", "mlp", "blend"])
def test_the_fast_path_equals_the_model(candidate, train, new_rows):
    model = fitted(candidate, train)
    features = checked(model, new_rows)
    slow = model.predict_interval(features)
    run, shared = fast.compile_model(model), fast.compile_model(model, threads=3)
    # 1e-6 relative, the bound: the MLP computes in float32, where a batch of one row
    # and one of 400 take different kernels (about 1e-8 apart); the trees agree to 1e-12.
    # A request of SPLIT rows or more, shared by three threads, gives the same numbers.
    assert len(features) >= fast.SPLIT
    for rows, score in ((features, run), (features, shared), (features.head(1), shared),
                        (features.iloc[[5]], run)):
        pred, lower, upper = score(rows)
        expected = slow.loc[rows.index]
        np.testing.assert_allclose(pred, expected["prediction"], rtol=1e-6)
        np.testing.assert_allclose(lower, expected["lower"], rtol=1e-6)
        np.testing.assert_allclose(upper, expected["upper"], rtol=1e-6)


def test_a_constant_interval_and_a_model_without_one(train, new_rows):
    model = fitted(MEMBERS[1], train, scale="constant")
    features = checked(model, new_rows)
    pred, lower, _ = fast.compile_model(model)(features)
    np.testing.assert_allclose(pred - lower, model.quantile_)
    bare = fast.compile_model(model.estimator)(features)
    np.testing.assert_allclose(bare[0], model.estimator.predict(features), rtol=1e-9)
    assert bare[1] is None and bare[2] is None


def test_an_unknown_step_is_refused_not_approximated(train):
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline

    pipeline = make_pipeline(MEMBERS[1], CONFIG)
    odd = Pipeline([("features", pipeline.steps[0][1]), ("model", Ridge())])
    odd.fit(train[FEATURES], train[SCHEMA.target])
    with pytest.raises(fast.NotCompiled, match="Ridge"):
        fast.compile_model(odd)
