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

#: Step name -> module holding a function of that name; also the DVC stage names, in order.
_WHERE = {
    "ingest": "data",
    "validate": "data",
    "split": "data",
    "features": "model",
    "tune": "model",
    "train": "model",
    "evaluate": "model",
    "register": "registry",
}
STEP_NAMES: tuple[str, ...] = tuple(_WHERE)
#: Commands that act on the registry outside the pipeline (not DVC stages).
_WHERE.update(promote="registry", rollback="registry", status="registry")


def reports_dir(config: Config, root: Path) -> Path:
    """Where every step writes its reports."""
    return root / config.paths.reports


def get(name: str) -> Callable[[Config, Path], dict]:
    module = importlib.import_module(f"tabreg.steps.{_WHERE[name]}")
    return getattr(module, name)


def module_file(name: str) -> Path:
    """The file that holds step ``name`` (what its DVC stage must list as a code dep)."""
    return Path(__file__).with_name(f"{_WHERE[name]}.py")
