"""How modelsvc configures Ray Train's controller around one fit (no Ray needed)."""

from __future__ import annotations

import os

import pytest

from modelsvc.config import load_settings
from modelsvc.errors import ConfigError
from modelsvc.training.ray_runtime import POLL_INTERVAL_ENV
from modelsvc.training.ray_runtime import controller_env as _controller_env


def test_poll_interval_is_set_for_the_fit_only(monkeypatch):
    monkeypatch.delenv(POLL_INTERVAL_ENV, raising=False)
    settings = load_settings(None, ray={"poll_interval_s": 0.5})
    with _controller_env(settings):
        # Ray Train V2 copies this variable into its controller actor's runtime env when fit() starts it
        assert os.environ[POLL_INTERVAL_ENV] == "0.5"
    assert POLL_INTERVAL_ENV not in os.environ


def test_poll_interval_is_restored_when_the_fit_fails(monkeypatch):
    monkeypatch.delenv(POLL_INTERVAL_ENV, raising=False)
    with pytest.raises(RuntimeError), _controller_env(load_settings(None)):
        assert os.environ[POLL_INTERVAL_ENV] == "0.25"  # the default: Ray's own 2 s doubled short epochs
        raise RuntimeError("worker died")
    assert POLL_INTERVAL_ENV not in os.environ


def test_the_users_own_ray_variable_wins(monkeypatch):
    monkeypatch.setenv(POLL_INTERVAL_ENV, "3")
    with _controller_env(load_settings(None, ray={"poll_interval_s": 0.1})):
        assert os.environ[POLL_INTERVAL_ENV] == "3"
    assert os.environ[POLL_INTERVAL_ENV] == "3"


def test_poll_interval_must_be_positive():
    with pytest.raises(ConfigError, match="ray.poll_interval_s"):
        load_settings(None, ray={"poll_interval_s": 0})


@pytest.mark.parametrize(("setting", "address", "expected"), [
    ("auto", None, 0),  # embedded default: Ray Train's local mode, no Ray started
    ("auto", "ray://head:10001", 1),
    (0, "ray://head:10001", 0),
    (3, None, 3),
])
def test_num_workers_auto_is_local_mode_without_a_ray_address(monkeypatch, setting, address, expected):
    from modelsvc.training.ray_runtime import num_workers

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    settings = load_settings(None, scaling={"num_workers": setting}, ray={"address": address})
    assert num_workers(settings) == expected


def test_num_workers_takes_auto_or_a_count_from_the_environment(monkeypatch):
    monkeypatch.setenv("MODELSVC_SCALING__NUM_WORKERS", "0")
    assert load_settings(None).scaling.num_workers == 0
    monkeypatch.setenv("MODELSVC_SCALING__NUM_WORKERS", "auto")
    assert load_settings(None).scaling.num_workers == "auto"
    monkeypatch.setenv("MODELSVC_SCALING__NUM_WORKERS", "-1")
    with pytest.raises(ConfigError, match="scaling.num_workers"):
        load_settings(None)


def test_local_mode_refuses_a_gpu_torch_cannot_see():
    import torch

    from modelsvc.training.ray_runtime import local_use_gpu

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert local_use_gpu(load_settings(None, scaling={"use_gpu": "auto"})) is False
    assert local_use_gpu(load_settings(None, scaling={"use_gpu": False})) is False
    with pytest.raises(ConfigError, match="training needs 1 GPU"):
        local_use_gpu(load_settings(None, scaling={"use_gpu": True}))
