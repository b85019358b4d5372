"""The model as MLflow logs and registers it: a pyfunc whose output is each row's prediction
and its interval (``prediction``, ``lower``, ``upper``: the signature's output schema).

A Python model rather than the scikit-learn flavour: that flavour's pyfunc can only call
``predict`` (or a classifier's ``predict_proba``), and ``predict`` must stay the point
prediction that scikit-learn code expects. Logged as MLflow recommends, from code
(``pyfunc_model.py`` builds an :class:`IntervalModel`) with the fitted
:class:`~tabreg.models.intervals.ConformalRegressor` as an artifact; :func:`fitted` gives the
regressor back from a loaded model. Imports MLflow: load it only where a model is logged or
loaded.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel

#: The script MLflow runs to build the model when it loads it (models from code).
SCRIPT = Path(__file__).with_name("pyfunc_model.py")
#: The artifact holding the fitted regressor (cloudpickle, as the sklearn flavour stores it).
ARTIFACT = "regressor"


class IntervalModel(PythonModel):
    """The registered model: the fitted regressor and its calibrated intervals."""

    def __init__(self) -> None:
        self.model: Any = None

    def load_context(self, context: Any) -> None:
        import cloudpickle

        with open(context.artifacts[ARTIFACT], "rb") as f:
            self.model = cloudpickle.load(f)

    @property
    def estimators_(self) -> list[Any]:
        """The fitted model, for code that walks ensembles (encoders, learning curves)."""
        return [self.model]

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        return self.model.predict_interval(model_input)


def requirements(family: str) -> list[str]:
    """The packages a model of ``family`` needs, pinned to this environment's versions.

    Named rather than left to MLflow: its inference loads the model in a fresh Python process
    to see what it imports, 6 to 10 s for each model logged."""
    from importlib import metadata

    names = ["mlflow", "scikit-learn", "pandas", "numpy", "pyarrow", "pydantic", "pyyaml"]
    if family == "mlp":
        names.append("torch")
    return [f"{n}=={metadata.version(n)}" for n in names]


def _with_artifact(model: Any, save: Any, **kwargs: Any) -> Any:
    """Call MLflow's ``save`` (log_model or save_model) with ``model`` pickled beside."""
    import cloudpickle
    from mlflow.models import infer_signature

    example = kwargs.pop("input_example")
    with tempfile.TemporaryDirectory(prefix="tabreg-model-") as tmp:
        path = Path(tmp) / "regressor.pkl"
        with open(path, "wb") as f:
            cloudpickle.dump(model, f)
        return save(python_model=str(SCRIPT), artifacts={ARTIFACT: str(path)},
                    signature=infer_signature(example, model.predict_interval(example)),
                    input_example=example, **kwargs)


def log_model(model: Any, *, name: str, input_example: pd.DataFrame, **kwargs: Any) -> Any:
    """Log ``model`` (a ConformalRegressor) to the active run; returns MLflow's ModelInfo."""
    import mlflow.pyfunc

    return _with_artifact(model, mlflow.pyfunc.log_model, name=name,
                          input_example=input_example, **kwargs)


def save_model(model: Any, path: str, *, input_example: pd.DataFrame, **kwargs: Any) -> None:
    """Save ``model`` as an MLflow model folder at ``path``."""
    import mlflow.pyfunc

    _with_artifact(model, mlflow.pyfunc.save_model, path=path, input_example=input_example,
                   **kwargs)


def fitted(loaded: Any) -> Any:
    """The fitted scikit-learn model inside a loaded MLflow model: the
    :class:`~tabreg.models.intervals.ConformalRegressor` of a model with intervals, the
    estimator of one registered before them (scikit-learn flavour)."""
    for getter in ("unwrap_python_model", "get_raw_model"):
        try:
            inner = getattr(loaded, getter)()
        except Exception:  # noqa: BLE001 - the other flavour: try the next getter
            continue
        return inner.model if isinstance(inner, IntervalModel) else inner
    return loaded
