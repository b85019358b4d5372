"""Check, before any work, that the shared services a run is pointed at answer.

A run against an MLflow server, a PostgreSQL Optuna storage or a Prefect API that is down
should fail in seconds with the URL that is wrong, not after an hour of tuning. Each check is
one quick round trip (a few seconds at most); every unreachable URL is named in one error.
Local stores (SQLite, journal files, no Prefect API) need no check here.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

from tabreg.errors import ServiceError

TIMEOUT = 3.0  # seconds per service


def _mlflow(uri: str, timeout: float) -> str | None:
    from tabreg.errors import TabregError
    from tabreg.store.tracking import check_reachable as check_tracking

    try:
        check_tracking(uri, timeout=timeout)
    except TabregError as exc:
        return str(exc)
    return None


def _database(url: str, timeout: float) -> str | None:
    from tabreg.services.postgres import hide_password

    scheme = urllib.parse.urlsplit(url).scheme
    if not scheme.startswith(("postgresql", "mysql")):
        return None
    import sqlalchemy

    connect_args = {"connect_timeout": max(1, int(timeout))}
    try:
        engine = sqlalchemy.create_engine(url, connect_args=connect_args,
                                          poolclass=sqlalchemy.pool.NullPool)
    except Exception as exc:  # a malformed URL or a missing driver
        return f"Optuna storage {hide_password(url)} is not usable: {exc}"
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        return f"Optuna storage {hide_password(url)} cannot be reached ({reason})"
    finally:
        engine.dispose()
    return None


def _prefect(api_url: str, timeout: float) -> str | None:
    url = api_url.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status < 300:
                return None
            reason = f"it answered {response.status}"
    except urllib.error.HTTPError as exc:
        reason = f"it answered {exc.code}; is the URL the API (ending in /api)?"
    except (urllib.error.URLError, OSError) as exc:
        reason = str(getattr(exc, "reason", exc))
    return f"Prefect API {api_url} cannot be reached ({reason})"


def check_reachable(tracking_uri: str | None, optuna_storage: str | None,
                    prefect_api_url: str | None, timeout: float = TIMEOUT) -> None:
    """Raise :class:`ServiceError` naming every URL that does not answer.

    ``tracking_uri``: checked when http(s) (``MLFLOW_TRACKING_URI``); ``optuna_storage``: when
    a PostgreSQL/MySQL URL (``OPTUNA_STORAGE``); ``prefect_api_url``: when given
    (``PREFECT_API_URL``). None or a local store is skipped.
    """
    problems: list[str | None] = []
    if tracking_uri and urllib.parse.urlsplit(tracking_uri).scheme in ("http", "https"):
        problems.append(_mlflow(tracking_uri, timeout))
    if optuna_storage:
        problems.append(_database(optuna_storage, timeout))
    if prefect_api_url:
        problems.append(_prefect(prefect_api_url, timeout))
    found = [p for p in problems if p]
    if found:
        raise ServiceError("shared services unreachable, nothing was run:\n  "
                           + "\n  ".join(found)
                           + "\nstart them (`make services`) or fix the URL "
                             "(MLFLOW_TRACKING_URI, OPTUNA_STORAGE, PREFECT_API_URL)")
