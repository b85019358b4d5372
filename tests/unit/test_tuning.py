"""Tuning: the search space, study identity, early failures, the budget and the blend."""


import numpy as np
import optuna
import pytest
import yaml

from tabreg.config import load_config, parse_config
from tabreg.errors import ConfigError
from tabreg.models.candidates import Candidate
from tabreg.tuning import check_space, storage_url, study_name, suggest
from tabreg.tuning.space import family_schedule
from tabreg.tuning.study import claim, decode_oof, encode_oof, ensure_budget, open_storage
from tests.conftest import ROOT

CONFIG = load_config(ROOT / "params.yaml", env={})


def config_with(**tune) -> object:
    tree = CONFIG.model_dump(mode="json", by_alias=True, exclude={"profile"})
    tree["tune"].update(tune)
    return parse_config(tree, env={})


def test_suggest_draws_family_features_and_that_familys_params_only():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    families = set()
    for _ in range(30):
        trial = study.ask()
        candidate = suggest(trial, CONFIG)
        families.add(candidate.family)
        assert set(candidate.features) == {"n_clusters", "gamma"}
        assert set(candidate.params) == set(CONFIG.tune.space[candidate.family])
        assert all(k.startswith(("family", "features.", candidate.family)) for k in trial.params)
        assert 5 <= candidate.features["n_clusters"] <= 60
        study.tell(trial, 1.0)
    assert families == {"random_forest", "hist_gradient_boosting", "mlp"}


def test_candidate_round_trips_through_its_flat_form():
    c = Candidate("mlp", {"n_clusters": 7}, {"width": 64, "log_target": True})
    assert Candidate.from_flat(c.flat()) == c


def test_study_name_follows_data_and_space_not_budget():
    base = study_name(CONFIG, "abc123")
    assert study_name(CONFIG, "abc123") == base
    assert study_name(CONFIG, "def456") != base
    assert study_name(config_with(n_trials=999, timeout=5), "abc123") == base
    assert study_name(config_with(cv_folds=5), "abc123") != base


def test_storage_defaults_to_a_journal_file_in_the_project(tmp_path):
    assert storage_url(CONFIG, tmp_path) == f"journal:{tmp_path.resolve()}/optuna.journal"
    env_config = load_config(ROOT / "params.yaml", env={"OPTUNA_STORAGE": "postgresql://h/db"})
    assert storage_url(env_config, tmp_path) == "postgresql://h/db"


def test_an_unreachable_database_is_named_without_its_password():
    with pytest.raises(ConfigError, match=r"postgresql://u:\*\*\*@127\.0\.0\.1:9/db cannot be"):
        open_storage("postgresql://u:secret@127.0.0.1:9/db")


def test_budget_is_created_up_front_with_every_family_first():
    study = optuna.create_study()
    schedule = family_schedule(("random_forest", "mlp"), None, 7)
    assert ensure_budget(study, 5, schedule) == 5
    fixed = [t.system_attrs.get("fixed_params") for t in study.trials]
    assert fixed == [{"family": "random_forest"}, {"family": "mlp"}, {}, {}, {}]
    assert ensure_budget(study, 5, schedule) == 5  # idempotent
    first = claim(study, budget=5)
    assert first.number == 0
    assert claim(study, budget=1) is None  # trial 0 taken; trial 1 is beyond this budget
    assert ensure_budget(study, 7, schedule) == 6


def test_family_weights_share_the_budget_in_any_prefix():
    families = ("random_forest", "hist_gradient_boosting", "mlp")
    schedule = family_schedule(families, {"random_forest": 3, "hist_gradient_boosting": 3,
                                          "mlp": 1}, 50)
    assert schedule[:3] == list(families)  # one of each first, whatever the weights
    counts = {f: schedule.count(f) for f in families}
    assert counts == {"random_forest": 22, "hist_gradient_boosting": 21, "mlp": 7}
    ten = schedule[:10]
    assert {f: ten.count(f) for f in families} == {"random_forest": 4,
                                                   "hist_gradient_boosting": 4, "mlp": 2}
    lopsided = family_schedule(families, {"random_forest": 10, "hist_gradient_boosting": 10,
                                          "mlp": 0.5}, 3)
    assert lopsided == list(families)
    study = optuna.create_study()
    ensure_budget(study, 6, schedule)
    assert [t.system_attrs["fixed_params"]["family"] for t in study.trials] == schedule[:6]


def _tune_config(**tune):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["tune"].update(tune)
    return parse_config(raw, env={}, origin="test")


def test_family_weights_name_real_families_and_starve_none():
    with pytest.raises(ConfigError, match=r"family_weights: \['mlp'\] would get no trials"):
        _tune_config(family_weights={"random_forest": 1, "hist_gradient_boosting": 1})
    with pytest.raises(ConfigError, match=r"family_weights: \['forest'\] are not model fam"):
        _tune_config(family_weights={"forest": 1, "random_forest": 1,
                                     "hist_gradient_boosting": 1, "mlp": 1})
    # A profile that narrows the families keeps the weights of the others, unused.
    narrowed = _tune_config(families=["random_forest"],
                            family_weights={"random_forest": 1, "mlp": 1})
    assert family_schedule(narrowed.tune.families, narrowed.tune.family_weights, 3) == \
        ["random_forest"] * 3


def test_out_of_fold_predictions_survive_the_storage():
    values = np.random.default_rng(0).normal(200_000, 80_000, 1000)
    np.testing.assert_allclose(decode_oof(encode_oof(values)), values, rtol=1e-6)


@pytest.mark.parametrize(
    ("tune", "message"),
    [
        ({"families": []}, r"search space is empty"),
        ({"families": ["xgboost"]}, r"tune\.families\.0: Input should be 'random_forest'"),
        ({"space": {"mlp": {"width": {"low": 9, "high": 3}}}}, r"low \(9\.0\) is greater"),
        ({"space": {"mlp": {"width": {"choices": []}}}}, r"choices must not be empty"),
        ({"space": {"svm": {}}}, r"space\.svm: unknown group"),
        ({"space": {"mlp": {"dropout": {"low": 0, "high": 1, "log": True}}}}, r"log range"),
    ],
)
def test_inconsistent_spaces_fail_at_load(tune, message):
    with pytest.raises(ConfigError, match=message):
        config_with(**tune)


def test_unknown_parameter_names_fail_before_any_work():
    config = config_with(space={"random_forest": {"n_trees": {"low": 1, "high": 3}}})
    with pytest.raises(ConfigError, match=r"tune\.space\.random_forest\.n_trees: not a param"):
        check_space(config)
    check_space(CONFIG)


def test_blend_selection_averages_members_that_err_differently():
    from tabreg.tuning import select_blend

    rng = np.random.default_rng(0)
    y = rng.normal(200_000, 50_000, 4000)
    noise = rng.normal(0, 30_000, 4000)
    a, b = y + noise, y - noise + rng.normal(0, 5_000, 4000)  # opposite errors
    junk = y + rng.normal(0, 90_000, 4000)
    members = [(Candidate("random_forest"), a), (Candidate("mlp"), b),
               (Candidate("hist_gradient_boosting"), junk)]
    weights, rmse = select_blend(members, y)
    assert weights[2] == 0 and abs(weights[0] - weights[1]) <= 0.2
    assert sum(weights) == pytest.approx(1)
    assert rmse < 0.5 * min(np.sqrt(np.mean((a - y) ** 2)), np.sqrt(np.mean((b - y) ** 2)))


def test_blend_chooses_among_the_best_few_trials_of_each_family_only():
    from tabreg.tuning.blend import blend_of_best
    from tabreg.tuning.study import ATTR_OOF

    rng = np.random.default_rng(1)
    y = rng.normal(200_000, 50_000, 3000)
    dist = optuna.distributions.CategoricalDistribution(["random_forest", "mlp"])

    def frozen(family, oof, state=optuna.trial.TrialState.COMPLETE):
        value = float(np.sqrt(np.mean((oof - y) ** 2)))
        return optuna.trial.create_trial(
            params={"family": family}, distributions={"family": dist},
            value=value if state.is_finished() else None, state=state,
            user_attrs={ATTR_OOF: encode_oof(oof)})

    def errs(scale):
        return y + rng.normal(0, scale, len(y))

    forests = [frozen("random_forest", errs(20_000 + 1_000 * i)) for i in range(5)]
    mlps = [frozen("mlp", errs(21_000 + 1_000 * i)) for i in range(4)]
    pruned = frozen("mlp", errs(1_000), optuna.trial.TrialState.PRUNED)  # no value: left out
    trials = [*forests, *mlps, pruned]
    for i, t in enumerate(trials):
        t.number = i
    blend = blend_of_best(trials, y, config_with(blend_top=2))
    assert blend["chosen"] and len(blend["trials"]) >= 3  # several of a family, not one
    assert set(blend["trials"]) <= {0, 1, 5, 6}  # the best two of each family, nothing else
    assert blend["cv_rmse"] < blend["best_trial_oof_rmse"]
    assert sum(blend["weights"]) == pytest.approx(1)
    assert len(blend["candidate"].members) == len(blend["trials"])
    assert set(blend_of_best(trials, y, config_with(blend_top=1))["trials"]) <= {0, 5}
    assert blend_of_best(trials, y, config_with(blend=False)) == {}
    assert blend_of_best(forests, y, CONFIG) == {}  # one family: nothing to blend


def test_blend_round_trips_and_predicts_the_weighted_average():
    from tabreg.data import synthetic
    from tabreg.models.candidates import Blend, from_flat, make_pipeline

    rf = Candidate("random_forest", {"n_clusters": 4}, {"n_estimators": 10})
    hgb = Candidate("hist_gradient_boosting", {"n_clusters": 6}, {"max_iter": 20})
    blend = Blend((rf, hgb), (0.25, 0.75))
    assert from_flat(blend.flat()) == blend and from_flat(rf.flat()) == rf
    frame = synthetic.generate(800, seed=3)
    y = frame.pop("median_house_value").to_numpy()
    model = make_pipeline(blend, CONFIG).fit(frame, y)
    parts = [make_pipeline(m, CONFIG).fit(frame, y).predict(frame) for m in (rf, hgb)]
    np.testing.assert_allclose(model.predict(frame), 0.25 * parts[0] + 0.75 * parts[1])


def test_pruner_compares_a_trial_only_with_its_own_family():
    from tabreg.tuning.worker import PRUNE_STARTUP_TRIALS, prune_within_family

    def frozen(family, value, state=optuna.trial.TrialState.COMPLETE):
        return optuna.trial.create_trial(
            params={"family": family},
            distributions={"family": optuna.distributions.CategoricalDistribution(
                ["random_forest", "hist_gradient_boosting"])},
            intermediate_values={0: value}, value=value if state.is_finished() else None,
            state=state)

    forests = [frozen("random_forest", 40_000.0 + i) for i in range(PRUNE_STARTUP_TRIALS)]
    boosting = frozen("hist_gradient_boosting", 45_000.0, optuna.trial.TrialState.RUNNING)
    # Worse than every forest, but its family has no finished trial yet: not pruned.
    assert not prune_within_family(forests, boosting)
    boosters = [frozen("hist_gradient_boosting", 44_000.0 + i)
                for i in range(PRUNE_STARTUP_TRIALS)]
    assert prune_within_family(forests + boosters, boosting)
    assert not prune_within_family(forests + boosters,
                                   frozen("hist_gradient_boosting", 43_000.0,
                                          optuna.trial.TrialState.RUNNING))
    assert prune_within_family(boosters[:-1] + forests, boosting) is False


def test_a_worker_run_in_the_steps_process_gives_sigterm_back(tmp_path):
    """``tune.launcher: inline`` runs a worker in the tune step's process: the worker's SIGTERM
    handler (which holds a stop until the trial is told) must not outlive it, or the step's
    process would go on ignoring SIGTERM. Here the worker stops at once (no such study)."""
    import signal

    from tabreg.tuning import worker
    from tabreg.tuning.study import VersionMismatch

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(VersionMismatch, match="no study 'nope'"):
        worker.work(tmp_path, f"journal:{tmp_path / 'optuna.journal'}", "nope")
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_trial_sees_only_the_trials_lag_before_it():
    """What TPE and the pruner read through the view: trials numbered below n - lag."""
    from tabreg.tuning.worker import LaggedView

    study = optuna.create_study()
    for value in range(8):
        study.add_trial(optuna.trial.create_trial(value=float(value)))
    view = LaggedView(study, number=6, lag=2)
    assert [t.number for t in view.get_trials(deepcopy=False)] == [0, 1, 2, 3]
    assert [t.number for t in view._get_trials(deepcopy=False, use_cache=True)] == [0, 1, 2, 3]
    assert [t.number for t in view.trials] == [0, 1, 2, 3]
    assert view.directions == study.directions  # anything else is the study's own
    assert [t.number for t in LaggedView(study, number=1, lag=3).get_trials()] == []


def test_a_trial_waits_for_the_trials_it_will_see_to_finish():
    import threading

    from tabreg.tuning.worker import wait_for_view

    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(value=1.0))
    running = study.ask()  # number 1, RUNNING
    later = study.ask()  # number 2: not waited for when the view stops below it
    assert wait_for_view(study, before=1) == []
    timer = threading.Timer(0.5, study.tell, (running, 2.0))
    timer.start()
    try:
        assert wait_for_view(study, before=2, poll=0.05) == [running.number]
    finally:
        timer.cancel()
    assert study.trials[running.number].state.name == "COMPLETE"
    assert later.number == 2


def test_the_lag_names_the_study():
    """Another lag proposes other trials: it is another study, not a resumed one."""
    assert study_name(config_with(lag=0), "abc123") != study_name(CONFIG, "abc123")


def test_no_more_workers_start_than_trials_can_run_at_once():
    from tabreg.tuning.coordinator import workers_to_start

    assert workers_to_start(2, pending=50, lag=3) == 2
    assert workers_to_start(8, pending=50, lag=3) == 4  # the others would only wait
    assert workers_to_start(8, pending=2, lag=3) == 2
    assert workers_to_start(2, pending=50, lag=0) == 1  # each trial waits for all before it


def test_a_worker_waits_before_it_claims_the_next_trial():
    """Before claiming, the view of the lowest WAITING trial of the budget is waited for, so
    a trial's recorded time is its own work, not the wait."""
    import threading

    from tabreg.tuning.worker import wait_for_view

    study = optuna.create_study()
    first, second = study.ask(), study.ask()  # 0 and 1, RUNNING
    for _ in range(2):
        study.enqueue_trial({})  # 2 and 3, WAITING
    assert wait_for_view(study, None, lag=2, budget=4) == []  # trial 2 sees nothing yet
    timer = threading.Timer(0.3, study.tell, (first, 1.0))
    timer.start()
    try:  # trial 2 with lag 1 sees trial 0: waited for; trial 1 is not
        assert wait_for_view(study, None, lag=1, budget=4, poll=0.05) == [first.number]
    finally:
        timer.cancel()
    assert wait_for_view(study, None, lag=0, budget=2) == []  # no WAITING trial in the budget
    assert second.number == 1
