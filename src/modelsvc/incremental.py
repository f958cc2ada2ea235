"""What a pipeline step read, as a fingerprint, so an unchanged step can be skipped.

The fingerprints live in one state file, ``<reports>/state/pipeline.json``, never inside the warehouse's partition
folders. A step is skipped only when its fingerprint matches the one recorded by its last success *and* its
output still exists; anything not fingerprinted (the Hive engine's raw partitions) always runs.

- ETL day: the identity (name, size, mtime) of the raw files of its look-back window, the ``etl`` and ``tables``
  settings and the modelsvc version.
- materialize: the ETL fingerprints of the range, the ``features`` settings and the end timestamp.
- build-dataset: the ETL fingerprints of the range, the ``dataset`` and ``features`` settings.
(train reuses a finished training by itself: its run name hashes the dataset version and the training settings.)
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, timedelta
from typing import Any

from modelsvc import __version__, storage
from modelsvc.config import Settings

STATE_FILE = "pipeline.json"


def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def state_path(settings: Settings) -> str:
    """``<reports>/state/pipeline.json`` (a local path or a URI: ``paths.reports`` may be on object storage)."""
    return storage.join(settings.paths.location("reports"), "state", STATE_FILE)


def load_state(settings: Settings) -> dict[str, Any]:
    path = state_path(settings)
    if not storage.is_file(path):
        return {}
    try:
        return dict(json.loads(storage.read_text(path)))
    except (OSError, ValueError):
        return {}


def save_state(settings: Settings, state: dict[str, Any]) -> None:
    """Atomically (a reader never sees half a file)."""
    storage.write_text(state_path(settings), json.dumps(state, indent=2, sort_keys=True, default=str))


def _local_warehouse(settings: Settings) -> Any | None:
    if settings.warehouse.engine != "duckdb":
        return None
    from modelsvc.warehouse.local import LocalWarehouse

    return LocalWarehouse(settings)


def raw_identity(settings: Settings, day: date) -> list[list[Any]] | None:
    """(name, size, mtime_ns) of each raw file of ``day``; None when the engine does not let us see them."""
    wh = _local_warehouse(settings)
    if wh is None:
        return None
    out: list[list[Any]] = []
    for f in wh.files(settings.tables.raw_events, day):
        st = f.stat()
        out.append([f.name, st.st_size, st.st_mtime_ns])
    return out


def etl_fingerprints(settings: Settings, days: list[date]) -> dict[str, str | None]:
    """Per requested day, the fingerprint of what its ETL reads (None: cannot tell, always run)."""
    lookback = settings.etl.lookback_days
    window_start = days[0] - timedelta(days=lookback - 1)
    raw: dict[date, list[list[Any]] | None] = {}
    d = window_start
    while d <= days[-1]:
        raw[d] = raw_identity(settings, d)
        d += timedelta(days=1)
    shaping = {"etl": settings.etl.model_dump(mode="json"), "tables": settings.tables.model_dump(mode="json"),
               "version": __version__}
    out: dict[str, str | None] = {}
    for day in days:
        window = [raw[day - timedelta(days=i)] for i in range(lookback)]
        if any(w is None for w in window) or not raw[day]:
            out[day.isoformat()] = None
        else:
            out[day.isoformat()] = _hash({"raw": window, **shaping})
    return out


def etl_output_exists(settings: Settings, day: date) -> bool:
    wh = _local_warehouse(settings)
    return wh is not None and bool(wh.files(settings.tables.user_features, day))


def range_fingerprint(settings: Settings, etl: dict[str, str | None], *sections: str, **extra: Any) -> str | None:
    if any(v is None for v in etl.values()):
        return None
    return _hash({"etl": etl, **{s: getattr(settings, s).model_dump(mode="json") for s in sections}, **extra})
