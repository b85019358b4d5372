"""Stable row identities.

A row's identity is what de-duplicates appended batches and what decides its side of the
``hash`` split, so it must not depend on anything but the row's own values: not on its
position, the file's column order, the pandas version or the platform. It is computed here
with our own vectorised 64-bit mix (SplitMix64 finaliser) over a canonical encoding of each
value, so it is defined by this code alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_NULL = np.uint64(0x6A09E667F3BCC909)  # the canonical code of a missing value


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection on uint64 that spreads every input bit."""
    x = x.copy()
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _string_code(value: str) -> np.uint64:
    digest = hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "little"))


def _column_codes(series: pd.Series) -> np.ndarray:
    """Encode one column as uint64: floats by their IEEE bits, strings by a blake2b digest."""
    missing = series.isna().to_numpy()
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        values = series.to_numpy(dtype="float64", na_value=np.nan) + 0.0  # -0.0 -> 0.0
        values[missing] = 0.0
        codes = values.view(np.uint64).copy()
    else:
        text = series.astype("string")
        uniques = pd.unique(text[~missing])
        lookup = {u: _string_code(str(u)) for u in uniques}
        codes = np.zeros(len(series), dtype=np.uint64)
        if lookup:
            codes[~missing] = text[~missing].map(lookup).to_numpy(dtype=np.uint64)
    codes[missing] = _NULL
    return codes


def row_hashes(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """64-bit hashes of each row's values in ``columns`` (the order of ``columns`` counts)."""
    h = np.full(len(frame), np.uint64(len(columns)), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i, name in enumerate(columns):
            salt = _mix(np.array([i + 1], dtype=np.uint64) * _GOLDEN)[0]
            h = _mix(h ^ _mix(_column_codes(frame[name]) ^ salt))
    return h


def row_ids(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """Row identities as 16-character hex strings, aligned with ``frame``'s index."""
    hashes = row_hashes(frame, columns)
    return pd.Series([f"{v:016x}" for v in hashes.tolist()], index=frame.index, dtype="str")


def unit_interval(ids: pd.Series, seed: int) -> np.ndarray:
    """Map identities to [0, 1) uniformly, salted by ``seed``: the basis of the hash split."""
    values = np.array([int(v, 16) for v in ids], dtype=np.uint64)
    with np.errstate(over="ignore"):
        mixed = _mix(values ^ _mix(np.array([seed], dtype=np.uint64) * _GOLDEN)[0])
    return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def occurrence_ids(ids: pd.Series) -> pd.Series:
    """Identities that tell exact repeats apart (``data.duplicates: keep``): the k-th repeat of
    an identity (k >= 1, in file order) gets it mixed with k, the first keeps it as it is. A
    file without repeats therefore gets the same identities under every policy, and a later
    batch adds a repeated row only for the occurrences beyond those the table already holds."""
    k = ids.groupby(ids, sort=False).cumcount().to_numpy(dtype=np.uint64)
    values = np.array([int(v, 16) for v in ids], dtype=np.uint64)
    with np.errstate(over="ignore"):
        mixed = np.where(k == 0, values, _mix(values ^ _mix(k * _GOLDEN)))
    return pd.Series([f"{v:016x}" for v in mixed.tolist()], index=ids.index, dtype="str")
