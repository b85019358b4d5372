"""The ingest stage: the source table (fetched, checksum-verified, extracted) with the landing
batches appended, every row given its identity.
"""

from __future__ import annotations

import logging
import urllib.parse
from pathlib import Path

import pandas as pd

from tabreg.config import Config
from tabreg.errors import ConfigError
from tabreg.io import write_json, write_table
from tabreg.steps import base_batch_name, reports_dir

log = logging.getLogger(__name__)


#: Where downloaded sources and extracted members are kept (git- and DVC-ignored).
CACHE_DIR = ".cache"


def read_source(config: Config, root: Path) -> pd.DataFrame:
    """The source table: fetched (cached), checksum-verified, extracted and read."""
    from tabreg.data import archive, source
    from tabreg.data.ingest import read_csv

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
    return read_csv(csv_path, config.schema, shown)


def ingest(config: Config, root: Path) -> dict:
    """Append the landing batches to the source table. A batch the landing record has not
    accepted yet is judged by the batch contract first and, if bad, quarantined (as the
    retrain flow would): then nothing is ingested and the step fails naming it."""
    from tabreg.data import landing
    from tabreg.data.ingest import append_batches, landing_files, summary, with_identity

    data = config.data
    files = landing_files(root / data.landing_dir)
    checked = landing.screen(config, root, landing.unjudged(config, root, files), by="ingest")
    checked.refuse()
    base = with_identity(read_source(config, root), config.schema, base_batch_name(config),
                         data.id_column, data.duplicates)
    batches = [checked.accepted[path.name] if path.name in checked.accepted
               else landing.read_batch(config, path) for path in files]
    table, infos = append_batches(base, batches)
    write_table(table, root / config.paths.raw)
    landing.note(config, root, {i.name: {"status": "ingested", "rows": i.rows_read,
                                         "new_rows": i.rows_added} for i in infos[1:]},
                 by="ingest")
    # The report is tracked by git: it names the data by checksum, not by where it was read.
    result = {"sha256": data.sha256, "member": data.member, **summary(infos, table)}
    write_json(result, reports_dir(config, root) / "ingest.json")
    log.info("ingest: %d rows (%d files) from %s -> %s", len(table), len(infos), data.source,
             config.paths.raw)
    return result
