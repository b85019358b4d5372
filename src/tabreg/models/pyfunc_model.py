"""Run by MLflow (never imported) when it loads a tabreg model: the model from code, an
:class:`~tabreg.models.pyfunc.IntervalModel` whose regressor comes from the model's artifact."""

import mlflow

from tabreg.models.pyfunc import IntervalModel

mlflow.models.set_model(IntervalModel())
