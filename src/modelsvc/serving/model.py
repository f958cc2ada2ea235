"""The served model: a loaded pyfunc with its version, and the holder that follows the production alias.

The holder checks the alias every ``serving.reload_interval_s`` on a background thread. When the alias moved
(``promote``, ``rollback``), the new version is loaded and warmed beside the one serving, then swapped in with one
reference assignment: a request takes ``holder.current`` once and finishes on that model, so no request fails or
waits for a load. A failed load keeps the old version serving and is reported by ``/readyz`` and the log.

What a swap costs the requests served meanwhile (docs/performance.md, "Model swap under load"): the load is little
CPU (30-40 ms for the logged code model, about half of it MLflow's pure-Python YAML reads of ``MLmodel``, the rest
its registry queries and the state dict), but it holds the GIL in steps of up to the interpreter's switch interval
(5 ms) while a request waits. So while a new version loads, threads switch every 1 ms. And the serving process
holds half a million objects once feast, torch, mlflow and pandas are imported: one full pass of the cyclic
collector over them stops every thread for 0.15-1 s (measured), whenever allocations (a load's among them) bring
one on. After the first load, before any request is answered, the holder collects once and moves that heap into
the collector's permanent generation (``gc.freeze``): later full passes scan only what was allocated since.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelsvc.config import Settings
from modelsvc.errors import ModelsvcError
from modelsvc.serving import sources

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger("modelsvc.serving")

_NUMERIC = {"double", "float", "long", "integer"}


@dataclass
class LoadedModel:
    """A pyfunc ready to score raw feature rows (the logged model does its own preprocessing)."""

    ref: sources.ModelRef
    pyfunc: Any
    features: list[str]  # the model's input columns, in signature order
    types: dict[str, str]  # column -> MLflow type name ("double", "string", ...)
    loaded_at: float
    _direct: Callable[[pd.DataFrame], Any] | None = None
    _by_columns: Callable[[dict[str, Any], int], Any] | None = None

    def __post_init__(self) -> None:
        # A Python-function model is called through its own predict, without MLflow's per-call schema
        # enforcement (about 0.5 ms a request): ``frame`` already builds the columns and types of the signature.
        # Our CTRPyfunc (logged by this version on) also takes the columns themselves (``predict_columns``): the
        # same transform and network without a DataFrame.
        try:
            python_model = self.pyfunc.unwrap_python_model()
        except Exception:  # another flavor: MLflow's predict
            return
        context = getattr(getattr(self.pyfunc, "_model_impl", None), "context", None)
        self._direct = lambda df: python_model.predict(context, df)
        by_columns = getattr(python_model, "predict_columns", None)
        if callable(by_columns):
            self._by_columns = by_columns

    @property
    def version(self) -> str:
        return self.ref.version

    @classmethod
    def load(cls, settings: Settings, ref: sources.ModelRef, *, quiet: bool = False) -> LoadedModel:
        pyfunc = sources.load_pyfunc(settings, ref, quiet=quiet)
        schema = pyfunc.metadata.get_input_schema()
        if schema is not None and schema.has_input_names():
            types = {c.name: _type_name(c.type) for c in schema.inputs}
        else:  # no signature: the features of the model's feature service, as training wrote them
            types = {f: "double" for f in sources.model_features()}
            types["last_seen_platform"] = "string"
        model = cls(ref, pyfunc, list(types), types, time.time())
        model.predict_rows([{}])  # warm up: the first call pays for lazy imports and allocations
        return model

    def columns(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Rows of raw feature values (None: missing) as the columns the model's signature asks for: numeric
        ones as float64 (NaN: missing), the others as object arrays."""
        import numpy as np

        data: dict[str, Any] = {}
        for col in self.features:
            values = [r.get(col) for r in rows]
            if self.types[col] in _NUMERIC:
                data[col] = np.array([np.nan if v is None else v for v in values], dtype="float64")
            else:
                column = np.empty(len(values), dtype=object)  # not np.array(values): it would split sequences
                column[:] = values
                data[col] = column
        return data

    def frame(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        """Rows of raw feature values (None: missing) as the DataFrame the model's signature asks for."""
        import pandas as pd

        return pd.DataFrame(self.columns(rows), copy=False)

    def predict_rows(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """``p_click`` per row of raw feature values: straight from the columns when the model takes them (no
        DataFrame), else through :meth:`frame` and :meth:`predict`."""
        import numpy as np

        if self._by_columns is None:
            return self.predict(self.frame(rows))
        return np.asarray(self._by_columns(self.columns(rows), len(rows)), dtype="float64").reshape(-1)

    def frame_from(self, df: pd.DataFrame) -> pd.DataFrame:
        """The model's columns of a feature table (nullable types, NA) as the DataFrame of :meth:`frame`."""
        import numpy as np
        import pandas as pd

        data: dict[str, Any] = {}
        for col in self.features:
            values = df[col] if col in df.columns else pd.Series([None] * len(df), dtype="object", index=df.index)
            if self.types[col] in _NUMERIC:
                data[col] = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            else:
                data[col] = values.astype("object").where(values.notna(), None).to_numpy()
        return pd.DataFrame(data)

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        """``p_click`` per row, through the pyfunc's own ``predict`` (its bundled preprocessing imputes missing
        values exactly as in training)."""
        import numpy as np
        import pandas as pd

        out = self._direct(df) if self._direct is not None else self.pyfunc.predict(df)
        if isinstance(out, pd.DataFrame):
            out = out["p_click"] if "p_click" in out.columns else out.iloc[:, 0]
        return np.asarray(out, dtype="float64").reshape(-1)


def _type_name(t: Any) -> str:
    return str(getattr(t, "name", t)).lower()


SWAP_SWITCH_INTERVAL_S = 0.001  # sys.setswitchinterval while a new version loads beside the serving one


@contextmanager
def short_thread_switches(interval_s: float = SWAP_SWITCH_INTERVAL_S) -> Iterator[None]:
    """The interpreter's thread switch interval lowered (default 5 ms) for the duration: a thread waiting for the
    GIL (a request) gets it within ``interval_s`` of asking while another (the loader) computes."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, interval_s))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def freeze_heap() -> None:
    """Collect every generation, then move every object left into the permanent generation, which the cyclic
    collector no longer scans (see the module doc). Once, after the first load: the old versions a swap replaces
    stay collectable."""
    gc.collect()
    gc.freeze()


class ModelHolder:
    """The model being served, following the production alias (or pinned to a run's model)."""

    def __init__(self, settings: Settings, *, run_id: str | None = None,
                 on_swap: Callable[[LoadedModel | None, LoadedModel], None] | None = None) -> None:
        self.settings = settings
        self.run_id = run_id
        self.current: LoadedModel | None = None
        self.error: str | None = "no model loaded yet"
        self.on_swap = on_swap
        self.swaps = 0
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Load the version the alias points at when it is not the one serving; True when a new one swapped in.
        Errors are kept in ``error`` (the old version keeps serving)."""
        with self._refresh_lock:
            try:
                ref = sources.model_ref(self.settings, self.run_id)
                if self.current is not None and self.current.ref == ref:
                    self.error = None
                    return False
                t0 = time.perf_counter()
                if self.current is None:
                    new = LoadedModel.load(self.settings, ref)
                else:
                    with short_thread_switches():
                        new = LoadedModel.load(self.settings, ref, quiet=True)
            except ModelsvcError as exc:
                self.error = exc.message
                log.warning("model not (re)loaded: %s", exc.message)
                return False
            except Exception as exc:  # a broken model must not take the service down
                self.error = f"model load failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                log.exception("model load failed")
                return False
            old, self.current, self.error = self.current, new, None
            self.swaps += 1
            if old is None:
                freeze_heap()
            log.info("serving model version %s (%s), loaded in %.2fs%s", new.version, ref.uri,
                     time.perf_counter() - t0, f", replacing version {old.version}" if old else "")
            if self.on_swap is not None:
                self.on_swap(old, new)
            return True

    def start(self) -> None:
        """Check the alias now, then every ``serving.reload_interval_s`` on a daemon thread."""
        self.refresh()
        if self.run_id is not None or self._thread is not None:
            return  # a run's model never moves
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="modelsvc-model-reload", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.serving.reload_interval_s):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
