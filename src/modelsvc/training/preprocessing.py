"""Feature preprocessing fitted on the train split and saved with the model as JSON.

The same ``Preprocessor.transform`` runs in the training workers and inside the served pyfunc, so there is no
train/serve skew. Numeric features: missing/non-finite values imputed with the train mean, standardised, plus a
0/1 missing indicator per feature. Categorical features: index into an embedding, 0 = unknown or missing.

Only numpy and pandas are imported here (the pyfunc bundles this file).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from modelsvc.errors import DataError

FORMAT_VERSION = 1
UNKNOWN_INDEX = 0


@dataclass
class NumericStats:
    mean: float
    std: float


@dataclass
class Preprocessor:
    """Fitted transform from raw feature columns to (numeric float32 matrix, categorical int64 matrix)."""

    numeric: dict[str, NumericStats] = field(default_factory=dict)
    categorical: dict[str, list[str]] = field(default_factory=dict)  # vocabulary; index = position + 1

    # -- fitting ---------------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, df: pd.DataFrame, numeric: list[str], categorical: list[str]) -> Preprocessor:
        """Learn the statistics from ``df`` (pass the train split only)."""
        _require_columns(df, [*numeric, *categorical])
        stats: dict[str, NumericStats] = {}
        for col in numeric:
            values = _numeric(df[col])
            finite = values[np.isfinite(values)]
            if finite.size == 0:  # an all-null column: the indicator carries all the information
                stats[col] = NumericStats(0.0, 1.0)
                continue
            mean = float(finite.mean())
            std = float(finite.std())
            stats[col] = NumericStats(mean, std if std > 1e-12 and math.isfinite(std) else 1.0)
        vocab: dict[str, list[str]] = {}
        for col in categorical:
            values = df[col].dropna().astype(str)
            vocab[col] = sorted(values.unique().tolist())
        return cls(stats, vocab)

    # -- shapes ----------------------------------------------------------------------------------------------
    @property
    def numeric_columns(self) -> list[str]:
        return list(self.numeric)

    @property
    def categorical_columns(self) -> list[str]:
        return list(self.categorical)

    @property
    def input_columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @property
    def num_numeric_outputs(self) -> int:
        """Width of the numeric matrix: one standardised value and one missing indicator per feature."""
        return 2 * len(self.numeric)

    @property
    def cardinalities(self) -> list[int]:
        """Embedding sizes per categorical feature (vocabulary + the unknown/missing bucket)."""
        return [len(v) + 1 for v in self.categorical.values()]

    # -- transforming ----------------------------------------------------------------------------------------
    def transform(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(numeric float32 [n, 2k], categorical int64 [n, c]) for the rows of ``df``; other columns ignored.

        The columns are normalised (numbers as float64, text or None) and go through :meth:`transform_columns`,
        the one transform that training, batch scoring and the prediction service all run."""
        _require_columns(df, self.input_columns)
        columns: dict[str, Any] = {col: _numeric(df[col]) for col in self.numeric}
        for col in self.categorical:
            series = df[col]
            columns[col] = series.astype(str).where(series.notna(), None).to_numpy(dtype=object)
        return self.transform_columns(columns, len(df))

    def transform_columns(self, columns: Mapping[str, Any], n: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`transform` on ``n`` rows given as columns (numpy arrays or sequences): numeric columns of numbers
        (NaN, inf or None: missing), categorical columns of text (None or NaN: missing). Vectorised over the
        numeric features at once; no pandas for float64 numeric and text/None categorical columns (the serving
        path)."""
        missing_cols = [c for c in self.input_columns if c not in columns]
        if missing_cols:
            raise DataError(f"feature column(s) missing from the input: {', '.join(missing_cols)}")
        k = len(self.numeric)
        num = np.empty((n, 2 * k), dtype=np.float32)
        if k:
            values = np.empty((n, k), dtype=np.float64)
            for i, col in enumerate(self.numeric):
                values[:, i] = _as_float(columns[col])
            missing = ~np.isfinite(values)
            means, stds = self._scales()
            scaled = (values - means) / stds
            scaled[missing] = 0.0  # = the train mean after standardising
            num[:, :k] = scaled
            num[:, k:] = missing
        cat = np.empty((n, len(self.categorical)), dtype=np.int64)
        for j, col in enumerate(self.categorical):
            lookup = self._lookup(col)
            cat[:, j] = [lookup.get(v if type(v) is str else _text(v), UNKNOWN_INDEX) for v in columns[col]]
        return num, cat

    def _scales(self) -> tuple[np.ndarray, np.ndarray]:
        """Means and standard deviations as arrays (built once; the stats are not changed after fitting)."""
        cached = self.__dict__.get("_scales_cache")
        if cached is None:
            cached = (np.array([s.mean for s in self.numeric.values()], dtype=np.float64),
                      np.array([s.std for s in self.numeric.values()], dtype=np.float64))
            self.__dict__["_scales_cache"] = cached
        return cached

    def _lookup(self, col: str) -> dict[str | None, int]:
        """Category -> embedding index (vocabulary position + 1); None (missing) -> the unknown bucket."""
        lookups = self.__dict__.setdefault("_lookups", {})
        lookup = lookups.get(col)
        if lookup is None:
            lookup = {v: i + 1 for i, v in enumerate(self.categorical[col])}
            lookups[col] = lookup
        return lookup

    # -- serialisation (JSON, never pickle) ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "numeric": {c: {"mean": s.mean, "std": s.std} for c, s in self.numeric.items()},
            "categorical": {c: list(v) for c, v in self.categorical.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessor:
        if data.get("format_version") != FORMAT_VERSION:
            raise DataError(f"preprocessor format_version {data.get('format_version')!r} is not {FORMAT_VERSION}")
        numeric = {c: NumericStats(float(s["mean"]), float(s["std"])) for c, s in data["numeric"].items()}
        categorical = {c: [str(x) for x in v] for c, v in data["categorical"].items()}
        return cls(numeric, categorical)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> Preprocessor:
        return cls.from_dict(json.loads(text))


def _as_float(values: Any) -> np.ndarray:
    """A numeric column as float64 (missing: NaN): float arrays as they are, anything else through pandas'
    coercion (text and null become NaN)."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        return values
    return _numeric(pd.Series(values, dtype=object) if not isinstance(values, pd.Series) else values)


def _text(value: Any) -> str | None:
    """A categorical value as its text, None when missing (None, NaN, NA), as ``Series.astype(str)`` after
    ``notna``."""
    if value is None:
        return None
    na = pd.isna(value)
    if isinstance(na, (bool, np.bool_)) and na:
        return None
    return str(value)


def _numeric(series: pd.Series) -> np.ndarray:
    """Float64 values with NaN for null, text or non-finite entries."""
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(np.isfinite(values), values, np.nan)  # not in place: pandas 3 may hand out a read-only view


def _require_columns(df: pd.DataFrame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"feature column(s) missing from the input: {', '.join(missing)}")
