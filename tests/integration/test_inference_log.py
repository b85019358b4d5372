"""The served model's inference log, through a real server process: every answered row is in
the log with its request id, inputs, prediction, interval and flags, none is lost when the
server is stopped with SIGTERM in the middle of the traffic, and a log that cannot be written
leaves the server serving and says so on /health."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import PER_MACHINE, ROOT
from tests.scoring_helpers import isolated_mlflow, make_store, start_server

pytestmark = pytest.mark.integration

REQUESTS = 1000


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with isolated_mlflow():
        yield make_store(tmp_path_factory.mktemp("logged"))


def serve(store, tmp_path: Path, log_target: str) -> tuple:
    env = {k: v for k, v in os.environ.items() if k not in PER_MACHINE}
    env.update(MLFLOW_TRACKING_URI=store.uri, INFERENCE_LOG=log_target)
    return start_server(["--params", str(ROOT / "params.yaml")], ["--refresh", "0"],
                        cwd=tmp_path, env=env, log=tmp_path / "server.log")


def mixed_requests(store, n: int) -> list[dict]:
    """``n`` one- to three-row requests; every third has a row with an unknown category or a
    missing value (scored and flagged). Every fifth names its rows (``row_id``), and every
    seventh writes a number as text, which the server reads through a frame instead of
    from the values: both kinds land in the same batches of the log."""
    frame = store.train[list(store.config.schema.features)].reset_index(drop=True)
    requests = []
    for i in range(n):
        rows = frame.iloc[[(3 * i + k) % len(frame) for k in range(1 + i % 3)]].copy()
        if i % 3 == 0:
            rows.iloc[0, rows.columns.get_loc("ocean_proximity")] = "LAKESIDE"
        if i % 3 == 1:
            rows.iloc[0, rows.columns.get_loc("total_bedrooms")] = np.nan
        if i % 5 == 0:
            rows.insert(0, "row_id", [f"q{i}-{k}" for k in range(len(rows))])
        clean = rows.astype(object).where(rows.notna(), None)
        if i % 7 == 0:
            clean["median_income"] = clean["median_income"].map(str)
        requests.append({"dataframe_split": {"columns": list(clean.columns),
                                             "data": clean.values.tolist()}})
    return requests


def test_every_answered_row_is_logged_and_none_is_lost_on_sigterm(store, tmp_path):
    import httpx

    process, url = serve(store, tmp_path, str(tmp_path / "log"))
    requests, answers = mixed_requests(store, REQUESTS), {}
    lock, stop_after = threading.Lock(), int(REQUESTS * 0.6)

    def client(share: list[int]) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            for i in share:
                try:
                    answer = http.post("/invocations", json=requests[i])
                except httpx.HTTPError:  # the server stopped listening: not acknowledged
                    return
                if answer.status_code == 200:
                    with lock:
                        answers[answer.json()["request_id"]] = (i, answer.json())

    clients = [threading.Thread(target=client, args=(list(range(k, REQUESTS, 4)),))
               for k in range(4)]
    for thread in clients:
        thread.start()
    while len(answers) < stop_after and any(t.is_alive() for t in clients):
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)  # in the middle of the traffic
    for thread in clients:
        thread.join(60)
    # uvicorn shuts down in order, then ends by the signal it caught (exit -15).
    assert process.wait(timeout=60) in (0, -signal.SIGTERM)
    assert "Traceback" not in (tmp_path / "server.log").read_text()

    logged = pd.read_parquet(tmp_path / "log")
    assert stop_after <= len(answers) < REQUESTS  # stopped mid-load, as meant
    acknowledged = {rid: i for rid, (i, _) in answers.items()}
    assert set(logged["request_id"]) >= set(acknowledged)  # not one answered request lost
    for rid, (i, body) in list(answers.items())[:50]:  # and each as it was answered
        rows = logged[logged["request_id"] == rid].sort_values("row")
        assert rows["prediction"].tolist() == pytest.approx(body["predictions"], rel=1e-12)
        assert rows["lower"].tolist() == pytest.approx(body["lower"], rel=1e-12)
        assert [f.split(";") if f else [] for f in rows["flags"]] == body["flags"]
        sent = requests[i]["dataframe_split"]
        assert rows["median_income"].tolist() == pytest.approx(
            [float(row[sent["columns"].index("median_income")]) for row in sent["data"]])
        if "row_id" in sent["columns"]:  # the client's ids, as it gave them
            assert rows["row_id"].tolist() == [row[0] for row in sent["data"]]
    answered_rows = sum(len(body["predictions"]) for _, body in answers.values())
    assert len(logged[logged["request_id"].isin(acknowledged)]) == answered_rows
    assert set(logged["model"]) == {store.name} and set(logged["model_version"]) == {"1"}
    flagged = logged["flags"].str.contains("unknown_category:ocean_proximity")
    assert flagged.any() and logged["flags"].str.contains("missing:total_bedrooms").any()
    assert not logged.columns.str.contains("host|addr|header|client", case=False).any()


def test_a_log_that_cannot_be_written_leaves_the_server_serving(store, tmp_path):
    import httpx

    (tmp_path / "full").write_text("a file where the log folder should be")
    process, url = serve(store, tmp_path, str(tmp_path / "full" / "log"))
    try:
        payload = mixed_requests(store, 2)
        for body in payload * 5:
            assert httpx.post(f"{url}/invocations", json=body, timeout=30).status_code == 200
        deadline = time.monotonic() + 60
        while (health := httpx.get(f"{url}/health", timeout=30)).status_code == 200:
            assert time.monotonic() < deadline, health.json()
            time.sleep(0.5)
        state = health.json()
        assert health.status_code == 503 and state["status"] == "degraded"
        assert state["inference_log"]["status"] == "failing"
        assert "Error" in state["inference_log"]["error"] and state["registry_error"] is None
        assert httpx.get(f"{url}/ping", timeout=30).status_code == 200
        assert httpx.post(f"{url}/invocations", json=payload[0], timeout=30).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    server_log = (tmp_path / "server.log").read_text()
    assert "inference log: cannot write to" in server_log and "Traceback" not in server_log
