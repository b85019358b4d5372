"""The MLflow model registry: registration, the ``champion``/``challenger`` aliases, the
decision ledger and rollback.

Aliases, not the deprecated stages: the served model is ``models:/<name>@champion``. Every
move of ``champion`` goes through here and is recorded twice: as tags on the model versions
concerned (visible in the MLflow UI) and as a line of the ledger (``registry.ledger``, one JSON
object per line: who, what, why, evidence). An alias only ever moves to a version whose
registration finished and whose model loads, so it never points at half a model.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tabreg.config import Config
from tabreg.errors import TabregError
from tabreg.evaluation.card import number as amount

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
#: Tag on a version that became champion: the version it replaced (for rollback).
PREVIOUS_TAG = "previous_champion"
#: MLflow caps tag values; longer evidence goes to the ledger only.
_TAG_LIMIT = 5000


class RegistryError(TabregError):
    """The registry is not in the state a command needs (no challenger, a dangling alias...)."""


def model_uri(name: str, alias: str) -> str:
    """The URI MLflow resolves to the version holding ``alias``."""
    return f"models:/{name}@{alias}"


def split_signature(config: Config) -> str:
    """A short hash of the split parameters: two models whose versions carry the same
    signature were split the same way (see :func:`unfair_reason`)."""
    text = json.dumps(config.split.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def unfair_reason(champion_tags: dict[str, str], config: Config, data_version: str) -> str | None:
    """Why the champion cannot be scored fairly on the current test split, if it cannot.

    The champion must not have trained on any current test row. The ``hash`` split puts a row
    on the same side for ever (appending never moves a row), so a champion split the same way
    is safe on any later data version; the ``random`` split reshuffles when the data changes,
    so it is safe only on the very data version the champion was split from.
    """
    signature = champion_tags.get("split_signature")
    if signature is None:
        return "the champion carries no split lineage (split_signature tag)"
    if signature != split_signature(config):
        return (f"the champion was split with other parameters (signature {signature}, now "
                f"{split_signature(config)}): its training rows may be in this test split")
    old = champion_tags.get("data_version")
    if config.split.strategy != "hash" and old != data_version:
        return (f"split.strategy is {config.split.strategy!r} and the data changed since the "
                f"champion was trained ({old} -> {data_version}): its training rows may be in "
                "this test split; use the 'hash' split to compare across data versions")
    return None


#: Tags set on a version when it becomes champion: its score on the test split it was judged
#: on, which the next gate compares with (see ``tabreg.promotion.gate.evaluation_changed``).
PROMOTED_RMSE, PROMOTED_INTERVAL = "promoted.test_rmse", "promoted.test_rmse_interval"


def promoted_tags(rmse: float, interval: list[float], data_version: str,
                  n_rows: int) -> dict[str, str]:
    """The tags a version gets when it becomes champion: the evidence it was promoted on,
    which the next gate checks the champion against."""
    return {PROMOTED_RMSE: f"{rmse:.2f}", PROMOTED_INTERVAL: f"{interval[0]:.2f}-{interval[1]:.2f}",
            "promoted.data_version": data_version, "promoted.test_rows": str(n_rows)}


def recorded_score(tags: dict[str, str]) -> Any | None:
    """The champion's test RMSE and bootstrap interval as recorded when it was promoted, or
    (a champion promoted before these tags existed) at its registration, from ``evaluate``;
    None when neither is recorded or readable, and then the gate cannot check it."""
    from tabreg.promotion.gate import Recorded

    for rmse_key, interval_key, where in (
            (PROMOTED_RMSE, PROMOTED_INTERVAL, "promoted.data_version"),
            ("test_rmse", "test_rmse_interval", "data_version")):
        try:
            rmse = float(tags[rmse_key])
            low, high = (float(v) for v in tags[interval_key].split("-"))
        except (KeyError, ValueError):
            continue
        rows = tags.get("promoted.test_rows") if rmse_key == PROMOTED_RMSE else None
        place = f"data version {tags.get(where, '?')}" + (f", {rows} test rows" if rows else "")
        return Recorded(rmse, low, high, place)
    return None


# --- MLflow access --------------------------------------------------------------------------

def client(config: Config, root: Path) -> Any:
    """An MlflowClient on the pipeline's store (checked reachable first)."""
    from mlflow import MlflowClient

    from tabreg.store import tracking

    tracking.start(config, root)
    uri = tracking.tracking_uri(config, root)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def get_version(mlflow_client: Any, name: str, version: str) -> Any | None:
    """Version ``version`` of ``name``, or None when the registry has no such version."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version(name, str(version))
    except MlflowException:
        return None


def alias_version(mlflow_client: Any, name: str, alias: str) -> Any | None:
    """The version holding ``alias``, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def load_version(name: str, version: Any, role: str) -> Any:
    """Load a registered version as a pyfunc model, or say clearly why it cannot be."""
    import mlflow.pyfunc

    uri = f"models:/{name}/{version.version}"
    try:
        return mlflow.pyfunc.load_model(uri)
    except Exception as exc:  # noqa: BLE001 - any failure means the same thing to the user
        raise RegistryError(
            f"{role} {name} version {version.version} (source {version.source}) cannot be "
            f"loaded: {type(exc).__name__}: {str(exc)[:300]}. The alias is dangling: "
            "`make rollback` moves champion back, `make restore` brings back a backup of the "
            "store and its files, or register a new model with `make run`"
        ) from None


def register(mlflow_client: Any, name: str, source_uri: str, tags: dict[str, str]) -> Any:
    """Register ``source_uri`` as a new version of ``name`` and make it the challenger, once
    its registration is READY and its model loads.

    Through the client rather than ``mlflow.register_model``, which prints "Successfully
    registered model" and "Created version" to stderr (the caller logs what happened)."""
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    model_id = source_uri.removeprefix("models:/") if source_uri.startswith("models:/m-") else None
    version = mlflow_client.create_model_version(name, source_uri, tags=tags, model_id=model_id,
                                                 await_creation_for=300)
    version = mlflow_client.get_model_version(name, version.version)
    if version.status != "READY":
        raise RegistryError(f"{name} version {version.version} is {version.status} after "
                            "registration; the challenger alias was not moved")
    load_version(name, version, "new")
    mlflow_client.set_registered_model_alias(name, CHALLENGER, version.version)
    return version


def set_tags(mlflow_client: Any, name: str, version: str, tags: dict[str, Any]) -> None:
    """Set the tags on a version; a None value removes the tag (no empty tags: a tag that
    does not apply, like the champion's RMSE when there was none, is absent)."""
    current = None
    for key, value in tags.items():
        if value is None:
            if current is None:
                current = mlflow_client.get_model_version(name, version).tags
            if key in current:
                mlflow_client.delete_model_version_tag(name, version, key)
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        mlflow_client.set_model_version_tag(name, version, key, text[:_TAG_LIMIT])


def describe_version(name: str, version: str, tags: dict[str, str],
                     decision: str | None = None) -> str:
    """A version's description (one paragraph, shown on its page in the MLflow UI): what it
    is, from its tags, and, once judged, what the gate decided and why (``decision``)."""
    text = f"{name} version {version}: a {tags.get('family', 'registered')} model"
    if tags.get("data_version"):
        text += f" trained on data version {tags['data_version']}"
    if tags.get("split.strategy"):
        text += f" ({tags['split.strategy']} split)"
    with contextlib.suppress(KeyError, ValueError):  # a version registered by hand has none
        text += f"; test RMSE {amount(float(tags['test_rmse']))}"
        low, high = (float(v) for v in tags["test_rmse_interval"].split("-"))
        text += f" (bootstrap interval {amount(low)}-{amount(high)})"
    if tags.get("git_commit"):
        text += f"; code at commit {tags['git_commit'][:12]}"
    return f"{text}. {decision or 'Not judged by the champion/challenger gate yet.'}"


# --- the ledger -----------------------------------------------------------------------------

def actor() -> str:
    """Who acted: the user and host, or the Prefect flow run when one is running."""
    who = f"{getpass.getuser()}@{socket.gethostname()}"
    run = os.environ.get("PREFECT__FLOW_RUN_ID")
    return f"{who} (prefect flow run {run})" if run else who


def record(ledger: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Append a decision to the ledger as one whole line, synced to disk before returning.

    The line goes out in one ``write`` on a descriptor opened for appending, then ``fsync``:
    a crash leaves at most a torn last line, never half an entry glued to the next. If the
    ledger ends in such a torn line (no final newline), the entry starts on a line of its own.
    """
    entry = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "by": actor(), **entry}
    ledger.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(entry, default=str, sort_keys=False) + "\n").encode("utf-8")
    fd = os.open(ledger, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        while line:  # a regular file takes it whole; a short write only on a full disk
            line = line[os.write(fd, line):]
        os.fsync(fd)
    finally:
        os.close(fd)
    return entry


def read_ledger(ledger: Path, last: int | None = None) -> list[dict[str, Any]]:
    """The ledger's entries, oldest first; a line that is not a JSON object (a write torn by
    a crash) is reported as a warning, naming the file and line, and skipped."""
    if not ledger.exists():
        return []
    entries = []
    for number, line in enumerate(ledger.read_text(encoding="utf-8",
                                                   errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            entry = None
        if not isinstance(entry, dict):
            log.warning("%s, line %d: not a whole ledger entry (a write cut short?); skipped: "
                        "%.80s", ledger, number, line)
            continue
        entries.append(entry)
    return entries[-last:] if last else entries


# --- moving the champion --------------------------------------------------------------------

def promote(mlflow_client: Any, name: str, version: str, previous: str | None) -> None:
    """Make ``version`` the champion, remembering the one it replaces (none: no tag)."""
    set_tags(mlflow_client, name, version, {PREVIOUS_TAG: previous})
    mlflow_client.set_registered_model_alias(name, CHAMPION, version)


def rollback(mlflow_client: Any, name: str) -> tuple[str, str]:
    """Move champion back to the version it replaced; returns (from, to) versions."""
    current = alias_version(mlflow_client, name, CHAMPION)
    if current is None:
        raise RegistryError(f"{name} has no champion: nothing to roll back")
    previous = current.tags.get(PREVIOUS_TAG) or ""
    if not previous:
        raise RegistryError(f"{name} version {current.version} is the first champion: there is "
                            "no previous champion to roll back to")
    target = get_version(mlflow_client, name, previous)
    if target is None:
        raise RegistryError(f"the previous champion, {name} version {previous}, no longer "
                            f"exists; champion left at version {current.version}")
    load_version(name, target, "previous champion")
    mlflow_client.set_registered_model_alias(name, CHAMPION, target.version)
    return str(current.version), str(target.version)


@dataclass(frozen=True)
class ModelRef:
    """Which registered version is being used, and how it was asked for."""

    name: str
    version: str
    alias: str | None
    run_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "alias": self.alias,
                "run_id": self.run_id}


def open_store(config: Config, root: Path) -> Any:
    """An MlflowClient on the pipeline's tracking store, without creating anything in it."""
    from mlflow import MlflowClient

    from tabreg.store import tracking

    uri = tracking.connect(config, root, must_exist=True)  # also where models:/ resolve
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def find_version(mlflow_client: Any, name: str, version: str | None = None) -> Any:
    """The registered version to use: ``version``, or the one holding ``champion``."""
    if version is None:
        found = alias_version(mlflow_client, name, CHAMPION)
        if found is None:
            raise RegistryError(f"{name} has no {CHAMPION}: run `make run` (it registers and "
                                "gates a model), or name a version (VERSION=<n>)")
        return found
    found = get_version(mlflow_client, name, version)
    if found is None:
        raise RegistryError(f"{name} has no version {version!r}")
    return found


def load_registered(name: str, version: Any, alias: str | None) -> tuple[Any, ModelRef]:
    """Load a registered version (from the store :func:`open_store` opened) as a pyfunc
    model; an error says why it cannot be loaded."""
    model = load_version(name, version, alias or f"version {version.version}")
    return model, ModelRef(name, str(version.version), alias, version.run_id)
