"""How modelsvc imports Feast: its runtime parts without the import-time costs that its commands do not use.

A plain ``import feast`` (Feast 0.67) costs about 4.5-6 s on the 2-core machine, and every command that touches
Feast paid it. Two parts of it are not needed to materialize, build a dataset or serve:

- **typeguard's instrumentation** (about 2.5 s): Feast decorates its definition classes (``Entity``,
  ``FeatureView``, ``Field``, ``FeatureService``, the data sources, ...) with ``@typechecked``, which recompiles
  every annotated method of each class at import time so that their arguments are type-checked when called.
  :func:`import_feast` imports Feast with that decoration *deferred*: the classes are recorded, left as written,
  and :func:`enable_type_checks` instruments them later with typeguard's own ``typechecked`` (the same call the
  decorator would have made). modelsvc does so whenever it registers feature definitions
  (``features.apply_definitions``: the definitions are new or changed), for the classes the definitions are made
  of, and for all of them when loading the definitions fails, so a wrong argument in ``definitions.py`` is still
  reported by Feast's checks; ``tests/unit/test_feast_runtime.py`` checks the repo's definitions with them.
  Definitions that are already registered, the registry's own objects and the online reads run without the
  per-call checks.
- **torch** (about 1.2 s): ``feast.torch_wrapper`` imports torch when Feast is imported, for the
  ``to_tensor`` helpers only. :func:`import_feast` puts a stand-in in its place whose ``get_torch`` (and any other
  attribute) loads Feast's real module on first use.

Only the classes decorated while :func:`import_feast` runs are deferred, and only those of Feast (``__module__``
``feast.…``); anything else that applies ``typechecked`` then gets the real decorator. A process that imported
Feast by itself before (the ``feast`` CLI, a test, a notebook) keeps Feast's own behaviour: nothing is deferred.
``MODELSVC_FEAST_TYPECHECK=1`` in the environment makes :func:`import_feast` a plain ``import feast``.

Every module of modelsvc that imports Feast goes through :func:`import_feast` first (``features.store`` in its
functions; ``local``, ``job`` and ``hive`` are only imported after it).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import threading
import types
from collections.abc import Iterable
from typing import Any

TYPECHECK_ENV = "MODELSVC_FEAST_TYPECHECK"
_WRAPPER = "feast.torch_wrapper"

_lock = threading.RLock()
_deferred: list[type] = []  # Feast classes whose @typechecked was deferred, in decoration order


def import_feast() -> types.ModuleType:
    """The ``feast`` package, imported (once per process) without typeguard's instrumentation and torch."""
    if "feast" in sys.modules:
        return sys.modules["feast"]
    with _lock:
        if "feast" in sys.modules:
            return sys.modules["feast"]
        if os.environ.get(TYPECHECK_ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
            return importlib.import_module("feast")
        import typeguard

        real = typeguard.typechecked
        stand_in = sys.modules.setdefault(_WRAPPER, _lazy_torch_wrapper())
        typeguard.typechecked = _deferring(real)  # type: ignore[assignment]
        try:
            return importlib.import_module("feast")
        except BaseException:
            if sys.modules.get(_WRAPPER) is stand_in:
                del sys.modules[_WRAPPER]
            raise
        finally:
            typeguard.typechecked = real


def enable_type_checks(objects: Iterable[Any] | None = None) -> bool:
    """Instrument the Feast classes whose ``@typechecked`` :func:`import_feast` deferred, as Feast's import would
    have: from now on their methods check their arguments. With ``objects`` (Feast definitions built without the
    checks), only the classes those objects are made of: their own, their bases and those of the Feast objects
    they hold (sources, fields, projections); the others stay deferred. True when it instrumented any.

    typeguard recompiles every annotated method of a class: all 19 deferred classes cost 3.9-6.9 s on the 2-core
    machine, ``OnDemandFeatureView`` alone 2.7-3.2 s; the five that the demo's definitions use (``Entity``,
    ``FeatureView``, ``Field``, ``FeatureService``, ``FileSource`` and their base ``DataSource``) about 1.5 s."""
    with _lock:
        if not _deferred:
            return False
        wanted = set(_deferred) if objects is None else _classes_of(objects)
        chosen = [cls for cls in _deferred if cls in wanted]
        if not chosen:
            return False
        from typeguard import typechecked

        for cls in chosen:
            typechecked(cls)
            _deferred.remove(cls)
        return True


def _classes_of(objects: Iterable[Any]) -> set[type]:
    """The classes (with their bases) of the Feast objects in ``objects`` and of those they hold, at any depth."""
    classes: set[type] = set()
    seen: set[int] = set()
    stack = list(objects)
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif any(base.__module__.startswith("feast.") for base in type(obj).__mro__):
            classes.update(type(obj).__mro__)
            stack.extend(getattr(obj, "__dict__", {}).values())
    return classes


def type_checks_deferred() -> bool:
    """True while Feast's definition classes run without typeguard's checks (see :func:`enable_type_checks`)."""
    return bool(_deferred)


def _deferring(real: Any) -> Any:
    """A stand-in for ``typeguard.typechecked`` that records Feast's classes instead of instrumenting them."""

    def typechecked(target: Any = None, **options: Any) -> Any:
        if target is None:
            return lambda t: typechecked(t, **options)
        if options or not isinstance(target, type) or not target.__module__.startswith("feast."):
            return real(target, **options)
        _deferred.append(target)
        return target

    return typechecked


def _lazy_torch_wrapper() -> types.ModuleType:
    """A stand-in for ``feast.torch_wrapper``: ``get_torch`` and every other attribute come from Feast's real
    module, loaded (with torch) on first use."""
    module = types.ModuleType(_WRAPPER, "modelsvc's stand-in: Feast's feast.torch_wrapper, loaded on first use")

    def real_module() -> types.ModuleType:
        with _lock:
            current = sys.modules.get(_WRAPPER)
            if current is not None and current is not module:
                return current
            feast = sys.modules["feast"]
            spec = importlib.machinery.PathFinder.find_spec("torch_wrapper", list(feast.__path__))
            if spec is None or spec.loader is None:
                raise ImportError(f"{_WRAPPER} not found in {list(feast.__path__)}")
            real = importlib.util.module_from_spec(spec)
            sys.modules[_WRAPPER] = real
            try:
                spec.loader.exec_module(real)
            except BaseException:
                sys.modules[_WRAPPER] = module
                raise
            feast.torch_wrapper = real  # type: ignore[attr-defined]
            return real

    def get_torch() -> Any:
        return real_module().get_torch()

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(real_module(), name)

    module.get_torch = get_torch  # type: ignore[attr-defined]
    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    return module
