"""What the Prefect UI shows of a flow run, read through Prefect's own client."""

from __future__ import annotations

import asyncio
import time
from typing import Any


def prefect_view(flow_run_id: Any, wait_for_log: str = "") -> dict:
    """What the Prefect UI shows of a flow run, read through Prefect's client: its task runs
    (name -> state name), its artifacts (key -> data) and its log messages (polled until
    ``wait_for_log`` arrives: logs reach the API in batches)."""
    from prefect import get_client
    from prefect.client.schemas import filters as f

    async def read() -> dict:
        async with get_client() as client:
            tasks = await client.read_task_runs(
                flow_run_filter=f.FlowRunFilter(id=f.FlowRunFilterId(any_=[flow_run_id])))
            artifacts = await client.read_artifacts(artifact_filter=f.ArtifactFilter(
                flow_run_id=f.ArtifactFilterFlowRunId(any_=[flow_run_id])))
            logs = await client.read_logs(log_filter=f.LogFilter(
                flow_run_id=f.LogFilterFlowRunId(any_=[flow_run_id])))
        return {"tasks": {t.name: t.state.name for t in tasks},
                "artifacts": {a.key: a.data for a in artifacts},
                "logs": [entry.message for entry in logs]}

    deadline = time.monotonic() + 30
    while True:
        view = asyncio.run(read())
        if any(wait_for_log in m for m in view["logs"]) or time.monotonic() > deadline:
            return view
        time.sleep(1)
