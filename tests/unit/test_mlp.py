"""TorchMLPRegressor: learning, determinism, early stopping, callbacks, pickling, devices."""

import pickle
import time

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from tabreg.errors import ConfigError
from tabreg.models.mlp import TorchMLPRegressor, _Dropout, resolve_device

#: Small enough for 2 CPU cores: a fit takes well under a second.
SMALL = {"depth": 2, "width": 32, "learning_rate": 3e-3, "max_epochs": 30, "patience": 10}


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """These networks are too small to gain from intra-op threads, and on a shared 2-core
    machine OpenMP's spinning threads slow a fit 10-100x when other processes are busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """2,000 x 10 standard-normal features; a nonlinear target between 15k and 500k dollars."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 10))
    s = (np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2] + 0.5 * X[:, 3] ** 2 - X[:, 4]
         + 0.1 * rng.normal(size=2000))
    y = 15_000 + 485_000 / (1 + np.exp(-s))
    return X, y


@pytest.fixture(scope="module")
def fitted(data) -> TorchMLPRegressor:
    X, y = data
    return TorchMLPRegressor(**SMALL, device="cpu").fit(X, y)


def _validation(model: TorchMLPRegressor, X: np.ndarray, y: np.ndarray):
    """The rows ``model`` held out, and the RMSE of predicting the training mean on them."""
    train_idx, val_idx, _ = model._split(len(X))
    return X[val_idx], y[val_idx], _rmse(y[val_idx], y[train_idx].mean())


def test_training_reduces_the_loss_and_beats_the_mean(fitted, data):
    X, y = data
    history = fitted.history_
    assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
    assert set(history[0]) == {"epoch", "train_loss", "val_rmse", "seconds"}
    assert all(h["seconds"] > 0 for h in history)
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    X_val, y_val, mean_rmse = _validation(fitted, X, y)
    best = min(h["val_rmse"] for h in history)
    assert best < 0.5 * mean_rmse, (best, mean_rmse)
    assert history[fitted.best_epoch_ - 1]["val_rmse"] == best
    assert fitted.device_ == "cpu"
    assert fitted.n_features_in_ == 10
    assert isinstance(fitted.model_, torch.nn.Module)
    pred = fitted.predict(X[:7])
    assert pred.dtype == np.float64 and pred.shape == (7,)


def test_the_network_has_depth_hidden_layers_of_width_units(data):
    X, y = data
    model = TorchMLPRegressor(depth=3, width=8, max_epochs=1, device="cpu").fit(X, y)
    linears = [m for m in model.model_.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(10, 8), (8, 8), (8, 8), (8, 1)]


def test_cpu_fits_are_bit_identical_for_a_seed_and_differ_across_seeds(fitted, data):
    X, y = data
    rng_before = torch.get_rng_state()
    again = TorchMLPRegressor(**SMALL, device="cpu").fit(X, y)
    assert torch.equal(torch.get_rng_state(), rng_before), "fit moved the global torch RNG"
    assert np.array_equal(again.predict(X), fitted.predict(X))
    assert again.history_ == [dict(h, seconds=g["seconds"])
                              for h, g in zip(fitted.history_, again.history_, strict=True)]
    other = TorchMLPRegressor(**SMALL, device="cpu", random_state=7).fit(X, y)
    assert not np.array_equal(other.predict(X), fitted.predict(X))


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_cpu_dropout_drops_a_p_share_and_keeps_the_mean(p):
    layer = _Dropout(p).train()
    layer.bits = np.random.PCG64(0)
    x = torch.ones(400, 250)
    out = layer(x)
    dropped = float((out == 0).float().mean())
    assert abs(dropped - p) < 0.01
    assert abs(float(out.mean()) - 1.0) < 0.02  # inverted dropout: the expectation is kept
    assert torch.allclose(out[out != 0], torch.tensor(1 / (1 - p)), rtol=1e-4)
    again = _Dropout(p).train()
    again.bits = np.random.PCG64(0)
    assert torch.equal(again(x), out), "the same bit stream must give the same mask"
    assert torch.equal(layer.eval()(x), x)


def test_cpu_dropout_passes_gradients_through_kept_units_only():
    layer = _Dropout(0.3).train()
    layer.bits = np.random.PCG64(1)
    x = torch.randn(64, 32, requires_grad=True)
    out = layer(x)
    out.sum().backward()
    kept = out.detach() != 0
    assert torch.allclose(x.grad[kept], torch.tensor(65536 / (65536 - round(0.3 * 65536))))
    assert torch.all(x.grad[~kept] == 0)


def test_early_stopping_stops_and_restores_the_best_epoch(data):
    X, y = data
    model = TorchMLPRegressor(depth=2, width=32, learning_rate=0.1, patience=2, max_epochs=200,
                              device="cpu").fit(X, y)
    history = model.history_
    assert len(history) < 200
    assert len(history) == model.best_epoch_ + 2  # patience epochs without improvement
    X_val, y_val, _ = _validation(model, X, y)
    final = _rmse(model.predict(X_val), y_val)
    best = min(h["val_rmse"] for h in history)
    assert final == pytest.approx(best, rel=1e-9)
    assert final < history[-1]["val_rmse"] or model.best_epoch_ == len(history)


def test_log_target_predicts_positive_values(data):
    X, y = data
    model = TorchMLPRegressor(**SMALL, log_target=True, device="cpu").fit(X, y)
    assert model.y_mean_ == pytest.approx(np.log(y).mean(), rel=0.01)
    pred = model.predict(X)
    assert np.all(pred > 0)
    X_val, y_val, mean_rmse = _validation(model, X, y)
    assert _rmse(model.predict(X_val), y_val) < 0.7 * mean_rmse


def test_log_target_needs_a_positive_target(data):
    X, y = data
    with pytest.raises(ValueError, match="log_target"):
        TorchMLPRegressor(log_target=True, device="cpu").fit(X, y - 20_000)


def test_epoch_callback_sees_every_epoch(data):
    X, y = data
    calls = []
    model = TorchMLPRegressor(**SMALL, device="cpu").fit(
        X, y, epoch_callback=lambda *args: calls.append(args))
    assert calls == [(h["epoch"], h["train_loss"], h["val_rmse"]) for h in model.history_]
    assert all(isinstance(v, int | float) for call in calls for v in call)


class Stop(Exception):
    pass


def test_an_exception_in_the_callback_propagates_and_leaves_the_model_unfitted(data):
    X, y = data
    seen = []

    def callback(epoch: int, train_loss: float, val_rmse: float) -> None:
        seen.append(epoch)
        if epoch == 3:
            raise Stop("pruned")

    model = TorchMLPRegressor(**SMALL, device="cpu")
    with pytest.raises(Stop, match="pruned"):
        model.fit(X, y, epoch_callback=callback)
    assert seen == [1, 2, 3]
    with pytest.raises(NotFittedError):
        model.predict(X)


def test_epoch_callback_passes_through_a_pipeline(data):
    X, y = data
    calls = []
    pipeline = Pipeline([("scale", StandardScaler()),
                         ("model", TorchMLPRegressor(**dict(SMALL, max_epochs=3), device="cpu"))])
    pipeline.fit(X, y, model__epoch_callback=lambda e, loss, rmse: calls.append(e))
    assert calls == [1, 2, 3]


def test_pickle_round_trip_predicts_the_same(fitted, data):
    X, _ = data
    state = fitted.__getstate__()
    assert "model_" not in state, "the torch module must not be pickled as such"
    assert all(isinstance(v, np.ndarray) for v in state["_model_state"].values())
    assert "model_" in fitted.__dict__, "__getstate__ must not strip the live estimator"
    for dumps, loads in [(pickle.dumps, pickle.loads),
                         (pytest.importorskip("cloudpickle").dumps, pickle.loads)]:
        loaded = loads(dumps(fitted))
        assert next(loaded.model_.parameters()).device.type == "cpu"
        assert np.array_equal(loaded.predict(X), fitted.predict(X))
        assert loaded.history_ == fitted.history_ and loaded.best_epoch_ == fitted.best_epoch_


def test_clone_get_params_and_set_params(fitted):
    params = fitted.get_params()
    assert params == {"depth": 2, "width": 32, "dropout": 0.1, "learning_rate": 3e-3,
                      "weight_decay": 1e-5, "batch_size": 256, "max_epochs": 30,
                      "patience": 10, "validation_fraction": 0.1, "log_target": False,
                      "device": "cpu", "random_state": 42}
    copy = clone(fitted)
    assert copy.get_params() == params
    assert not hasattr(copy, "model_") and not hasattr(copy, "history_")
    assert copy.set_params(width=64, log_target=True) is copy
    assert copy.width == 64 and copy.log_target and fitted.width == 32


def test_predict_before_fit_raises_not_fitted():
    with pytest.raises(NotFittedError):
        TorchMLPRegressor().predict(np.zeros((3, 4)))


def test_predict_checks_the_number_of_features(fitted):
    with pytest.raises(ValueError, match="features"):
        fitted.predict(np.zeros((3, 4)))


@pytest.mark.parametrize(("name", "value"), [("width", 0), ("depth", -1), ("dropout", 1.0),
                                             ("learning_rate", 0), ("batch_size", 2.5),
                                             ("validation_fraction", 1.0)])
def test_invalid_parameters_are_rejected_at_fit(data, name, value):
    X, y = data
    with pytest.raises(ValueError, match=name):
        TorchMLPRegressor(device="cpu", **{name: value}).fit(X, y)


def test_resolve_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"train\.device is 'cuda' but CUDA is not "
                                              r"available.*torch .*'auto' or 'cpu'"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="train.device must be one of"):
        resolve_device("tpu")


def test_an_unavailable_device_fails_the_fit_with_a_config_error(data):
    X, y = data
    with pytest.raises(ConfigError):
        TorchMLPRegressor(device="tpu").fit(X, y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_fits_on_cuda_with_bf16_autocast(data):
    X, y = data
    started = time.perf_counter()
    model = TorchMLPRegressor(**SMALL, device="cuda").fit(X, y)
    seconds = time.perf_counter() - started
    assert model.device_ == "cuda"
    assert next(model.model_.parameters()).device.type == "cuda"
    X_val, y_val, mean_rmse = _validation(model, X, y)
    on_gpu = model.predict(X_val)
    assert _rmse(on_gpu, y_val) < 0.5 * mean_rmse
    epochs = model.history_
    print(f"\ncuda: {len(epochs)} epochs in {seconds:.2f} s; median epoch "
          f"{np.median([h['seconds'] for h in epochs]) * 1000:.1f} ms "
          f"(first {epochs[0]['seconds'] * 1000:.1f} ms)")
    # A GPU-trained model loads on the CPU and predicts about the same (bf16 vs float32).
    loaded = pickle.loads(pickle.dumps(model))
    assert next(loaded.model_.parameters()).device.type == "cpu"
    assert _rmse(loaded.predict(X_val), on_gpu) < 0.02 * np.std(y)
