"""The training flow: the pipeline's steps as Prefect tasks, in DVC's order and with DVC's memory.

Each task asks DVC whether its stage is up to date (deps, params and outs as in ``dvc.yaml``);
if so it does nothing, otherwise it runs the step in-process and records it in ``dvc.lock``.
A second run with nothing changed therefore recomputes nothing, and after a run ``dvc status``
is clean. Run it with ``make run`` (or ``python flows/training.py``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tabreg import steps
from tabreg.config import load_config
from tabreg.pipeline import data_version, record_stage, stage_changes


@task(cache_policy=NO_CACHE, retries=0)
def run_stage(name: str, params: str, root: str) -> dict:
    """Run one step unless DVC says its stage is up to date; record it afterwards."""
    logger = get_run_logger()
    base = Path(root)
    changes = stage_changes(base, name)
    if not changes:
        logger.info("%s: up to date, skipped", name)
        return {"stage": name, "ran": False, "seconds": 0.0}
    logger.info("%s: %s", name, changes)
    config = load_config(base / params)  # re-read: an earlier stage may not change it, but
    started = time.perf_counter()        # each task must stand alone when retried
    result = steps.get(name)(config, base)
    seconds = time.perf_counter() - started
    record_stage(base, name)
    logger.info("%s: done in %.2f s", name, seconds)
    return {"stage": name, "ran": True, "seconds": round(seconds, 3), "result": result}


@flow(name="training", log_prints=True)
def training(params: str = "params.yaml", root: str = ".") -> list[dict]:
    """ingest -> validate -> split -> features -> tune -> train -> evaluate -> register."""
    from tabreg.steps.model import preflight

    # Prefect attaches its handlers to the `tabreg` loggers (PREFECT_LOGGING_EXTRA_LOGGERS) but
    # leaves them at WARNING: the steps' INFO lines (trials as they finish) would be lost.
    logging.getLogger("tabreg").setLevel(logging.INFO)
    # A bad configuration, an unreachable tracking store or a missing GPU fails here, before
    # any step runs.
    preflight(load_config(Path(root) / params), Path(root))
    return [run_stage(name, params, root) for name in steps.STEP_NAMES]


def main(argv: list[str] | None = None) -> int:
    from tabreg.errors import TabregError

    parser = argparse.ArgumentParser(description="Run the training flow once.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--root", default=".")
    args = parser.parse_args(argv)
    try:
        stages = training(params=args.params, root=args.root)
    except TabregError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(summary(stages, Path(args.root), args.params))
    return 0


def summary(stages: list[dict], root: Path, params: str) -> str:
    """The one-screen account of a run: what ran, on which data, with what result."""
    import json

    config = load_config(root / params)
    reports = root / config.paths.reports
    lines = ["", "Training pipeline summary"]
    for s in stages:
        state = f"ran in {s['seconds']:.2f} s" if s["ran"] else "up to date (skipped)"
        lines.append(f"  {s['stage']:<10} {state}")
    def report(name: str) -> dict | None:
        path = reports / name
        return json.loads(path.read_text()) if path.exists() else None

    ingest, split = report("ingest.json"), report("split.json")
    tuning = json.loads(p.read_text()) if (p := root / "models/tuning.json").exists() else None
    scores = report("metrics.json")
    version = data_version(root, config.paths.raw) or "not recorded"
    if ingest:
        lines.append(f"  data       {ingest['rows']} rows from {len(ingest['batches'])} "
                     f"file(s), version {version} (DVC md5 of {config.paths.raw})")
    lines.append(f"  validation passed: {config.paths.reports}/validation/")
    if split:
        lines.append(f"  split      {split['strategy']}: {split['rows']['train']} train / "
                     f"{split['rows']['test']} test rows; largest stratum deviation "
                     f"{100 * split['max_stratum_test_share_deviation']:.2f} points")
    if tuning:
        trials = ", ".join(f"{n} {state.lower()}" for state, n in tuning["trials"].items())
        blend = tuning.get("blend") or {}
        chosen = (f"blend of trials {blend['trials']}" if blend.get("chosen")
                  else f"trial {tuning.get('best_trial')}, {tuning['best']['family']}")
        lines.append(f"  tuning     best: {chosen}, CV RMSE {tuning['best_cv_rmse']:,.0f} "
                     f"({trials}; study {tuning['study']})")
        if tuning.get("per_family") is not None:
            from tabreg.tuning.progress import families_text

            lines.append(f"             trials per family: "
                         f"{families_text(tuning['per_family'])}")
        if tuning.get("guard"):
            lines.append(f"  WARNING    {tuning['guard']}")
    if scores:
        lines.append(f"  test       RMSE {scores['rmse']:,.0f} "
                     f"({100 * scores['confidence']:.0f}% interval {scores['rmse_low']:,.0f}-"
                     f"{scores['rmse_high']:,.0f}), MAE {scores['mae']:,.0f}, "
                     f"R^2 {scores['r2']:.3f}")
        lines.append(f"  model card {config.paths.reports}/model_card.md; runs: make ui")
    if decision := report("promotion.json"):
        name = config.registry.model_name
        champion = decision.get("to") or (decision["challenger"] if decision["action"] ==
                                          "promote" else decision.get("champion"))
        lines.append(f"  promotion  {decision['action']} (challenger {name} version "
                     f"{decision.get('challenger')}); champion now: "
                     f"{f'version {champion}' if champion else 'none'}")
        lines.extend(f"             - {reason}" for reason in decision.get("reasons", []))
        lines.append("             make status shows the registry; make rollback reverts")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
