"""Is the MLflow store whole, and does it still hold what the decision ledger says it does?

MLflow re-creates a SQLite store it cannot find: a deleted or emptied ``mlflow.db`` became a
fresh, empty registry, ``status`` showed no champion and exited 0, and the next flow failed deep
inside ``register``. A damaged file gave an 84-line traceback. So every command that opens the
store (``tracking.connect``) and the flows' preflight check it first:

* the SQLite file: missing or empty is only acceptable while the ledger has never recorded a
  champion for this store; a file that is not SQLite, is shorter than its header says, fails
  SQLite's ``quick_check`` or lacks MLflow's tables is damaged, whatever the ledger says;
* the registry against the ledger (``registry.ledger``): the champion the ledger last recorded
  for this model and store must exist with the ``champion`` alias, and the store must hold
  the newest version the ledger names.

Each fault is a :class:`StoreError` naming what is lost and how to get it back (``make
restore``), raised before MLflow can create, migrate or write anything.
"""

from __future__ import annotations

import logging
import sqlite3
import struct
import urllib.parse
import urllib.request
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabreg.config import Config
from tabreg.errors import StoreError

log = logging.getLogger(__name__)

SQLITE_HEADER = b"SQLite format 3\x00"
#: Tables every MLflow store has (tracking and registry).
MLFLOW_TABLES = frozenset({"alembic_version", "runs", "experiments", "registered_models",
                           "model_versions"})
RESTORE_HINT = ("Restore the last backup with `make restore` (`make backup` makes one; "
                "`make restore BACKUP=<folder>` picks another)")


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` tracking URI (None for any other store)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    return Path(urllib.request.url2pathname(urllib.parse.urlparse(uri).path[1:]))


def store_id(uri: str, root: Path) -> str:
    """How the ledger names a store: a SQLite file inside the project by its relative path
    (so a moved or restored project still matches), anything else by its URI, password
    hidden."""
    from tabreg.services.postgres import hide_password

    path = sqlite_path(uri)
    if path is not None:
        try:
            return "sqlite:///" + path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return f"sqlite:///{path.resolve()}"
    return hide_password(uri)


# --- the SQLite file ------------------------------------------------------------------------

def _header_problem(path: Path, size: int) -> str | None:
    """What is wrong with the file judged from its 100-byte header alone (cheap)."""
    with path.open("rb") as f:
        header = f.read(100)
    if len(header) < 100 or not header.startswith(SQLITE_HEADER):
        return f"it is not a SQLite database (it starts with {header[:16]!r})"
    page_size = struct.unpack(">H", header[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    change_counter, pages, valid_for = struct.unpack(">I", header[24:28]) + struct.unpack(
        ">I", header[28:32]) + struct.unpack(">I", header[92:96])
    if pages and valid_for == change_counter and size < pages * page_size:
        return (f"it is truncated: {size:,} bytes where its header counts {pages:,} pages of "
                f"{page_size:,} bytes")
    return None


def _content_problem(path: Path, deep: bool) -> str | None:
    """What SQLite itself finds wrong: missing MLflow tables, or (``deep``) a failed
    ``PRAGMA quick_check``. A locked database is not a fault."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    try:
        with closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
            tables = {row[0] for row in db.execute(
                "select name from sqlite_master where type = 'table'")}
            if tables and not tables >= MLFLOW_TABLES:
                return (f"it is not an MLflow store (tables missing: "
                        f"{', '.join(sorted(MLFLOW_TABLES - tables))})")
            if deep:
                found = [row[0] for row in db.execute("pragma quick_check(5)")]
                if found != ["ok"]:
                    return f"SQLite's integrity check fails: {'; '.join(found)[:300]}"
    except sqlite3.OperationalError as exc:  # locked, or a hot journal we may not roll back
        log.debug("store check of %s skipped: %s", path, exc)
    except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed", ...
        return f"SQLite cannot read it ({exc})"
    return None


def sqlite_state(path: Path, *, deep: bool = True) -> str:
    """``"missing"``, ``"empty"`` or ``"ok"``; a damaged file raises :class:`StoreError`."""
    if not path.exists():
        return "missing"
    size = path.stat().st_size
    if size == 0:
        return "empty"
    problem = _header_problem(path, size) or _content_problem(path, deep)
    if problem:
        raise StoreError(
            f"the MLflow store {path} is damaged: {problem}. Nothing was read from it or "
            f"written to it. {RESTORE_HINT}; it moves the damaged file aside, keeping it.")
    return "ok"


# --- what the ledger says -------------------------------------------------------------------

#: The ledger's actions that decide about the registry (``tabreg.steps.register``).
DECISIONS = frozenset({"promote", "keep champion", "refuse", "none", "rollback"})


@dataclass
class LedgerView:
    """What the ledger recorded about one model in one store."""

    champion: str | None = None  # the version it last made (or confirmed) champion
    since: str = ""  # when, and by which action
    versions: set[int] = field(default_factory=set)  # every version it names
    entries: int = 0

    def describe(self) -> str:
        named = f"versions up to {max(self.versions)}" if self.versions else "no versions"
        return (f"champion: version {self.champion}, since {self.since}; {named}"
                if self.champion else named)


def ledger_view(entries: list[dict[str, Any]], model: str, store: str) -> LedgerView:
    """Fold the ledger's decisions (the gate's and rollbacks) into the champion they imply.
    Decisions about another model or in another store are not about this one; those written
    before decisions named their store are. Other entries (a retrain run's summary, a
    skip) repeat or decide nothing about the registry."""
    view = LedgerView()
    for entry in entries:
        action = entry.get("action")
        if (action not in DECISIONS or entry.get("model") != model
                or entry.get("store", store) != store):
            continue
        view.entries += 1
        for key in ("challenger", "champion", "to"):
            if str(entry.get(key) or "").isdigit():
                view.versions.add(int(entry[key]))
        made = {"promote": entry.get("challenger"), "rollback": entry.get("to"),
                "none": entry.get("challenger")}.get(action)
        kept = entry.get("champion") if action in ("keep champion", "refuse") else None
        if made or kept:
            view.champion = str(made or kept)
            view.since = f"{action} at {entry.get('at', '?')}"
    return view


def _ledger(config: Config, root: Path) -> tuple[Path, list[dict[str, Any]]]:
    from tabreg.promotion import registry

    path = root / config.registry.ledger
    return path, registry.read_ledger(path)


def _lost(uri: str, ledger: Path, view: LedgerView, what: list[str]) -> StoreError:
    return StoreError(
        f"the MLflow store {uri} has lost what the ledger {ledger} records "
        f"({view.describe()}):\n" + "\n".join(f"  - {w}" for w in what) +
        f"\nIt was deleted, emptied, or replaced by an older copy; nothing was changed. "
        f"{RESTORE_HINT}. To start afresh instead, move {ledger} aside.")


# --- the checks -----------------------------------------------------------------------------

def check_file(config: Config, root: Path, uri: str, *, deep: bool = True) -> str | None:
    """Check a SQLite store's file before MLflow opens it (which would create or migrate it);
    returns its state ("missing", "empty", "ok"), None for other stores."""
    path = sqlite_path(uri)
    if path is None:
        return None
    state = sqlite_state(path, deep=deep)
    if state != "ok":
        ledger, entries = _ledger(config, root)
        view = ledger_view(entries, config.registry.model_name, store_id(uri, root))
        if view.champion:
            raise _lost(uri, ledger, view, [
                f"the file {path} is {state}: every run, registered model and alias in it "
                "is gone (MLflow would have silently created an empty one)"])
    return state


def check_registry(config: Config, root: Path, uri: str, client: Any = None) -> list[str]:
    """Compare the registry with the ledger. A champion the ledger recorded that is missing
    (model, version or alias), or versions newer than the store's, raise :class:`StoreError`;
    a champion alias moved outside tabreg is returned as a warning. (A champion whose files
    are gone is a dangling alias, reported when it is loaded: ``registry.load_version``.)"""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from tabreg.promotion import registry

    name = config.registry.model_name
    ledger, entries = _ledger(config, root)
    view = ledger_view(entries, name, store_id(uri, root))
    if not view.champion:
        return []
    client = client or MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise _lost(uri, ledger, view, [f"registered model {name!r} is missing, with all "
                                        "its versions and aliases"]) from None
    lost = []
    found = registry.get_version(client, name, view.champion)
    if found is None:
        lost.append(f"version {view.champion} of {name!r}, the champion, is missing")
    newest = client.search_model_versions(f"name = '{name}'", max_results=1,
                                          order_by=["version_number DESC"])
    top = int(newest[0].version) if newest else 0
    if view.versions and max(view.versions) > top:
        gone = (f"version {top + 1} of {name!r} is" if max(view.versions) == top + 1 else
                f"versions {top + 1} to {max(view.versions)} of {name!r} are")
        lost.append(f"{gone} missing (the store's newest is {top or 'none'})")
    alias = registry.alias_version(client, name, registry.CHAMPION)
    if alias is None:
        lost.append(f"the alias {registry.CHAMPION!r} of {name!r} is missing")
    if lost or alias is None:
        raise _lost(uri, ledger, view, lost)
    if str(alias.version) != view.champion:
        return [f"{name!r}@{registry.CHAMPION} is version {alias.version} in the store, but "
                f"the ledger {ledger} last recorded version {view.champion} ({view.since}): "
                "it was moved outside tabreg (the MLflow UI, another machine)"]
    return []


def check(config: Config, root: Path, uri: str | None = None, client: Any = None, *,
          deep: bool = True, quiet: bool = False) -> list[str]:
    """Both checks (the file first, so MLflow never opens a damaged or lost store); warnings
    are returned, and logged unless ``quiet``. ``deep=False`` skips SQLite's page-by-page
    check (both for the server's periodic checks)."""
    from tabreg.store import tracking

    uri = uri or tracking.tracking_uri(config, root)
    if check_file(config, root, uri, deep=deep) in ("missing", "empty"):
        return []  # nothing recorded for it (else check_file raised): a first run creates it
    warnings = check_registry(config, root, uri, client)
    for warning in [] if quiet else warnings:
        log.warning("store check: %s", warning)
    return warnings
