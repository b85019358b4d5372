"""Demonstration batches for the landing folder: clean, drifted, or corrupted on purpose.

``make new-batch`` writes one, so that a user can watch the retrain flow promote (a large
clean batch), refuse (a corrupted one: the batch contract rejects it) or skip (no batch), and
see the drift report react (``--drift``: incomes and values rise, as after a boom).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tabreg.data import synthetic

#: Corruptions a batch can carry, each caught by a different part of the contract.
CORRUPTIONS: dict[str, str] = {
    "out-of-range": "10 districts placed at latitude 48 (outside California)",
    "new-category": "5% of districts get ocean_proximity 'LAKESIDE' (not an allowed value)",
    "nulls": "20% of median_income values missing",
    "text": "'n/a' written in total_rooms (text in a numeric column)",
    "relation": "total_bedrooms above total_rooms on 5% of districts",
}


def make_batch(rows: int, seed: int, *, drift: float = 0.0,
               corrupt: str | None = None) -> pd.DataFrame:
    """``rows`` generated districts; ``drift`` > 0 raises incomes by that fraction (values
    follow, both kept inside their caps); ``corrupt`` names one of :data:`CORRUPTIONS`."""
    if corrupt is not None and corrupt not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {corrupt!r}; choose from {sorted(CORRUPTIONS)}")
    if drift < 0:
        raise ValueError(f"drift must be >= 0, got {drift}")
    frame = synthetic.generate(rows, seed=seed)
    if drift:
        frame["median_income"] = np.clip(frame["median_income"] * (1 + drift),
                                         synthetic.INCOME_FLOOR, synthetic.INCOME_CAP).round(4)
        frame["median_house_value"] = np.clip(
            (frame["median_house_value"] * (1 + 0.8 * drift)).round(),
            synthetic.VALUE_FLOOR, synthetic.VALUE_CAP)
    rng = np.random.default_rng(seed + 1)
    some = rng.choice(rows, size=max(1, rows // 20), replace=False)
    if corrupt == "out-of-range":
        frame.loc[frame.index[:10], "latitude"] = 48.0
    elif corrupt == "new-category":
        frame["ocean_proximity"] = frame["ocean_proximity"].astype(object)
        frame.loc[some, "ocean_proximity"] = "LAKESIDE"
    elif corrupt == "nulls":
        frame.loc[rng.choice(rows, size=max(1, rows // 5), replace=False), "median_income"] = \
            np.nan
    elif corrupt == "text":
        frame["total_rooms"] = frame["total_rooms"].astype(object)
        frame.loc[some[:3], "total_rooms"] = "n/a"
    elif corrupt == "relation":
        frame.loc[some, "total_bedrooms"] = frame.loc[some, "total_rooms"] + 10
    return frame
