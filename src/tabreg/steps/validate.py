"""The validate stage: the raw table against the raw contract and each appended batch against
the batch contract (Great Expectations), with Data Docs that open offline.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tabreg.config import BATCH, Config
from tabreg.errors import ValidationFailed
from tabreg.io import file_md5, read_table, write_json, write_text
from tabreg.steps import base_batch_name, validation_dir

log = logging.getLogger(__name__)


def validate(config: Config, root: Path) -> dict:
    """Validate the raw table (raw contract) and each appended batch (batch contract)."""
    from tabreg.data import docs
    from tabreg.data.validate import validate_frame, write_report

    # The result names the table it judged, so split can tell a stale result from a fresh one.
    judged = {"path": config.paths.raw, "md5": file_md5(root / config.paths.raw)}
    table = read_table(root / config.paths.raw)
    out = validation_dir(config, root)
    sample = config.validation.sample_size
    run_name = f"data version {judged['md5'][:8]}"  # as the MLflow runs tag it (DVC's md5)
    reports = {"raw": validate_frame(table, root / config.validation.raw_suite,
                                         sample_size=sample, run_name=run_name)}
    base = base_batch_name(config)
    for name in table[BATCH].unique():
        if name != base:
            rows = table[table[BATCH] == name].reset_index(drop=True)
            reports[f"batch-{name}"] = validate_frame(
                rows, root / config.validation.batch_suite, sample_size=sample,
                run_name=run_name)
    files = {key: {k: str(v.relative_to(root)) for k, v in write_report(rep, out, key).items()}
             for key, rep in reports.items()}
    tables = {key: {"success": r.success, "evaluated": r.evaluated, "failed": len(r.failures),
                    "files": files[key]} for key, r in reports.items()}
    result = {
        "success": all(r.success for r in reports.values()),
        "table": judged,
        "tables": tables,
    }
    write_json(result, out / "summary.json")
    write_text(docs.index_page(tables, judged), out / "index.html")  # pages' Home
    failed = [key for key, r in reports.items() if not r.success]
    if failed:
        text = "\n\n".join(reports[key].summary() for key in failed)
        moved = _quarantine_failed(config, root, {key.removeprefix("batch-"): reports[key]
                                                  for key in failed if key.startswith("batch-")})
        raise ValidationFailed(
            f"validation failed for {', '.join(failed)}; nothing downstream was run.\n{text}\n"
            f"Full results: {out.relative_to(root)}/ (JSON and HTML){moved}")
    log.info("validate: %d tables pass their contracts", len(reports))
    return result


def _quarantine_failed(config: Config, root: Path, failed: dict) -> str:
    """Quarantine the landing files of the batches that failed their contract here (a batch
    ingested before the record knew it, or under an older suite), as ingest and the retrain
    flow would; returns what to tell the user."""
    from tabreg.data import landing

    landing_dir = root / config.data.landing_dir
    files = [landing_dir / name for name in failed if (landing_dir / name).is_file()]
    if not files:
        return ""
    reasons = {p.name: failed[p.name].summary() for p in files}
    where = landing.quarantine(config, root, files, reasons, by="validate")
    return (f"\n{', '.join(sorted(reasons))} moved to {where.relative_to(root)}/ with the "
            "reason; run ingest again (or `dvc repro`) to rebuild the raw table without it")
