"""A scikit-learn-compatible PyTorch MLP for tabular regression (:class:`TorchMLPRegressor`).

Why it is built this way:

* **Device-resident tensors, index mini-batches.** A tabular training set (tens of thousands
  of rows by a few dozen features) fits in device memory many times over. The train and
  validation matrices are moved to the device once per fit; each epoch draws a permutation with
  ``torch.randperm`` (a seeded ``torch.Generator`` on the device) and slices it into mini-batches
  that gather rows on the device. A per-sample ``DataLoader`` would instead collate every batch
  in Python and copy it host-to-device, which for rows this small costs more than the model.
* **Cheap steps on the CPU.** For a net this small a CPU step is dominated by fixed costs,
  not by matrix products: torch's CPU ``bernoulli_`` alone took 40% of a step, so dropout masks
  come from raw bits of a seeded numpy PCG64 stream instead (:class:`_Dropout`, about 5x
  cheaper); the rows are permuted once per epoch so that each mini-batch is a view rather than
  a gather; AdamW runs fused; and no autocast context is entered where it would be a no-op.
* **bf16 autocast on CUDA, float32 on CPU.** On a GPU the hidden layers run under
  ``torch.autocast(dtype=torch.bfloat16)``: bf16 keeps float32's exponent range, so no
  ``GradScaler`` is needed. The output layer, the loss and the inverse target transform stay in
  float32/float64 so that predictions are not quantised to bf16's three significant digits.
  CPUs gain little from bf16, so they train in float32, bit-reproducibly.
* **Early stopping on a validation part of the training rows.** A seeded
  ``validation_fraction`` of the rows given to :meth:`~TorchMLPRegressor.fit` is held out; the
  RMSE on it, in the target's original units, picks the best epoch and stops training after
  ``patience`` epochs without improvement. It is never the test set: the caller's test rows
  stay unseen, and inside cross-validation the held-out fold stays unseen too.
* **Portable pickles.** The fitted network is pickled as a CPU state dict (numpy arrays) and
  rebuilt on the CPU on load, so a model trained on a GPU loads and predicts on a machine
  without CUDA (e.g. the serving container).

Seeding goes through generators and a forked RNG state, so a fit does not move the caller's
global torch RNG (the fork is process-wide: run concurrent fits in processes, not threads).
Two CPU fits with the same data and ``random_state`` give identical
predictions; CUDA fits are close but not bit-identical (atomic reductions in some kernels).
"""

from __future__ import annotations

import contextlib
import math
import numbers
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from tabreg.errors import ConfigError
from tabreg.evaluation.metrics import rmse

#: Rows per forward pass when evaluating or predicting (no gradients, so memory is small).
EVAL_BATCH = 65_536

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> torch.device:
    """The torch device for ``train.device``: ``auto`` (CUDA when available), ``cpu`` or
    ``cuda`` (an error when this machine or this torch build has no CUDA)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            if torch.version.cuda is None:
                why = f"torch {torch.__version__} is a build without CUDA"
            else:
                why = (f"torch {torch.__version__} is built with CUDA {torch.version.cuda} "
                       "but no CUDA device is visible")
            raise ConfigError(f"train.device is 'cuda' but CUDA is not available ({why}); "
                              "set train.device to 'auto' or 'cpu'")
        return torch.device("cuda")
    raise ConfigError(f"train.device must be one of {list(DEVICES)}, got {device!r}")


#: Dropout probabilities are rounded to a multiple of 1 / _MASK_LEVELS (16 random bits a unit).
_MASK_LEVELS = 65_536


class _Dropout(nn.Module):
    """Inverted dropout whose CPU masks come from ``bits``, a seeded numpy bit generator.

    Torch's CPU random number generation costs several nanoseconds an element, which made
    ``nn.Dropout`` the largest single cost of a training step here; 16 raw bits of PCG64 per
    unit are about 10x cheaper. The drop probability is rounded to a multiple of 1/65536 and
    the kept units are scaled by the rounded probability, so the layer stays unbiased. Without
    ``bits`` (set only while :meth:`TorchMLPRegressor.fit` runs) or off the CPU, it is torch's
    own dropout, which is fast on a GPU. No parameters or buffers: state dicts are the same as
    with ``nn.Dropout``.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.dropped = min(round(p * _MASK_LEVELS), _MASK_LEVELS - 1)  # bit patterns that drop
        self.bits: np.random.BitGenerator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.bits is None or x.device.type != "cpu":
            return nn.functional.dropout(x, self.p, training=True)
        n = x.numel()
        raw = self.bits.random_raw((n + 3) // 4).view(np.int16)[:n]  # uniform over int16
        keep = torch.from_numpy(raw).view(x.shape) >= self.dropped - _MASK_LEVELS // 2
        return x * (keep * (_MASK_LEVELS / (_MASK_LEVELS - self.dropped)))


class _MLP(nn.Module):
    """``depth`` x (Linear -> ReLU -> Dropout), then a float32 Linear head to one output."""

    def __init__(self, n_in: int, depth: int, width: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        size = n_in
        for _ in range(depth):
            layers += [nn.Linear(size, width), nn.ReLU(), _Dropout(dropout)]
            size = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.body(x)
        if not torch.is_autocast_enabled(x.device.type):
            return self.head(hidden).squeeze(-1)
        # The head runs outside autocast: its output is the prediction, keep float32 precision.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.head(hidden.float()).squeeze(-1)

    def use_mask_bits(self, bits: np.random.BitGenerator | None) -> None:
        """Draw the dropout masks from ``bits`` (None: torch's generator)."""
        for layer in self.body:
            if isinstance(layer, _Dropout):
                layer.bits = bits


def _int_param(name: str, value: Any, low: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"TorchMLPRegressor: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _autocast(device: torch.device):
    """bf16 autocast on CUDA; a no-op context elsewhere (not a disabled autocast: entering one
    costs time on every mini-batch)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _forward_all(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Standardised predictions for every row of ``x`` (eval mode, large batches), float64."""
    model.eval()
    out = []
    with torch.inference_mode(), _autocast(x.device):
        for start in range(0, x.shape[0], EVAL_BATCH):
            out.append(model(x[start:start + EVAL_BATCH]).float())
    if not out:
        return np.empty(0, dtype=np.float64)
    return torch.cat(out).cpu().numpy().astype(np.float64)


def _train_epoch(model: Any, optimizer: Any, loss_fn: Any, x_epoch: Any, t_epoch: Any,
                 batch: int, sizes: Any) -> float:
    """One pass over the (shuffled) training rows in batches; returns the mean loss per row.
    Batches are views of ``x_epoch``; the losses stay on the device until the end, so the
    loop never waits for a GPU to report a number."""
    model.train()
    losses = []
    for start in range(0, x_epoch.shape[0], batch):
        with _autocast(x_epoch.device):
            loss = loss_fn(model(x_epoch[start:start + batch]), t_epoch[start:start + batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return float(torch.stack(losses).float() @ sizes) / x_epoch.shape[0]


class TorchMLPRegressor(RegressorMixin, BaseEstimator):
    """Multi-layer perceptron regressor in PyTorch with early stopping.

    The target is standardised (after ``log`` when ``log_target``) with the training mean and
    standard deviation; the network minimises MSE on that scale with AdamW. A seeded
    ``validation_fraction`` of the rows is held out for early stopping on the RMSE in original
    units; the best epoch's weights are restored at the end.

    Fitted attributes: ``model_`` (the torch module, in eval mode), ``device_`` (``"cpu"`` or
    ``"cuda"``: where it was trained), ``n_features_in_``, ``y_mean_``, ``y_std_``,
    ``best_epoch_`` (1-based), ``history_`` (one dict per epoch: ``epoch``, ``train_loss``
    -- mean standardised MSE --, ``val_rmse``, ``seconds``).
    """

    def __init__(self, depth: int = 2, width: int = 128, dropout: float = 0.1,
                 learning_rate: float = 1e-3, weight_decay: float = 1e-5, batch_size: int = 256,
                 max_epochs: int = 200, patience: int = 15, validation_fraction: float = 0.1,
                 log_target: bool = False, device: str = "auto",
                 random_state: int | None = 42) -> None:
        self.depth = depth
        self.width = width
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.log_target = log_target
        self.device = device
        self.random_state = random_state

    # -- parameters and data ---------------------------------------------------------------

    def _checked_params(self) -> dict[str, Any]:
        p = {"depth": _int_param("depth", self.depth, 0),
             "width": _int_param("width", self.width, 1),
             "batch_size": _int_param("batch_size", self.batch_size, 1),
             "max_epochs": _int_param("max_epochs", self.max_epochs, 1),
             "patience": _int_param("patience", self.patience, 1)}
        checks = [("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
                  ("learning_rate", self.learning_rate > 0, "> 0"),
                  ("weight_decay", self.weight_decay >= 0, ">= 0"),
                  ("validation_fraction", 0 < self.validation_fraction < 1, "in (0, 1)")]
        for name, ok, what in checks:
            if not ok:
                raise ValueError(f"TorchMLPRegressor: {name} must be {what}, "
                                 f"got {getattr(self, name)!r}")
        return p

    def _split(self, n_samples: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(train rows, validation rows, torch seed), all drawn from ``random_state``."""
        if n_samples < 2:
            raise ValueError(f"TorchMLPRegressor needs at least 2 rows to hold out a validation "
                             f"part, got {n_samples}")
        rs = check_random_state(self.random_state)
        order = rs.permutation(n_samples)
        n_val = min(max(1, round(self.validation_fraction * n_samples)), n_samples - 1)
        torch_seed = int(rs.randint(0, 2**31 - 1))
        return np.sort(order[n_val:]), np.sort(order[:n_val]), torch_seed

    def _build(self, n_features: int) -> _MLP:
        return _MLP(n_features, int(self.depth), int(self.width), float(self.dropout))

    def _to_target_scale(self, y: np.ndarray) -> np.ndarray:
        return np.log(y) if self.log_target else y

    def _from_standardised(self, z: np.ndarray, mean: float, std: float) -> np.ndarray:
        pred = z * std + mean
        if self.log_target:
            with np.errstate(over="ignore"):
                pred = np.exp(pred)
        return pred

    @staticmethod
    def _as_dense(X: Any) -> np.ndarray:
        return X.toarray() if hasattr(X, "toarray") else X

    # -- fit / predict ---------------------------------------------------------------------

    def _start(self, n_features: int, device: torch.device, seed: int) -> tuple[Any, Any, Any]:
        """The network (initialised on the CPU: the same weights on any device), its
        optimizer, and the seeded generator of the epochs' shuffles."""
        model = self._build(n_features).to(device)
        model.use_mask_bits(np.random.PCG64(seed) if device.type == "cpu" else None)
        optimizer = torch.optim.AdamW(model.parameters(), lr=float(self.learning_rate),
                                      weight_decay=float(self.weight_decay), fused=True)
        shuffle = torch.Generator(device=device)
        shuffle.manual_seed(seed)
        return model, optimizer, shuffle

    def fit(self, X: Any, y: Any, *,
            epoch_callback: Callable[[int, float, float], None] | None = None,
            ) -> TorchMLPRegressor:
        """Train with early stopping; ``epoch_callback(epoch, train_loss, val_rmse)`` runs after
        every epoch (1-based), and whatever it raises (e.g. ``optuna.TrialPruned``) propagates."""
        p = self._checked_params()
        X, y = validate_data(self, X, y, accept_sparse=("csr", "csc"), dtype=np.float32,
                             y_numeric=True)
        X = np.ascontiguousarray(self._as_dense(X), dtype=np.float32)
        y = np.asarray(y, dtype=np.float64)
        if self.log_target and not np.all(y > 0):
            raise ValueError("TorchMLPRegressor: log_target=True needs a positive target, "
                             f"got a minimum of {y.min()!r}")
        device = resolve_device(self.device)
        train_idx, val_idx, seed = self._split(X.shape[0])
        target = self._to_target_scale(y[train_idx])
        y_mean, y_std = float(target.mean()), float(target.std()) or 1.0
        y_val = y[val_idx]
        x_train = torch.from_numpy(X[train_idx]).to(device)
        t_train = torch.from_numpy(((target - y_mean) / y_std).astype(np.float32)).to(device)
        x_val = torch.from_numpy(X[val_idx]).to(device)
        n_train, batch = x_train.shape[0], p["batch_size"]

        cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()
                        ] if device.type == "cuda" else []
        history: list[dict[str, Any]] = []
        # Weight init and dropout draw from the global RNGs: fork them so the caller's state
        # is untouched, and seed them inside.
        with torch.random.fork_rng(devices=cuda_devices):
            torch.random.default_generator.manual_seed(seed)
            if device.type == "cuda":
                torch.cuda.manual_seed(seed)
            model, optimizer, shuffle = self._start(X.shape[1], device, seed)
            loss_fn = nn.MSELoss()
            sizes = torch.tensor([min(batch, n_train - start)
                                  for start in range(0, n_train, batch)],
                                 dtype=torch.float32, device=device)

            best_rmse, best_epoch, best_state, stale = math.inf, 0, None, 0
            for epoch in range(1, p["max_epochs"] + 1):
                started = time.perf_counter()
                order = torch.randperm(n_train, generator=shuffle, device=device)
                train_loss = _train_epoch(model, optimizer, loss_fn, x_train[order],
                                          t_train[order], batch, sizes)
                pred = self._from_standardised(_forward_all(model, x_val), y_mean, y_std)
                val_rmse = rmse(y_val, pred) if np.isfinite(pred).all() else np.inf
                if val_rmse < best_rmse:  # False for NaN
                    best_rmse, best_epoch, stale = val_rmse, epoch, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    stale += 1
                history.append({"epoch": epoch, "train_loss": train_loss, "val_rmse": val_rmse,
                                "seconds": time.perf_counter() - started})
                if epoch_callback is not None:
                    epoch_callback(epoch, train_loss, val_rmse)
                if stale >= p["patience"] or not math.isfinite(train_loss):
                    break

        return self._finish(model, best_state, best_epoch, history, (y_mean, y_std), device)

    def _finish(self, model: Any, best_state: dict | None, best_epoch: int, history: list,
                scale: tuple[float, float], device: torch.device) -> TorchMLPRegressor:
        """Keep the best epoch's weights and set the fitted attributes, only now: a fit stopped
        by its callback leaves none half-set."""
        if best_state is None:
            raise FloatingPointError(
                f"TorchMLPRegressor diverged: the validation RMSE was not finite in any of "
                f"{len(history)} epochs (learning_rate={self.learning_rate!r}); lower it")
        model.use_mask_bits(None)
        model.load_state_dict(best_state)
        model.eval()
        self.y_mean_, self.y_std_ = scale
        self.model_ = model
        self.device_ = str(device)
        self.best_epoch_ = best_epoch
        self.history_ = history
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predictions in the target's original units (float64), on the model's device."""
        check_is_fitted(self, "model_")
        X = validate_data(self, X, accept_sparse=("csr", "csc"), dtype=np.float32, reset=False)
        X = np.ascontiguousarray(self._as_dense(X), dtype=np.float32)
        device = next(self.model_.parameters()).device
        z = _forward_all(self.model_, torch.from_numpy(X).to(device))
        return self._from_standardised(z, self.y_mean_, self.y_std_)

    # -- pickling ----------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # a copy: object.__getstate__ returns __dict__
        model = state.pop("model_", None)
        if model is not None:
            state["_model_state"] = {k: v.detach().float().cpu().numpy().copy()
                                     for k, v in model.state_dict().items()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        weights = state.pop("_model_state", None)
        super().__setstate__(state)
        if weights is not None:
            with torch.random.fork_rng(devices=[]):  # building draws an init we overwrite
                model = self._build(self.n_features_in_)
            model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
            self.model_ = model.eval()
