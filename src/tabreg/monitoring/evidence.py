"""What ``make monitor`` compares a window with, read from the registry and the pipeline.

* The **champion's own figures**: its test RMSE and bootstrap interval as recorded when it
  was promoted (the gate's evidence), its intervals' level, and its test slices (the
  ``slices.json`` its evaluation logged), so live figures stand beside the promised ones.
* The **reference**: the training split's inputs and the champion's predictions on them;
  drift is measured against what the model learnt from, not against an earlier window.
* **Rollback evidence**: the version the champion replaced, scored with the champion on the
  same labelled rows of the window. Only when it does better there is ``make rollback`` the
  remedy; otherwise retraining is.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tabreg.config import Config
from tabreg.errors import TabregError
from tabreg.monitoring.summary import Champion

log = logging.getLogger(__name__)


@dataclass
class Served:
    """The champion as the registry holds it: its pyfunc model and registry entry."""

    name: str
    version: Any
    model: Any
    figures: Champion
    slices: list[dict]
    client: Any  # the MlflowClient it was read with (the rollback evidence reads on with it)


def champion(config: Config, root: Path) -> Served:
    """The version holding ``champion``, loaded, with its recorded test figures."""
    from tabreg.promotion import registry

    client = registry.open_store(config, root)
    name = config.registry.model_name
    version = registry.find_version(client, name)
    model, _ = registry.load_registered(name, version, registry.CHAMPION)
    recorded = registry.recorded_score(version.tags)
    if recorded is None:
        raise TabregError(f"{name} version {version.version} (champion) carries no recorded "
                          "test RMSE: live quality has nothing to be compared with")
    run = client.get_run(version.run_id) if version.run_id else None
    params = run.data.params if run is not None else {}
    level = params.get("serve.interval")
    figures = Champion(str(version.version), recorded.rmse, recorded.low, recorded.high,
                       float(level) if level else None)
    return Served(name, version, model, figures, _test_slices(client, run), client)


def _test_slices(client: Any, run: Any) -> list[dict]:
    """The slices the evaluation of the champion's training run logged (empty when none
    did: a version registered by hand, or before slices were logged)."""
    import tempfile

    if run is None:
        return []
    run_id, experiment = run.info.run_id, run.info.experiment_id
    runs = client.search_runs([experiment], max_results=1, order_by=["attributes.start_time DESC"],
                              filter_string=f"tags.kind = 'evaluate' and "
                                            f"tags.train_run_id = '{run_id}'")
    if not runs:
        return []
    try:  # without a progress bar: tabreg.logs.quiet_libraries turns MLflow's off
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(runs[0].info.run_id, "slices.json", tmp)
            return list(json.loads(Path(path).read_text())["slices"])
    except Exception as exc:  # noqa: BLE001 - the report says there are none to compare
        log.info("no test slices for run %s (%s)", run_id, type(exc).__name__)
        return []


def reference(config: Config, root: Path, served: Served) -> tuple[pd.DataFrame, np.ndarray]:
    """The training split's inputs and the champion's predictions on them."""
    from tabreg.serving.scoring import predict

    train = root / config.paths.train
    if not train.exists():
        raise TabregError(f"{train} is missing: the champion's training data is the reference "
                          "for drift; run `make run` (or `dvc pull`) to bring it back")
    features = pd.read_parquet(train, columns=list(config.schema.features))
    return features, predict(served.model, features)


def rollback_evidence(config: Config, served: Served, labelled: pd.DataFrame
                      ) -> dict[str, Any] | None:
    """The champion and the version it replaced, scored on the same labelled rows: their
    RMSEs, and whether the replaced one does better. None when there is no replaced version
    or not enough labels to say."""
    from tabreg.evaluation.metrics import rmse
    from tabreg.promotion import registry
    from tabreg.serving.scoring import predict

    previous = served.version.tags.get(registry.PREVIOUS_TAG) or ""
    if not previous or len(labelled) < config.monitor.min_labels:
        return None
    older = registry.get_version(served.client, served.name, previous)
    if older is None:
        return {"previous": previous, "error": "no longer in the registry"}
    features = labelled[list(config.schema.features)]
    truth = labelled[config.schema.target].to_numpy(dtype=float)
    try:
        model = registry.load_version(served.name, older, "previous champion")
    except registry.RegistryError as exc:
        return {"previous": previous, "error": str(exc)}
    now, before = (rmse(truth, predict(m, features)) for m in (served.model, model))
    return {"previous": previous, "rows": len(labelled), "champion_rmse": now,
            "previous_rmse": before, "previous_better": bool(before < now)}
