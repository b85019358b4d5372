"""Online serving: the champion over HTTP (``make serve``, ``python -m tabreg serve``).

A small FastAPI app run by uvicorn, speaking MLflow's scoring protocol so that clients of
``mlflow models serve`` work unchanged, with tabreg's input checks in front of the model:

* ``GET /health``: 200 with the model name and version being served, 503 ("degraded", with
  ``registry_error``) while the store cannot be checked; ``GET /ping``: the same, always 200;
* ``POST /invocations``: a JSON body in one of MLflow's formats (``dataframe_split``,
  ``dataframe_records``, ``instances``, ``inputs``) or a CSV body (``Content-Type: text/csv``);
  the answer is ``{"predictions": [...], "lower": [...], "upper": [...], "flags": [[...],
  ...], "model": {...}}``: each prediction's interval at ``serve.interval`` (absent for a
  version registered before intervals) and one list of flags per row (see
  :mod:`tabreg.serving.scoring`). Input the model cannot take gets a 4xx
  whose body names each field and the rows at fault (400: not a payload; 413: too large;
  415: an unsupported content type; 422: wrong columns or values).

A new champion is picked up without a restart: a background thread asks the registry every
``refresh`` seconds which version holds the alias, loads a new one beside the old, and swaps
it in once it loads; requests never wait for it, and while the registry cannot be reached (or
the store is lost or damaged) the current model keeps serving and ``/health`` answers 503
"degraded" with the reason (``/ping`` stays 200). A pinned version (``--version``) never
changes, and its store is checked all the same. That is why this is hand-written in front of
MLflow's model rather than ``mlflow models serve``: the input checks that name fields and
rows, the hot swap of the champion and this health contract are not MLflow's to give.

One process scores one request at a time (the scikit-learn pipeline holds the GIL), so
``serve.workers`` (``--workers``) runs that many worker processes behind the one port, each
with its own copy of the model that follows the champion on its own.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tabreg.config import Config
from tabreg.errors import TabregError
from tabreg.promotion.registry import ModelRef
from tabreg.serving import inference_log, scoring
from tabreg.serving.scoring import SAMPLE, InputError, InputSpec, Problem

log = logging.getLogger(__name__)

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
#: Requests larger than this are refused (413) before they are parsed.
MAX_BODY_BYTES = 32 << 20
#: A payload with more columns than this is refused before a frame is built from it.
MAX_COLUMNS = 1000
#: A body up to this size (a JSON request of some 16 rows) is scored in the event loop, not
#: in a worker thread. Under the GIL a thread gains a small request nothing, and the loop and
#: the thread fought over it: with 4 clients of one-row requests, the default run's champion
#: answered 126-160 requests a second through threads and 199-257 in the loop (three runs
#: each, alternating). Larger requests go to the thread pool, so that the loop keeps reading
#: requests and answering ``/health`` while they are scored.
INLINE_BYTES = 2048


class PayloadError(Exception):
    """A request that is not a payload at all (bad JSON, unknown format): a 4xx."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# --- payloads -------------------------------------------------------------------------------

def _records(rows: list[Any], spec: InputSpec, key: str) -> pd.DataFrame:
    """A list of JSON objects (one per row) as a frame; a row lacking a field is an error
    (``null`` is a missing value, an absent key a malformed row)."""
    if not all(isinstance(r, dict) for r in rows):
        raise PayloadError(f"{key}: expected a list of objects, one per row")
    if any(len(r) > MAX_COLUMNS for r in rows):
        raise PayloadError(f"{key}: a row has more than {MAX_COLUMNS} fields")
    absent: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        for name in spec.columns:
            if name not in row:
                absent.setdefault(name, []).append(i)
    # A field absent from every row is a missing column, which the column check reports.
    partly = {name: where for name, where in absent.items() if len(where) < len(rows)}
    if partly:
        raise InputError([Problem(name, "field absent", tuple(where[:SAMPLE]),
                                  ("absent",) * len(where[:SAMPLE]), len(where))
                          for name, where in partly.items()], key)
    return pd.DataFrame.from_records(rows)


def _table(columns: Any, data: Any, key: str) -> pd.DataFrame:
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise PayloadError(f"{key}: 'columns' must be a list of column names")
    if len(columns) > MAX_COLUMNS:
        raise PayloadError(f"{key}: more than {MAX_COLUMNS} columns")
    if not isinstance(data, list) or not all(isinstance(r, list) for r in data):
        raise PayloadError(f"{key}: 'data' must be a list of rows (lists of values)")
    wrong = [i for i, r in enumerate(data) if len(r) != len(columns)]
    if wrong:
        raise PayloadError(f"{key}: rows {wrong[:5]} do not have {len(columns)} values "
                           f"(one per column of {columns})")
    return pd.DataFrame(data, columns=columns) if data else pd.DataFrame(columns=columns)


def frame_from_json(payload: Any, spec: InputSpec) -> pd.DataFrame:
    """The rows of an MLflow-style JSON payload.

    ``dataframe_split``: ``{"columns": [...], "data": [[...], ...]}``; ``dataframe_records``
    and ``instances``: a list of objects; ``inputs``: an object of columns (``{"col": [...]}``)
    or a list of objects. A list of lists under ``instances`` / ``inputs`` is read in the
    model's column order.
    """
    if not isinstance(payload, dict):
        raise PayloadError(f"expected a JSON object with one of the keys {list(FORMATS)}")
    keys = [k for k in payload if k in FORMATS]
    other = [k for k in payload if k not in FORMATS]
    if len(keys) != 1 or other:
        raise PayloadError(f"expected exactly one of the keys {list(FORMATS)}, got "
                           f"{list(payload)[:10]}")
    key = keys[0]
    body = payload[key]
    if key == "dataframe_split":
        if not isinstance(body, dict):
            raise PayloadError("dataframe_split: expected an object with 'columns' and 'data'")
        return _table(body.get("columns"), body.get("data"), key)
    if key == "inputs" and isinstance(body, dict):
        if len(body) > MAX_COLUMNS:
            raise PayloadError(f"inputs: more than {MAX_COLUMNS} columns")
        lengths = {len(v) if isinstance(v, list) else -1 for v in body.values()}
        if -1 in lengths or len(lengths) > 1:
            raise PayloadError("inputs: expected an object of columns, each a list of the "
                               "same length")
        return pd.DataFrame(body)
    if not isinstance(body, list):
        raise PayloadError(f"{key}: expected a list of rows")
    if body and all(isinstance(r, list) for r in body) and key != "dataframe_records":
        return _table(list(spec.columns), body, key)
    return _records(body, spec, key)


def _check_csv_width(body: bytes) -> None:
    """Refuse a CSV body whose header has more than :data:`MAX_COLUMNS` fields, from its
    first record alone (100,000 columns would otherwise cost seconds of parsing)."""
    import csv
    import io

    text = io.TextIOWrapper(io.BytesIO(body), encoding="utf-8", newline="")
    try:
        header = next(csv.reader(text), [])
    except (csv.Error, UnicodeDecodeError) as exc:
        raise PayloadError(f"the body is not a readable CSV table: {str(exc)[:200]}") from None
    if len(header) > MAX_COLUMNS:
        raise PayloadError(f"text/csv: more than {MAX_COLUMNS} columns ({len(header)})")


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise PayloadError(f"the body is not valid JSON: {str(exc)[:200]}") from None


def values_from_json(payload: Any, spec: InputSpec) -> dict[str, list[Any]] | None:
    """The values by column of a small ``dataframe_split`` or ``dataframe_records`` payload
    with the model's columns, and perhaps some it ignores such as ``row_id`` given as text
    (what clients usually send); None for anything else, which :func:`frame_from_json`
    reads (and refuses, naming what is wrong)."""
    from tabreg.config import ROW_ID

    if not isinstance(payload, dict) or len(payload) != 1:
        return None
    split, records = payload.get("dataframe_split"), payload.get("dataframe_records")
    values = None
    if isinstance(split, dict) and len(split) == 2:
        columns, data = split.get("columns"), split.get("data")
        if (isinstance(columns, list) and isinstance(data, list)
                and 0 < len(data) <= scoring.PLAIN_ROWS and _names(columns, spec)
                and all(type(r) is list and len(r) == len(columns) for r in data)):
            values = {name: [r[j] for r in data] for j, name in enumerate(columns)}
    elif isinstance(records, list) and 0 < len(records) <= scoring.PLAIN_ROWS:
        first = records[0]
        if (type(first) is dict and _names(list(first), spec)
                and all(type(r) is dict and r.keys() == first.keys() for r in records)):
            values = {name: [r[name] for r in records] for name in first}
    # Ids given as numbers: the frame path writes them as pandas does (7 or 7.0).
    if values is not None and not all(v is None or type(v) is str
                                      for v in values.get(ROW_ID, ())):
        return None
    return values


def _names(columns: list[Any], spec: InputSpec) -> bool:
    """Column names as text, each once, no more than the model takes and ignores (which ones
    is :func:`scoring.check_values`'s to say): a payload of thousands of columns goes the
    frame's way, refused before a frame is built."""
    return (len(columns) <= len(spec.columns) + len(spec.ignored)
            and all(type(c) is str for c in columns) and len(set(columns)) == len(columns))


def frame_from_body(body: bytes, content_type: str, spec: InputSpec) -> pd.DataFrame:
    """Parse a request body (JSON or CSV) into rows, or raise :class:`PayloadError`."""
    if content_type in ("", "application/json"):
        return frame_from_json(_json(body), spec)
    if content_type == "text/csv":
        import io

        _check_csv_width(body)
        try:
            # As in files: only an empty cell is missing ("n/a" is text, refused in a number).
            return pd.read_csv(io.BytesIO(body), dtype={c: "str" for c in spec.categorical},
                               keep_default_na=False, na_values=[""])
        except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise PayloadError(f"the body is not a readable CSV table: {str(exc)[:200]}"
                               ) from None
    raise PayloadError(f"unsupported content type {content_type!r}; send application/json "
                       "or text/csv", status=415)


# --- the model being served -----------------------------------------------------------------

@dataclass(frozen=True)
class Served:
    """A loaded model with what it takes."""

    model: Any
    spec: InputSpec
    ref: ModelRef
    loaded_at: float
    threads: int | None = None  # BLAS/OpenMP threads per prediction (None: no cap)
    #: The model's arithmetic as plain numpy (``tabreg.serving.fast``); None: the plain path.
    fast: Callable[[pd.DataFrame | dict[str, Any]], tuple[Any, Any, Any]] | None = None
    id_column: str | None = None  # ``data.id_column``: a row's id is the hash of this column

    def predict(self, checked: scoring.Checked) -> tuple[Any, Any, Any]:
        """(prediction, lower, upper) of each row, by the fast path when there is one (from
        the check's arrays when it built them: no frame for a small request)."""
        if self.fast is not None:
            return self.fast(checked.features if checked.arrays is None else checked.arrays)
        return scoring.predict_interval(self.model, checked.features)


class ModelSlot:
    """Holds the served model and swaps in a new one when ``current()`` names another version.

    ``current()`` returns the registered version that should be served (an MLflow
    ``ModelVersion``) and ``load(version)`` loads it; :meth:`refresh` does one check,
    :meth:`start` checks every ``interval`` seconds in a daemon thread.
    """

    def __init__(self, current: Callable[[], Any], load: Callable[[Any], Served],
                 interval: float | None) -> None:
        self._current, self._load, self.interval = current, load, interval
        self.served = load(current())
        self.checked_at = time.time()
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Check the registry once; True when a new version was loaded."""
        version = self._current()
        self.checked_at = time.time()
        if str(version.version) == self.served.ref.version:
            return False
        served = self._load(version)
        previous, self.served = self.served.ref.version, served
        log.warning("serving: now %s version %s (was %s)", served.ref.name, served.ref.version,
                    previous)
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - keep serving the current model
                error = f"{type(exc).__name__}: {str(exc)[:1000]}"
                if error != self.last_error:  # once per fault, not every interval
                    log.warning("serving: registry check failed, still serving version %s: "
                                "%s", self.served.ref.version, error)
                self.last_error = error

    def start(self) -> None:
        if self.interval and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="champion-refresh",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()


def compiled(model: Any, ref: ModelRef, threads: int = 1
             ) -> Callable[[pd.DataFrame], tuple[Any, Any, Any]] | None:
    """The fast path of a loaded model (a large request shared by ``threads`` threads), or
    None (said in the log) when a step has none."""
    from tabreg.serving import fast

    try:
        return fast.compile_model(scoring.raw_model(model), threads)
    except fast.NotCompiled as exc:
        log.info("serving: %s version %s on the plain path (%s)", ref.name, ref.version, exc)
        return None


def registry_slot(config: Config, root: Path, *, version: str | None = None,
                  refresh: float | None = 10.0, threads: int | None = 1) -> ModelSlot:
    """A slot serving the champion, or a pinned ``version``; every ``refresh`` seconds the
    store is checked (whole, and agreeing with the ledger: ``tabreg.store.health``) and the
    alias looked up. ``threads`` caps the BLAS/OpenMP threads of a prediction (None: no
    cap)."""
    from tabreg.promotion import registry
    from tabreg.promotion.registry import CHAMPION
    from tabreg.store import health as store_health

    name = config.registry.model_name
    client = registry.open_store(config, root)
    alias = CHAMPION if version is None else None

    def current() -> Any:
        # A deleted or emptied store file goes unseen by MLflow's open connections.
        store_health.check(config, root, client=client, deep=False, quiet=True)
        return registry.find_version(client, name, version)

    def load(found: Any) -> Served:
        model, ref = registry.load_registered(name, found, alias)
        spec = scoring.spec_for(model, config.schema, config.data.id_column)
        run = compiled(model, ref, config.serve.request_threads) if config.serve.fast else None
        return Served(model, spec, ref, time.time(), threads, run, config.data.id_column)

    return ModelSlot(current, load, refresh)


# --- the app --------------------------------------------------------------------------------

def _error(status: int, code: str, message: str, problems: list[Problem] | None = None) -> Any:
    from fastapi.responses import JSONResponse

    body: dict[str, Any] = {"error_code": code, "message": message}
    if problems:
        body["problems"] = [p.to_dict() for p in problems]
    return JSONResponse(body, status_code=status)


_capped = threading.local()


def _cap_threads(threads: int | None) -> None:
    """Cap the BLAS/OpenMP threads of the calling thread, once per thread. OpenMP's limit is
    a per-thread setting: capped only in the thread that loaded the model, the request
    threads' predictions (gradient boosting's) still ran on every core, for about a third
    more CPU per request and no gain in latency, taking a core from the other workers."""
    if threads and getattr(_capped, "threads", None) != threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
        _capped.threads = threads


def score_body(served: Served, body: bytes, content_type: str,
               on_scored: Callable[[scoring.Checked, dict[str, Any]], None] | None = None
               ) -> dict[str, Any]:
    """Parse, check and score one request body (the work of ``/invocations``);
    ``on_scored(checked, scored)`` receives what the inference log keeps, before the answer
    is sent."""

    _cap_threads(served.threads)
    checked, ids = _checked(body, content_type, served)
    predictions, lower, upper = served.predict(checked)
    if on_scored is not None:
        on_scored(checked, {inference_log.ROW_ID: ids, inference_log.PREDICTION: predictions,
                            inference_log.LOWER: lower, inference_log.UPPER: upper,
                            inference_log.FLAGS: checked.flags})
    answer: dict[str, Any] = {"predictions": _numbers(predictions)}
    if lower is not None and upper is not None:  # older versions have no intervals
        answer.update(lower=_numbers(lower), upper=_numbers(upper))
    return {**answer, "flags": [f.split(";") if f else [] for f in checked.flags],
            "model": served.ref.to_dict()}


def _checked(body: bytes, content_type: str, served: Served) -> tuple[scoring.Checked, Any]:
    """The checked input and the rows' ids (:func:`given_ids`). A small JSON request of the
    model's columns (and perhaps ``row_id``) is checked from its values, without a frame."""
    if content_type in ("", "application/json"):
        payload = _json(body)
        values = values_from_json(payload, served.spec) if served.id_column is None else None
        checked = scoring.check_values(values, served.spec) if values is not None else None
        if values is not None and checked is not None:
            return checked, _ids_of_values(values)
        frame = frame_from_json(payload, served.spec)
    else:
        frame = frame_from_body(body, content_type, served.spec)
    checked = scoring.check_frame(frame, served.spec, where="input")
    return checked, given_ids(frame, served.id_column)


def _ids_of_values(values: dict[str, list[Any]]) -> Any:
    """:func:`given_ids` of a request's values by column (:func:`values_from_json`): its
    ``row_id`` values when each is given, else None."""
    import numpy as np

    from tabreg.config import ROW_ID

    given = values.get(ROW_ID)
    if given is None or any(v is None for v in given):
        return None
    return np.array(given, dtype=object)


def given_ids(frame: pd.DataFrame, id_column: str | None = None) -> Any:
    """The rows' ids as ``make predict`` names them: a complete ``row_id`` column, else the
    hash of a complete ``data.id_column`` (as ingest computes it); None otherwise, and the log
    names each row by the hash of its inputs."""
    from tabreg.config import ROW_ID
    from tabreg.data.identity import row_ids

    if ROW_ID in frame.columns and not frame[ROW_ID].isna().any():
        return frame[ROW_ID].astype("str").to_numpy()
    if id_column and id_column in frame.columns and not frame[id_column].isna().any():
        return row_ids(frame, [id_column]).to_numpy()
    return None


def request_id(given: str | None) -> str:
    """The client's ``X-Request-ID`` when it is a sensible id (so that it can join its labels
    by its own ids), else a new one."""
    if given and len(given) <= 128 and all(c.isalnum() or c in "-_.:" for c in given):
        return given
    return inference_log.new_request_id()


def _numbers(values: Any) -> list[float | None]:
    """JSON numbers (JSON has no NaN or infinity: those become null)."""
    return [float(v) if math.isfinite(v) else None for v in values]


def create_app(slot: ModelSlot, *, max_body: int = MAX_BODY_BYTES,
               inference: inference_log.InferenceLog | None = None) -> Any:
    """The FastAPI app serving the model in ``slot`` (``/invocations``, ``/health``,
    ``/version``), refusing bodies over ``max_body`` bytes, every scored row kept in the
    ``inference`` log (none: not kept)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        slot.start()
        if inference is not None:
            inference.start()
        yield
        slot.stop()
        if inference is not None:  # uvicorn's shutdown (SIGTERM): the answered rows, written
            inference.close()

    app = FastAPI(title="tabreg", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)

    def state() -> dict[str, Any]:
        served = slot.served
        logged = inference.status() if inference is not None else {"status": "off"}
        faulty = slot.last_error or logged["status"] == "failing"
        return {"status": "degraded" if faulty else "ok",
                "model": served.ref.to_dict(), "loaded_at": served.loaded_at,
                "checked_at": slot.checked_at, "refresh_seconds": slot.interval,
                "registry_error": slot.last_error, "inference_log": logged}

    def health() -> Any:
        """503 while the last registry check failed (a lost or damaged store, an unreachable
        server): the model still answers, but nothing follows the champion any more."""
        body = state()
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    app.get("/health")(health)
    app.get("/ping")(state)  # liveness: 200 as long as the process scores

    app.router.add_route("/invocations", _invocations(slot, max_body, inference),
                         methods=["POST"])
    return app


def _invocations(slot: ModelSlot, max_body: int,
                 inference: inference_log.InferenceLog | None) -> Any:
    """``POST /invocations``: a plain Starlette route (the handler takes the raw request,
    nothing for FastAPI to inject), scoring a small body in the event loop and a larger one
    in a worker thread (see :data:`INLINE_BYTES`)."""
    from fastapi import Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    async def invocations(request: Request) -> Any:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body:
            return _error(413, "REQUEST_TOO_LARGE", f"the body exceeds {max_body} bytes")
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > max_body:
                return _error(413, "REQUEST_TOO_LARGE", f"the body exceeds {max_body} bytes")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        rid, served = request_id(request.headers.get("x-request-id")), slot.served

        def keep(checked: scoring.Checked, scored: dict[str, Any]) -> None:
            if inference is not None:
                inference.append(checked, scored, request_id=rid, source="serve",
                                 model=served.ref.name, version=served.ref.version)

        try:
            if len(body) <= INLINE_BYTES:
                result = score_body(served, bytes(body), content_type, keep)
            else:
                result = await run_in_threadpool(score_body, served, bytes(body), content_type,
                                                 keep)
        except PayloadError as exc:
            return _error(exc.status, "BAD_REQUEST", str(exc))
        except InputError as exc:
            return _error(422, "INVALID_INPUT", str(exc), exc.problems)
        except Exception as exc:  # noqa: BLE001 - a bug or a model failure: report, keep serving
            log.exception("serving: scoring failed")
            return _error(500, "INTERNAL_ERROR", f"{type(exc).__name__}: {str(exc)[:300]}")
        return JSONResponse({**result, "request_id": rid}, headers={"X-Request-ID": rid})

    return invocations


def _check_port(host: str, port: int) -> None:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise TabregError(f"cannot listen on {host}:{port} ({exc.strerror}); stop what "
                              "uses it or choose another port (serve.port, PORT=...)") from None


#: uvicorn's HTTP protocol, with Nagle off on every connection (see the module).
HTTP = "tabreg.serving.nodelay:NoDelayHTTP"
#: How :func:`serve` hands its arguments to worker processes (uvicorn starts them with
#: ``spawn``, so they inherit the environment and nothing else).
WORKER_ENV = "TABREG_SERVE_WORKER"


def serve(config: Config, root: Path, *, host: str | None = None, port: int | None = None,
          version: str | None = None, refresh: float = 10.0, threads: int | None = 1,
          workers: int | None = None) -> None:
    """Serve the champion (or ``version``) until interrupted, in ``workers`` processes
    (default ``serve.workers``)."""
    import uvicorn

    host, port = host or config.serve.host, port or config.serve.port
    workers = config.serve.workers if workers is None else workers
    if workers < 1:
        raise TabregError(f"the number of server workers must be at least 1, got {workers}")
    _check_port(host, port)
    if workers > 1:
        _serve_workers(config, root, host, port, version, refresh, threads, workers)
        return
    slot = registry_slot(config, root, version=version, refresh=refresh or None,
                         threads=threads)
    ref = slot.served.ref
    _log_serving(ref.name, ref.version, ref.alias, refresh, f"http://{host}:{port}")
    uvicorn.run(create_app(slot, inference=inference_log.open_log(config, root)), host=host,
                port=port, log_level="warning", access_log=False, http=HTTP)


def _log_serving(name: str, version: str, alias: str | None, refresh: float, url: str,
                 workers: int = 1) -> None:
    follow = (f"follows @{alias}, checked every {refresh:g} s" if alias and refresh
              else f"pinned; the store checked every {refresh:g} s" if refresh
              else "not re-checked: restart to change it")
    log.info("serving %s version %s (%s) on %s%s", name, version, follow, url,
             f" with {workers} worker processes" if workers > 1 else "")


def _serve_workers(config: Config, root: Path, host: str, port: int, version: str | None,
                   refresh: float, threads: int | None, workers: int) -> None:
    """Several worker processes behind one port. The version is resolved here first, so that
    a missing champion fails once, clearly, rather than in every worker; a worker that still
    cannot load the model records why and stops the others (uvicorn's startup-failure exit)."""
    import tempfile

    import uvicorn

    from tabreg.promotion import registry
    from tabreg.promotion.registry import CHAMPION

    name = config.registry.model_name
    found = registry.find_version(registry.open_store(config, root), name, version)
    _log_serving(name, str(found.version), CHAMPION if version is None else None, refresh,
                 f"http://{host}:{port}", workers)
    with tempfile.TemporaryDirectory(prefix="tabreg-serve-") as tmp:
        failure = Path(tmp) / "worker-failure.txt"
        os.environ[WORKER_ENV] = json.dumps({
            "config": config.model_dump(mode="json", by_alias=True),
            "root": str(Path(root).resolve()), "version": version, "refresh": refresh,
            "threads": threads, "failure": str(failure)})
        try:
            # A worker busy loading its model answers the supervisor's pings late on a loaded
            # machine: give it longer than the default 5 s before it counts as hung.
            uvicorn.run("tabreg.serving.server:worker_app", factory=True, workers=workers,
                        http=HTTP,
                        host=host, port=port, log_level="warning", access_log=False,
                        timeout_worker_healthcheck=30)
        finally:
            os.environ.pop(WORKER_ENV, None)
        if failure.exists():
            raise TabregError(f"a serving worker could not start: {failure.read_text()}")


def worker_app() -> Any:
    """The app of one worker process of :func:`serve` (uvicorn calls this factory in each)."""
    from uvicorn.config import STARTUP_FAILURE

    from tabreg.config import Config

    args = json.loads(os.environ[WORKER_ENV])
    config, root = Config.model_validate(args["config"]), Path(args["root"])
    try:
        slot = registry_slot(config, root, version=args["version"],
                             refresh=args["refresh"] or None, threads=args["threads"])
    except Exception as exc:  # noqa: BLE001 - reported by the parent, which then exits non-zero
        Path(args["failure"]).write_text(f"{type(exc).__name__}: {exc}", encoding="utf-8")
        # At once: an orderly exit would wait on MLflow's threads while the supervisor's
        # health pings go unanswered, and the supervisor would wait out its timeout.
        os._exit(STARTUP_FAILURE)
    return create_app(slot, inference=inference_log.open_log(config, root))


def wait_until_healthy(url: str, process: Any, timeout: float) -> bool:
    """Poll ``url``/health until it answers 200 (True), or until ``process`` (a Popen of the
    server) exits or ``timeout`` seconds pass (False). For callers that start a server."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.2)
