"""MLflow tracking: where runs go, and what every run records for lineage.

The default store is embedded (a SQLite file and a local artifact folder in the project, both
git-ignored); ``MLFLOW_TRACKING_URI`` or ``tracking.uri`` points at a server instead. The store is
checked before any work starts, so an unreachable server fails in seconds with a message, not
after a tuning run, and nothing is half-registered.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tabreg.config import Config
from tabreg.errors import ConfigError, TabregError

ARTIFACTS_DIR = "mlartifacts"


def tracking_uri(config: Config, root: Path) -> str:
    """The MLflow store: ``tracking.uri`` (or ``MLFLOW_TRACKING_URI``), else a SQLite file in
    the project."""
    if config.tracking.uri:
        return config.tracking.uri
    return f"sqlite:///{(root / 'mlflow.db').resolve()}"


def check_reachable(uri: str, timeout: float = 5.0, *, must_exist: bool = False) -> None:
    """Fail fast, naming the URI, when the tracking store cannot be reached (``must_exist``:
    nor when a local store has not been created yet, for readers of an existing registry)."""
    parsed = urllib.parse.urlparse(uri)
    hint = "set tracking.uri in params.yaml or MLFLOW_TRACKING_URI"
    if parsed.scheme in ("http", "https"):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                if response.status >= 400:
                    raise ConfigError(f"MLflow tracking server {uri} answered {response.status}")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConfigError(f"MLflow tracking server {uri} cannot be reached ({reason}); "
                              f"start it or {hint}") from None
    elif parsed.scheme == "sqlite":
        store = Path(urllib.request.url2pathname(parsed.path))
        if not store.parent.is_dir():
            raise ConfigError(f"MLflow tracking store {uri}: folder {store.parent} does not "
                              f"exist; {hint}")
        if must_exist and not store.exists():  # not a configuration error: nothing trained yet
            raise TabregError(f"no MLflow store at {uri}: train and register a model first "
                              "(`make run`), or set MLFLOW_TRACKING_URI")


def connect(config: Config, root: Path, *, must_exist: bool = False) -> str:
    """Point MLflow at the configured store, checked reachable, whole and in agreement with
    the decision ledger first (``tabreg.store.health``: MLflow would silently re-create a
    lost SQLite store); return its URI."""
    import mlflow

    from tabreg.store import health

    uri = tracking_uri(config, root)
    if health.sqlite_path(uri) is not None:
        # A connection per query, not a pool: a pooled SQLite connection keeps reading a file
        # that was deleted or replaced (by `make restore`), so a server would never see it.
        os.environ.setdefault("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")
    check_reachable(uri)
    health.check(config, root, uri)
    if must_exist:
        check_reachable(uri, must_exist=True)
    mlflow.set_tracking_uri(uri)
    # The registry lives in the same store: without this, a registry URI set earlier in the
    # process (another store's) would receive this store's versions and resolve its models:/.
    mlflow.set_registry_uri(uri)
    return uri


def start(config: Config, root: Path, name: str | None = None) -> str:
    """Point MLflow at the configured store and experiment (``name``: another one in the
    same store, such as the monitoring reports'); return the experiment id."""
    import mlflow

    uri = connect(config, root)
    name = name or config.tracking.experiment
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        location = None
        if urllib.parse.urlparse(uri).scheme == "sqlite":  # keep artifacts beside the store
            location = (root / ARTIFACTS_DIR).resolve().as_uri()
        experiment_id = mlflow.create_experiment(name, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


#: Tag on every run the pipeline opens: the process holding it (``tabreg.store.owner``), so that a
#: run left RUNNING by a killed process can be told from one that is still running.
OWNER_TAG = "tabreg.owner"


@contextmanager
def start_run(**kwargs: Any) -> Iterator[Any]:
    """``mlflow.start_run`` recording this process as the run's holder (a reopened run gets
    its new holder), so that :func:`fail_dead_runs` can end it if the process is killed."""
    import mlflow

    from tabreg.store import owner

    with mlflow.start_run(**kwargs) as run:
        mlflow.set_tag(OWNER_TAG, json.dumps(owner.identity()))
        yield run


def fail_dead_runs(config: Config, root: Path) -> list[str]:
    """Mark FAILED the runs of the pipeline's experiment left RUNNING by a process of this
    host that no longer exists (kill -9, a crash); returns their ids. A run whose holder is
    unknown (opened before holders were recorded) or on another host is left alone, and an
    embedded store that does not exist is not created."""
    from mlflow import MlflowClient

    from tabreg.store import health, owner

    uri = tracking_uri(config, root)
    # Missing or empty: MLflow would create it (hiding a lost store); damaged: StoreError.
    if health.check_file(config, root, uri) in ("missing", "empty"):
        return []
    check_reachable(uri)  # in seconds, rather than MLflow's minutes of retries
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    if experiment is None:
        return []
    failed = []
    for run in client.search_runs([experiment.experiment_id], max_results=1000,
                                  filter_string="attributes.status = 'RUNNING'"):
        try:
            holder = json.loads(run.data.tags.get(OWNER_TAG, "null"))
        except ValueError:
            holder = None
        if isinstance(holder, dict) and owner.dead_here(holder):
            client.set_tag(run.info.run_id, "tabreg.fail_reason",
                           f"its process (pid {holder['pid']} on {holder['host']}) died "
                           "while the run was open")
            client.set_terminated(run.info.run_id, status="FAILED")
            failed.append(run.info.run_id)
    return failed


#: Tracked files that the pipeline itself rewrites as it runs: a change there is the run's own
#: record (DVC's lock, the reports), not a difference in what produced the model.
PIPELINE_RECORDS = ("dvc.lock", "reports")


def git_commit(root: Path, records: tuple[str, ...] = PIPELINE_RECORDS) -> str:
    """The commit the code ran from, with ``-dirty`` when the work tree differs from it in
    anything but the pipeline's own records (so a run from a clean clone is not dirty)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    if not commit:
        return "unknown"
    excluded = [f":(exclude){path}" for path in records]
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", *excluded)
    return commit + ("-dirty" if changed else "")


#: Sections of the configuration that only the MLP reads (``train:``): logged on MLP runs only.
MLP_SECTIONS = ("train",)


def _range_text(spec: dict[str, Any]) -> str:
    """A search range as one readable value: "int [100, 300]", "log [0.02, 0.2]",
    "one of [64, 128]"."""
    if spec.get("choices") is not None:
        return f"one of {json.dumps(spec['choices'])}"
    kind = " ".join(k for k in ("int", "log") if spec.get(k))
    low, high = spec.get("low"), spec.get("high")
    if spec.get("int") and low is not None and high is not None:
        low, high = int(low), int(high)
    return f"{kind + ' ' if kind else ''}[{low}, {high}]"


def _tune_tree(config: Config, tree: dict[str, Any], mlp: bool) -> dict[str, Any]:
    """The tune section as in force: the search space of the tuned families only (and the
    features'), each range as one value; the storage URL without its password."""
    from tabreg.tuning.study import redact

    families = {"features", *config.tune.families} - (set() if mlp else {"mlp"})
    tree["space"] = {family: {name: _range_text(spec) for name, spec in ranges.items()}
                     for family, ranges in tree.get("space", {}).items() if family in families}
    if tree.get("storage"):
        tree["storage"] = redact(tree["storage"])
    return tree


def config_params(config: Config, sections: tuple[str, ...], *,
                  mlp: bool = True) -> dict[str, str]:
    """The configuration in force for ``sections`` as MLflow params (``split.test_size`` ->
    "0.2"): the profile applied, unset (null) values left out, a search range as one value
    ("int [100, 300]"), the search space of tuned families only. ``mlp`` False: no MLP
    settings (the ``train`` section, the MLP's search space), for a run with no MLP in it."""
    tree = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, child in value.items():
                walk(f"{prefix}.{key}", child)
        elif (isinstance(value, list) and value
              and all(isinstance(v, dict) and "name" in v for v in value)):
            for item in value:  # named entries (slices, ratios): one param each, by name
                out[f"{prefix}.{item['name']}"] = json.dumps(
                    {k: v for k, v in item.items() if k != "name"})[:6000]
        else:
            text = json.dumps(value) if not isinstance(value, str) else value
            out[prefix] = text[:6000]

    for section in sections:
        if section in MLP_SECTIONS and not mlp:
            continue
        value = tree.get(section)
        if section == "tune" and value is not None:
            value = _tune_tree(config, value, mlp)
        if value is not None:
            walk(section, value)
    out["profile"] = config.profile
    return out
