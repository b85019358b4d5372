"""Commands on the ``champion`` alias outside the pipeline: promote (the gate, by hand),
rollback, and status.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tabreg.config import Config
from tabreg.evaluation.card import number
from tabreg.promotion import registry
from tabreg.promotion.registry import CHALLENGER, CHAMPION
from tabreg.steps.register import gate, ledger_path, store_name

log = logging.getLogger(__name__)


def promote(config: Config, root: Path) -> dict:
    """Run the gate by hand on the current challenger (``make promote``)."""
    return gate(config, root, trigger="manual")


def rollback(config: Config, root: Path) -> dict:
    """Give ``champion`` back to the version it replaced, and record why."""
    name = config.registry.model_name
    mlflow_client = registry.client(config, root)
    before, after = registry.rollback(mlflow_client, name)
    entry = registry.record(ledger_path(config, root), {
        "model": name, "store": store_name(config, root), "trigger": "manual",
        "action": "rollback", "champion": before,
        "challenger": None, "to": after,
        "reasons": [f"rolled back by request: champion {before} -> {after}"]})
    registry.set_tags(mlflow_client, name, before, {"rolled_back_at": entry["at"]})
    log.info("rollback: %s champion %s -> %s", name, before, after)
    return entry


def status(config: Config, root: Path, last: int = 5) -> dict:
    """The champion and challenger (version, data version, test RMSE) and the last decisions."""
    name = config.registry.model_name
    mlflow_client = registry.client(config, root)

    def describe(alias: str) -> dict | None:
        version = registry.alias_version(mlflow_client, name, alias)
        if version is None:
            return None
        keep = ("data_version", "test_rmse", "test_rmse_interval", "family", "git_commit",
                "split.strategy", "gate.outcome", registry.PREVIOUS_TAG)
        return {"version": str(version.version), "created": version.creation_timestamp,
                **{k: version.tags[k] for k in keep if k in version.tags}}

    return {"model": name, "champion": describe(CHAMPION),
            "challenger": describe(CHALLENGER),
            "decisions": registry.read_ledger(ledger_path(config, root), last=last)}


def status_text(result: dict) -> str:
    """``status`` as a screenful for people."""
    lines = [f"Model {result['model']}"]
    for role in (CHAMPION, CHALLENGER):
        info = result[role]
        if info is None:
            lines.append(f"  {role:<10} none")
            continue
        if role == CHALLENGER and result[CHAMPION] and \
                result[CHAMPION]["version"] == info["version"]:
            lines.append(f"  {role:<10} the champion itself (version {info['version']}): none "
                         "waiting to be judged")
            continue
        rmse = info.get("test_rmse")
        lines.append(f"  {role:<10} version {info['version']}, {info.get('family', '?')}, "
                     f"test RMSE {number(float(rmse))}" if rmse else f"  {role:<10} version "
                     f"{info['version']}")
        lines.append(f"  {'':<10} data version {info.get('data_version', '?')}, commit "
                     f"{info.get('git_commit', '?')[:12]}")
    lines.append("  last decisions:" if result["decisions"] else "  no decisions yet")
    for d in result["decisions"]:
        what = d["action"]
        if d.get("challenger"):
            what += f" (challenger {d['challenger']}, champion {d.get('champion') or 'none'})"
        if d.get("verdict"):  # a monitoring report's
            what += f" {d['verdict']} (remedy {d.get('remedy', 'none')})"
        lines.append(f"    {d['at']} {what}: {'; '.join(d.get('reasons', []))[:160]}")
    return "\n".join(lines)
