"""The window ``make monitor`` reads: half-open bounds, so consecutive windows hold every
logged row once; only the day folders it touches; the last report's end as the default start;
and the remedy an ``act`` verdict calls for."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from tabreg.config import load_config
from tabreg.errors import TabregError
from tabreg.monitoring import monitor as mon
from tabreg.monitoring.window import parse_time, read_window
from tabreg.serving.inference_log import ParquetDays
from tests.conftest import ROOT

CONFIG = load_config(ROOT / "params.yaml", env={})
T0 = datetime(2026, 11, 29, 23, 0, tzinfo=UTC)


def logged(times: list[datetime]) -> pd.DataFrame:
    return pd.DataFrame({"request_id": [f"r{i}" for i in range(len(times))], "row": 0,
                         "time": pd.Series(times, dtype="datetime64[us, UTC]"),
                         "prediction": 1.0})


def test_consecutive_windows_hold_every_row_once(tmp_path):
    times = [T0 + timedelta(minutes=30 * i) for i in range(6)]  # across midnight
    ParquetDays(tmp_path / "log").write(logged(times))
    assert sorted(p.name for p in (tmp_path / "log").iterdir()) == [
        "date=2026-11-29", "date=2026-11-30"]
    cut = times[2]
    first = read_window("log", tmp_path, None, cut)
    second = read_window("log", tmp_path, cut, times[-1])
    assert list(first["request_id"]) == ["r0", "r1", "r2"]
    assert list(second["request_id"]) == ["r3", "r4", "r5"]
    assert read_window("log", tmp_path, times[-1], times[-1] + timedelta(days=1)).empty
    assert read_window("missing", tmp_path, None, cut).empty


def test_a_day_outside_the_window_is_not_opened(tmp_path):
    ParquetDays(tmp_path / "log").write(logged([T0 - timedelta(days=3), T0]))
    broken = next((tmp_path / "log").glob("date=2026-11-26/*.parquet"))
    broken.write_bytes(b"not parquet")
    assert list(read_window("log", tmp_path, T0 - timedelta(hours=1), T0)["request_id"]) == [
        "r1"]
    with pytest.raises(TabregError, match=r"date=2026-11-26.*cannot be read"):
        read_window("log", tmp_path, None, T0)


def test_times_and_the_default_start(tmp_path):
    assert parse_time("2026-11-30", "since") == datetime(2026, 11, 30, tzinfo=UTC)
    assert parse_time("2026-11-30T08:00+01:00", "since").hour == 7
    with pytest.raises(TabregError, match="since: 'yesterday' is not a time"):
        parse_time("yesterday", "since")
    folder = tmp_path / CONFIG.paths.monitoring
    assert mon.bounds(CONFIG, tmp_path, None, "2026-11-30")[0] is None  # no report yet
    folder.mkdir(parents=True)
    (folder / mon.SUMMARY).write_text(json.dumps({"window": {"until": "2026-11-30T06:00Z"}}))
    start, end = mon.bounds(CONFIG, tmp_path, None, "2026-11-30T07:00Z")
    assert (start.hour, end.hour) == (6, 7)
    with pytest.raises(TabregError, match="not before until"):
        mon.bounds(CONFIG, tmp_path, None, "2026-11-30T05:00Z")
    (folder / mon.SUMMARY).write_text("{}")
    with pytest.raises(TabregError, match="does not say where the last window ended"):
        mon.bounds(CONFIG, tmp_path, None, None)


def test_the_remedy_of_an_act_verdict():
    act = {"verdict": "act"}
    assert mon.remedy({"verdict": "ok"}, None)["kind"] == "none"
    assert mon.remedy(act, None)["kind"] == "retrain"
    worse_before = {"previous": "1", "rows": 500, "previous_rmse": 60_000.0,
                    "champion_rmse": 50_000.0, "previous_better": False}
    assert mon.remedy(act, worse_before)["kind"] == "retrain"
    better_before = {**worse_before, "previous_rmse": 40_000.0, "previous_better": True}
    rollback = mon.remedy(act, better_before)
    assert rollback["kind"] == "rollback" and "`make rollback`" in rollback["detail"]
    assert "40,000 against 50,000" in rollback["detail"]


def test_a_retrain_that_fails_is_reported_then_raised():
    action = {"kind": "retrain", "detail": ""}

    def broken() -> dict:
        raise RuntimeError("the disk is full")

    failure = mon.run_remedy(action, broken)
    assert isinstance(failure, RuntimeError) and "the disk is full" in action["detail"]
    skipped = {"kind": "retrain", "detail": ""}
    assert mon.run_remedy(skipped, lambda: {"action": "skip", "reasons": ["no new data"]}) \
        is None
    assert skipped == {"kind": "retrain", "retrain": "skip",
                       "detail": "the retrain flow ran: skip: no new data"}
    assert mon.run_remedy({"kind": "retrain", "detail": ""}, None) is None


def test_an_earlier_window_looked_at_again_leaves_the_latest_report(tmp_path):
    from tests.unit.test_monitor_report import monitored

    summary, samples = monitored(labelled=False, rows=200)
    folder = tmp_path / "monitoring"
    for until in ("2026-11-30T06:00:00+00:00", "2026-11-20T06:00:00+00:00"):
        summary["window"] = {"since": None, "until": until}
        files = mon.write_outputs(folder, summary, samples, pd.DataFrame({"a": [1]}))
        assert files["report"].parent.name == until[:10].replace("-", "") + "T060000Z"
        assert files["report"].exists() and files["to_label"].exists()
    assert mon.last_until(folder) == datetime(2026, 11, 30, 6, tzinfo=UTC)
    assert sorted(p.name for p in folder.iterdir()) == [
        "20261120T060000Z", "20261130T060000Z", "report.html", "summary.json", "to_label.csv"]


def test_a_database_log_that_cannot_be_reached_is_named_without_its_password(tmp_path):
    url = "postgresql://tabreg:s3cret@127.0.0.1:1/inference"  # nothing listens on port 1
    with pytest.raises(TabregError, match=r"cannot read the inference log at "
                                          r"postgresql://tabreg:\*+@127\.0\.0\.1:1") as caught:
        read_window(url, tmp_path, None, T0)
    assert "s3cret" not in str(caught.value)
