"""How modelsvc imports Feast (``modelsvc.features.runtime``): the hot commands run without typeguard's
instrumentation of Feast's classes and without torch; the feature definitions are still type-checked by Feast's
checks when they are registered. Each check runs in a fresh interpreter: the test process may have imported Feast
the ordinary way already."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import modelsvc
from tests.feature_data import random_case, write_impressions, write_offline, write_realtime

SRC = str(Path(modelsvc.__file__).resolve().parents[1])

# names of Feast's classes whose __init__ typeguard has instrumented (the code calls its argument checks)
PROBE = """
def _instrumented():
    import feast
    classes = [feast.Entity, feast.FeatureView, feast.Field, feast.FeatureService, feast.FileSource]
    return [c.__name__ for c in classes if "check_argument_types_internal" in c.__init__.__code__.co_names]
"""


def _python(code: str, cwd: Path, *, probe: bool = False, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MODELSVC_")}
    environ["PYTHONPATH"] = SRC + os.pathsep + environ.get("PYTHONPATH", "")
    environ.update(env)
    source = (PROBE if probe else "") + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", source], cwd=cwd, env=environ, capture_output=True, text=True,
                          timeout=240)


@pytest.fixture
def tables(workdir):
    off, rt, imp = random_case(3, users=8, days=4, impressions=60)
    write_offline(workdir / "data", off)
    write_realtime(workdir / "data", rt)
    write_impressions(workdir / "data", imp)
    return imp


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_hot_commands_run_without_typeguard_instrumentation_or_torch(workdir, tables):
    """materialize (definitions already registered), build-dataset and the serving reader's start-up, in one
    fresh process: no Feast class is instrumented, torch is not imported, and the results are there."""
    days = tables["event_timestamp"].dt.strftime("%Y-%m-%d")
    first = _python("""
        from modelsvc.config import load_settings
        from modelsvc.features import materialize
        print(materialize(load_settings("configs"), end="2026-01-04").applied)
    """, workdir)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.split() == ["True"]  # registered, with Feast's checks: not the hot path

    # nothing to materialize, and the serving reader: the offline store (ibis, Feast's DuckDB store) is never
    # imported; build-dataset below imports it when it joins
    idle = _python("""
        import sys
        from modelsvc.config import load_settings
        from modelsvc.features import materialize
        from modelsvc.features.online_read import OnlineFeatures
        s = load_settings("configs")
        OnlineFeatures.open(s).read_raw([1])
        print(materialize(s, end="2026-01-04").rows, "modelsvc.features.local" in sys.modules, "ibis" in sys.modules)
    """, workdir)
    assert idle.returncode == 0, idle.stderr[-3000:]
    assert idle.stdout.split() == ["0", "False", "False"]

    hot = _python(f"""
        import json, sys
        from modelsvc.config import load_settings
        from modelsvc.dataset import build_dataset
        from modelsvc.features import materialize
        from modelsvc.features.online_read import OnlineFeatures
        s = load_settings("configs")
        report = materialize(s, end="2026-01-05")
        manifest = build_dataset(s, start_date="{days.min()}", end_date="{days.max()}", name="hot")
        reader = OnlineFeatures.open(s)
        raw = reader.read_raw(list(range(8)))
        print(json.dumps({{"applied": report.applied, "rows": report.rows, "dataset_rows": manifest.rows,
                          "online_rows": sum(v is not None for view in raw for _, v in view),
                          "instrumented": _instrumented(), "torch": "torch" in sys.modules}}))
    """, workdir, probe=True)
    assert hot.returncode == 0, hot.stderr[-3000:]
    out = json.loads(hot.stdout.strip().splitlines()[-1])
    assert out["applied"] is False
    assert out["rows"] > 0
    assert out["dataset_rows"] == len(tables)
    assert out["online_rows"] > 0
    assert out["instrumented"] == []
    assert out["torch"] is False


@pytest.mark.timeout(240)
def test_registered_definitions_pass_feasts_type_checks(workdir):
    """The repo's definitions, built with Feast's checks on (as when they are registered): the classes they are
    made of are instrumented, the others (OnDemandFeatureView: 3 s alone) stay deferred until asked for; the
    checks are typeguard's own, and they reject a wrong argument."""
    out = _python("""
        from modelsvc.config import load_settings
        from modelsvc.features import load_definitions
        from modelsvc.features.runtime import enable_type_checks, import_feast, type_checks_deferred
        feast = import_feast()
        from feast.on_demand_feature_view import OnDemandFeatureView
        def checked(cls):
            return "check_argument_types_internal" in cls.__init__.__code__.co_names
        assert type_checks_deferred() and _instrumented() == []
        unchecked = load_definitions(load_settings("configs"))
        assert enable_type_checks(unchecked) is True
        assert _instrumented() == ["Entity", "FeatureView", "Field", "FeatureService", "FileSource"]
        assert type_checks_deferred() and not checked(OnDemandFeatureView)
        assert enable_type_checks(unchecked) is False  # nothing more for the same objects
        objects = load_definitions(load_settings("configs"))
        print(sorted(type(o).__name__ for o in objects))
        from typeguard import TypeCheckError
        from feast.types import Int64
        try:
            feast.Field(name=1, dtype=Int64)
        except TypeCheckError:
            print("rejected")
        assert enable_type_checks() is True  # all the others
        assert not type_checks_deferred() and checked(OnDemandFeatureView) and enable_type_checks() is False
    """, workdir, probe=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines() == ["['Entity', 'FeatureService', 'FeatureView', 'FeatureView']", "rejected"]


@pytest.mark.timeout(240)
def test_a_wrong_argument_in_the_definitions_is_a_config_error(workdir):
    """The hot import does not lose Feast's checks: definitions that are not registered yet are built again
    with them, and a wrong argument is a ConfigError naming the file (exit 78), not a traceback."""
    defs = workdir / "feature_repo" / "definitions.py"
    text = defs.read_text()
    assert 'description="page views in the 10 minutes before the window end",' in text
    defs.write_text(text.replace('description="page views in the 10 minutes before the window end",',
                                 "description=10,"))
    out = _python("""
        from modelsvc.config import load_settings
        from modelsvc.errors import ConfigError
        from modelsvc.features import feature_store
        try:
            feature_store(load_settings("configs"))
        except ConfigError as exc:
            print("ConfigError:", exc)
    """, workdir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith(f"ConfigError: feature definitions {defs} are invalid: ")
    assert "description" in out.stdout


@pytest.mark.timeout(240)
def test_torch_is_imported_when_feast_first_needs_it(workdir):
    """Feast's ``feast.torch_wrapper`` is loaded (with torch) on first use, and works as Feast's."""
    out = _python("""
        import sys
        from modelsvc.features.runtime import import_feast
        import_feast()
        assert "torch" not in sys.modules
        from feast.infra.offline_stores.offline_store import get_torch
        import feast.torch_wrapper as stand_in
        t = get_torch()
        import torch
        import feast.torch_wrapper as wrapper
        assert t is torch and wrapper is not stand_in
        assert wrapper.TORCH_AVAILABLE is True and stand_in.TORCH_AVAILABLE is True
        print(wrapper.__file__.replace("\\\\", "/").endswith("feast/torch_wrapper.py"))
    """, workdir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["True"]


@pytest.mark.timeout(240)
def test_the_environment_variable_keeps_feasts_own_import(workdir):
    out = _python("""
        import sys
        from modelsvc.features.runtime import import_feast, type_checks_deferred
        import_feast()
        print(type_checks_deferred(), "torch" in sys.modules, _instrumented() != [])
    """, workdir, probe=True, MODELSVC_FEAST_TYPECHECK="1")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["False", "True", "True"]
