"""The register stage: the trained model registered as a version, judged by the gate against
the champion on the same test rows, and promoted (or not) with the decision recorded.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from tabreg.config import Config
from tabreg.io import read_table, write_json
from tabreg.orchestration.dvc_stages import data_version as recorded_data_version
from tabreg.promotion import registry
from tabreg.promotion.registry import CHALLENGER, CHAMPION, RegistryError
from tabreg.steps import reports_dir
from tabreg.steps.records import read_json

log = logging.getLogger(__name__)

DECISION_FILE = "promotion.json"


def ledger_path(config: Config, root: Path) -> Path:
    """The decision ledger's file."""
    return root / config.registry.ledger


def store_name(config: Config, root: Path) -> str:
    """The store a decision was made in, as the ledger names it (see ``tabreg.store.health``:
    a decision is checked only against its own store)."""
    from tabreg.store import health, tracking

    return health.store_id(tracking.tracking_uri(config, root), root)


def _predict(model: Any, frame: Any, config: Config) -> np.ndarray:
    """The point predictions of a registered version (with intervals or from before them)."""
    from tabreg.models.intervals import split_output

    return split_output(model.predict(frame[list(config.schema.features)]))[0]


def gate(config: Config, root: Path, *, trigger: str) -> dict:
    """Score the challenger and the champion on the current test split, decide, record,
    and move ``champion`` if the decision is to promote."""
    from tabreg.evaluation.slices import slice_labels
    from tabreg.promotion import gate as rules

    name = config.registry.model_name
    mlflow_client = registry.client(config, root)
    challenger = registry.alias_version(mlflow_client, name, CHALLENGER)
    if challenger is None:
        raise RegistryError(f"{name} has no challenger to judge: train and register a model "
                            "first (`make run`)")
    champion = registry.alias_version(mlflow_client, name, CHAMPION)
    base = {"model": name, "store": store_name(config, root), "trigger": trigger,
            "challenger": str(challenger.version),
            "champion": str(champion.version) if champion else None,
            # which trained model, on which data: a reader can tell this decision from one
            # about another model (``read_decision``), the retrain flow what data is modelled
            "run_id": challenger.tags.get("run_id"),
            "data_version": challenger.tags.get("data_version")}
    if champion is not None and champion.version == challenger.version:
        entry = registry.record(ledger_path(config, root), {
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
    _tag_decision(mlflow_client, name, challenger, decision, trigger, base["champion"])
    if decision.promote:
        registry.set_tags(mlflow_client, name, challenger.version, registry.promoted_tags(
            decision.challenger_rmse, decision.challenger_interval, version, decision.n_rows))
        registry.promote(mlflow_client, name, challenger.version, base["champion"])
    action = {"promote": "promote", "keep": "keep champion", "refuse": "refuse"}
    entry = registry.record(ledger_path(config, root), {
        **base, "action": action[decision.outcome], "reasons": decision.reasons,
        "evidence": {k: v for k, v in evidence.items() if k not in ("outcome", "reasons")}})
    write_json(entry, reports_dir(config, root) / DECISION_FILE)
    log.info("gate: %s %s version %s (%s)", action[decision.outcome], name, challenger.version,
             "; ".join(decision.reasons))
    return entry


def _tag_decision(mlflow_client: Any, name: str, judged: Any, decision: Any, trigger: str,
                  champion: str | None) -> None:
    """The decision and its evidence as tags on the judged version, and in its description
    (both seen in the MLflow UI)."""
    evidence = decision.to_dict()
    version = judged.version
    text = _decision_text(decision, trigger, champion)
    mlflow_client.update_model_version(name, version, description=registry.describe_version(
        name, version, judged.tags, text))
    registry.set_tags(mlflow_client, name, version, {
        "gate.outcome": decision.outcome, "gate.trigger": trigger,
        "gate.reasons": "; ".join(decision.reasons),
        "gate.challenger_rmse": f"{decision.challenger_rmse:.2f}",
        # None: no such evidence (no champion to compare with), so no tag rather than "".
        "gate.champion_rmse": (None if decision.champion_rmse is None
                               else f"{decision.champion_rmse:.2f}"),
        "gate.champion_version": champion,
        "gate.difference": evidence["difference"] or None,
        "gate.slices": {f"{r['slice']}={r['value']}": round(r["change"], 4)
                        for r in decision.slices} or None,
    })


def _decision_text(decision: Any, trigger: str, champion: str | None) -> str:
    """The gate's decision on a version as sentences for its description."""
    why = "; ".join(decision.reasons)
    if decision.promote:
        replaced = f", replacing version {champion}" if champion else ""
        return f"The gate ({trigger}) made it champion{replaced}: {why}."
    if decision.outcome == "refuse":
        return f"The gate ({trigger}) refused to judge it against version {champion}: {why}."
    kept = f"kept version {champion} as champion" if champion else "did not make it champion"
    return f"The gate ({trigger}) {kept}: {why}."


def _training_run(mlflow_client: Any, run_id: str, record: str) -> Any:
    """The run ``train`` logged the model in; it is gone when the store was replaced since."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_run(run_id)
    except MlflowException:
        raise RegistryError(
            f"the training run {run_id} ({record}) is not in the MLflow store: the store was "
            "replaced after `train` ran. Restore it (`make restore`), or train again: "
            "`dvc repro -sf train && make register`") from None


def register(config: Config, root: Path) -> dict:
    """Register the trained model as the challenger, then run the gate."""
    import mlflow

    from tabreg.store import tracking

    trained = read_json(root / config.paths.model_record, "train")
    metrics = read_json(reports_dir(config, root) / "metrics.json", "evaluate")
    mlflow_client = registry.client(config, root)
    run = _training_run(mlflow_client, trained["run_id"], config.paths.model_record)
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
        mlflow_client.update_model_version(name, version.version, description=registry.
                                           describe_version(name, version.version, tags))
    log.info("register: %s version %s is the challenger", name, version.version)
    entry = gate(config, root, trigger="pipeline")
    with tracking.start_run(run_id=trained["parent_run_id"]):
        mlflow.set_tags({"registered_version": str(version.version),
                         "promotion.action": entry["action"]})
        mlflow.log_dict(entry, "promotion.json")
    return entry


def read_decision(config: Config, root: Path, *, run_id: str | None = None) -> dict | None:
    """The gate's last decision (``reports/promotion.json``); with ``run_id``, only if it
    judged the model that training run produced: a run that never reached the gate (it
    failed, or the gate had nothing new to judge) must not report an older decision as its
    own. A decision from before decisions named their run is returned as it is."""
    path = reports_dir(config, root) / DECISION_FILE
    decision = json.loads(path.read_text()) if path.exists() else None
    if decision is None or run_id is None or "run_id" not in decision:
        return decision
    return decision if decision["run_id"] == run_id else None


def trained_run_id(config: Config, root: Path) -> str | None:
    """The MLflow run of the model ``train`` last produced (``paths.model_record``)."""
    path = root / config.paths.model_record
    return json.loads(path.read_text()).get("run_id") if path.exists() else None
