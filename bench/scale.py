"""One scale measurement: ``rows`` generated districts through each step, timed, with the peak
memory of each. Run in a fresh process per size by ``bench/run.py`` so that sizes do not share
memory; prints nothing but writes its JSON to ``--out``.

Steps: generate (not a pipeline step: the synthetic source), write the CSV, ingest (read and
check the CSV, row identities, write Parquet), validate (the raw Great Expectations suite),
split (and write both parts), features (fit the preprocessing on train), train (gradient
boosting with a fixed budget: default features, 100 boosting iterations), score (the CSV in
chunks, with the input checks, to Parquet, in a fresh process as ``make predict`` would).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

from bench.measure import step

ROOT = Path(__file__).resolve().parents[1]

#: The fixed training budget: boosting iterations of the gradient-boosting candidate.
TRAIN_ITERATIONS = 100


def measure(rows: int, work: Path, chunk_rows: int) -> dict:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    from tabreg.config import load_config
    from tabreg.data import ingest, synthetic
    from tabreg.data import split as splitting
    from tabreg.data.validate import validate_frame
    from tabreg.io import write_table
    from tabreg.models.candidates import Candidate, make_pipeline
    from tabreg.models.features import build_preprocessor

    config = load_config(ROOT / "params.yaml", env={})
    schema = config.schema
    features, target = list(schema.features), schema.target
    work.mkdir(parents=True, exist_ok=True)
    source = work / "source.csv"
    steps: dict = {}

    with step(steps, "generate"):
        frame = synthetic.generate(rows, seed=0)
    with step(steps, "write_csv"):
        synthetic.write_csv(frame, source)
    del frame
    gc.collect()
    with step(steps, "ingest"):
        table = ingest.with_identity(ingest.read_csv(source, schema), schema, "bench")
        write_table(table, work / "raw.parquet")
    with step(steps, "validate") as entry:
        entry["success"] = validate_frame(table, ROOT / config.validation.raw_suite).success
    with step(steps, "split"):
        parts = splitting.split(table, config.split)
        write_table(parts.train, work / "train.parquet")
        write_table(parts.test, work / "test.parquet")
    train = parts.train
    del table, parts
    gc.collect()
    with step(steps, "features"):
        build_preprocessor(schema, config.features).fit_transform(train)
    gc.collect()
    candidate = Candidate("hist_gradient_boosting", {}, {"max_iter": TRAIN_ITERATIONS})
    with step(steps, "train") as entry:
        model = make_pipeline(candidate, config).fit(train[features], train[target])
        entry["rows"] = len(train)
    with open(work / "model.pkl", "wb") as handle:
        pickle.dump(model, handle)
    del train, model
    # Scoring runs in a fresh process, as `make predict` does: its peak memory is then its
    # own, not what this process kept from the steps before.
    out = work / "score.json"
    subprocess.run([sys.executable, "-m", "bench.scale", "--score", "--work", str(work), "--rows",
                    str(rows), "--chunk-rows", str(chunk_rows), "--out", str(out)], check=True)
    steps["score"] = json.loads(out.read_text())
    for name in ("source.csv", "raw.parquet", "train.parquet", "test.parquet", "model.pkl"):
        (work / name).unlink(missing_ok=True)
    return {"rows": rows, "chunk_rows": chunk_rows, "steps": steps}


def score(work: Path, chunk_rows: int) -> dict:
    """Score ``work/source.csv`` with ``work/model.pkl``, in chunks, to Parquet."""
    from tabreg.config import load_config
    from tabreg.serving import scoring

    schema = load_config(ROOT / "params.yaml", env={}).schema
    with open(work / "model.pkl", "rb") as handle:
        model = pickle.load(handle)
    spec = scoring.spec_for(model, schema)
    steps: dict = {}
    with step(steps, "score") as entry:
        result = scoring.score_file(model, spec, work / "source.csv", work / "scored.parquet",
                                    schema=schema, chunk_rows=chunk_rows)
        entry["rows_per_second"] = result["rows_per_second"]
    (work / "scored.parquet").unlink()
    return steps["score"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--chunk-rows", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--score", action="store_true", help="only the scoring step")
    args = parser.parse_args()
    if args.score:
        result = score(args.work, args.chunk_rows)
    else:
        result = measure(args.rows, args.work, args.chunk_rows)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
