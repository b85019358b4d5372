"""The benchmarks keep working: the quick mode runs every section and reports each figure.
(Nothing here checks a timing: targets are reported by the benchmark, not asserted.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import PER_MACHINE, ROOT, noise

pytestmark = pytest.mark.integration


def test_quick_bench_runs_every_section(tmp_path):
    out = tmp_path / "results.json"
    env = {k: v for k, v in os.environ.items() if k not in PER_MACHINE}
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    # Only the bench's own lines: no library bookkeeping (MLflow's tables, download bars).
    assert not noise((done.stdout + done.stderr).splitlines()), done.stderr[-4000:]
    results = json.loads(out.read_text())
    sections = results["sections"]
    assert list(sections) == ["startup", "pipeline", "mlp", "tuning", "threads", "workers",
                              "serving", "scale"]
    assert not [name for name, s in sections.items() if "error" in s]
    assert "skipped" in sections["pipeline"]  # the flow runs in full mode only
    assert sections["startup"]["cli_seconds"] > 0
    mlp = sections["mlp"]
    assert mlp["book_samples_per_s"] > 0 and mlp["ours_batch256_samples_per_s"] > 0
    assert sections["tuning"]["trials"].get("COMPLETE", 0) >= 1
    # Each printed ratio is the ratio of the figures it stands beside (a bench that
    # reported a ratio of the wrong runs, or inverted, would fail here).
    threads = sections["threads"]
    assert _ratio(threads, "gradient boosting fit") == pytest.approx(
        threads["hgb_beside_busy_s"] / threads["hgb_alone_s"], rel=0.05, abs=ROUNDING)
    assert _ratio(threads, "MLP fit") == pytest.approx(
        threads["mlp_budget_idle_s"] / threads["mlp_default_idle_s"], rel=0.05, abs=ROUNDING)
    assert "| MLP fit (2 epochs), idle: thread budget" in done.stdout
    workers = sections["workers"]
    assert _ratio(workers, "tuning: trials ended per minute") == pytest.approx(
        workers["two_workers_per_min"] / workers["one_worker_one_thread_per_min"], rel=0.05,
        abs=ROUNDING)
    assert _ratio(workers, "tuning: 2 workers over 1 worker whose fits") == pytest.approx(
        workers["two_workers_per_min"] / workers["one_worker_per_min"], rel=0.05,
        abs=ROUNDING)
    assert _ratio(workers, "tuning: 1 worker beside") == pytest.approx(
        workers["one_worker_busy_seconds"] / workers["one_worker_seconds"], rel=0.05, abs=ROUNDING)
    # One worker under a budget in trials runs the same trials beside a busy process.
    assert workers["one_worker_same_trials_busy"] is True
    assert workers["two_workers_same_trials"] is True  # tune.lag
    assert "| tuning: trials ended per minute, 2 workers over 1" in done.stdout
    assert "beside a busy process pinned to core 0, over the same fit alone" in done.stdout
    assert sections["serving"]["one_row"]["p50_ms"] > 0
    assert sections["serving"]["hundred_rows"]["requests_per_s"] > 0
    assert sections["serving"]["one_row"]["requests_per_s_4_clients_2_workers"] > 0
    sizes = sections["scale"]["sizes"]
    assert set(sizes) == {"2000", "6000"}
    assert all(step["seconds"] >= 0 and step["peak_rss_mib"] > 0
               for size in sizes.values() for step in size.values())
    assert results["machine"]["cores"] >= 1
    # The printed report: one Markdown table row per figure, the scale table, the machine.
    assert "| CLI start-up: `python -m tabreg --help` |" in done.stdout
    assert "| score |" in done.stdout and "Machine:" in done.stdout
    assert "| scale: time for x3 rows, ingest to scoring (2,000 -> 6,000 rows) |" in done.stdout
    assert "| scale: peak RSS at 6,000 rows" in done.stdout and "< 8 GiB (met)" in done.stdout


#: Ratios are printed with two decimals: a small one (0.04x for 0.037) is off by up to this.
ROUNDING = 0.0051


def _ratio(section: dict, figure_start: str) -> float:
    """The ratio printed in the row of ``section``'s table whose figure starts so."""
    [row] = [r for r in section["table"] if r["figure"].startswith(figure_start)]
    return float(row["ratio"].removesuffix("x"))


def test_the_champion_section_says_when_there_is_no_champion(tmp_path, monkeypatch):
    """``make bench BENCH=champion`` before any ``make run``: skipped, saying why."""
    import shutil

    from bench import run
    from tests.conftest import seed_store

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    seed_store(tmp_path)  # the project's store, with no model in it
    monkeypatch.setattr(run, "ROOT", tmp_path)
    for name in PER_MACHINE:
        monkeypatch.delenv(name, raising=False)
    section = run.champion(run.QUICK, tmp_path / "work")
    assert section == {"skipped": f"no housing@champion in sqlite:///{tmp_path / 'mlflow.db'}:"
                                  " run `make run` first"}
