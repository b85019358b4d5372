"""Seeded, schema-faithful fake California-housing districts.

The pipeline is built around the California housing file from "Hands-On Machine Learning"
(20,640 districts). Tests and benchmarks must not depend on downloading it, and scale tests
need far more rows than it has, so this module fabricates districts of any count that look
like the real ones to every stage of the pipeline: the same columns, order and dtypes, the
same value ranges, the same caps and pile-ups (age 52, income 0.4999 / 15.0001, value
500,001), about 1% missing ``total_bedrooms``, a rare ``ISLAND`` category, and a target that a
model can learn from income and location but not perfectly.

Generation is fully vectorised (no per-row Python) so millions of rows take seconds, and it
depends only on ``n_rows`` and ``seed``: the same pair always yields the same frame.
"""

from __future__ import annotations

import gzip
import hashlib
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS: tuple[str, ...] = (
    "longitude",
    "latitude",
    "housing_median_age",
    "total_rooms",
    "total_bedrooms",
    "population",
    "households",
    "median_income",
    "median_house_value",
    "ocean_proximity",
)

# Category codes index this tuple; ISLAND is last because it is never drawn from a region.
OCEAN_PROXIMITY: tuple[str, ...] = ("<1H OCEAN", "INLAND", "NEAR OCEAN", "NEAR BAY", "ISLAND")
_ISLAND = 4

LATITUDE_RANGE = (32.54, 41.95)
LONGITUDE_RANGE = (-124.35, -114.31)
AGE_CAP = 52.0
INCOME_FLOOR = 0.4999
INCOME_CAP = 15.0001
VALUE_FLOOR = 14999.0
VALUE_CAP = 500001.0
BEDROOMS_NULL_RATE = 0.01
ISLAND_RATE = 5 / 20640  # the real file's share of ISLAND districts
ISLAND_MIN_ROWS = 200  # from this size on, at least one ISLAND row is guaranteed
EDGE_CASE_MIN_ROWS = 100  # from this size on, every cap and a missing value are guaranteed

_CATALINA = (33.40, -118.42)  # (lat, lon) of Santa Catalina Island, home of the ISLAND rows


@dataclass(frozen=True)
class _Region:
    """A population centre: districts scatter around the segment from ``start`` to ``end``.

    A segment rather than a point lets one region follow a coast or a valley. The shifts
    are on the log scale (income, value) or in years (age), so regions differ the way real
    ones do: the Peninsula is rich, the Central Valley cheaper, San Francisco old.
    """

    start: tuple[float, float]  # (lat, lon)
    end: tuple[float, float]
    spread: tuple[float, float]  # standard deviation of (lat, lon) around the segment
    weight: float
    proximity: tuple[float, float, float, float]  # <1H OCEAN, INLAND, NEAR OCEAN, NEAR BAY
    income_shift: float
    age_shift: float
    value_shift: float


# fmt: off
_REGIONS: tuple[_Region, ...] = (
    # Los Angeles basin
    _Region((34.05, -118.30), (34.05, -118.20), (0.12, 0.18), 0.27,
            (0.95, 0.0, 0.05, 0.0), 0.0, 4.0, 0.15),
    # Orange County and LA coast
    _Region((33.60, -117.85), (34.00, -118.45), (0.05, 0.06), 0.07,
            (0.40, 0.0, 0.60, 0.0), 0.15, 0.0, 0.30),
    # Inland Empire
    _Region((34.05, -117.60), (33.80, -117.00), (0.12, 0.15), 0.07,
            (0.45, 0.55, 0.0, 0.0), -0.10, -6.0, -0.05),
    # San Diego
    _Region((32.75, -117.10), (33.15, -117.25), (0.08, 0.08), 0.07,
            (0.60, 0.05, 0.35, 0.0), 0.0, -2.0, 0.15),
    # San Francisco Bay shore
    _Region((37.45, -122.15), (38.05, -122.25), (0.10, 0.07), 0.11,
            (0.0, 0.0, 0.0, 1.0), 0.10, 8.0, 0.35),
    # South Bay and Peninsula
    _Region((37.25, -121.85), (37.55, -122.35), (0.07, 0.07), 0.06,
            (0.85, 0.0, 0.15, 0.0), 0.30, 0.0, 0.40),
    # Central coast (Santa Barbara to Santa Cruz)
    _Region((34.42, -119.70), (36.97, -122.02), (0.15, 0.12), 0.045,
            (0.30, 0.10, 0.60, 0.0), 0.0, -2.0, 0.20),
    # North coast
    _Region((38.30, -122.95), (41.75, -124.10), (0.20, 0.15), 0.025,
            (0.0, 0.45, 0.55, 0.0), -0.20, 0.0, -0.10),
    # Sacramento
    _Region((38.58, -121.45), (38.58, -121.45), (0.15, 0.18), 0.06,
            (0.0, 1.0, 0.0, 0.0), 0.0, -4.0, -0.10),
    # Central Valley (Bakersfield to Stockton)
    _Region((35.37, -119.02), (38.00, -121.30), (0.20, 0.20), 0.09,
            (0.0, 1.0, 0.0, 0.0), -0.20, -2.0, -0.25),
    # Northern interior (Chico, Redding)
    _Region((39.00, -121.80), (40.60, -122.40), (0.35, 0.35), 0.035,
            (0.0, 1.0, 0.0, 0.0), -0.30, 0.0, -0.30),
    # Deserts (high desert to Palm Springs)
    _Region((34.60, -117.50), (33.70, -116.30), (0.30, 0.40), 0.045,
            (0.0, 1.0, 0.0, 0.0), -0.20, -4.0, -0.30),
    # Sierra foothills
    _Region((38.90, -120.50), (37.50, -119.50), (0.30, 0.30), 0.025,
            (0.0, 1.0, 0.0, 0.0), -0.10, -2.0, -0.20),
)

# The coastline as longitude by latitude (piecewise linear): what "inland" is measured from,
# and the western edge that scattered points are reflected back across.
_COAST_LAT = np.array([32.54, 33.00, 33.60, 33.75, 34.00, 34.40, 34.45, 35.00, 35.60, 36.30,
                       36.60, 37.00, 37.50, 37.80, 38.30, 39.00, 40.00, 40.45, 41.00, 41.95])
_COAST_LON = np.array([-117.12, -117.28, -117.90, -118.40, -118.50, -119.60, -120.45, -120.65,
                       -121.15, -121.90, -121.95, -122.20, -122.50, -122.50, -123.05, -123.70,
                       -124.10, -124.35, -124.15, -124.20])
# fmt: on
# The eastern border: lon -120 north of lat 39, then the diagonal down to the Colorado river.
_BORDER_LAT = np.array([32.54, 35.00, 39.00, 41.95])
_BORDER_LON = np.array([-114.31, -114.63, -120.00, -120.00])

_CATEGORY_VALUE_SHIFT = np.array([0.0, -0.15, 0.05, 0.0, 0.40])  # indexed by category code


def generate(n_rows: int, seed: int = 0) -> pd.DataFrame:
    """Return ``n_rows`` fake districts with the real file's columns, dtypes and quirks.

    The same ``n_rows`` and ``seed`` always give an identical frame (with a RangeIndex), so
    tests can rely on exact values. From 100 rows on the frame holds every edge case the real
    file has (each cap, a missing ``total_bedrooms``), from 200 rows on an ``ISLAND`` row, so
    small test frames exercise the same code paths as the real data.
    """
    n = _check_n_rows(n_rows)
    rng = np.random.default_rng(seed)
    region = rng.choice(len(_REGIONS), size=n, p=_region_weights())
    lat, lon = _sample_locations(rng, region)
    proximity = _sample_proximity(rng, region)
    _place_islands(rng, lat, lon, proximity)
    age = _sample_age(rng, region)
    income = _sample_income(rng, region)
    rooms, bedrooms, population, households = _sample_counts(rng, n)
    force_edges = n >= EDGE_CASE_MIN_ROWS
    if force_edges:
        _force_extreme(age, AGE_CAP, np.argmax)
        _force_extreme(income, INCOME_CAP, np.argmax)
        _force_extreme(income, INCOME_FLOOR, np.argmin)
    value = _house_value(
        rng, region, proximity, lat, lon, age, income, rooms, population, households
    )
    if force_edges:
        _force_extreme(value, VALUE_CAP, np.argmax)
    _blank_bedrooms(rng, bedrooms, guarantee=force_edges)
    columns = {
        "longitude": lon,
        "latitude": lat,
        "housing_median_age": age,
        "total_rooms": rooms,
        "total_bedrooms": bedrooms,
        "population": population,
        "households": households,
        "median_income": income,
        "median_house_value": value,
        "ocean_proximity": _proximity_labels(proximity),
    }
    return pd.DataFrame(columns, columns=list(COLUMNS))


def write_archive(
    frame: pd.DataFrame, path: str | Path, member: str = "housing/housing.csv"
) -> str:
    """Write ``frame`` as a CSV inside a gzip tarball at ``path``; return its sha256 hex digest.

    This mimics how the real dataset is published (``housing.tgz``), so fetch / checksum /
    extract code can be tested offline. The bytes depend only on the frame: the tar header has
    a fixed mtime, owner and mode, and the gzip header has mtime 0 and no file name, so the
    same frame always gives the same checksum.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        csv_path = Path(scratch) / "member.csv"
        write_csv(frame, csv_path)
        info = tarfile.TarInfo(member)
        info.size = csv_path.stat().st_size
        info.mtime = 0
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        with (
            open(path, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as zipped,
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.USTAR_FORMAT) as tar,
            open(csv_path, "rb") as body,
        ):
            tar.addfile(info, body)
    return _sha256(path)


def write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    """Write ``frame`` as a plain CSV without the index, like the real file (landing batches)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, lineterminator="\n")


def _check_n_rows(n_rows: int) -> int:
    if isinstance(n_rows, bool) or not isinstance(n_rows, (int, np.integer)):
        raise TypeError(f"n_rows must be an int, got {type(n_rows).__name__}")
    if n_rows < 1:
        raise ValueError(f"n_rows must be at least 1, got {n_rows}")
    return int(n_rows)


def _region_weights() -> np.ndarray:
    weights = np.array([r.weight for r in _REGIONS])
    return weights / weights.sum()


def _region_array(field: str) -> np.ndarray:
    return np.array([getattr(r, field) for r in _REGIONS], dtype=np.float64)


def _sample_locations(
    rng: np.random.Generator, region: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Scatter districts around their region, keeping them on land inside the bounding box.

    Points thrown into the sea are reflected east of the coastline and points past the
    eastern border are pulled back onto it, then everything is clipped to the real file's
    bounding box and rounded to two decimals as in the real file.
    """
    start, end, spread = (_region_array(f)[region] for f in ("start", "end", "spread"))
    t = rng.random(len(region))[:, None]
    centre = start + t * (end - start)
    point = centre + rng.standard_normal((len(region), 2)) * spread
    lat = np.clip(point[:, 0], *LATITUDE_RANGE)
    lon = point[:, 1]
    coast = np.interp(lat, _COAST_LAT, _COAST_LON)
    lon = np.where(lon < coast, 2 * coast - lon, lon)
    lon = np.minimum(lon, np.interp(lat, _BORDER_LAT, _BORDER_LON))
    lon = np.clip(lon, *LONGITUDE_RANGE)
    return np.round(lat, 2), np.round(lon, 2)


def _sample_proximity(rng: np.random.Generator, region: np.ndarray) -> np.ndarray:
    """Draw each district's ocean_proximity code from its region's category mix."""
    cumulative = np.cumsum(_region_array("proximity"), axis=1)
    cumulative[:, -1] = 1.0
    u = rng.random(len(region))
    return (u[:, None] >= cumulative[region]).sum(axis=1).astype(np.int8)


def _place_islands(
    rng: np.random.Generator, lat: np.ndarray, lon: np.ndarray, proximity: np.ndarray
) -> None:
    """Move a rare few districts onto Catalina as ISLAND (at least one from 200 rows on)."""
    n = len(lat)
    count = int(rng.binomial(n, ISLAND_RATE))
    if n >= ISLAND_MIN_ROWS:
        count = max(count, 1)
    if count == 0:
        return
    rows = rng.choice(n, size=count, replace=False)
    lat[rows] = np.round(_CATALINA[0] + rng.uniform(-0.05, 0.05, count), 2)
    lon[rows] = np.round(_CATALINA[1] + rng.uniform(-0.10, 0.10, count), 2)
    proximity[rows] = _ISLAND


def _sample_age(rng: np.random.Generator, region: np.ndarray) -> np.ndarray:
    """Integer ages in [1, 52]; everything older piles up at 52, as in the census coding."""
    age = rng.normal(30.5 + _region_array("age_shift")[region], 13.0)
    young = age < 1.0
    age[young] = rng.uniform(1.0, 15.0, int(young.sum()))
    return np.minimum(np.round(age), AGE_CAP)


def _sample_income(rng: np.random.Generator, region: np.ndarray) -> np.ndarray:
    """Lognormal incomes (median ~3.5) clipped to the real file's floor and cap."""
    log_income = np.log(3.5) + _region_array("income_shift")[region]
    income = np.exp(rng.normal(log_income, 0.5))
    return np.clip(np.round(income, 4), INCOME_FLOOR, INCOME_CAP)


def _sample_counts(
    rng: np.random.Generator, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Households, rooms, bedrooms and population with the real ratios and heavy tails.

    Everything derives from households through per-district ratios, so the invariants hold
    by construction: bedrooms <= rooms, households <= population, every count >= 1.
    """
    households = np.clip(np.round(np.exp(rng.normal(np.log(410.0), 0.65, n))), 1.0, 8000.0)
    rooms_per_household = np.exp(rng.normal(np.log(5.2), 0.25, n))
    rooms = np.maximum(np.round(households * rooms_per_household), 2.0)
    bedrooms_per_room = np.exp(rng.normal(np.log(0.2), 0.15, n))
    bedrooms = np.clip(np.round(rooms * bedrooms_per_room), 1.0, rooms)
    people_per_household = np.exp(rng.normal(np.log(2.85), 0.25, n))
    population = np.maximum(np.round(households * people_per_household), households)
    population = np.maximum(population, 3.0)
    return rooms, bedrooms, population, households


def _house_value(
    rng: np.random.Generator,
    region: np.ndarray,
    proximity: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
    age: np.ndarray,
    income: np.ndarray,
    rooms: np.ndarray,
    population: np.ndarray,
    households: np.ndarray,
) -> np.ndarray:
    """The target: a noisy log-linear function of income, location and the district's shape.

    Income dominates; distance inland and the region lower or raise the price; roomier,
    less crowded, older districts are worth a little more. The noise keeps a model's R^2
    well below 1, and the floor and cap reproduce the real file's censoring at 500,001.
    """
    inland = np.maximum(lon - np.interp(lat, _COAST_LAT, _COAST_LON), 0.0)
    inland[proximity == _ISLAND] = 0.0
    log_value = (
        np.log(180000.0)
        + 0.85 * np.log(income / 3.5)
        + _region_array("value_shift")[region]
        + _CATEGORY_VALUE_SHIFT[proximity]
        - 0.12 * inland
        + 0.25 * np.log(rooms / households / 5.2)
        - 0.20 * np.log(population / households / 2.85)
        + 0.004 * (age - 30.0)
        + rng.normal(0.0, 0.28, len(region))
    )
    value = np.round(np.exp(log_value), -2)
    return np.clip(value, VALUE_FLOOR, VALUE_CAP)


def _force_extreme(values: np.ndarray, bound: float, pick: Callable[[np.ndarray], np.intp]) -> None:
    """Ensure ``bound`` occurs by moving the most extreme value onto it (if none sits there)."""
    if not np.any(values == bound):
        values[pick(values)] = bound


def _blank_bedrooms(rng: np.random.Generator, bedrooms: np.ndarray, guarantee: bool) -> None:
    """Blank about 1% of total_bedrooms at random (at least one when ``guarantee``)."""
    missing = rng.random(len(bedrooms)) < BEDROOMS_NULL_RATE
    if guarantee and not missing.any():
        missing[rng.integers(len(bedrooms))] = True
    bedrooms[missing] = np.nan


def _proximity_labels(codes: np.ndarray) -> pd.Series:
    categories = pd.Categorical.from_codes(codes, categories=list(OCEAN_PROXIMITY))
    return pd.Series(categories).astype("str")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
