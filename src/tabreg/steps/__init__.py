"""The pipeline's steps as callables of (config, project root).

Each step reads its inputs from the paths in the configuration, calls the pure functions of the
library, and writes its outputs atomically. The CLI (and so every DVC stage) and the Prefect
flow call these same functions, so ``dvc repro`` and the flow cannot disagree about what a step
does. Each returns a small JSON-able summary. Modules are imported when a step runs, so that
listing the steps costs nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from tabreg.config import Config

#: The DVC stage names, in order; each stage's step is the function of that name in the
#: module of that name (``tabreg.steps.tune.tune``), so ``dvc.yaml`` points at one file a stage.
STEP_NAMES: tuple[str, ...] = ("ingest", "validate", "split", "features", "tune", "train",
                               "evaluate", "register")
#: Step name -> its module: the stages', and the commands that act on the registry outside
#: the pipeline (not DVC stages).
_WHERE = {**{name: name for name in STEP_NAMES},
          "promote": "champion", "rollback": "champion", "status": "champion"}


def reports_dir(config: Config, root: Path) -> Path:
    """Where every step writes its reports."""
    return root / config.paths.reports


def base_batch_name(config: Config) -> str:
    """The ``batch`` label of the base file's rows: named by checksum, not by location, so
    pointing ``DATA_SOURCE`` at a mirror of the same file changes nothing downstream."""
    return f"source@{config.data.sha256[:12]}"


def validation_dir(config: Config, root: Path) -> Path:
    """Where the validation results and Data Docs go."""
    return reports_dir(config, root) / "validation"


def get(name: str) -> Callable[[Config, Path], dict]:
    """The step function called ``name`` (imported only now)."""
    module = importlib.import_module(f"tabreg.steps.{_WHERE[name]}")
    return getattr(module, name)


def module_file(name: str) -> Path:
    """The file that holds step ``name`` (what its DVC stage must list as a code dep)."""
    return Path(__file__).with_name(f"{_WHERE[name]}.py")
