"""Hyper-parameter search: one Optuna study over model family, its parameters and the features.

The study is shared by worker processes that coordinate only through its storage, on one
machine or many (``study``: what the study holds and how a worker claims a trial; ``worker``:
the claim-and-run loop and the cross-validation; ``launch``: local processes or Prefect flow
runs; ``coordinator``: the tune step's side, progress and MLflow; ``blend``: the weighted
average of the best trials; ``space``: what a trial draws). The budget is a number of
trials, so a result does not depend on how busy the machine is; ``tune.timeout`` is only a
guard, and says so when it fires.
"""

from tabreg.tuning.blend import select_blend
from tabreg.tuning.coordinator import TuneResult, TuningFailed, tune
from tabreg.tuning.space import check_space, study_name, suggest
from tabreg.tuning.study import FINISHED, storage_url

__all__ = ["FINISHED", "TuneResult", "TuningFailed", "check_space", "select_blend",
           "storage_url", "study_name", "suggest", "tune"]
