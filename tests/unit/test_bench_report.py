"""The benchmark's scale targets: how "cost linear in rows" and the memory bound are judged."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("tabreg_bench_run", ROOT / "bench" / "run.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench  # dataclasses look their module up there
_spec.loader.exec_module(bench)


def _sizes(seconds_at: dict[int, float], features_at: dict[int, float], peak_mib: float):
    """Scale results where every step takes ``seconds_at[rows]`` except features."""
    return {str(rows): {name: {"seconds": features_at[rows] if name == "features" else t,
                               "peak_rss_mib": peak_mib if rows == max(seconds_at) else 100.0}
                        for name in bench.PIPELINE_STEPS}
            for rows, t in seconds_at.items()}


def test_sublinear_growth_and_small_memory_meet_the_targets():
    rows = bench._growth_rows(_sizes({1000: 1.0, 10_000: 4.0, 100_000: 30.0},
                                     {1000: 1.0, 10_000: 2.0, 100_000: 24.0}, 2048))
    linear, memory = rows
    assert "10,000 -> 100,000 rows" in linear["figure"]
    assert linear["reference"] == "steepest step: features, x12.0"
    assert linear["target"].endswith("(met)") and memory["target"] == "< 8 GiB (met)"


@pytest.mark.parametrize(("features_large", "peak", "linear_met", "memory_met"), [
    (40.0, 1024, False, True),   # features: 20x the time for 10x the rows
    (10.0, 9000, True, False),   # over 8 GiB at the largest size
])
def test_superlinear_steps_and_large_memory_miss_them(features_large, peak, linear_met,
                                                      memory_met):
    linear, memory = bench._growth_rows(_sizes({10_000: 2.0, 100_000: 10.0},
                                               {10_000: 2.0, 100_000: features_large}, peak))
    assert linear["target"].endswith("(met)" if linear_met else "(missed)")
    assert memory["target"].endswith("(met)" if memory_met else "(missed)")
