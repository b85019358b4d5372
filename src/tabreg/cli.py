"""``python -m tabreg``: the command line that DVC stages, Make targets and users call.

Starts fast (heavy libraries load inside the command that needs them) and shows errors from
input once, as a message, with a non-zero exit; a traceback only for bugs. argparse rather than
click or typer for the same reason: DVC stages and Make targets call this often, and the
standard library costs nothing to import.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tabreg.errors import report

if TYPE_CHECKING:  # the configuration module is loaded only by the commands that need it
    from tabreg.config import Config

#: The pipeline steps that open MLflow runs (and Optuna trials): they end the ones a killed
#: run left RUNNING before they start.
_STORE_STEPS = ("tune", "train", "evaluate", "register")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tabreg",  # the docstring, without reST
                                     description=__doc__.split("\n")[0].replace("``", ""))
    parser.add_argument("--params", default="params.yaml", help="configuration file")
    parser.add_argument("--root", default=".", help="project root (paths are relative to it)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show the traceback of a failure, not only its message")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _pipeline_commands(sub)
    _model_commands(sub)
    _data_commands(sub)
    sub.add_parser("config", help="print the resolved configuration (overrides applied)")
    sub.add_parser("tracking-uri", help="print the MLflow tracking URI the pipeline uses")
    services = sub.add_parser("services", help="the shared stack on this machine: PostgreSQL, "
                              "MLflow and Prefect servers, Prefect workers, a DVC remote")
    services.add_argument("action", choices=("start", "stop", "status"))
    _describe_commands(sub)
    return parser


def _pipeline_commands(sub: argparse._SubParsersAction) -> None:
    """The stages (DVC calls them one by one), the whole pipeline, and the retrain run."""
    sub.add_parser("pipeline", help="every stage in order, each only if DVC finds it out of "
                   "date (what the training flow runs, without Prefect)")
    retrain = sub.add_parser("retrain", help="retrain on new data and let the gate judge "
                             "(what the retrain flow runs, without Prefect)")
    retrain.add_argument("--trigger", choices=("schedule", "drift", "monitor"),
                         default="schedule", help="drift: retrain only when the new rows "
                         "drift enough; monitor: on any new rows (monitoring said act)")
    monitor = sub.add_parser("monitor", help="report on the served traffic since the last "
                             "report: drift, flags, live quality; act on it")
    monitor.add_argument("--since", default=None, help="the window's start, ISO time "
                         "(default: where the last report ended)")
    monitor.add_argument("--until", default=None, help="the window's end (default: now)")
    monitor.add_argument("--no-act", dest="act", action="store_false",
                         help="report only: do not start the retrain flow on `act`")
    sub.add_parser("ingest", help="fetch, verify and extract the source; append landing batches")
    sub.add_parser("validate", help="check the raw table and each batch against their contracts")
    sub.add_parser("split", help="stratified train/test split and its report")
    sub.add_parser("features", help="fit the feature pipeline on train; report the features")
    sub.add_parser("tune", help="Optuna study over families, hyper-parameters and features",
                   description="Run the Optuna study (tune.* in params.yaml) over the model "
                   "families, their hyper-parameters and the feature parameters, on the "
                   "training split, with tune.workers processes; an interrupted study resumes. "
                   "Each trial is a nested MLflow run; the result is models/tuning.json.")
    worker = sub.add_parser(
        "tune-worker", help="join a tuning study: claim and run its trials until none is left",
        description="Join the study that `tune` created and run its trials until the budget "
        "or the time guard ends it. Start more of these, on this host or another with the "
        "same code, data version (dvc pull) and OPTUNA_STORAGE, to tune faster.")
    worker.add_argument("--study", required=True, help="the study's name (tune prints it)")
    worker.add_argument("--storage", default=None,
                        help="Optuna storage URL (default: tune.storage / OPTUNA_STORAGE)")
    worker.add_argument("--threads", type=int, default=None,
                        help="this worker's share of the cores (default: all usable cores)")
    worker.add_argument("--max-trials", type=int, default=None,
                        help="stop after this many trials (default: until none is left)")
    sub.add_parser("train", help="refit the best configuration on the whole training split")
    sub.add_parser("evaluate", help="test metrics, interval, slices, plots and model card")
    sub.add_parser("register", help="register the trained model as challenger, then gate it")


def _model_commands(sub: argparse._SubParsersAction) -> None:
    """The registry, the champion, and what scores with it."""
    sub.add_parser("plots", help="the DVC plots as reports/plots.html, a page that opens "
                                 "offline")
    sub.add_parser("promote", help="run the champion/challenger gate for the challenger")
    sub.add_parser("rollback", help="move champion back to the previous champion")
    sub.add_parser("status", help="champion, challenger and the last decisions")
    backup = sub.add_parser("backup", help="snapshot the MLflow store, its artifacts, the "
                            "ledger and every data version (dvc push) into a folder")
    backup.add_argument("--to", type=Path, default=None,
                        help="the backup folder (default: backups/<UTC time>)")
    backup.add_argument("--dvc-remote", default=None, help="push the data versions to this "
                        "DVC remote (a name, path or URL) instead of into the backup folder")
    restore = sub.add_parser("restore", help="put back a backup: store, artifacts, ledger, "
                             "data versions (into the DVC cache)")
    restore.add_argument("--from", dest="source", type=Path, default=None,
                         help="the backup folder (default: the latest under backups/)")
    restore.add_argument("--force", action="store_true", help="replace a store or ledger "
                         "that holds what the backup lacks (kept in backups/replaced-<time>/)")
    earlier = sub.add_parser("evaluate-version", help="score a registered version on the "
                             "test split of an earlier data version (a git revision)")
    earlier.add_argument("--version", required=True, help="a registered version")
    earlier.add_argument("--data", required=True, help="a git revision (commit, tag, "
                         "branch, HEAD~3) whose test split to read through DVC")
    predict = sub.add_parser("predict", help="score a CSV or Parquet file with the champion "
                             "(or --version), in chunks")
    predict.add_argument("input", type=Path, help=".csv, .csv.gz or .parquet")
    predict.add_argument("output", type=Path, help=".csv or .parquet (written atomically)")
    predict.add_argument("--version", default=None, help="a registered version (default: the "
                         "champion)")
    predict.add_argument("--chunk-rows", type=int, default=None,
                         help="rows per chunk (default: serve.chunk_rows)")
    serve = sub.add_parser("serve", help="serve the champion over HTTP (serve.host, serve.port)")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--version", default=None, help="pin a registered version (default: "
                       "follow the champion alias)")
    serve.add_argument("--refresh", type=float, default=10.0,
                       help="seconds between checks of the champion alias (0: never)")
    serve.add_argument("--threads", type=int, default=1,
                       help="BLAS/OpenMP threads per prediction (0: no cap)")
    serve.add_argument("--workers", type=int, default=None,
                       help="server processes (default: serve.workers)")


def _data_commands(sub: argparse._SubParsersAction) -> None:
    """Files in and out: checks, synthetic data, demonstration batches."""
    check = sub.add_parser("check-file", help="check one CSV against the schema and a contract")
    check.add_argument("path", type=Path)
    check.add_argument("--suite", choices=("raw", "batch"), default="batch")
    gen = sub.add_parser("generate",
                         help="write synthetic districts (.csv, or .tgz like the source)")
    gen.add_argument("--rows", type=int, required=True)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--out", type=Path, required=True)
    batch = sub.add_parser("new-batch", help="write a demonstration batch into the landing "
                           "folder (clean, drifted or corrupted)")
    batch.add_argument("--rows", type=int, default=2000)
    batch.add_argument("--seed", type=int, default=None,
                       help="default: one more than the files already in the landing folder")
    batch.add_argument("--drift", type=float, default=0.0,
                       help="raise incomes by this fraction (0.3: +30%%)")
    batch.add_argument("--corrupt", default=None,
                       help="one of: out-of-range, new-category, nulls, text, relation")


def _describe_commands(sub: argparse._SubParsersAction) -> None:
    """``<command> --help`` opens with the command's one-line help where it has no longer
    description (argparse shows the help only in the list of commands)."""
    for action in sub._choices_actions:
        command = sub.choices[action.dest]
        if command.description is None:
            command.description = action.help


def _new_batch(config, root: Path, rows: int, seed: int | None, drift: float,
               corrupt: str | None) -> dict:
    from datetime import UTC, datetime

    from tabreg.data import batches, synthetic
    from tabreg.errors import ConfigError

    if set(config.schema.columns) != set(synthetic.COLUMNS):
        raise ConfigError("new-batch: it generates rows of the default problem's schema, not "
                          "of this one (schema in params.yaml); drop your own CSV files with "
                          f"the columns {list(config.schema.columns)} into "
                          f"{config.data.landing_dir}/ instead")
    landing = root / config.data.landing_dir
    existing = list(landing.glob("*.csv")) if landing.is_dir() else []
    seed = 1000 + len(existing) if seed is None else seed
    try:
        frame = batches.make_batch(rows, seed, drift=drift, corrupt=corrupt)
    except ValueError as exc:
        raise ConfigError(f"new-batch: {exc}") from None
    kind = "-".join(filter(None, [f"drift{drift:g}" if drift else "", corrupt or ""])) or "clean"
    path = landing / f"{datetime.now(UTC):%Y-%m-%dT%H%M%S}-{kind}-{seed}.csv"
    synthetic.write_csv(frame, path)
    return {"out": str(path), "rows": rows, "seed": seed, "drift": drift, "corrupt": corrupt}


def _check_file(config, root: Path, path: Path, suite: str) -> dict:
    from tabreg.data.landing import check_batch

    frame = check_batch(config, root, path, suite, shown=str(path))
    return {"file": str(path), "rows": len(frame), "suite": suite, "success": True}


def _generate(path: Path, rows: int, seed: int) -> dict:
    from tabreg.data import synthetic

    frame = synthetic.generate(rows, seed=seed)
    if path.name.endswith((".tgz", ".tar.gz")):
        return {"out": str(path), "rows": rows, "sha256": synthetic.write_archive(frame, path)}
    synthetic.write_csv(frame, path)
    return {"out": str(path), "rows": rows}


def _tune_worker(root: Path, args: argparse.Namespace) -> dict:
    from tabreg.tuning.worker import work

    storage = args.storage
    if storage is None:
        from tabreg.config import load_config
        from tabreg.tuning import storage_url

        storage = storage_url(load_config(root / args.params), root)
    return work(root, storage, args.study, threads=args.threads, max_trials=args.max_trials)


# --- one handler a command: (args, root, config) -> a JSON-able result to print, an exit
# code, or None (the handler printed what it had to say) ------------------------------------

Outcome = dict | int | None


def _show_config(args: argparse.Namespace, root: Path, config: Config) -> Outcome:
    return config.model_dump(mode="json", by_alias=True)


def _tracking_uri(args: argparse.Namespace, root: Path, config: Config) -> Outcome:
    from tabreg.store.tracking import tracking_uri

    print(tracking_uri(config, root.resolve()))
    return None


def _predict(args: argparse.Namespace, root: Path, config: Config) -> Outcome:
    from tabreg.serving import scoring

    return scoring.predict_file(config, root, args.input, args.output, version=args.version,
                                chunk_rows=args.chunk_rows, progress=not args.quiet)


def _serve(args: argparse.Namespace, root: Path, config: Config) -> Outcome:
    from tabreg.serving import server

    server.serve(config, root, host=args.host, port=args.port, version=args.version,
                 refresh=args.refresh, threads=args.threads or None, workers=args.workers)
    return None


def _plots(args: argparse.Namespace, root: Path, config: Config) -> Outcome:
    from tabreg.evaluation import plots_page

    return plots_page.write(config, root)


def _services(args: argparse.Namespace, root: Path, config: Config) -> Outcome:
    from tabreg.services import stack

    return stack.command(args.action, config.services, root, quiet=args.quiet)


def _backup(args: argparse.Namespace, root: Path, config: Config) -> Outcome:
    from tabreg.store import backup

    return backup.backup(config, root, args.to, dvc_remote=args.dvc_remote)


def _restore(args: argparse.Namespace, root: Path, config: Config) -> Outcome:
    from tabreg.store import backup

    return backup.restore(config, root, args.source, force=args.force)


def _evaluate_version(args: argparse.Namespace, root: Path, config: Config) -> Outcome:
    from tabreg.evaluation import earlier_data

    return earlier_data.evaluate_version(config, root, args.version, args.data)


def _status(args: argparse.Namespace, root: Path, config: Config) -> Outcome:
    from tabreg.steps import champion

    result = champion.status(config, root)
    if not args.quiet:
        print(champion.status_text(result))
    return None


def _pipeline(args: argparse.Namespace, root: Path, config: Config) -> Outcome:
    from tabreg.orchestration.stage_run import run_pipeline
    from tabreg.orchestration.summary import summary

    stages = run_pipeline(config, root)
    if not args.quiet:
        print(summary(stages, root, args.params))
    return None


def _retrain(args: argparse.Namespace, root: Path, config: Config) -> Outcome:
    from tabreg.orchestration.stage_run import run_stages
    from tabreg.promotion import retrain

    def train() -> list[str]:  # the retrain run has prepared (preflight, cleanup) already
        return [s["stage"] for s in run_stages(config, root) if s["ran"]]

    outcome, _ = retrain.retrain(config, root, args.trigger, retrain.Hooks(train=train))
    return outcome


def _monitor(args: argparse.Namespace, root: Path, config: Config) -> Outcome:
    from tabreg.monitoring.monitor import monitor
    from tabreg.orchestration.stage_run import run_stages
    from tabreg.promotion import retrain

    def train() -> list[str]:
        return [s["stage"] for s in run_stages(config, root) if s["ran"]]

    def start_retrain() -> dict:
        return retrain.retrain(config, root, "monitor", retrain.Hooks(train=train))[0]

    summary = monitor(config, root, since=args.since, until=args.until,
                      retrain=start_retrain if args.act else None)
    return summary_lines(summary)


def summary_lines(summary: dict) -> Outcome:
    """The verdict, its reasons and the remedy, printed for a person (the JSON is a file)."""
    if not summary["rows"]:
        print(f"monitor: {summary['reasons'][0]}")
        return None
    print(f"monitor: {summary['verdict']} on {summary['rows']:,} rows "
          f"({summary['window']['since'] or 'start of the log'} .. "
          f"{summary['window']['until']})")
    for reason in summary["reasons"]:
        print(f"  - {reason}")
    print(f"  remedy: {summary['action']['kind']}: {summary['action']['detail']}")
    print(f"  report: {summary['report']}; rows to label: {summary['to_label']['path']}")
    return None


def _step(args: argparse.Namespace, root: Path, config: Config) -> Outcome:
    """A pipeline step (or promote / rollback): what a killed run left (temporary files; runs
    and trials for the steps that use the stores) is cleared before the step starts."""
    from tabreg import steps
    from tabreg.store import recovery

    recovery.clean_up(config, root, stores=args.command in _STORE_STEPS,
                      trials=args.command == "tune")
    return steps.get(args.command)(config, root)


_HANDLERS = {
    "config": _show_config, "tracking-uri": _tracking_uri,
    "check-file": lambda args, root, config: _check_file(config, root, args.path, args.suite),
    "predict": _predict, "serve": _serve, "plots": _plots,
    "new-batch": lambda args, root, config: _new_batch(config, root, args.rows, args.seed,
                                                       args.drift, args.corrupt),
    "services": _services, "backup": _backup, "restore": _restore,
    "evaluate-version": _evaluate_version, "status": _status,
    "pipeline": _pipeline, "retrain": _retrain, "monitor": _monitor,
}


def _dispatch(args: argparse.Namespace, root: Path) -> Outcome:
    if args.command == "generate":  # no project needed
        return _generate(args.out, args.rows, args.seed)
    if args.command == "tune-worker":  # the study holds the configuration
        return _tune_worker(root, args)
    from tabreg.config import load_config

    config = load_config(root / args.params)
    return _HANDLERS.get(args.command, _step)(args, root, config)


def run(argv: list[str] | None = None) -> int:
    """The command line: run one command; a fault is one message and a non-zero exit."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    from tabreg.logs import quiet_libraries

    quiet_libraries()  # the libraries' bookkeeping off the console, in this one format
    # Trials finishing are progress a user watches, even when the step is otherwise quiet.
    logging.getLogger("tabreg.tuning.progress").setLevel(logging.INFO)
    try:
        outcome = _dispatch(args, Path(args.root))
    except BaseException as exc:  # a fault is shown once, as a message; a bug is raised
        code = report(exc, verbose=args.verbose)
        if code is None:
            raise
        return code
    if isinstance(outcome, int):
        return outcome
    if outcome is not None and not args.quiet:
        print(json.dumps(outcome, indent=2, default=str))
    return 0


def main() -> None:
    """``python -m tabreg``: :func:`run` with the process's arguments."""
    sys.exit(run())
