"""A flow run's story where Prefect shows it: its logs and its artifacts.

The terminal gets the one-screen summary from the flow's caller; the flow run page in the
Prefect UI gets the same summary as a log line, a Markdown artifact and a table artifact, so
a run can be understood from the UI alone. Imported by the flows only (Prefect is loaded here).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

#: A logger whose only handler sends to the Prefect API: the summary the terminal already
#: shows (printed by the flow's caller) is not printed a second time.
_UI_LOGGER = "tabreg.orchestration.run_report"


def log_to_ui(text: str) -> None:
    """Record ``text`` in the current flow run's logs (the UI), not on the console."""
    from prefect.logging.handlers import APILogHandler

    logger = logging.getLogger(_UI_LOGGER)
    if not any(isinstance(h, APILogHandler) for h in logger.handlers):
        logger.handlers = [APILogHandler()]
        logger.propagate = False
        logger.setLevel(logging.INFO)
    logger.info(text)


def markdown_table(rows: Iterable[Mapping[str, Any]]) -> str:
    """Rows of equal keys as a Markdown table (``|`` in values escaped)."""
    rows = list(rows)
    if not rows:
        return ""
    keys = list(rows[0])

    def cell(value: Any) -> str:
        return str("" if value is None else value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    lines += ["| " + " | ".join(cell(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def publish(key: str, title: str, markdown: str, table: list[dict[str, Any]]) -> None:
    """The run's summary as Prefect artifacts: ``<key>-summary`` (Markdown) and
    ``<key>-table`` (a table); keyed, so the UI also lists them across runs."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_markdown_artifact(markdown=markdown, key=f"{key}-summary", description=title)
    create_table_artifact(table=table, key=f"{key}-table", description=f"{title}: table")
