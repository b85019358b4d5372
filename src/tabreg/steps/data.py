"""The data steps (ingest, validate, split) as callables of (config, project root)."""

from __future__ import annotations

import json
import logging
import urllib.parse
from pathlib import Path

import pandas as pd

from tabreg.config import BATCH, Config
from tabreg.errors import ConfigError, ValidationFailed
from tabreg.io import file_md5, read_table, write_json, write_table, write_text
from tabreg.steps import reports_dir

log = logging.getLogger(__name__)

#: Where downloaded sources and extracted members are kept (git- and DVC-ignored).
CACHE_DIR = ".cache"



def base_batch_name(config: Config) -> str:
    """The ``batch`` label of the base file's rows: named by checksum, not by location, so
    pointing ``DATA_SOURCE`` at a mirror of the same file changes nothing downstream."""
    return f"source@{config.data.sha256[:12]}"


def read_source(config: Config, root: Path) -> pd.DataFrame:
    """The source table: fetched (cached), checksum-verified, extracted and read."""
    from tabreg.data import archive, source
    from tabreg.data import ingest as ing

    data = config.data
    fetched = source.fetch(data.source, data.sha256, root=root,
                           cache_dir=root / CACHE_DIR / "downloads")
    name = Path(urllib.parse.urlparse(data.source).path).name or fetched.name
    if archive.is_archive_name(name):
        if data.member is None:
            raise ConfigError(f"data.member: {name} is an archive; name the CSV inside it "
                              "(data.member is null)")
        csv_path = archive.extract_member(
            fetched, data.member, root / CACHE_DIR / "extract" / data.sha256[:16] / "member.csv")
        shown = f"{name}:{data.member}"
    else:
        csv_path, shown = fetched, name
    return ing.read_csv(csv_path, config.schema, shown)


def ingest(config: Config, root: Path) -> dict:
    """Append the landing batches to the source table. A batch the landing record has not
    accepted yet is judged by the batch contract first and, if bad, quarantined (as the
    retrain flow would): then nothing is ingested and the step fails naming it."""
    from tabreg.data import ingest as ing
    from tabreg.data import landing

    data = config.data
    files = ing.landing_files(root / data.landing_dir)
    checked = landing.screen(config, root, landing.unjudged(config, root, files), by="ingest")
    checked.refuse()
    base = ing.with_identity(read_source(config, root), config.schema, base_batch_name(config),
                             data.id_column, data.duplicates)
    batches = [
        checked.accepted[path.name] if path.name in checked.accepted else
        ing.with_identity(ing.read_csv(path, config.schema), config.schema, path.name,
                          data.id_column, data.duplicates)
        for path in files
    ]
    table, infos = ing.append_batches(base, batches)
    write_table(table, root / config.paths.raw)
    landing.note(config, root, {i.name: {"status": "ingested", "rows": i.rows_read,
                                         "new_rows": i.rows_added} for i in infos[1:]},
                 by="ingest")
    # The report is tracked by git: it names the data by checksum, not by where it was read.
    result = {"sha256": data.sha256, "member": data.member, **ing.summary(infos, table)}
    write_json(result, reports_dir(config, root) / "ingest.json")
    log.info("ingest: %d rows (%d files) from %s -> %s", len(table), len(infos), data.source,
             config.paths.raw)
    return result


def validation_dir(config: Config, root: Path) -> Path:
    return reports_dir(config, root) / "validation"


def validate(config: Config, root: Path) -> dict:
    """Validate the raw table (raw contract) and each appended batch (batch contract)."""
    from tabreg.data import docs
    from tabreg.data import validate as val

    # The result names the table it judged, so split can tell a stale result from a fresh one.
    judged = {"path": config.paths.raw, "md5": file_md5(root / config.paths.raw)}
    table = read_table(root / config.paths.raw)
    out = validation_dir(config, root)
    sample = config.validation.sample_size
    run_name = f"data version {judged['md5'][:8]}"  # as the MLflow runs tag it (DVC's md5)
    reports = {"raw": val.validate_frame(table, root / config.validation.raw_suite,
                                         sample_size=sample, run_name=run_name)}
    base = base_batch_name(config)
    for name in table[BATCH].unique():
        if name != base:
            rows = table[table[BATCH] == name].reset_index(drop=True)
            reports[f"batch-{name}"] = val.validate_frame(
                rows, root / config.validation.batch_suite, sample_size=sample,
                run_name=run_name)
    files = {key: {k: str(v.relative_to(root)) for k, v in val.write_report(rep, out, key).items()}
             for key, rep in reports.items()}
    result = {
        "success": all(r.success for r in reports.values()),
        "table": judged,
        "tables": {key: {"success": r.success, "evaluated": r.evaluated,
                         "failed": len(r.failures), "files": files[key]}
                   for key, r in reports.items()},
    }
    write_json(result, out / "summary.json")
    write_text(docs.index_page(result["tables"], judged), out / "index.html")  # pages' Home
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
    from tabreg.data import split as sp

    _require_valid(config, root)
    table = read_table(root / config.paths.raw)
    result = sp.split(table, config.split)
    write_table(result.train, root / config.paths.train)
    write_table(result.test, root / config.paths.test)
    rep = sp.report(table, result, config.split)
    write_json(rep, reports_dir(config, root) / "split.json")
    # What `dvc metrics show` lists: measurements only (the settings are params already).
    write_json({"rows": rep["rows"],
                "max_stratum_test_share_deviation": rep["max_stratum_test_share_deviation"]},
               reports_dir(config, root) / SPLIT_METRICS)
    write_text(sp.report_markdown(rep), reports_dir(config, root) / "split.md")
    log.info("split (%s): %d train, %d test rows", config.split.strategy,
             len(result.train), len(result.test))
    return rep
