"""One typed, frozen configuration loaded from ``params.yaml``.

Everything problem-specific (columns, target, strata, slices, what reports say about it) and
every knob of the pipeline lives in ``params.yaml``; this module turns it into immutable models
so that a wrong key or a wrong type fails at start, with the key's dotted path in the message,
rather than deep inside a step. Environment variables override only the values that differ
from machine to machine (see :data:`ENV_OVERRIDES`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tabreg.errors import ConfigError

#: Environment variables that override a configuration value, and the dotted key they set.
ENV_OVERRIDES: dict[str, str] = {
    "DATA_SOURCE": "data.source",
    "MLFLOW_TRACKING_URI": "tracking.uri",
    "OPTUNA_STORAGE": "tune.storage",
    "SERVICES_DATABASE_URL": "services.database_url",
    "INFERENCE_LOG": "monitor.log",
}

#: Columns the pipeline adds to every table it writes: a stable row identity and the file
#: (base archive or landing batch) the row came from.
ROW_ID = "row_id"
BATCH = "batch"
#: Columns of every scored output: batch scoring's file, the inference log and the registered
#: model's pyfunc output (the interval's bounds beside the prediction).
PREDICTION, LOWER, UPPER, FLAGS = "prediction", "lower", "upper", "flags"


#: What ingest does with a row repeating an earlier row of its file (``data.duplicates``).
Duplicates = Literal["reject", "drop", "keep"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Frozen):
    """Where the raw data comes from and how it is verified."""

    source: str = Field(min_length=1)
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    #: The CSV's path inside an archive source; null when the source is the CSV itself.
    member: str | None = Field(min_length=1, description="path of the CSV inside the archive")
    landing_dir: str = "data/landing"
    #: Every landing file met by any entry point: accepted, ingested or quarantined, and why.
    landing_record: str = "data/landing.json"
    id_column: str | None = None
    #: What a file that repeats a row exactly (or repeats ``id_column``) gets: ``reject`` (the
    #: default: identity decides de-duplication and the split, so a repeat is refused),
    #: ``drop`` (the first of each repeat kept) or ``keep`` (each repeat gets its own identity,
    #: numbered by its occurrence in the file).
    duplicates: Duplicates = "reject"


class ProblemConfig(_Frozen):
    """The problem in words, for the people who read the reports: what the target is and its
    unit, what one row is, what the model is for and not for, and what is known to be wrong with
    the data. The model card and the plots take every problem-specific sentence from here, so
    another dataset needs no code change. Limitations that depend on the data (a capped target,
    a slice too small to measure) are not written here: they are derived from the data and
    shown only when they hold."""

    target: str | None = None  # what is predicted, in words; null: the target column's name
    unit: str = ""  # the target's unit as axis labels show it ("$", "kWh"); "": unitless
    rows: str = Field(default="rows", min_length=1, description="what a row is, plural")
    intended_use: str = ""
    out_of_scope: tuple[str, ...] = ()
    limitations: tuple[str, ...] = ()


class SchemaConfig(_Frozen):
    """The columns of the table: what is predicted and from what."""

    target: str
    numeric: tuple[str, ...] = Field(min_length=1)
    categorical: tuple[str, ...] = ()

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column a source file must have, in canonical order."""
        return self.features + (self.target,)

    @model_validator(mode="after")
    def _distinct(self) -> SchemaConfig:
        seen: set[str] = set()
        for name in self.columns:
            if name in seen:
                raise ValueError(f"column {name!r} is listed twice (target, numeric, categorical)")
            if name in (ROW_ID, BATCH):
                raise ValueError(f"column name {name!r} is reserved for the pipeline")
            seen.add(name)
        return self


class PathsConfig(_Frozen):
    """Where each step writes, relative to the project root (``dvc.yaml`` uses the same keys)."""

    raw: str = "data/raw/table.parquet"
    train: str = "data/split/train.parquet"
    test: str = "data/split/test.parquet"
    tuning: str = "models/tuning.json"  # the study's result: the chosen candidate
    model: str = "models/model"  # the trained model (an MLflow model folder)
    model_record: str = "models/train.json"  # the training run, its params and data version
    oof: str = "models/oof.parquet"  # the chosen candidate's out-of-fold predictions on train
    reports: str = "reports"
    monitoring: str = "reports/monitoring"  # make monitor's reports (git-ignored)


class ValidateConfig(_Frozen):
    raw_suite: str = "expectations/raw.json"
    batch_suite: str = "expectations/batch.json"
    sample_size: int = Field(default=5, ge=1, description="failing values shown per expectation")


class Binning(_Frozen):
    """A numeric column cut into labelled intervals, right-closed like ``pandas.cut``."""

    column: str
    bins: tuple[float, ...] = Field(min_length=2)
    labels: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _check(self) -> Binning:
        if any(not a < b for a, b in zip(self.bins, self.bins[1:], strict=False)):
            raise ValueError(f"bins must increase strictly, got {list(self.bins)}")
        if any(math.isnan(b) for b in self.bins):
            raise ValueError("bins must not contain NaN")
        if self.labels is not None and len(self.labels) != len(self.bins) - 1:
            raise ValueError(
                f"{len(self.bins) - 1} intervals need as many labels, got {len(self.labels)}"
            )
        return self

    @property
    def interval_labels(self) -> tuple[str, ...]:
        if self.labels is not None:
            return self.labels
        return tuple(str(i) for i in range(1, len(self.bins)))

    @property
    def ranges(self) -> dict[str, str]:
        """Each label's interval in words (``1.5 < median_income ≤ 3``): reports print it
        beside a label such as ``2``, which alone says nothing about the values it holds."""
        return {label: _interval_words(self.column, low, high) for label, low, high
                in zip(self.interval_labels, self.bins, self.bins[1:], strict=False)}


def _interval_words(column: str, low: float, high: float) -> str:
    if math.isinf(low) and math.isinf(high):
        return f"any {column}"
    if math.isinf(low):
        return f"{column} ≤ {high:g}"
    if math.isinf(high):
        return f"{column} > {low:g}"
    return f"{low:g} < {column} ≤ {high:g}"


class SplitConfig(_Frozen):
    strategy: Literal["hash", "random"] = "hash"
    test_size: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 42
    strata: Binning


class Slice(_Frozen):
    """A way to cut the test set for per-slice metrics: by category, or by bins of a number."""

    name: str
    column: str
    bins: tuple[float, ...] | None = None
    labels: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _check(self) -> Slice:
        if self.bins is not None:
            Binning(column=self.column, bins=self.bins, labels=self.labels)
        elif self.labels is not None:
            raise ValueError("labels need bins")
        return self

    @property
    def ranges(self) -> dict[str, str]:
        """Each labelled bin's interval in words; empty for a category or unlabelled bins
        (whose values already read as intervals)."""
        if self.bins is None or self.labels is None:
            return {}
        return Binning(column=self.column, bins=self.bins, labels=self.labels).ranges


class ErrorMap(_Frozen):
    """The columns holding each row's coordinates, for the map of errors (in degrees)."""

    longitude: str
    latitude: str


class EvaluateConfig(_Frozen):
    slices: tuple[Slice, ...] = ()
    error_map: ErrorMap | None = None  # null: no map (the table has no coordinates)
    bootstrap: int = Field(default=1000, ge=100, description="bootstrap resamples")
    confidence: float = Field(default=0.95, gt=0, lt=1)
    seed: int = 42


class Ratio(_Frozen):
    name: str
    numerator: str
    denominator: str


class GeoConfig(_Frozen):
    """Similarity to k-means centres of the coordinates (an RBF kernel), as in the book."""

    columns: tuple[str, str] = ("latitude", "longitude")
    n_clusters: int = Field(default=10, ge=1)
    gamma: float = Field(default=1.0, gt=0)


class FeaturesConfig(_Frozen):
    """The book's preprocessing; everything not named here is imputed and scaled."""

    ratios: tuple[Ratio, ...] = ()
    log: tuple[str, ...] = ()
    geo: GeoConfig | None = None  # null: no geographic block (a table without coordinates)
    seed: int = 42


class Range(_Frozen):
    """One dimension of the search space: a number range, or a list of choices."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    int_: bool = Field(default=False, alias="int")
    choices: tuple[Any, ...] | None = None

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _check(self) -> Range:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("choices must not be empty")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs low and high (or choices)")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is greater than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        return self


Family = Literal["random_forest", "hist_gradient_boosting", "mlp"]
#: The model families, in the order the default search space lists them (the one list:
#: ``tabreg.models.candidates`` builds each of these).
FAMILIES: tuple[Family, ...] = get_args(Family)


class TuneConfig(_Frozen):
    """The Optuna study. Its budget is a number of trials, so that it means the same on every
    machine; ``timeout`` is only a guard (when it fires, the run says so loudly)."""

    n_trials: int = Field(default=40, ge=1)
    timeout: float | None = Field(default=1800, gt=0, description="guard, seconds; null: none")
    seed: int = 42
    cv_folds: int = Field(default=3, ge=2)
    storage: str | None = None  # null: a journal file in the project (OPTUNA_STORAGE overrides)
    workers: int | None = Field(default=None, description="worker processes; null: one a core")
    #: Trial n is proposed and pruned from trials 0..n-1-lag only, once they are finished, so
    #: that up to lag + 1 workers, idle or busy, run the same trials (``tuning.worker``).
    lag: int = Field(default=3, ge=0)
    oversubscribe: bool = False  # allow more workers than usable cores
    #: Where the workers run: local processes, the tune-worker deployment's flow runs, or
    #: (``inline``) the tune step's own process, one trial at a time.
    launcher: Literal["auto", "local", "prefect", "inline"] = "auto"
    families: tuple[Family, ...] = FAMILIES
    #: Each family's share of the budget (relative weights); null: the sampler picks the
    #: family of each trial after one trial each. See ``tabreg.tuning.space.family_schedule``.
    family_weights: dict[str, float] | None = None
    space: dict[str, dict[str, Range]] = {}
    blend: bool = True  # then try a weighted average of the best trials (Caruana selection)
    blend_top: int = Field(default=1, ge=1)  # the blend's candidates: best N trials a family

    @model_validator(mode="after")
    def _check(self) -> TuneConfig:
        known = {"features", *FAMILIES}
        for group in self.space:
            if group not in known:
                raise ValueError(f"space.{group}: unknown group; expected one of {sorted(known)}")
        if not self.families:
            raise ValueError("families: the search space is empty (no model family)")
        if self.launcher == "inline" and self.workers not in (None, 1):
            raise ValueError(f"workers: {self.workers} workers, but launcher 'inline' runs the "
                             "trials in the tune step's own process, one at a time; set "
                             "workers: 1 (or null), or launcher: local")
        if self.family_weights is not None:
            # Weights of known families that ``families`` leaves out are ignored, so that a
            # profile can narrow the families without restating the weights.
            unknown = sorted(set(self.family_weights) - set(FAMILIES))
            if unknown:
                raise ValueError(f"family_weights: {unknown} are not model families; "
                                 f"expected some of {list(FAMILIES)}")
            starved = [f for f in self.families if self.family_weights.get(f, 0) <= 0]
            if starved:
                raise ValueError(f"family_weights: {starved} would get no trials; give every "
                                 "family in families a weight above 0")
        return self


class TrainConfig(_Frozen):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_epochs: int = Field(default=200, ge=1)
    patience: int = Field(default=15, ge=1)
    validation_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    seed: int = 42


class TrackingConfig(_Frozen):
    uri: str | None = None  # null: sqlite:///mlflow.db in the project (MLFLOW_TRACKING_URI wins)
    experiment: str = "tabreg"


class RegistryConfig(_Frozen):
    """Where trained models are registered and where decisions about them are written."""

    model_name: str = Field(default="tabreg", min_length=1)
    ledger: str = Field(default="registry/ledger.jsonl",
                        description="decisions, one JSON object per line")


class PromotionConfig(_Frozen):
    """The champion/challenger gate (see ``tabreg.promotion.gate``)."""

    max_rmse: float = Field(default=math.inf, gt=0, description="bar for every challenger")
    #: How far (relative) the champion's RMSE on the current test split may fall outside the
    #: bootstrap interval recorded at its promotion before the gate refuses to judge; None: off.
    max_champion_drift: float | None = Field(default=0.05, ge=0)
    min_improvement: float = Field(default=0.01, ge=0, lt=1, description="relative RMSE gain")
    require_interval: bool = True  # the paired bootstrap interval must lie below zero
    max_slice_regression: float = Field(default=0.05, ge=0)
    min_slice_rows: int = Field(default=30, ge=1, description="smaller slices do not gate")
    bootstrap: int = Field(default=1000, ge=100)
    confidence: float = Field(default=0.95, gt=0, lt=1)
    seed: int = 42


class DriftConfig(_Frozen):
    """Population stability index thresholds (the usual 0.1 / 0.25)."""

    bins: int = Field(default=10, ge=2)
    psi_moderate: float = Field(default=0.1, gt=0)
    psi_major: float = Field(default=0.25, gt=0)
    retrain_level: Literal["moderate", "major"] = "major"  # what the drift check retrains on

    @model_validator(mode="after")
    def _order(self) -> DriftConfig:
        if self.psi_major <= self.psi_moderate:
            raise ValueError(f"psi_major ({self.psi_major}) must exceed psi_moderate "
                             f"({self.psi_moderate})")
        return self


class RetrainConfig(_Frozen):
    """The scheduled retrain-and-promote flow."""

    cron: str = "0 3 * * 1"             # the scheduled retrain (when there is new data)
    drift_check_cron: str | None = None  # a more frequent check that retrains on drift only
    timezone: str = "UTC"
    min_new_rows: int = Field(default=1, ge=1, description="fewer new rows wait for more")
    drift: DriftConfig = DriftConfig()
    lock_timeout: float = Field(default=0, ge=0, description="seconds a second run waits")
    quarantine_dir: str = "data/quarantine"

    @model_validator(mode="after")
    def _crons(self) -> RetrainConfig:
        for key in ("cron", "drift_check_cron"):
            value = getattr(self, key)
            if value is not None and len(value.split()) != 5:
                raise ValueError(f"{key}: {value!r} is not a 5-field cron expression")
        return self


class ServeConfig(_Frozen):
    """Online and batch scoring of the champion."""

    host: str = "127.0.0.1"
    port: int = Field(default=5001, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, description="server processes behind the port")
    chunk_rows: int = Field(default=100_000, ge=1, description="batch scoring chunk size")
    fast: bool = Field(default=True, description="the server computes with the fitted "
                       "model's arithmetic in numpy (tabreg.serving.fast), not sklearn's calls")
    request_threads: int = Field(default=1, ge=1, description="threads that share one "
                                 "request of 256 rows or more on the fast path (1: none)")
    interval: float = Field(default=0.9, gt=0.0, lt=1.0,
                            description="prediction intervals' coverage level")
    interval_scale: Literal["difficulty", "constant"] = Field(
        default="difficulty", description="difficulty: narrower where the model is surer")


class MonitorConfig(_Frozen):
    """What the served model leaves for monitoring: the inference log
    (``tabreg.serving.inference_log``)."""

    log: str = Field(default="logs/inference", description="a folder under the project "
                     "(Parquet by day) or a database URL; empty: no inference log")
    log_batch_rows: int = Field(default=1000, ge=1, description="rows per write")
    log_flush_seconds: float = Field(default=10.0, gt=0, description="longest wait to write")
    log_max_rows: int = Field(default=100_000, ge=1,
                              description="rows held in memory at most (more are dropped)")
    labels: str = Field(default="data/labels", description="where label CSV files arrive")
    min_labels: int = Field(default=100, ge=1, description="labelled rows needed to judge "
                            "live quality")
    flag_share_warn: float = Field(default=0.05, ge=0, le=1,
                                   description="share of flagged rows that warns")
    coverage_gap: float = Field(default=0.05, gt=0, lt=1,
                                description="interval coverage this far below its level warns")
    to_label_rows: int = Field(default=100, ge=0, description="rows exported for labelling")
    experiment: str = Field(default="monitoring", min_length=1,
                            description="the MLflow experiment of the monitoring reports")
    cron: str | None = Field(default="0 6 * * *", description="when the scheduled monitor "
                             "runs (`make schedule`); null: not scheduled")
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _cron(self) -> MonitorConfig:
        if self.cron is not None and len(self.cron.split()) != 5:
            raise ValueError(f"cron: {self.cron!r} is not a 5-field cron expression")
        return self


class ServicesConfig(_Frozen):
    """The local multi-service stack of ``make services`` (see ``tabreg.services``).

    Ports are those the stack binds on ``host``; ``database_url`` names a PostgreSQL server to
    use instead of starting one (``SERVICES_DATABASE_URL`` overrides it).
    """

    host: str = Field(default="127.0.0.1", min_length=1)
    postgres_port: int = Field(default=5433, ge=1, le=65535)
    mlflow_port: int = Field(default=5050, ge=1, le=65535)
    prefect_port: int = Field(default=4200, ge=1, le=65535)
    mlflow_workers: int = Field(default=1, ge=1, description="MLflow server processes")
    prefect_workers: int = Field(default=1, ge=0, description="Prefect workers on this host")
    work_pool: str = Field(default="tabreg", min_length=1)
    state_dir: str = Field(default=".services", min_length=1,
                           description="pids, logs, database and artifacts")
    dvc_remote: str = Field(default=".services/dvc-remote", min_length=1,
                            description="a folder, or any DVC remote URL")
    database_url: str | None = None  # postgresql://user:password@host:port/any-database
    deploy_source: str | None = None  # null: this project folder; or a git URL for other hosts

    @model_validator(mode="after")
    def _distinct_ports(self) -> ServicesConfig:
        ports = {"postgres_port": self.postgres_port, "mlflow_port": self.mlflow_port,
                 "prefect_port": self.prefect_port}
        if len(set(ports.values())) < len(ports):
            raise ValueError(f"ports must differ, got {ports}")
        if self.database_url is not None and not self.database_url.startswith("postgresql"):
            raise ValueError(f"database_url must be a postgresql:// URL, got "
                             f"{self.database_url.split(':', 1)[0]}://...")
        return self


class Config(_Frozen):
    data: DataConfig
    problem: ProblemConfig = ProblemConfig()
    schema_: SchemaConfig = Field(alias="schema")
    paths: PathsConfig = PathsConfig()
    validate_: ValidateConfig = Field(default=ValidateConfig(), alias="validate")
    split: SplitConfig
    features: FeaturesConfig = FeaturesConfig()
    tune: TuneConfig = TuneConfig()
    train: TrainConfig = TrainConfig()
    tracking: TrackingConfig = TrackingConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    registry: RegistryConfig = RegistryConfig()
    promotion: PromotionConfig = PromotionConfig()
    retrain: RetrainConfig = RetrainConfig()
    serve: ServeConfig = ServeConfig()
    monitor: MonitorConfig = MonitorConfig()
    services: ServicesConfig = ServicesConfig()
    profiles: dict[str, dict[str, Any]] = {}
    profile: str = "default"

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @property
    def schema(self) -> SchemaConfig:  # type: ignore[override]
        return self.schema_

    @property
    def validation(self) -> ValidateConfig:
        return self.validate_

    @model_validator(mode="after")
    def _columns_exist(self) -> Config:
        known = set(self.schema_.columns)
        where = [("split.strata.column", self.split.strata.column)]
        for i, r in enumerate(self.features.ratios):
            where += [(f"features.ratios.{i}.numerator", r.numerator),
                      (f"features.ratios.{i}.denominator", r.denominator)]
        where += [(f"features.log.{i}", c) for i, c in enumerate(self.features.log)]
        if self.features.geo is not None:
            where += [(f"features.geo.columns.{i}", c)
                      for i, c in enumerate(self.features.geo.columns)]
        where += [(f"evaluate.slices.{i}.column", s.column)
                  for i, s in enumerate(self.evaluate.slices)]
        if self.evaluate.error_map is not None:
            where += [(f"evaluate.error_map.{k}", c)
                      for k, c in self.evaluate.error_map.model_dump().items()]
        if self.data.id_column is not None:
            where.append(("data.id_column", self.data.id_column))
        for key, column in where:
            if column not in known:
                raise ValueError(f"{key}: {column!r} is not a column of the schema {sorted(known)}")
        return self


def _format_errors(exc: ValidationError, origin: str) -> str:
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"  {path}: {msg}")
    return f"{origin}: invalid configuration\n" + "\n".join(lines)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[leaf] = value


def _merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def absolute_source(value: str) -> str:
    """A relative ``DATA_SOURCE`` path, made absolute against the directory it was given in
    (the working directory of the command that read it), so that it names the same file in
    every process and project it reaches; URLs and absolute paths are kept as they are."""
    if "://" in value or os.path.isabs(value):
        return value
    return os.path.abspath(value)


def parse_config(raw: Mapping[str, Any], env: Mapping[str, str] | None = None,
                 origin: str = "params", profile: str = "default") -> Config:
    """Validate a parsed ``params.yaml`` tree: profile overlay, then environment overrides."""
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{origin}: expected a mapping at the top level, got {type(raw).__name__}")
    tree = yaml.safe_load(yaml.safe_dump(dict(raw)))  # deep copy of plain data
    profiles = tree.get("profiles") or {}
    if profile != "default" or profile in profiles:
        if not isinstance(profiles, Mapping) or profile not in profiles:
            raise ConfigError(f"{origin}: unknown profile {profile!r}; profiles defined: "
                              f"{sorted(profiles) if isinstance(profiles, Mapping) else []}")
        tree = _merge(tree, profiles[profile] or {})
    tree["profile"] = profile
    for var, dotted in ENV_OVERRIDES.items():
        value = (env or {}).get(var)
        if value and var == "DATA_SOURCE":
            value = absolute_source(value)
        if value:
            _set_dotted(tree, dotted, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin)) from None


PROFILE_FILE = "profile.yaml"


def active_profile(params_path: Path) -> str:
    """The profile named in ``profile.yaml`` beside the params file ("default" without one).

    It is a file, not a variable, so that DVC tracks it as a parameter: switching profiles
    reruns the stages whose budget it changes.
    """
    path = params_path.parent / PROFILE_FILE
    if not path.exists():
        return "default"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    name = data.get("profile", "default") if isinstance(data, dict) else None
    if not isinstance(name, str):
        raise ConfigError(f"{path}: expected 'profile: <name>'")
    return name


def load_config(path: str | os.PathLike[str] = "params.yaml",
                env: Mapping[str, str] | None = None, profile: str | None = None) -> Config:
    """Load and validate ``params.yaml``; ``env`` defaults to the process environment and
    ``profile`` to the one named in ``profile.yaml``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(raw or {}, os.environ if env is None else env, origin=str(path),
                        profile=profile if profile is not None else active_profile(path))
