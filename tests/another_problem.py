"""A second regression problem, shaped nothing like the housing data, for the tests that hold
the README's promise: another CSV with another schema needs only ``params.yaml`` and the
suites in ``expectations/``.

Delivery trips: how many minutes a trip takes, from its distance, stops, payload, the driver's
experience and the temperature (one column with a few gaps), and three categories (vehicle,
zone, shift). No coordinates, other column names, a target in minutes, and a few trips that
repeat another exactly (as real logs do). The configuration is the README's worked example
("Another dataset"), read from the README itself, so the two cannot drift apart.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from tests.conftest import ROOT

NUMERIC = ("distance_km", "stops", "payload_kg", "driver_years", "temperature_c")
CATEGORIES = {"vehicle": ("van", "truck", "cargo_bike"),
              "zone": ("centre", "suburb", "industrial", "rural"),
              "shift": ("morning", "afternoon", "night")}
TARGET = "duration_min"
#: Words of the default problem that must never reach this problem's reports or logs.
HOUSING_WORDS = re.compile(r"housing|district|california", re.IGNORECASE)

_MINUTES_PER_KM = {"van": 1.6, "truck": 2.1, "cargo_bike": 3.4}
_ZONE_SLOWDOWN = {"centre": 1.5, "suburb": 1.0, "industrial": 0.9, "rural": 0.8}
_SHIFT_MINUTES = {"morning": 6.0, "afternoon": 12.0, "night": -4.0}


def generate(rows: int, seed: int = 0, repeats: int = 0) -> pd.DataFrame:
    """``rows`` seeded trips, then ``repeats`` of them again, exactly (a logged trip twice)."""
    rng = np.random.default_rng(seed)
    picks = {name: rng.choice(values, size=rows) for name, values in CATEGORIES.items()}
    distance = np.round(np.clip(rng.gamma(2.0, 8.0, rows), 0.5, 150.0), 1)
    stops = rng.poisson(5, rows) + 1
    payload = np.round(stops * rng.uniform(3.0, 40.0, rows), 1)
    years = rng.integers(0, 35, rows)
    temperature = np.round(rng.normal(12.0, 8.0, rows), 1)
    temperature[rng.random(rows) < 0.02] = np.nan
    per_km = np.array([_MINUTES_PER_KM[v] for v in picks["vehicle"]])
    slowdown = np.array([_ZONE_SLOWDOWN[z] for z in picks["zone"]])
    minutes = (8.0 + distance * per_km * slowdown + 4.5 * stops + 0.02 * payload
               + np.array([_SHIFT_MINUTES[s] for s in picks["shift"]]) - 0.25 * years
               + rng.normal(0.0, 6.0, rows))
    frame = pd.DataFrame({"distance_km": distance, "stops": stops.astype(float),
                          "payload_kg": payload, "driver_years": years.astype(float),
                          "temperature_c": temperature, **picks,
                          TARGET: np.round(np.clip(minutes, 5.0, None), 1)})
    if repeats:
        again = frame.iloc[rng.choice(rows, size=repeats, replace=False)]
        frame = pd.concat([frame, again], ignore_index=True)
    return frame


def readme_example() -> dict:
    """The ``params.yaml`` sections of the README's worked example ("Another dataset"): the
    first YAML block after that heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("### Another dataset")
    block = re.search(r"```yaml\n(.*?)```", text[start:], re.DOTALL)
    assert block, "README: no yaml block under 'Another dataset'"
    return yaml.safe_load(block.group(1))


def _expect(kind: str, why: str, **kwargs) -> dict:
    return {"type": kind, "kwargs": kwargs, "meta": {"why": why}}


def _suite(name: str, min_rows: int) -> dict:
    columns = ["row_id", "batch", *NUMERIC, *CATEGORIES, TARGET]
    ranges = {"distance_km": (0, 500), "stops": (1, 100), "payload_kg": (0, 5000),
              "driver_years": (0, 60), "temperature_c": (-40, 50), TARGET: (1, 1440)}
    expectations = [
        _expect("expect_table_columns_to_match_set", "the schema's columns and ours",
                column_set=columns, exact_match=True),
        _expect("expect_table_row_count_to_be_between", "not truncated",
                min_value=min_rows, max_value=10_000_000),
        _expect("expect_column_values_to_be_unique", "a row's identity", column="row_id"),
        *(_expect("expect_column_values_to_not_be_null", "never missing", column=c)
          for c in columns if c != "temperature_c"),
        *(_expect("expect_column_values_to_be_between", "plausible", column=c, min_value=lo,
                  max_value=hi) for c, (lo, hi) in ranges.items()),
        *(_expect("expect_column_values_to_be_in_set", "known categories", column=c,
                  value_set=list(values)) for c, values in CATEGORIES.items()),
    ]
    checks = [{"type": "expect_column_pair_rank_correlation_to_be_at_least",
               "kwargs": {"column_A": "distance_km", "column_B": TARGET, "min_value": 0.4,
                          "min_rows": 300},
               "meta": {"why": "longer trips take longer: a shuffled target breaks this"}}]
    return {"name": name, "expectations": expectations,
            "meta": {"applies_to": name, "tabreg_checks": checks}}


def write_suites(folder: Path) -> None:
    """``raw.json`` (the whole table) and ``batch.json`` (one new file) for these trips."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, min_rows in (("raw", 500), ("batch", 1)):
        (folder / f"{name}.json").write_text(json.dumps(_suite(name, min_rows), indent=2))
