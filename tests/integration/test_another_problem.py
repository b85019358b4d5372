"""Another problem, configured only as the README tells a user (its "Another dataset" worked
example in ``params.yaml``, its suites in ``expectations/``): delivery trips, predicted in
minutes, with no coordinates, three categories and a few exact repeats. The training flow,
the retrain flow, serving and batch scoring all run on it, and nothing the pipeline writes or
logs speaks of the housing problem; its housing-specific features are simply absent."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from flows.retrain import retrain
from flows.training import training
from tabreg.serving.server import wait_until_healthy
from tests import another_problem as trips
from tests.conftest import PER_MACHINE, ROOT, TINY, copy_project, merge
from tests.scoring_helpers import free_port

pytestmark = pytest.mark.integration

TEXT_REPORTS = (".json", ".md", ".html", ".txt", ".csv", ".jsonl")


def _project(tmp_path: Path) -> Path:
    """A copy of the pipeline whose params.yaml has the README's sections in place of the
    housing ones, the trips suites, and 1,500 trips (6 logged twice); the tests' tuning budget
    (what is checked here holds for any model), on two tree families."""
    source = tmp_path / "source" / "trips.csv"
    source.parent.mkdir()
    trips.generate(1500, seed=0, repeats=6).to_csv(source, index=False)
    tree = yaml.safe_load((ROOT / "params.yaml").read_text())
    tree.update(trips.readme_example())
    tree["data"].update(source=str(source),
                        sha256=hashlib.sha256(source.read_bytes()).hexdigest())
    tree = merge(tree, TINY)
    tree["tune"]["families"] = ["random_forest", "hist_gradient_boosting"]
    del tree["tune"]["space"]["features"]  # no coordinates: no geographic block to tune
    root = copy_project(tmp_path / "project", tree)
    trips.write_suites(root / "expectations")
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    return root


def _png_text(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as image:
        return image.info["Description"]


def _housing_words_in(root: Path) -> dict[str, list[str]]:
    """Every report (text files and what each plot says) that speaks of housing."""
    found = {}
    for path in sorted((root / "reports").rglob("*")):
        if path.suffix in TEXT_REPORTS:
            text = path.read_text(encoding="utf-8", errors="replace")
        elif path.suffix == ".png":
            text = _png_text(path)
        else:
            continue
        if hits := trips.HOUSING_WORDS.findall(text):
            found[str(path.relative_to(root))] = sorted(set(hits))
    return found


def _check_training(root: Path) -> None:
    reports = root / "reports"
    card = (reports / "model_card.md").read_text()
    assert "the duration of a delivery trip, from leaving the depot to the last drop (min)" \
        in card
    assert "- judging, ranking or paying individual drivers" in card and "One fleet" in card
    assert "| distance | short | 0 < distance_km ≤ 5 |" in card or \
        "| **distance** | **short** | **0 < distance_km ≤ 5** |" in card
    assert "$" not in card and "capped" not in card  # a target in minutes, and no cap in it
    names = [f["name"] for f in json.loads((reports / "features.json").read_text())["features"]]
    assert "ratio__km_per_stop" in names and "log__distance_km" in names
    assert not [n for n in names if n.startswith("geo__")]
    assert "| short | 0 < distance_km ≤ 5 |" in (reports / "split.md").read_text()
    plots = reports / "plots"
    assert not (plots / "error_map.png").exists()
    assert "RMSE (min)" in _png_text(plots / "rmse_by_slice.png")
    assert "Test trips" in _png_text(plots / "residuals.png")
    assert "not an MLP" in _png_text(plots / "learning_curves.png")
    assert "Hyperparameter importance" in _png_text(reports / "tuning/importances.png")
    ingest = json.loads((reports / "ingest.json").read_text())
    assert ingest["rows"] == 1506 and ingest["batches"][0]["repeated_rows"] == 6


def _housing_words_in_the_registry(root: Path) -> list[str]:
    """What the registry says of each version (description and tags) that speaks of housing."""
    from tabreg.config import load_config
    from tabreg.promotion import registry

    config = load_config(root / "params.yaml")
    client = registry.client(config, root)
    said = [f"{v.version}: {v.description} {v.tags}"
            for v in client.search_model_versions(f"name='{config.registry.model_name}'")]
    assert said, "no registered version"
    return [text for text in said if trips.HOUSING_WORDS.search(text)]


def _serve_and_score(root: Path, tmp_path: Path) -> str:
    """Serve the champion on a free port and score a CSV in batch; the two must agree.
    Returns what the two processes printed."""
    rows = trips.generate(40, seed=7).drop(columns=[trips.TARGET])
    batch_in, batch_out = tmp_path / "score.csv", tmp_path / "scored.csv"
    rows.to_csv(batch_in, index=False)
    env = {k: v for k, v in os.environ.items() if k not in PER_MACHINE}
    done = subprocess.run([sys.executable, "-m", "tabreg", "--root", str(root), "predict",
                           str(batch_in), str(batch_out)], cwd=root, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    port, log = free_port(), tmp_path / "serve.log"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "tabreg", "--root", str(root), "serve",
                                   "--port", str(port), "--refresh", "0"],
                                  cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        import httpx

        url = f"http://127.0.0.1:{port}"
        assert wait_until_healthy(url, server, 120), log.read_text()[-3000:]
        records = rows.head(5).astype(object).where(rows.head(5).notna(), None)
        answer = httpx.post(f"{url}/invocations", timeout=30,
                            json={"dataframe_records": records.to_dict(orient="records")})
        assert answer.status_code == 200, answer.text
        bad = httpx.post(f"{url}/invocations", timeout=30, json={"dataframe_records": [
            {k: v for k, v in r.items() if k != "vehicle"} for r in
            records.to_dict(orient="records")]})
        assert bad.status_code == 422 and "vehicle" in bad.text
        assert httpx.get(f"{url}/health", timeout=30).json()["model"]["name"] == "trips"
    finally:
        server.terminate()
        server.wait(timeout=20)
    scored = pd.read_csv(batch_out)
    assert scored["prediction"].head(5).tolist() == pytest.approx(
        answer.json()["predictions"], rel=1e-9)
    assert scored["prediction"].between(0, 1000).all()  # minutes, not dollars
    return done.stdout + done.stderr + log.read_text()


def test_another_problem_runs_end_to_end(tmp_path, monkeypatch, capfd, caplog):
    for var in PER_MACHINE:
        monkeypatch.delenv(var, raising=False)
    caplog.set_level(logging.INFO)
    root = _project(tmp_path)

    stages = training(root=str(root))
    assert all(s["ran"] for s in stages), [s["stage"] for s in stages]
    first = json.loads((root / "reports/promotion.json").read_text())
    assert first["action"] == "promote", first
    # minutes keep their decimals in the gate's reasons (not "RMSE 8 meets the bar 30")
    assert re.match(r"no champion yet; challenger RMSE \d+\.\d+ meets the bar "
                    r"promotion\.max_rmse = 30$", first["reasons"][0]), first["reasons"]
    _check_training(root)

    # New trips land (two of them logged twice): the retrain flow checks, retrains and gates.
    trips.generate(600, seed=3, repeats=2).to_csv(root / "data/landing/2026-11-01.csv",
                                                  index=False)
    outcome = retrain(root=str(root))
    assert outcome["action"] == "retrain" and outcome["ran"][:3] == ["ingest", "validate",
                                                                     "split"], outcome
    assert outcome["decision"] in ("promote", "keep champion"), outcome
    assert len(pd.read_parquet(root / "data/raw/trips.parquet")) == 2108

    printed = _serve_and_score(root, tmp_path)
    assert _housing_words_in(root) == {}
    assert _housing_words_in_the_registry(root) == []
    out, err = capfd.readouterr()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "evaluate: test RMSE" in logged and "retrain:" in logged  # the checks see the run
    assert "predict:" in printed or "rows scored" in printed
    for where, text in (("console", out + err), ("log", logged), ("serve/predict", printed)):
        assert not trips.HOUSING_WORDS.search(text), (where, trips.HOUSING_WORDS.findall(text))
