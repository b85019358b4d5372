"""What the model steps hand each other: the files under ``models/``, read with a clear error
when the step that writes them has not run, and the data version and MLflow dataset inputs
they record for lineage.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from tabreg.config import Config
from tabreg.errors import TabregError
from tabreg.orchestration.dvc_stages import data_version as recorded_data_version

log = logging.getLogger(__name__)

#: Sections of the configuration that decide the model, logged as params of the parent run.
MODEL_SECTIONS = ("data", "schema", "split", "features", "tune", "train")


def read_json(path: Path, what: str) -> dict:
    """A record another step wrote; a clear error names the step to run when it is missing."""
    if not path.exists():
        raise TabregError(f"{path}: not found; run the {what} step first")
    return json.loads(path.read_text())


def data_version_of(config: Config, root: Path) -> str:
    """The raw table's DVC md5, as recorded in ``dvc.lock`` (``unrecorded`` before any)."""
    return recorded_data_version(root, config.paths.raw) or "unrecorded"


def _file_source(path: str) -> Any:
    """MLflow's local-file dataset source for ``path``, named explicitly: given the bare
    path, MLflow finds two equal candidates (its "" and "file" schemes) and warns that the
    source "can be interpreted in multiple ways" on every logged dataset."""
    from mlflow.data.dataset_source_registry import get_registered_sources

    local: Any = next(s for s in get_registered_sources() if s._get_source_type() == "local")
    return local(path)


def log_dataset(frame: pd.DataFrame, config: Config, name: str, path: str,
                context: str) -> Any:
    """Log a split as a run input whose digest is its DVC hash (``frame.attrs["md5"]``);
    returns the dataset (metrics can name it)."""
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    dataset = from_pandas(frame, source=_file_source(path), targets=config.schema.target,
                          name=name, digest=frame.attrs.get("md5"))
    mlflow.log_input(dataset, context=context)
    return dataset
