"""The HTTP server in its own process: MLflow's payload formats, errors that name the field,
a thousand malformed requests survived, and a new champion picked up without a restart."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tabreg.serving.server import wait_until_healthy
from tests.conftest import ROOT
from tests.scoring_helpers import (
    fit_small,
    free_port,
    isolated_mlflow,
    log_and_register,
    make_store,
    start_server,
)

pytestmark = pytest.mark.integration

REFRESH = 0.5  # seconds between the server's checks of the champion alias


class Server:
    def __init__(self, process: subprocess.Popen, url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log
        import httpx

        self.http = httpx.Client(base_url=url, timeout=30)

    def post(self, payload=None, *, content: bytes | None = None,
             content_type: str = "application/json"):
        body = content if content is not None else json.dumps(payload).encode()
        return self.http.post("/invocations", content=body,
                              headers={"Content-Type": content_type})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with isolated_mlflow():
        yield make_store(tmp_path_factory.mktemp("serving"))


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "server.log"
    process, url = start_server(["--params", str(ROOT / "params.yaml")],
                                ["--refresh", str(REFRESH)], cwd=log.parent,
                                env={**os.environ, "MLFLOW_TRACKING_URI": store.uri}, log=log)
    yield Server(process, url, log)
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture(scope="module")
def rows(store):
    from tabreg.data import synthetic

    frame = synthetic.generate(300, seed=11)
    return frame[list(store.config.schema.features)]


def champion_predictions(store, frame) -> np.ndarray:
    """The champion's point predictions, in process (with or without intervals)."""
    return champion_output(store, frame)[0]


def champion_output(store, frame) -> tuple:
    import mlflow.pyfunc

    from tabreg.models.intervals import split_output

    return split_output(mlflow.pyfunc.load_model(f"models:/{store.name}@champion")
                        .predict(frame))


def payloads(frame) -> dict:
    """The same rows in each of MLflow's JSON formats (NaN written as null)."""
    clean = frame.astype(object).where(frame.notna(), None)
    records = clean.to_dict(orient="records")
    return {
        "dataframe_split": {"dataframe_split": {"columns": list(clean.columns),
                                                "data": clean.values.tolist()}},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs (columns)": {"inputs": {c: clean[c].tolist() for c in clean.columns}},
        "inputs (rows)": {"inputs": clean.values.tolist()},
    }


def test_health(server, store):
    for path in ("/health", "/ping"):
        answer = server.http.get(path).json()
        assert answer["status"] == "ok"
        assert answer["model"]["name"] == store.name and answer["model"]["alias"] == "champion"


@pytest.mark.parametrize("fmt", ["dataframe_split", "dataframe_records", "instances",
                                 "inputs (columns)", "inputs (rows)"])
def test_good_payloads_match_the_champion_in_process(server, store, rows, fmt):
    frame = rows.head(100)
    answer = server.post(payloads(frame)[fmt])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    point, lower, upper = champion_output(store, frame)
    np.testing.assert_allclose(body["predictions"], point, rtol=1e-12)
    # Each prediction's interval (serve.interval), beside it: old clients read predictions.
    np.testing.assert_allclose(body["lower"], lower, rtol=1e-12)
    np.testing.assert_allclose(body["upper"], upper, rtol=1e-12)
    assert (lower < point).all() and (point < upper).all()
    assert len(body["flags"]) == len(frame)


def test_csv_body_and_one_row(server, store, rows):
    answer = server.post(content=rows.head(3).to_csv(index=False).encode(),
                         content_type="text/csv")
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["predictions"],
                               champion_predictions(store, rows.head(3)), rtol=1e-12)
    one = payloads(rows.head(1))["dataframe_records"]
    assert len(server.post(one).json()["predictions"]) == 1


def test_unknown_category_is_scored_and_flagged(server, rows):
    frame = rows.head(3).copy()
    frame["ocean_proximity"] = ["INLAND", "LAKESIDE", "INLAND"]
    frame["total_bedrooms"] = [np.nan, 300.0, 300.0]
    body = server.post(payloads(frame)["dataframe_split"]).json()
    assert body["flags"] == [["missing:total_bedrooms"], ["unknown_category:ocean_proximity"], []]
    assert all(np.isfinite(body["predictions"]))


def _problem_fields(answer) -> list[str]:
    return [p["field"] for p in answer.json()["problems"]]


def test_bad_payloads_get_a_4xx_naming_the_field(server, rows):
    good = payloads(rows.head(4))["dataframe_records"]["dataframe_records"]

    missing = server.post({"dataframe_records": [{k: v for k, v in r.items()
                                                  if k != "median_income"} for r in good]})
    assert missing.status_code == 422 and _problem_fields(missing) == ["median_income"]
    assert "missing column" in missing.json()["message"]

    text = [dict(r) for r in good]
    text[2]["population"] = "lots"
    answer = server.post({"dataframe_records": text})
    assert answer.status_code == 422
    (problem,) = answer.json()["problems"]
    assert problem["field"] == "population" and problem["rows"] == [2]

    partial = [dict(r) for r in good]
    del partial[1]["latitude"]
    answer = server.post({"dataframe_records": partial})
    assert answer.status_code == 422 and _problem_fields(answer) == ["latitude"]

    extra = server.post({"dataframe_records": [{**r, "colour": "red"} for r in good]})
    assert extra.status_code == 422 and _problem_fields(extra)[0] == "colour"
    wide = [f"c{i}" for i in range(5000)]
    assert server.post({"dataframe_split": {"columns": wide, "data": [[0] * 5000]}}
                       ).status_code == 400

    assert server.post(content=b"{not json").status_code == 400
    assert server.post({"rows": good}).status_code == 400
    assert server.post(good).status_code == 400
    assert server.post({"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}}
                       ).status_code == 400
    assert server.post(content=b"<x/>", content_type="application/xml").status_code == 415
    assert server.post({"dataframe_records": []}).status_code == 422
    assert server.post(content=b" " * (33 << 20)).status_code == 413
    assert server.http.get("/invocations").status_code == 405


def malformed(rng: random.Random, good: list[dict]) -> tuple[bytes, str]:
    """One malformed request body (and its content type), of twenty kinds."""
    text = json.dumps({"dataframe_records": good})
    row = dict(rng.choice(good))
    field = rng.choice([k for k in row if k != "ocean_proximity"])  # a numeric field
    kind = rng.randrange(20)
    bodies = {
        0: rng.randbytes(rng.randrange(1, 400)),
        1: text[: rng.randrange(1, len(text))].encode(),
        2: b"",
        3: b"null",
        4: b"[" * 100_000,
        5: json.dumps({"dataframe_records": [{**row, field: {"nested": [1]}}]}).encode(),
        6: json.dumps({"dataframe_records": [{**row, field: [1, 2]}]}).encode(),
        7: json.dumps({"dataframe_records": [{**row, field: True}]}).encode(),
        8: json.dumps({"dataframe_records": [{**row, "median_income": "x" * 1000}]}).encode(),
        9: b'{"dataframe_records": [{"median_income": 1e999}]}',
        10: json.dumps({"dataframe_split": {"columns": list(row),
                                            "data": [list(row.values())[:-1]]}}).encode(),
        11: json.dumps({"dataframe_split": {"columns": 5, "data": "x"}}).encode(),
        12: json.dumps({"inputs": {"median_income": [1, 2], "latitude": [1]}}).encode(),
        13: json.dumps({"instances": [1, 2, 3]}).encode(),
        14: json.dumps({"dataframe_records": [row], "inputs": [row]}).encode(),
        15: json.dumps({"dataframe_records": [{k: v for k, v in row.items() if k != field}]}
                       ).encode(),
        16: json.dumps({"dataframe_records": [{**row, "ocean_proximity": 12}]}).encode(),
        17: "é".encode("latin-1") + b'{"x": 1}',
        18: json.dumps({"dataframe_records": [{**row, field: "NaN-ish"}] * 50}).encode(),
        19: b"a,b\n1,2,3\n4",
    }
    return bodies[kind], "text/csv" if kind == 19 else "application/json"


def test_a_thousand_malformed_requests_leave_it_up_and_correct(server, store, rows):
    import psutil

    good = payloads(rows.head(5))["dataframe_records"]
    before = server.post(good).json()["predictions"]
    rss = psutil.Process(server.process.pid).memory_info().rss
    rng = random.Random(0)
    statuses = []
    for _ in range(1000):
        body, content_type = malformed(rng, good["dataframe_records"])
        statuses.append(server.post(content=body, content_type=content_type).status_code)
    assert set(statuses) <= {400, 415, 422}, sorted(set(statuses))
    assert server.process.poll() is None
    assert server.post(good).json()["predictions"] == before
    grown = psutil.Process(server.process.pid).memory_info().rss - rss
    assert grown < 200 << 20, f"the server grew by {grown >> 20} MiB"
    assert "Traceback" not in server.log.read_text()


def test_a_new_champion_is_picked_up_without_a_restart(server, store, rows):
    pipeline, _ = fit_small(store.config, rows=900, seed=5, max_iter=35)
    version = log_and_register(store, pipeline, rows.head(5))
    deadline = time.monotonic() + 60
    while server.http.get("/health").json()["model"]["version"] != version:
        assert time.monotonic() < deadline, "the new champion was not picked up in 60 s"
        time.sleep(REFRESH)
    body = server.post(payloads(rows.head(20))["dataframe_split"]).json()
    assert body["model"]["version"] == version
    np.testing.assert_allclose(body["predictions"], pipeline.predict(rows.head(20)), rtol=1e-12)
    # A version registered before intervals existed answers without them.
    assert "lower" not in body and "upper" not in body


def _serve(store_uri: str, port: int, log: Path, *extra: str) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tabreg", "--params", str(ROOT / "params.yaml"), "serve",
             "--port", str(port), "--refresh", "0", *extra],
            cwd=log.parent, env={**os.environ, "MLFLOW_TRACKING_URI": store_uri}, stdout=out,
            stderr=subprocess.STDOUT)


def test_several_workers_serve_the_champion_behind_one_port(store, rows, tmp_path):
    import httpx
    import psutil

    port = free_port()
    process = _serve(store.uri, port, tmp_path / "server.log", "--workers", "2")
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_until_healthy(url, process, 120), (tmp_path / "server.log").read_text()
        workers = [c for c in psutil.Process(process.pid).children()
                   if "multiprocessing" in " ".join(c.cmdline())]
        assert len(workers) >= 2, [c.cmdline() for c in workers]
        frame = rows.head(50)
        for _ in range(4):  # new connections: whichever worker takes them answers the same
            answer = httpx.post(f"{url}/invocations", json=payloads(frame)["dataframe_split"],
                                timeout=30)
            assert answer.status_code == 200, answer.text
            np.testing.assert_allclose(answer.json()["predictions"],
                                       champion_predictions(store, frame), rtol=1e-12)
        assert httpx.post(f"{url}/invocations", json={"dataframe_split": {}},
                          timeout=30).status_code == 400
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_workers_that_cannot_load_the_model_stop_the_server_with_an_error(tmp_path, capsys):
    import shutil

    from tabreg import cli

    with isolated_mlflow():
        broken = make_store(tmp_path / "store")
    shutil.rmtree(tmp_path / "store" / "artifacts")  # registered, but nothing to load
    process = _serve(broken.uri, free_port(), tmp_path / "server.log", "--workers", "2")
    assert process.wait(timeout=120) != 0
    out = (tmp_path / "server.log").read_text()
    assert "a serving worker could not start" in out, out[-3000:]
    # Refused before anything starts: in this process (a process of its own is tested above).
    assert cli.run(["--params", str(ROOT / "params.yaml"), "serve", "--port", str(free_port()),
                    "--refresh", "0", "--workers", "0"]) != 0
    assert "at least 1, got 0" in capsys.readouterr().err
