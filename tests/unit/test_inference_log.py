"""The inference log on its own: rows in, batches out to Parquet by day, nothing lost on
close, bounded memory, and a store that fails counted rather than raised."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tabreg.serving import inference_log as il


def request(n: int, request_id: str, when: datetime | None = None) -> tuple:
    """One scored request: what the server hands the log (features, outputs, who and when)."""
    features = pd.DataFrame({"median_income": np.linspace(1, 8, n),
                             "ocean_proximity": ["INLAND"] * n})
    pred = np.linspace(1e5, 2e5, n)
    scored = {"row_id": [f"r{i}" for i in range(n)], "prediction": pred, "lower": pred - 1,
              "upper": pred + 1, "flags": [""] * n}
    return features, scored, {"request_id": request_id, "source": "serve", "model": "housing",
                              "version": "3", "when": when}


def scored_rows(n: int, request_id: str) -> pd.DataFrame:
    features, scored, meta = request(n, request_id)
    return il.rows_for_log(features, scored, **meta)


def append(log: il.InferenceLog, n: int, request_id: str, when: datetime | None = None) -> bool:
    features, scored, meta = request(n, request_id, when)
    return log.append(features, scored, **meta)


def read_back(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder).sort_values(["request_id", "row"], ignore_index=True)


def test_rows_carry_the_request_model_inputs_and_outputs():
    frame = scored_rows(3, "abc")
    assert list(frame.columns) == ["request_id", "row", "time", "source", "model",
                                   "model_version", "row_id", "median_income",
                                   "ocean_proximity", "prediction", "lower", "upper", "flags"]
    assert frame["row"].tolist() == [0, 1, 2] and set(frame["request_id"]) == {"abc"}
    without = il.rows_for_log(pd.DataFrame({"x": [1.0]}), {"prediction": [2.0], "lower": None,
                                                         "upper": None, "flags": [""]},
                              request_id="r", source="predict", model="m", version="1")
    # No id given: the row is named by the hash of its inputs, as scoring names it.
    assert without["lower"].isna().all() and without["row_id"].str.fullmatch(r"[0-9a-f]{16}").all()


def test_a_batch_of_requests_is_the_requests_one_by_one():
    # The writer builds one table for many requests: it must hold what each request's own
    # table holds, ids given or hashed, intervals or none, row numbers per request.
    when = datetime(2026, 11, 30, 8, tzinfo=UTC)
    taken = [request(3, "a", when), request(1, "b", when + timedelta(seconds=1))]
    hashed = request(2, "c", when)
    hashed[1]["row_id"], hashed[1]["lower"], hashed[1]["upper"] = None, None, None
    other = (pd.DataFrame({"x": [1.0, 2.0]}), {**hashed[1], "prediction": [1.0, 2.0]},
             {**hashed[2], "request_id": "d", "version": "4"})
    taken += [hashed, other]
    one_by_one = pd.concat([il.rows_for_log(f, s, **m) for f, s, m in taken],
                           ignore_index=True)
    together = il.rows_for_requests(taken)
    pd.testing.assert_frame_equal(together, one_by_one, check_like=True)  # columns: any order
    assert together["row"].tolist() == [0, 1, 2, 0, 0, 1, 0, 1]
    assert together["row_id"].iloc[4] == il.rows_for_log(*hashed[:2], **hashed[2])[
        "row_id"].iloc[0]


def test_rows_checked_without_a_frame_are_logged_as_their_frames():
    """The server hands the log a small request's checked values, not a frame; the writer
    builds one frame for each run of them. The rows are those of the requests' own frames,
    in order, with and without ids, between requests that came with a frame."""
    from tabreg.serving import scoring

    spec = scoring.InputSpec(("median_income",), ("ocean_proximity",),
                             categories={"ocean_proximity": frozenset({"INLAND"})})
    requests = []
    for i in range(7):
        n = 1 + i % 3
        checked = scoring.check_values({"median_income": [1.5 + i] * n,
                                        "ocean_proximity": ["INLAND", None, "ISLAND"][:n]},
                                       spec)
        assert checked is not None and checked.arrays is not None
        _, scored, meta = request(n, f"q{i}", datetime(2026, 12, 1, 8, tzinfo=UTC))
        scored["flags"] = checked.flags
        if i % 2:
            scored["row_id"] = None  # named by the hash of its inputs
        requests.append((checked.features if i == 3 else checked, scored, meta))
    framed = [(getattr(f, "features", f), scored, meta) for f, scored, meta in requests]
    pd.testing.assert_frame_equal(il.rows_for_requests(requests), il.rows_for_requests(framed))


def test_every_row_is_written_by_day_and_none_is_lost_on_close(tmp_path):
    log = il.InferenceLog(il.ParquetDays(tmp_path / "log"), target="log", batch_rows=50,
                          flush_seconds=0.05).start()
    today = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)
    sizes = np.random.default_rng(0).integers(1, 20, 300)
    for i, n in enumerate(sizes):
        append(log, int(n), f"q{i:03d}", today + timedelta(minutes=i % 2))
    log.close()
    back = read_back(tmp_path / "log")
    assert len(back) == sizes.sum()
    assert back.groupby("request_id").size().tolist() == sizes.tolist()
    # One folder per UTC day; the partition reads back as a column.
    assert sorted(p.name for p in (tmp_path / "log").iterdir()) == ["date=2026-11-30",
                                                                   "date=2026-12-01"]
    assert set(back["date"].astype(str)) == {"2026-11-30", "2026-12-01"}
    assert log.status() == {"target": "log", "rows_logged": int(sizes.sum()),
                            "rows_waiting": 0, "rows_dropped": 0, "rows_lost": 0,
                            "error": None, "status": "ok"}


def test_memory_is_bounded_and_what_is_refused_is_counted(tmp_path):
    log = il.InferenceLog(il.ParquetDays(tmp_path / "log"), target="log", batch_rows=10_000,
                          max_rows=100)  # not started: nothing is written meanwhile
    assert all(append(log, 10, f"q{i}") for i in range(10))
    assert not append(log, 1, "over")
    assert log.status()["rows_dropped"] == 1 and log.status()["rows_waiting"] == 100
    log.close()
    assert len(read_back(tmp_path / "log")) == 100


class Flaky:
    """A store that fails until it is told to work."""

    def __init__(self, folder: Path) -> None:
        self.inner, self.failing = il.ParquetDays(folder), True

    def write(self, frame: pd.DataFrame) -> None:
        if self.failing:
            raise OSError(28, "No space left on device")
        self.inner.write(frame)


def test_a_failing_store_is_reported_retried_and_counted(tmp_path, caplog):
    store = Flaky(tmp_path / "log")
    log = il.InferenceLog(store, target="log", batch_rows=5)
    append(log, 5, "a")
    log.flush()
    status = log.status()
    assert status["status"] == "failing" and "No space left on device" in status["error"]
    assert status["rows_waiting"] == 5 and status["rows_lost"] == 0
    assert "cannot write to log" in caplog.text
    store.failing = False  # space again: the batch is retried with the next one
    append(log, 2, "b")
    log.flush()
    assert log.status() == {"target": "log", "rows_logged": 7, "rows_waiting": 0,
                            "rows_dropped": 0, "rows_lost": 0, "error": None,
                            "status": "ok"}
    store.failing = True  # a batch that fails every attempt is counted as lost
    append(log, 3, "c")
    for _ in range(il.RETRIES + 1):
        log.flush()
    assert log.status()["rows_lost"] == 3 and log.status()["rows_waiting"] == 0
    assert len(read_back(tmp_path / "log")) == 7


class Unbuildable:
    """Rows whose frame cannot be built (a bug in the deferred path, say)."""

    def __len__(self) -> int:
        return 2

    @property
    def features(self) -> pd.DataFrame:
        raise ValueError("cannot build these rows")

    def stacked(self, more: list) -> pd.DataFrame:
        return self.features


def test_rows_that_cannot_be_prepared_are_counted_and_the_writer_goes_on(tmp_path, caplog):
    log = il.InferenceLog(il.ParquetDays(tmp_path / "log"), target="log", batch_rows=1,
                          flush_seconds=0.05).start()
    _, scored, meta = request(2, "bad")
    assert log.append(Unbuildable(), scored, **meta)
    for _ in range(100):  # the writer thread meets them
        if log.status()["rows_lost"]:
            break
        threading.Event().wait(0.05)
    status = log.status()
    assert status["status"] == "failing" and "cannot build these rows" in status["error"]
    assert status["rows_waiting"] == 0 and "Traceback" in caplog.text
    append(log, 3, "good")  # the writer thread still runs: these are written
    log.close()
    assert log.status()["rows_lost"] == 2 and log.status()["rows_logged"] == 3
    assert read_back(tmp_path / "log")["request_id"].unique().tolist() == ["good"]


def test_a_folder_that_cannot_be_created_fails_the_write_not_the_caller(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    log = il.InferenceLog(il.ParquetDays(tmp_path / "file" / "log"), target="file/log")
    assert append(log, 4, "a")
    log.close(timeout=2)
    assert log.status()["rows_lost"] == 4 and log.status()["status"] == "failing"


@pytest.mark.parametrize("target", ["logs/inference", "postgresql://u:p@127.0.0.1:1/db"])
def test_the_target_names_the_store(tmp_path, target):
    writer = il.open_writer(target, tmp_path)
    assert isinstance(writer, il.SqlTable if "://" in target else il.ParquetDays)


def test_a_database_password_is_never_shown(tmp_path):
    from tabreg.config import load_config
    from tests.conftest import ROOT

    config = load_config(ROOT / "params.yaml",
                         env={"INFERENCE_LOG": "postgresql://tabreg:s3cret@127.0.0.1:1/inference"})
    log = il.open_log(config, tmp_path)
    assert log.status()["target"] == "postgresql://tabreg:***@127.0.0.1:1/inference"
    off = config.model_copy(update={"monitor": config.monitor.model_copy(update={"log": ""})})
    assert il.open_log(off, tmp_path) is None  # monitor.log: "" turns the log off


def test_past_days_are_merged_into_one_file_each_and_no_row_is_lost(tmp_path):
    log = il.ParquetDays(tmp_path / "log")
    days = [datetime(2026, 11, 28, 12, tzinfo=UTC), datetime(2026, 11, 29, 12, tzinfo=UTC),
            datetime(2026, 11, 30, 12, tzinfo=UTC)]
    for i in range(12):  # four flushes a day, a few rows each
        features, scored, meta = request(3, f"q{i:02d}", days[i % 3] + timedelta(minutes=i))
        log.write(il.rows_for_log(features, scored, **meta))
    before = read_back(tmp_path / "log")
    merged = il.compact_days(tmp_path / "log", before="2026-11-30")
    assert merged == {"date=2026-11-28": 4, "date=2026-11-29": 4}  # today's stay as written
    counts = {d.name: len(list(d.glob("part-*.parquet")))
              for d in (tmp_path / "log").iterdir()}
    assert counts == {"date=2026-11-28": 1, "date=2026-11-29": 1, "date=2026-11-30": 4}
    pd.testing.assert_frame_equal(read_back(tmp_path / "log"), before)
    assert il.compact_days(tmp_path / "log", before="2026-11-30") == {}  # nothing left to merge
