"""A registered version scored on the test split of an earlier data version
(``make evaluate-version VERSION=n DATA=<git revision>``).

The book's advice: keep every model and every dataset version, so that any model can be
evaluated against any earlier dataset: has a new model got worse on the districts the old one
was judged on, and is a drop in quality the model's doing or the data's? The test split of a
revision is read through DVC at that revision (``dvc.api.open(path, rev=...)``): from git's
objects and the DVC cache, or the default DVC remote when the cache lacks it (``make restore``
fetches every version from a backup). The working tree, its data and the checked-out revision
are never touched.

A score is only fair if the version never trained on those test rows: with the ``hash`` split
a row keeps its side as data grows, so a version split with the same parameters is safe on
any data version; otherwise the result says why it may not be (``caveats``).
"""

from __future__ import annotations

import io
import logging
import subprocess
from pathlib import Path
from typing import Any

from tabreg.config import Config
from tabreg.errors import TabregError

log = logging.getLogger(__name__)


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def resolve_commit(root: Path, rev: str) -> str:
    """The commit ``rev`` names, or a clear error."""
    if rev.startswith("-"):
        raise TabregError(f"DATA={rev!r} is not a git revision")
    done = _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if done.returncode != 0:
        raise TabregError(f"DATA={rev!r} is not a commit of the git repository at "
                          f"{Path(root).resolve()} (`git log --oneline -- dvc.lock` lists the "
                          "commits that changed the data)")
    return done.stdout.strip()


def config_at(root: Path, commit: str, params: str = "params.yaml") -> Config | None:
    """The configuration committed at ``commit`` (no environment overrides, default
    profile), or None when it is absent or no longer reads."""
    import yaml

    from tabreg.config import parse_config
    from tabreg.errors import ConfigError

    done = _git(root, "show", f"{commit}:{params}")
    if done.returncode != 0:
        return None
    try:
        return parse_config(yaml.safe_load(done.stdout) or {}, env={},
                            origin=f"{params}@{commit[:12]}")
    except (ConfigError, yaml.YAMLError) as exc:
        log.warning("evaluate-version: %s at %s does not read with this code (%s); using "
                    "today's paths and no split lineage", params, commit[:12],
                    str(exc).splitlines()[0])
        return None


def read_at(root: Path, path: str, commit: str, rev: str) -> Any:
    """The Parquet table ``path`` as DVC recorded it at ``commit``."""
    import dvc.api
    import pandas as pd
    from dvc.exceptions import DvcException

    try:
        with dvc.api.open(path, repo=str(root), rev=commit, mode="rb") as f:
            data = f.read()
    except (DvcException, OSError) as exc:
        # DVC reports data missing from the cache as a path missing from the repository
        # (PathMissingError); the FileNotFoundError under it says what is really wrong.
        chain, missing = exc, False
        while chain is not None and not missing:
            missing = isinstance(chain, FileNotFoundError)
            chain = chain.__cause__ or chain.__context__
        why = ("its data is in neither the DVC cache nor the default remote" if missing
               else f"{type(exc).__name__}: {str(exc)[:300]}")
        raise TabregError(
            f"{path} at {rev} ({commit[:12]}) cannot be read through DVC: {why}. "
            "`make restore` fetches every data version of a backup into the cache, "
            "`dvc fetch --all-commits` those of a remote") from None
    return pd.read_parquet(io.BytesIO(data))


def caveats(tags: dict[str, str], old: Config | None, version_data: str | None) -> list[str]:
    """Why the version may have trained on rows of this test split (empty: it did not)."""
    from tabreg.promotion.registry import split_signature

    if old is None:
        return ["no readable params.yaml at that revision: the split it used is unknown"]
    signature = tags.get("split_signature")
    if signature is None:
        return ["the version carries no split lineage (split_signature tag)"]
    if signature != split_signature(old):
        return ["the version was split with other parameters than that revision's test "
                "split: some of its training rows may be in it"]
    if old.split.strategy != "hash" and tags.get("data_version") != version_data:
        return [f"split.strategy was {old.split.strategy!r} and the version was trained on "
                "another data version: some of its training rows may be in this test split"]
    return []


def evaluate_version(config: Config, root: Path, version: str, rev: str) -> dict[str, Any]:
    """Score registered ``version`` on the test split committed at git revision ``rev``."""
    from tabreg.evaluation import metrics
    from tabreg.promotion import registry
    from tabreg.serving import scoring
    root = Path(root)
    commit = resolve_commit(root, rev)
    old = config_at(root, commit)
    paths = (old or config).paths
    test = read_at(root, paths.test, commit, rev)
    target = config.schema.target
    if target not in test.columns:
        raise TabregError(f"{paths.test} at {rev} has no target column {target!r}")
    name = config.registry.model_name
    found = registry.find_version(registry.open_store(config, root), name, version)
    model, ref = registry.load_registered(name, found, None)
    spec = scoring.spec_for(model, config.schema, config.data.id_column)
    checked = scoring.check_frame(test, spec, where=f"{paths.test}@{rev}")
    pred = scoring.predict(model, checked.features)
    y = test[target].to_numpy(dtype=float)
    ev = config.evaluate
    scores = metrics.regression_metrics(y, pred)
    low, high = metrics.bootstrap_rmse(y, pred, n_resamples=ev.bootstrap,
                                       confidence=ev.confidence, seed=ev.seed)
    data_version = _recorded_at(root, commit, paths.raw)
    warned = caveats(found.tags, old, data_version)
    for caveat in warned:
        log.warning("evaluate-version: caveat: %s", caveat)
    log.info("evaluate-version: %s version %s on the test split at %s (%s, %d rows, data "
             "version %s): RMSE %s (%.0f%% interval %s-%s), R^2 %.3f", name, ref.version, rev,
             commit[:12], scores["n"], data_version or "not recorded", f"{scores['rmse']:,.0f}",
             100 * ev.confidence, f"{low:,.0f}", f"{high:,.0f}", scores["r2"])
    return {"model": ref.to_dict(), "data": {"rev": rev, "commit": commit,
                                             "data_version": data_version,
                                             "test": paths.test, "rows": scores["n"]},
            **{k: round(float(v), 4) for k, v in scores.items() if k != "n"},
            "rmse_low": round(low, 2), "rmse_high": round(high, 2),
            "confidence": ev.confidence, "flags": checked.counts,
            "trained_on": found.tags.get("data_version"), "caveats": warned}


def _recorded_at(root: Path, commit: str, path: str) -> str | None:
    """DVC's md5 of ``path`` in the ``dvc.lock`` committed at ``commit``."""
    from tabreg.orchestration.dvc_stages import md5_in_lock

    done = _git(root, "show", f"{commit}:dvc.lock")
    return md5_in_lock(done.stdout, path) if done.returncode == 0 else None
