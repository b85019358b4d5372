"""MLflow tracking: where runs go, and what every run records for lineage.

The default store is embedded (a SQLite file and a local artifact folder in the project, both
git-ignored); ``MLFLOW_TRACKING_URI`` or ``tracking.uri`` points at a server instead. The store is
checked before any work starts, so an unreachable server fails in seconds with a message, not
after a tuning run, and nothing is half-registered.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tabreg.config import Config
from tabreg.errors import ConfigError, TabregError

ARTIFACTS_DIR = "mlartifacts"


def tracking_uri(config: Config, root: Path) -> str:
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
    """Point MLflow at the configured store, checked reachable first; return its URI."""
    import mlflow

    uri = tracking_uri(config, root)
    check_reachable(uri, must_exist=must_exist)
    mlflow.set_tracking_uri(uri)
    return uri


def start(config: Config, root: Path) -> str:
    """Point MLflow at the configured store and experiment; return the experiment id."""
    import mlflow

    uri = connect(config, root)
    name = config.tracking.experiment
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


def flat_params(config: Config, sections: tuple[str, ...]) -> dict[str, str]:
    """The named configuration sections as MLflow params (``split.test_size`` -> "0.2")."""
    tree = config.model_dump(mode="json", by_alias=True)
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, child in value.items():
                walk(f"{prefix}.{key}", child)
        else:
            text = json.dumps(value) if not isinstance(value, str) else value
            out[prefix] = text[:6000]

    for section in sections:
        walk(section, tree[section])
    out["profile"] = config.profile
    return out
