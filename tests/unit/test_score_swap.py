"""``score`` goes to Ray only for a large range on a configured cluster; an actor's modelsvc error reaches the CLI as
itself; the served model's first load freezes the heap and a swap loads with short thread switches
(docs/performance.md, "Model swap under load")."""

from __future__ import annotations

import gc
import sys
from datetime import date, timedelta
from typing import Any

import pytest

from modelsvc.serving import sources
from modelsvc.serving.model import SWAP_SWITCH_INTERVAL_S, LoadedModel, ModelHolder


def _days(n: int) -> list[date]:
    return [date(2025, 1, 1) + timedelta(days=i) for i in range(n)]


def test_score_runs_on_ray_only_for_a_large_range_on_a_configured_cluster(settings: Any,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from modelsvc.config import load_settings
    from modelsvc.serving.batch import on_ray

    assert settings.ray_address() is None
    assert not on_ray(settings, _days(400))  # no cluster: always here
    cluster = load_settings(settings.config_dir, ray={"address": "127.0.0.1:6379"}, serving={"score_ray_min_days": 5})
    assert not on_ray(cluster, _days(4))
    assert on_ray(cluster, _days(5))
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # the address from the environment counts too
    assert on_ray(load_settings(settings.config_dir), _days(settings.serving.score_ray_min_days))


def test_an_actors_modelsvc_error_is_raised_as_itself_anything_else_is_retryable() -> None:
    from ray.exceptions import RayTaskError

    from modelsvc.errors import DataError, RetryableError
    from modelsvc.training.ray_runtime import _actor_error

    cause = DataError("no impressions in table 'raw_events' between 2025-01-01 and 2025-01-01")
    assert _actor_error(RayTaskError("run", "Traceback ...", cause), "score") is cause
    other = _actor_error(RayTaskError("run", "Traceback ...\nValueError: bad day", ValueError("bad day")), "score")
    assert isinstance(other, RetryableError)
    assert other.message.startswith("score on Ray failed: ")


def test_an_actor_whose_setup_failed_raises_that_error_from_its_tasks() -> None:
    from modelsvc.errors import NotFoundError
    from modelsvc.training.ray_runtime import _SetUpOnce

    def setup() -> None:
        raise NotFoundError("model runs:/abc/model cannot be loaded: no such run")

    actor = _SetUpOnce(setup)  # no raise here: Ray would keep only the text of a creation error
    with pytest.raises(NotFoundError, match="model runs:/abc/model cannot be loaded"):
        actor.run(lambda state, item: item, 1)
    assert _SetUpOnce(lambda: 2).run(lambda state, item: state * item, 3) == (3, 6)


def test_the_first_load_freezes_the_heap_and_a_swap_loads_with_short_thread_switches(
        settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    refs = {"now": sources.ModelRef("models:/m/1", "1", "r1")}
    seen: list[tuple[str, bool, float, int]] = []

    def load(cls: Any, settings: Any, ref: sources.ModelRef, quiet: bool = False) -> LoadedModel:
        seen.append((ref.version, quiet, sys.getswitchinterval(), gc.get_freeze_count()))
        return LoadedModel(ref, None, [], {}, 0.0)

    monkeypatch.setattr(sources, "model_ref", lambda settings, run_id=None: refs["now"])
    monkeypatch.setattr(LoadedModel, "load", classmethod(load))
    before = sys.getswitchinterval()
    try:
        gc.unfreeze()
        holder = ModelHolder(settings)
        assert holder.refresh()
        frozen_at_start = gc.get_freeze_count()
        assert frozen_at_start > 1000  # the start-up heap is out of the collector's scans
        refs["now"] = sources.ModelRef("models:/m/2", "2", "r2")
        kept = [[i] for i in range(1000)]  # containers allocated after the start
        assert holder.refresh()
        # a swap freezes nothing (frozen objects freed meanwhile leave the count): replaced versions stay collectable
        assert gc.get_freeze_count() <= frozen_at_start < frozen_at_start + len(kept)
    finally:
        gc.unfreeze()
    # the first load at the default interval (no request is served yet), the swap's at 1 ms, then restored
    assert seen[0][:3] == ("1", False, before)
    assert seen[1][:3] == ("2", True, min(before, SWAP_SWITCH_INTERVAL_S))
    assert sys.getswitchinterval() == before
