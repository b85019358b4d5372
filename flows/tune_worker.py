"""The tune-worker flow: one tuning worker as Prefect work, so tuning fans out to work pools.

``make services`` deploys it as ``tune-worker/tune-worker`` on the local process pool; the tune
step then submits ``tune.workers`` runs of it (``tune.launcher: auto`` or ``prefect``), and any
Prefect worker serving that pool, on any host with a checkout of the same commit, the same
data version (``dvc pull``) and the same ``OPTUNA_STORAGE``, picks them up. The flow only
joins the study; what a worker does is ``tabreg.tuning.worker.work``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from prefect import flow, get_run_logger


@flow(name="tune-worker", log_prints=True)
def tune_worker(study: str, params: str = "params.yaml", root: str = ".") -> dict:
    """Claim and run trials of ``study`` until none is left or its time guard fires."""
    from tabreg.config import load_config
    from tabreg.logs import quiet_libraries
    from tabreg.tuning import storage_url
    from tabreg.tuning.worker import work

    quiet_libraries()  # the libraries' bookkeeping off the console (see tabreg.logs)
    logging.getLogger("tabreg").setLevel(logging.INFO)  # see flows/training.py
    base = Path(root)
    result = work(base, storage_url(load_config(base / params), base), study)
    get_run_logger().info("tune-worker: %s", json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one tuning worker as a Prefect flow.")
    parser.add_argument("--study", required=True)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--root", default=".")
    args = parser.parse_args(argv)
    print(json.dumps(tune_worker(args.study, args.params, args.root)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
