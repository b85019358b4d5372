"""The validation step: check a table against a Great Expectations suite kept in the repository.

Suites live as Great Expectations 1.x JSON under ``expectations/`` (``raw.json`` for the whole
raw table, ``batch.json`` for the rows of one new batch). :func:`validate_frame` runs a suite
on a pandas DataFrame in an ephemeral (in-memory) GX context and turns the result into a
:class:`ValidationReport` that says, per failed expectation, which columns, how many rows,
some failing values and the ``row_id`` of some failing rows. :func:`write_report` keeps the
evidence (JSON and a Data Docs HTML page); :func:`check` stops the pipeline with a
:class:`~tabreg.errors.ValidationFailed` that a user can act on.

Great Expectations takes seconds to import, so it is imported inside the functions that need
it, never at module level: importing this module (and starting the CLI) stays fast.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tabreg.config import ROW_ID
from tabreg.data import docs
from tabreg.errors import ValidationFailed
from tabreg.io import write_text

if TYPE_CHECKING:  # pragma: no cover - typing only
    from great_expectations import ExpectationSuite

#: kwargs that say where an expectation applies rather than what it checks.
_DOMAIN_KWARGS = ("column", "column_A", "column_B", "column_list", "column_set", "batch_id")
#: kwargs of map expectations that shape the computation, not the rule.
_QUIET_KWARGS = ("result_format", "catch_exceptions", "include_config", "meta", "row_condition",
                 "condition_parser")


@dataclass(frozen=True)
class Failure:
    """One failed expectation, in terms a person can act on."""

    expectation: str
    columns: tuple[str, ...]
    unexpected_count: int | None
    unexpected_percent: float | None
    sample: tuple
    sample_row_ids: tuple[str, ...]
    detail: str

    def line(self) -> str:
        """One line of :meth:`ValidationReport.summary`."""
        where = f" [{', '.join(self.columns)}]" if self.columns else ""
        text = f"{self.expectation}{where}"
        if self.detail:
            text += f" ({self.detail})"
        if self.unexpected_count is not None:
            text += f": {self.unexpected_count} unexpected"
            if self.unexpected_percent is not None:
                text += f" ({_percent(self.unexpected_percent)})"
        if self.sample:
            text += "; e.g. " + ", ".join(_short(v) for v in self.sample)
        if self.sample_row_ids:
            text += "; row_id " + ", ".join(self.sample_row_ids)
        return text


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of one suite on one frame; ``result`` is GX's ``to_json_dict()``."""

    suite: str
    success: bool
    evaluated: int
    failures: tuple[Failure, ...]
    result: dict

    def summary(self) -> str:
        """``suite raw: 3 of 40 expectations failed`` and one line per failure."""
        if self.success:
            return f"suite {self.suite}: all {self.evaluated} expectations passed"
        head = f"suite {self.suite}: {len(self.failures)} of {self.evaluated} expectations failed"
        return "\n".join([head] + [f"  - {f.line()}" for f in self.failures])

    def to_dict(self) -> dict[str, Any]:
        """The summary section of the JSON report (everything but the raw GX result)."""
        return {
            "suite": self.suite,
            "success": self.success,
            "evaluated": self.evaluated,
            "failed": len(self.failures),
            "text": self.summary(),
            "failures": [_jsonable(asdict(f)) for f in self.failures],
        }


# --------------------------------------------------------------------------------------------
# Great Expectations plumbing (lazy imports)


def _gx():
    """Import Great Expectations with its telemetry off (imported only when validating)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    return gx


def _ephemeral_context():
    """A fresh in-memory GX context without progress bars (about 3 ms to create)."""
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def load_suite(path: str | os.PathLike[str]) -> ExpectationSuite:
    """Read a GX 1.x suite from JSON; a missing or invalid file raises :class:`ValidationFailed`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValidationFailed(f"{path}: expectation suite not found") from None
    except OSError as exc:
        raise ValidationFailed(f"{path}: cannot read expectation suite: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationFailed(f"{path}: expectation suite is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValidationFailed(f"{path}: expectation suite must be a JSON object, "
                               f"got {type(data).__name__}")
    if "expectation_suite_name" in data or any(
        isinstance(e, dict) and "expectation_type" in e for e in data.get("expectations") or []
    ):
        raise ValidationFailed(f"{path}: this is a Great Expectations 0.x suite; 1.x needs "
                               "'name' and expectations with 'type'")
    for key in ("name", "expectations"):
        if key not in data:
            raise ValidationFailed(f"{path}: expectation suite lacks the key {key!r}")
    if not isinstance(data["expectations"], list):
        raise ValidationFailed(f"{path}: 'expectations' must be a list")
    gx = _gx()
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    _ephemeral_context()  # building a suite needs an active context in GX 1.x
    # GX 1.24's ExpectationSuite logs and *drops* an expectation it cannot build, so a typo
    # would silently weaken the contract: build each one first and fail on the first error.
    for i, item in enumerate(data["expectations"]):
        what = item.get("type") if isinstance(item, dict) else None
        try:
            if not isinstance(item, dict):
                raise TypeError(f"expected an object, got {type(item).__name__}")
            ExpectationConfiguration(**item).to_domain_obj()
        except Exception as exc:  # GX raises many kinds (pydantic, TypeError, its own)
            reason = " ".join(str(exc).split())
            raise ValidationFailed(f"{path}: invalid expectation suite: expectation #{i} "
                                   f"({what}): {reason}") from None
    try:
        suite = gx.ExpectationSuite(**data)
    except Exception as exc:
        raise ValidationFailed(f"{path}: invalid expectation suite: "
                               f"{type(exc).__name__}: {exc}") from None
    if len(suite.expectations) != len(data["expectations"]):  # pragma: no cover - defensive
        raise ValidationFailed(f"{path}: invalid expectation suite: GX kept "
                               f"{len(suite.expectations)} of {len(data['expectations'])} "
                               "expectations")
    own_checks(data.get("meta") or {}, path)
    return suite


def validate_frame(frame: pd.DataFrame, suite_path: str | os.PathLike[str], *,
                   sample_size: int = 5, run_name: str | None = None) -> ValidationReport:
    """Run the suite at ``suite_path`` on ``frame``; never raises for bad data, only reports it.

    Each call uses its own ephemeral context, so calls are independent (about 0.2 s on the real
    data once GX is imported; GX's overhead is per expectation, not per row). Failing rows are
    identified by ``row_id`` when the frame has that column. ``run_name`` (default: the row
    count) and the time name this validation in the result, as GX's Data Docs page shows it.
    """
    suite = load_suite(suite_path)
    order = [_key(c.type, c.kwargs) for c in (e.configuration for e in suite.expectations)]
    context = _ephemeral_context()
    batch_definition = (
        context.data_sources.add_pandas("tabreg_frames")
        .add_dataframe_asset("frame")
        .add_batch_definition_whole_dataframe("whole")
    )
    result_format: dict[str, Any] = {
        "result_format": "SUMMARY",
        "partial_unexpected_count": sample_size,
        "return_unexpected_index_query": False,
    }
    if ROW_ID in frame.columns:
        result_format["unexpected_index_column_names"] = [ROW_ID]
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite, result_format=result_format).to_json_dict()
    result["meta"] = {**(result.get("meta") or {}),
                      "run_id": docs.run_id(run_name or f"{len(frame)} rows")}
    report = _report(suite.name, result, sample_size,
                     present=[str(c) for c in frame.columns], order=order)
    return _with_own_checks(report, frame, own_checks(suite.meta or {}, suite_path))


# --------------------------------------------------------------------------------------------
# From GX's result to a report


def _key(etype: str, kwargs: Mapping[str, Any]) -> str:
    """An expectation's identity inside a suite: its type and kwargs (without GX's batch_id)."""
    rest = {k: v for k, v in kwargs.items() if k != "batch_id"}
    return etype + json.dumps(rest, sort_keys=True, default=str)


def _report(suite: str, result: dict, sample_size: int, *, present: list[str],
            order: list[str]) -> ValidationReport:
    """Failures in the suite's order (GX returns results in its own order)."""
    rank = {key: i for i, key in enumerate(order)}

    def position(item: Mapping[str, Any]) -> int:
        config = item.get("expectation_config") or {}
        return rank.get(_key(str(config.get("type")), config.get("kwargs") or {}), len(rank))

    failed = sorted((r for r in result.get("results", ()) if not r.get("success")), key=position)
    failures = tuple(_failure(r, sample_size, set(present)) for r in failed)
    stats = result.get("statistics") or {}
    evaluated = int(stats.get("evaluated_expectations", len(result.get("results", ()))))
    return ValidationReport(suite=suite, success=bool(result.get("success")),
                            evaluated=evaluated, failures=failures, result=result)


def _failure(item: Mapping[str, Any], sample_size: int, present: set[str]) -> Failure:
    config = item.get("expectation_config") or {}
    kwargs = config.get("kwargs") or {}
    res = item.get("result") or {}
    columns = _columns(kwargs)
    details = res.get("details") or {}
    mismatched = details.get("mismatched") if isinstance(details, dict) else None
    if isinstance(mismatched, dict):  # table columns: name the missing and the unexpected ones
        named = [str(c) for c in (mismatched.get("missing") or [])]
        named += [str(c) for c in (mismatched.get("unexpected") or [])]
        columns = tuple(named) or columns

    error = _exception_message(item)
    absent = [c for c in columns if c not in present]
    if error and absent and not isinstance(mismatched, dict):
        error = "no column " + ", ".join(repr(c) for c in absent) + " in the table"
    parts = [f"{k}={_short(v)}" for k, v in kwargs.items()
             if k not in _DOMAIN_KWARGS and k not in _QUIET_KWARGS]
    if "observed_value" in res:
        parts.append(f"observed {_observed(res['observed_value'], mismatched)}")
    if error:
        parts.append(f"error: {error}")

    sample: tuple = ()
    row_ids: tuple[str, ...] = ()
    if "partial_unexpected_list" in res:
        sample = tuple(_value(v) for v in (res.get("partial_unexpected_list") or [])[:sample_size])
    index_list = res.get("partial_unexpected_index_list") or []
    if isinstance(index_list, list):
        row_ids = tuple(str(e[ROW_ID]) for e in index_list[:sample_size]
                        if isinstance(e, dict) and ROW_ID in e)
    count = res.get("unexpected_count")
    percent = res.get("unexpected_percent")
    return Failure(
        expectation=str(config.get("type", "unknown expectation")),
        columns=columns,
        unexpected_count=None if count is None else int(count),
        unexpected_percent=None if percent is None else float(percent),
        sample=sample,
        sample_row_ids=row_ids,
        detail=", ".join(parts),
    )


def _columns(kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    names: list[str] = []
    for key in ("column", "column_A", "column_B"):
        if kwargs.get(key) is not None:
            names.append(str(kwargs[key]))
    if kwargs.get("column_list"):
        names += [str(c) for c in kwargs["column_list"]]
    return tuple(names)


def _exception_message(item: Mapping[str, Any]) -> str | None:
    """GX reports a metric that could not be computed (missing column, wrong type) here."""
    info = item.get("exception_info") or {}
    if "raised_exception" in info:  # single exception
        info = {"": info}
    for entry in info.values():
        if isinstance(entry, dict) and entry.get("raised_exception"):
            message = str(entry.get("exception_message") or "exception").strip()
            return message.splitlines()[0].removeprefix("Error: ") if message else "exception"
    return None


def _observed(value: Any, mismatched: Mapping[str, Any] | None) -> str:
    if mismatched:
        parts = [f"{k} {sorted(map(str, v))}" for k, v in mismatched.items() if v]
        return "; ".join(parts) if parts else _short(value)
    return value if isinstance(value, str) else _short(value)  # e.g. a dtype name


def _value(value: Any) -> Any:
    if isinstance(value, list):  # column-pair samples come as [a, b]
        return tuple(_value(v) for v in value)
    return value


def _short(value: Any, limit: int = 80) -> str:
    if isinstance(value, float):
        text = "nan" if math.isnan(value) else f"{value:g}" if abs(value) < 1e16 else repr(value)
    elif isinstance(value, tuple):
        text = "(" + ", ".join(_short(v) for v in value) + ")"
    else:
        text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _percent(value: float) -> str:
    return f"{value:.3g}%"


def _jsonable(value: Any) -> Any:
    """Plain JSON data (NaN as null, tuples as lists) for the report files."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    return str(value)


# --------------------------------------------------------------------------------------------
# The project's own checks: rules Great Expectations 1.x has no expectation for
#
# GX 1.24 has no expectation on the correlation of two columns, and its unique-value count
# cannot be limited to tables of a minimum size (a one-row batch has one value in every
# column). So these two rules are the project's own. They are declared with the contract, in
# the suite's JSON under ``meta.tabreg_checks`` (``type``, ``kwargs``, ``meta.why``, like an
# expectation: the columns and the floor are data, not code), run by :func:`validate_frame`
# after GX, and reported as :class:`Failure` like GX's; the JSON report keeps their results
# under ``result.tabreg_checks`` (the HTML page shows GX's results only).

#: The target still follows its strongest feature: Spearman's rank correlation of
#: ``column_A`` and ``column_B`` (rows where both are present) is at least ``min_value`` on
#: any table of at least ``min_rows`` such rows. Shuffled labels bring it near 0.
RANK_CORRELATION = "expect_column_pair_rank_correlation_to_be_at_least"
#: No column of ``column_list`` is stuck at one repeated value, on tables of at least
#: ``min_rows`` rows (one failure per stuck column).
NOT_CONSTANT = "expect_column_values_to_not_be_constant"
_OWN_KWARGS = {RANK_CORRELATION: {"column_A", "column_B", "min_value", "min_rows"},
               NOT_CONSTANT: {"column_list", "min_rows"}}


@dataclass(frozen=True)
class OwnCheck:
    """One of the project's checks as declared in a suite's ``meta.tabreg_checks``."""

    type: str
    kwargs: Mapping[str, Any]


def own_checks(meta: Mapping[str, Any], path: str | os.PathLike[str]) -> list[OwnCheck]:
    """The checks declared under ``meta.tabreg_checks``; a malformed one is an error naming it
    (as a mistyped expectation is: a typo must not silently weaken the contract)."""
    declared = meta.get("tabreg_checks") or []
    if not isinstance(declared, list):
        raise ValidationFailed(f"{path}: meta.tabreg_checks must be a list")
    checks = []
    for i, item in enumerate(declared):
        kind = item.get("type") if isinstance(item, dict) else None
        kwargs = item.get("kwargs") if isinstance(item, dict) else None
        where = f"{path}: invalid expectation suite: meta.tabreg_checks #{i} ({kind})"
        if kind not in _OWN_KWARGS:
            raise ValidationFailed(f"{where}: unknown type; known: {sorted(_OWN_KWARGS)}")
        if not isinstance(kwargs, dict) or set(kwargs) != _OWN_KWARGS[kind]:
            raise ValidationFailed(f"{where}: kwargs must be exactly "
                                   f"{sorted(_OWN_KWARGS[kind])}")
        if not (isinstance(kwargs["min_rows"], int) and kwargs["min_rows"] >= 2):
            raise ValidationFailed(f"{where}: min_rows must be an integer of at least 2")
        checks.append(OwnCheck(kind, kwargs))
    return checks


def _numbers(frame: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(frame[column], errors="coerce").astype("float64")


def _rank_correlation(frame: pd.DataFrame, kwargs: Mapping[str, Any]) -> list[dict]:
    a, b, floor, min_rows = (kwargs[k] for k in ("column_A", "column_B", "min_value",
                                                  "min_rows"))
    outcome = {"columns": [a, b], "min_value": floor, "min_rows": min_rows}
    absent = [c for c in (a, b) if c not in frame.columns]
    if absent:
        return [{**outcome, "success": False,
                 "error": "no column " + ", ".join(repr(c) for c in absent) + " in the table"}]
    pair = pd.DataFrame({"a": _numbers(frame, a), "b": _numbers(frame, b)}).dropna()
    if len(pair) < min_rows:
        return [{**outcome, "success": True, "rows": len(pair), "observed_value": None}]
    rho = float(pair["a"].rank().corr(pair["b"].rank()))  # Spearman: Pearson of the ranks
    return [{**outcome, "success": math.isfinite(rho) and rho >= floor, "rows": len(pair),
             "observed_value": rho}]


def _not_constant(frame: pd.DataFrame, kwargs: Mapping[str, Any]) -> list[dict]:
    outcomes = []
    for column in kwargs["column_list"]:
        outcome: dict[str, Any] = {"columns": [column], "min_rows": kwargs["min_rows"]}
        if column not in frame.columns:
            outcomes.append({**outcome, "success": False,
                             "error": f"no column {column!r} in the table"})
            continue
        values = _numbers(frame, column).dropna()
        stuck = len(frame) >= kwargs["min_rows"] and values.nunique() == 1
        outcomes.append({**outcome, "success": not stuck, "rows": len(frame),
                         "distinct_values": int(values.nunique()),
                         "value": float(values.iloc[0]) if stuck else None})
    return outcomes


_RUN_OWN = {RANK_CORRELATION: _rank_correlation, NOT_CONSTANT: _not_constant}


def _own_failure(check: OwnCheck, outcome: Mapping[str, Any]) -> Failure:
    parts = [f"{k}={_short(outcome[k])}" for k in ("min_value", "min_rows") if k in outcome]
    if outcome.get("error"):
        parts.append(f"error: {outcome['error']}")
    elif check.type == RANK_CORRELATION:
        parts.append(f"observed {_short(outcome['observed_value'])} on {outcome['rows']} rows")
    else:
        parts.append(f"observed one value in all {outcome['rows']} rows")
    sample = (outcome["value"],) if outcome.get("value") is not None else ()
    return Failure(expectation=check.type, columns=tuple(outcome["columns"]),
                   unexpected_count=None, unexpected_percent=None, sample=sample,
                   sample_row_ids=(), detail=", ".join(parts))


def _with_own_checks(report: ValidationReport, frame: pd.DataFrame,
                     checks: list[OwnCheck]) -> ValidationReport:
    """``report`` with the project's checks run on ``frame`` and merged in after GX's."""
    if not checks:
        return report
    outcomes = [(check, outcome) for check in checks
                for outcome in _RUN_OWN[check.type](frame, check.kwargs)]
    failures = tuple(_own_failure(c, o) for c, o in outcomes if not o["success"])
    result = {**report.result,
              "tabreg_checks": [{"type": c.type, **o} for c, o in outcomes]}
    return ValidationReport(suite=report.suite, success=report.success and not failures,
                            evaluated=report.evaluated + len(outcomes),
                            failures=report.failures + failures, result=result)


# --------------------------------------------------------------------------------------------
# Reports on disk


def write_report(report: ValidationReport, out_dir: str | os.PathLike[str],
                 name: str) -> dict[str, Path]:
    """Write ``out_dir/<name>.json`` (summary + full GX result) and ``out_dir/<name>.html``.

    The HTML is Great Expectations' Data Docs page for this validation result, rendered
    directly (no Data Docs site is built) and self-contained, so it opens offline
    (:mod:`tabreg.data.docs`). Both files are replaced atomically.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / f"{name}.json", out / f"{name}.html"
    payload = {"summary": report.to_dict(), "result": _jsonable(report.result)}
    write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n", json_path)
    write_text(docs.render(report.result, name), html_path)
    return {"json": json_path, "html": html_path}


def check(report: ValidationReport, where: str,
          files: Mapping[str, Path] | None = None) -> None:
    """Raise :class:`ValidationFailed` naming every failed expectation unless the report passed.

    ``files`` (what :func:`write_report` returned), when given, is pointed to in the message.
    """
    if report.success:
        return
    pointer = ("\ndetails: " + ", ".join(str(p) for p in files.values())) if files else ""
    raise ValidationFailed(f"{where}: {report.summary()}{pointer}")
