"""The features stage: the feature pipeline fitted with its default parameters on the
training split, described in ``reports/features.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tabreg.config import Config
from tabreg.io import read_table, write_json
from tabreg.steps import reports_dir

log = logging.getLogger(__name__)


def features(config: Config, root: Path) -> dict:
    """Fit the feature pipeline (default parameters) on train and describe what it makes."""
    from tabreg.models.features import build_preprocessor, feature_names

    train = read_table(root / config.paths.train)
    pre = build_preprocessor(config.schema, config.features)
    matrix = pre.fit_transform(train)
    names = feature_names(pre)
    result = {
        "rows": int(matrix.shape[0]),
        "features": [{"name": n, "mean": round(float(m), 6), "std": round(float(s), 6)}
                     for n, m, s in zip(names, matrix.mean(axis=0), matrix.std(axis=0),
                                        strict=True)],
    }
    write_json(result, reports_dir(config, root) / "features.json")
    log.info("features: %d features from %d training rows", len(names), matrix.shape[0])
    return {"rows": result["rows"], "n_features": len(names)}
