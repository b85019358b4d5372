"""The registry steps: register (then gate), promote, rollback and status.

``register`` is the pipeline's last stage: the trained model becomes a new registered version
with the alias ``challenger``, and the gate decides on it at once. ``promote`` runs the gate
again for the current challenger (after changing the thresholds, say), ``rollback`` moves
``champion`` back, ``status`` shows where things stand. Each decision is written to
``reports/promotion.json``, tagged on the model versions and appended to the ledger.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from tabreg import registry
from tabreg.config import Config
from tabreg.io import read_table, write_json
from tabreg.pipeline import data_version as recorded_data_version
from tabreg.registry import CHALLENGER, CHAMPION, RegistryError
from tabreg.steps import reports_dir

log = logging.getLogger(__name__)

TRAIN_FILE = "models/train.json"
DECISION_FILE = "promotion.json"


def _ledger(config: Config, root: Path) -> Path:
    return root / config.registry.ledger


def _predict(model: Any, frame: Any, config: Config) -> np.ndarray:
    return np.asarray(model.predict(frame[list(config.schema.features)]), dtype=float)


def gate(config: Config, root: Path, *, trigger: str) -> dict:
    """Score the challenger and the champion on the current test split, decide, record,
    and move ``champion`` if the decision is to promote."""
    from tabreg import gate as rules
    from tabreg.evaluation.slices import slice_labels

    name = config.registry.model_name
    mlflow_client = registry.client(config, root)
    challenger = registry.alias_version(mlflow_client, name, CHALLENGER)
    if challenger is None:
        raise RegistryError(f"{name} has no challenger to judge: train and register a model "
                            "first (`make run`)")
    champion = registry.alias_version(mlflow_client, name, CHAMPION)
    base = {"model": name, "trigger": trigger, "challenger": str(challenger.version),
            "champion": str(champion.version) if champion else None}
    if champion is not None and champion.version == challenger.version:
        entry = registry.record(_ledger(config, root), {
            **base, "action": "none",
            "reasons": [f"version {challenger.version} is already the champion"]})
        write_json(entry, reports_dir(config, root) / DECISION_FILE)
        return entry
    test = read_table(root / config.paths.test)
    y = test[config.schema.target].to_numpy(dtype=float)
    new = _predict(registry.load_version(name, challenger, "challenger"), test, config)
    old = unfair = recorded = None
    version = recorded_data_version(root, config.paths.raw) or "unrecorded"
    if champion is not None:
        old = _predict(registry.load_version(name, champion, "champion"), test, config)
        unfair = registry.unfair_reason(champion.tags, config, version)
        recorded = registry.recorded_score(champion.tags)
    slices = {s.name: slice_labels(test, s).to_numpy() for s in config.evaluate.slices}
    decision = rules.decide(y, new, old, rules=config.promotion, slices=slices, unfair=unfair,
                            recorded=recorded)
    evidence = decision.to_dict()
    _tag_decision(mlflow_client, name, challenger.version, decision, trigger, base["champion"])
    if decision.promote:
        registry.set_tags(mlflow_client, name, challenger.version, registry.promoted_tags(
            decision.challenger_rmse, decision.challenger_interval, version, decision.n_rows))
        registry.promote(mlflow_client, name, challenger.version, base["champion"])
    action = {"promote": "promote", "keep": "keep champion", "refuse": "refuse"}
    entry = registry.record(_ledger(config, root), {
        **base, "action": action[decision.outcome], "reasons": decision.reasons,
        "evidence": {k: v for k, v in evidence.items() if k not in ("outcome", "reasons")}})
    write_json(entry, reports_dir(config, root) / DECISION_FILE)
    log.info("gate: %s %s version %s (%s)", action[decision.outcome], name, challenger.version,
             "; ".join(decision.reasons))
    return entry


def _tag_decision(mlflow_client: Any, name: str, version: str, decision: Any, trigger: str,
                  champion: str | None) -> None:
    """The decision and its evidence as tags on the judged version (seen in the MLflow UI)."""
    evidence = decision.to_dict()
    registry.set_tags(mlflow_client, name, version, {
        "gate.outcome": decision.outcome, "gate.trigger": trigger,
        "gate.reasons": "; ".join(decision.reasons),
        "gate.challenger_rmse": f"{decision.challenger_rmse:.2f}",
        "gate.champion_rmse": ("" if decision.champion_rmse is None
                               else f"{decision.champion_rmse:.2f}"),
        "gate.champion_version": champion or "",
        "gate.difference": evidence["difference"],
        "gate.slices": {f"{r['slice']}={r['value']}": round(r["change"], 4)
                        for r in decision.slices},
    })


def register(config: Config, root: Path) -> dict:
    """Register the trained model as the challenger, then run the gate."""
    import mlflow

    from tabreg.steps.model import read_json

    trained = read_json(root / TRAIN_FILE, "train")
    metrics = read_json(reports_dir(config, root) / "metrics.json", "evaluate")
    mlflow_client = registry.client(config, root)
    run = mlflow.get_run(trained["run_id"])
    tags = {
        "data_version": trained["data_version"],
        "split_signature": registry.split_signature(config),
        "split.strategy": config.split.strategy,
        "git_commit": run.data.tags.get("git_commit", ""),
        "run_id": trained["run_id"],
        "family": trained["family"],
        "profile": config.profile,
        "test_rmse": f"{metrics['rmse']:.2f}",
        "test_rmse_interval": f"{metrics['rmse_low']:.2f}-{metrics['rmse_high']:.2f}",
    }
    name = config.registry.model_name
    version = registry.alias_version(mlflow_client, name, CHALLENGER)
    if version is not None and version.tags.get("run_id") == trained["run_id"]:
        # Only the evaluation changed (say, evaluate.bootstrap): same model, no new version.
        registry.set_tags(mlflow_client, name, version.version,
                          {k: tags[k] for k in ("test_rmse", "test_rmse_interval")})
    else:
        version = registry.register(mlflow_client, name, trained["model_uri"], tags)
    log.info("register: %s version %s is the challenger", name, version.version)
    entry = gate(config, root, trigger="pipeline")
    with mlflow.start_run(run_id=trained["parent_run_id"]):
        mlflow.set_tags({"registered_version": str(version.version),
                         "promotion.action": entry["action"]})
        mlflow.log_dict(entry, "promotion.json")
    return entry


def promote(config: Config, root: Path) -> dict:
    return gate(config, root, trigger="manual")


def rollback(config: Config, root: Path) -> dict:
    name = config.registry.model_name
    mlflow_client = registry.client(config, root)
    before, after = registry.rollback(mlflow_client, name)
    entry = registry.record(_ledger(config, root), {
        "model": name, "trigger": "manual", "action": "rollback", "champion": before,
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
            "decisions": registry.read_ledger(_ledger(config, root), last=last)}


def status_text(result: dict) -> str:
    """``status`` as a screenful for people."""
    lines = [f"Model {result['model']}"]
    for role in (CHAMPION, CHALLENGER):
        info = result[role]
        if info is None:
            lines.append(f"  {role:<10} none")
            continue
        rmse = info.get("test_rmse")
        lines.append(f"  {role:<10} version {info['version']}, {info.get('family', '?')}, "
                     f"test RMSE {float(rmse):,.0f}" if rmse else f"  {role:<10} version "
                     f"{info['version']}")
        lines.append(f"  {'':<10} data version {info.get('data_version', '?')}, commit "
                     f"{info.get('git_commit', '?')[:12]}")
    lines.append("  last decisions:" if result["decisions"] else "  no decisions yet")
    for d in result["decisions"]:
        what = d["action"]
        if d.get("challenger"):
            what += f" (challenger {d['challenger']}, champion {d.get('champion') or 'none'})"
        lines.append(f"    {d['at']} {what}: {'; '.join(d.get('reasons', []))[:160]}")
    return "\n".join(lines)


def read_decision(config: Config, root: Path) -> dict | None:
    path = reports_dir(config, root) / DECISION_FILE
    return json.loads(path.read_text()) if path.exists() else None
