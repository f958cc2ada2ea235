"""Serving logic without services: freshness at the ttl boundary, request validation, override checks, the hot swap
of the model holder."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from modelsvc.serving import sources
from modelsvc.serving.model import LoadedModel, ModelHolder
from modelsvc.serving.predictor import InputError, Instance, check_overrides

AT = datetime(2025, 3, 7, 12, 0, tzinfo=timezone.utc)


class _Online(sources.OnlineFeatures):
    """OnlineFeatures over fixed rows: view -> user -> (ts, values)."""

    def __init__(self, settings: Any, rows: dict[str, dict[int, tuple[datetime, dict[str, Any]]]]) -> None:
        views = [sources.ViewRead("offline", None, ["orders", "platform"], timedelta(days=7)),
                 sources.ViewRead("realtime", None, ["views"], timedelta(minutes=30))]
        super().__init__(settings, None, None, None, views)
        self.rows = rows

    def read_raw(self, user_ids: Any) -> Any:
        return [[self.rows[v.name].get(u, (None, None)) for u in user_ids] for v in self.views]


def test_a_value_exactly_ttl_old_is_fresh_and_one_microsecond_older_is_missing(settings: Any) -> None:
    rows = {"offline": {1: (AT - timedelta(days=7), {"orders": 3, "platform": "web"}),
                        2: (AT - timedelta(days=7, microseconds=1), {"orders": 4, "platform": "ios"})},
            "realtime": {1: (AT - timedelta(minutes=30, microseconds=1), {"views": 5}),
                         2: (AT, {"views": 6})}}
    got = _Online(settings, rows).read([2, 1, 3, 1], at=AT)
    assert got.values == [{"orders": None, "platform": None, "views": 6},
                          {"orders": 3, "platform": "web", "views": None},
                          {"orders": None, "platform": None, "views": None},
                          {"orders": 3, "platform": "web", "views": None}]
    assert got.stale == 3  # user 2's two offline values, user 1's realtime value (read once)
    assert got.user_ids == [2, 1, 3, 1]


def _model(types: dict[str, str]) -> LoadedModel:
    return LoadedModel(sources.ModelRef("models:/m/1", "1", None), None, list(types), types, 0.0)


def test_overrides_must_be_model_features_of_the_right_type() -> None:
    model = _model({"orders": "double", "platform": "string"})
    check_overrides(model, [Instance(user_id=1, overrides={"orders": 2, "platform": None}),
                            Instance(user_id=2, overrides={"orders": 2.5, "platform": "web"})])
    cases = [({"nope": 1}, "instances[0].nope: not a feature of the model (features: orders, platform)"),
             ({"orders": "2"}, "instances[0].orders: expected a number or null, got '2'"),
             ({"orders": True}, "instances[0].orders: expected a number or null, got True"),
             ({"orders": float("nan")}, "instances[0].orders: expected a number or null, got nan"),
             ({"platform": 3}, "instances[0].platform: expected a string or null, got 3")]
    for overrides, message in cases:
        with pytest.raises(InputError) as err:
            check_overrides(model, [Instance(user_id=1, overrides=overrides)])
        assert err.value.message == message
        assert err.value.field == message.split(":")[0]


def test_frame_types_follow_the_signature() -> None:
    model = _model({"orders": "double", "platform": "string"})
    df = model.frame([{"orders": 2, "platform": None}, {"orders": None, "platform": "web"}, {}])
    assert str(df["orders"].dtype) == "float64"
    assert df["orders"].isna().tolist() == [False, True, True]
    assert df["platform"].tolist() == [None, "web", None]


def test_request_model_and_error_fields() -> None:
    from pydantic import ValidationError

    from modelsvc.serving.app import PredictRequest, _field

    assert PredictRequest.model_validate({"user_ids": [1, 2]}).size() == 2
    inst = PredictRequest.model_validate({"instances": [{"user_id": 1, "orders": 3}]}).to_instances()
    assert inst == [Instance(user_id=1, overrides={"orders": 3})]
    for bad in ({}, {"user_ids": [1], "instances": []}, {"user_ids": ["1"]}, {"user_ids": [True]}):
        with pytest.raises(ValidationError):
            PredictRequest.model_validate(bad)
    assert _field(("body", "instances", 0, "user_id")) == "instances[0].user_id"
    assert _field(("body", "user_ids", 3)) == "user_ids[3]"
    assert _field(("body",)) == "body"


def test_holder_swaps_only_when_the_alias_moves_and_keeps_serving_on_errors(settings: Any,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from modelsvc.errors import NotFoundError

    refs = {"now": sources.ModelRef("models:/m/1", "1", "r1")}
    loads: list[str] = []

    def model_ref(settings: Any, run_id: Any = None) -> sources.ModelRef:
        ref = refs["now"]
        if ref is None:
            raise NotFoundError("registered model 'm' has no 'production' alias")
        return ref

    def load(cls: Any, settings: Any, ref: sources.ModelRef, quiet: bool = False) -> LoadedModel:
        loads.append(ref.version)
        if ref.version == "broken":
            raise RuntimeError("bad weights")
        return LoadedModel(ref, None, [], {}, 0.0)

    monkeypatch.setattr(sources, "model_ref", model_ref)
    monkeypatch.setattr(LoadedModel, "load", classmethod(load))
    swaps: list[tuple[Any, Any]] = []
    holder = ModelHolder(settings, on_swap=lambda old, new: swaps.append((old and old.version, new.version)))
    assert holder.refresh()
    assert holder.current is not None
    assert holder.current.version == "1"
    assert not holder.refresh()
    assert loads == ["1"]
    refs["now"] = sources.ModelRef("models:/m/2", "2", "r2")
    assert holder.refresh()
    assert holder.current.version == "2"
    refs["now"] = sources.ModelRef("models:/m/broken", "broken", "r3")
    assert not holder.refresh()
    assert holder.current.version == "2"
    assert holder.error == "model load failed: RuntimeError: bad weights"
    refs["now"] = None
    assert not holder.refresh()
    assert holder.current.version == "2"
    assert holder.error == "registered model 'm' has no 'production' alias"
    assert swaps == [(None, "1"), ("1", "2")]


def test_the_common_body_is_read_without_validation_and_every_other_like_the_request_model() -> None:
    from fastapi.exceptions import RequestValidationError

    from modelsvc.serving.app import parse_predict_body

    assert parse_predict_body(b'{"user_ids": [3, 1, 3]}') == ([Instance(user_id=3), Instance(user_id=1),
                                                               Instance(user_id=3)], "user_ids")
    assert parse_predict_body(b'{"user_ids": []}') == ([], "user_ids")
    assert parse_predict_body(b'{"instances": [{"user_id": 1, "orders": null}]}') == (
        [Instance(user_id=1, overrides={"orders": None})], "instances")
    cases = {b"{not json": "body", b"": "body", b"[1]": "body", b'{"user_ids": [1, true]}': "user_ids[1]",
             b'{"user_ids": [1.0]}': "user_ids[0]", b'{"user_ids": 5}': "user_ids", b'{"users": [1]}': "users",
             b'{"user_ids": [1], "instances": []}': "body", b'{"instances": [{"orders": 1}]}': "instances[0].user_id"}
    from modelsvc.serving.app import _field

    for body, field in cases.items():
        with pytest.raises(RequestValidationError) as err:
            parse_predict_body(body)
        first = err.value.errors()[0]
        assert (first["type"] == "json_invalid" and field == "body") or _field(tuple(first["loc"])) == field, body


def test_rows_go_to_a_model_that_takes_columns_without_a_frame() -> None:
    import numpy as np

    seen: list[tuple[dict[str, Any], int]] = []

    class Columns:
        def predict_columns(self, columns: dict[str, Any], n: int) -> Any:
            seen.append((columns, n))
            return np.full(n, 0.25, dtype="float32")

    class Pyfunc:
        def unwrap_python_model(self) -> Any:
            return Columns()

    model = LoadedModel(sources.ModelRef("models:/m/1", "1", None), Pyfunc(), ["orders", "platform"],
                        {"orders": "double", "platform": "string"}, 0.0)
    p = model.predict_rows([{"orders": 2, "platform": None}, {"orders": None, "platform": "web"}])
    assert p.dtype == np.float64
    assert p.tolist() == [0.25, 0.25]
    (columns, n), = seen
    assert n == 2
    assert columns["orders"].dtype == np.float64
    assert np.isnan(columns["orders"][1])
    assert columns["orders"][0] == 2.0
    assert columns["platform"].tolist() == [None, "web"]
