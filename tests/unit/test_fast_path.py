"""The serving fast path computes what the fitted model computes: every family, a blend of
members with different features, the interval's difficulty model, missing values and
categories never seen in training, one row or many."""

from __future__ import annotations

import numpy as np
import pandas as pd
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
                        (features.iloc[[5]], run), (features.head(fast.SMALL), run)):
        pred, lower, upper = score(rows)
        expected = slow.loc[rows.index]
        np.testing.assert_allclose(pred, expected["prediction"], rtol=1e-6)
        np.testing.assert_allclose(lower, expected["lower"], rtol=1e-6)
        np.testing.assert_allclose(upper, expected["upper"], rtol=1e-6)
    # A small request's columns as the quick input check hands them over, without a frame.
    pred, lower, _ = shared(fast._columns(features.head(5)))
    np.testing.assert_allclose(pred, slow["prediction"].head(5), rtol=1e-6)
    np.testing.assert_allclose(lower, slow["lower"].head(5), rtol=1e-6)


@pytest.mark.parametrize("family", ["forest", "boosting"])
def test_trees_that_learnt_missing_values_send_them_the_same_way(family):
    """Trees fitted on missing values (the project's pipelines impute before the trees, but
    a walk of the trees must not depend on that) route them as scikit-learn does, in a small
    request (all trees walked at once) and a large one (scikit-learn's loops)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
    from sklearn.pipeline import Pipeline

    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 3))
    y = X[:, 0] * 3 + np.where(np.isnan(X[:, 1]), 5.0, X[:, 1]) + rng.normal(size=600)
    X[rng.random(X.shape) < 0.2] = np.nan
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    model = (RandomForestRegressor(n_estimators=12, random_state=0) if family == "forest"
             else HistGradientBoostingRegressor(max_iter=40, random_state=0))
    pipeline = Pipeline([("features", ColumnTransformer([("all", "passthrough", ["a", "b",
                                                                                 "c"])])),
                         ("model", model)]).fit(frame, y)
    run = fast.compile_estimator(pipeline)
    columns = {name: frame[name].to_numpy() for name in frame}
    for rows in (slice(0, 5), slice(0, fast.SMALL), slice(0, 600)):
        part = {name: values[rows] for name, values in columns.items()}
        np.testing.assert_allclose(run(part), pipeline.predict(frame.iloc[rows]), rtol=1e-9)


def test_a_constant_interval_and_a_model_without_one(train, new_rows):
    model = fitted(MEMBERS[1], train, scale="constant")
    features = checked(model, new_rows)
    pred, lower, _ = fast.compile_model(model)(features)
    np.testing.assert_allclose(pred - lower, model.quantile_)
    bare = fast.compile_model(model.estimator)(features)
    np.testing.assert_allclose(bare[0], model.estimator.predict(features), rtol=1e-9)
    assert bare[1] is None and bare[2] is None
    mlp = fitted(MEMBERS[2], train).estimator  # no trees to walk at all
    for rows in (features.head(3), features):
        np.testing.assert_allclose(fast.compile_model(mlp)(rows)[0], mlp.predict(rows),
                                   rtol=1e-6)


def test_an_unknown_step_is_refused_not_approximated(train):
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline

    pipeline = make_pipeline(MEMBERS[1], CONFIG)
    odd = Pipeline([("features", pipeline.steps[0][1]), ("model", Ridge())])
    odd.fit(train[FEATURES], train[SCHEMA.target])
    with pytest.raises(fast.NotCompiled, match="Ridge"):
        fast.compile_model(odd)
