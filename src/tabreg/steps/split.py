"""The split stage: the validated raw table into train and test, stratified by income.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tabreg.config import Config
from tabreg.errors import ValidationFailed
from tabreg.io import file_md5, read_table, write_json, write_table, write_text
from tabreg.steps import reports_dir, validation_dir

log = logging.getLogger(__name__)


def _require_valid(config: Config, root: Path) -> None:
    """Split only the very table the last validation passed: a validate killed after an
    ingest (or never run) leaves a result about other rows, which must not vouch for these."""
    summary = validation_dir(config, root) / "summary.json"
    shown, raw = summary.relative_to(root), config.paths.raw
    again = "run the validate step first (`python -m tabreg validate`, or `dvc repro`)"
    if not summary.exists():
        raise ValidationFailed(f"{raw} has not been validated (no {shown}): {again}")
    result = json.loads(summary.read_text())
    if not result["success"]:
        raise ValidationFailed(f"the last validation failed ({shown}): fix the data and "
                               "run the validate step before splitting")
    judged = (result.get("table") or {}).get("md5")
    now = file_md5(root / raw)
    if judged != now:
        raise ValidationFailed(
            f"{shown} judged {raw} with md5 {judged or '(not recorded)'}, but the table now has "
            f"md5 {now}: its rows were not validated (an ingest ran after the last validate, "
            f"or validate was stopped); {again}")


#: The split's metrics file (``dvc.yaml`` declares it as the stage's metrics).
SPLIT_METRICS = "split_metrics.json"


def split(config: Config, root: Path) -> dict:
    """Split the validated raw table into train and test, stratified by income category."""
    from tabreg.data.split import report, report_markdown
    from tabreg.data.split import split as stratified_split

    _require_valid(config, root)
    table = read_table(root / config.paths.raw)
    result = stratified_split(table, config.split)
    write_table(result.train, root / config.paths.train)
    write_table(result.test, root / config.paths.test)
    rep = report(table, result, config.split)
    write_json(rep, reports_dir(config, root) / "split.json")
    # What `dvc metrics show` lists: measurements only (the settings are params already).
    write_json({"rows": rep["rows"],
                "max_stratum_test_share_deviation": rep["max_stratum_test_share_deviation"]},
               reports_dir(config, root) / SPLIT_METRICS)
    write_text(report_markdown(rep), reports_dir(config, root) / "split.md")
    log.info("split (%s): %d train, %d test rows", config.split.strategy,
             len(result.train), len(result.test))
    return rep
