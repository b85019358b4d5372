"""What a run logs as its configuration: the values in force, readable, and only what applies."""

from tabreg.config import load_config
from tabreg.store import tracking
from tests.conftest import ROOT

CONFIG = load_config(ROOT / "params.yaml", env={})
SECTIONS = ("data", "schema", "split", "features", "tune", "train")


def test_params_are_the_configuration_in_force_without_nulls():
    params = tracking.config_params(CONFIG, SECTIONS)
    assert "null" not in params.values() and "None" not in params.values()
    assert not [k for k in params if k.startswith("tune.space.")
                and k.endswith((".low", ".high", ".choices", ".log", ".int"))]
    assert params["tune.space.random_forest.n_estimators"] == "int [100, 300]"
    assert params["tune.space.hist_gradient_boosting.learning_rate"] == "log [0.02, 0.2]"
    assert params["tune.space.mlp.width"] == "one of [64, 128, 256, 512]"
    assert params["split.test_size"] == "0.2" and params["profile"] == CONFIG.profile
    assert params["features.ratios.bedrooms_ratio"] == \
        '{"numerator": "total_bedrooms", "denominator": "total_rooms"}'
    assert len(params) < 70  # was 123: every field of every range, nulls included


def test_mlp_settings_only_where_an_mlp_trains():
    with_mlp = tracking.config_params(CONFIG, SECTIONS)
    without = tracking.config_params(CONFIG, SECTIONS, mlp=False)
    assert with_mlp["train.max_epochs"] == str(CONFIG.train.max_epochs)
    assert not [k for k in without if k.startswith(("train.", "tune.space.mlp."))]
    # Families that are not tuned have no search space in the params either.
    trees = CONFIG.model_copy(update={"tune": CONFIG.tune.model_copy(
        update={"families": ("random_forest",)})})
    params = tracking.config_params(trees, ("tune",))
    assert {k.split(".")[2] for k in params if k.startswith("tune.space.")} == \
        {"features", "random_forest"}


def test_evaluation_settings_are_params():
    params = tracking.config_params(CONFIG, ("evaluate",))
    assert params["evaluate.bootstrap"] == str(CONFIG.evaluate.bootstrap)
    assert params["evaluate.confidence"] == str(CONFIG.evaluate.confidence)
    assert {f"evaluate.slices.{s.name}" for s in CONFIG.evaluate.slices} <= set(params)


def test_a_storage_password_is_not_logged():
    shared = CONFIG.model_copy(update={"tune": CONFIG.tune.model_copy(
        update={"storage": "postgresql://optuna:s3cret@db.example:5432/optuna"})})
    assert "s3cret" not in tracking.config_params(shared, ("tune",))["tune.storage"]
