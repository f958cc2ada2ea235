"""Ray for training: start or join Ray, decide ``use_gpu``, check the workers' resources, and the controller's
environment around one ``fit``. The driver's progress actor lives here too."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from modelsvc.config import Settings
from modelsvc.errors import ConfigError, ServiceUnavailableError
from modelsvc.progress import NULL, Reporter

POLL_INTERVAL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"  # Ray Train V2 propagates it to its controller actor


def ensure_ray(settings: Settings) -> None:
    """Join ``settings.ray_address()``, or start a local Ray (quiet, no dashboard); a no-op when Ray is up."""
    import ray

    if ray.is_initialized():
        return
    address = settings.ray_address()
    quiet: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False, "configure_logging": True}
    if address:
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, TimeoutError, RuntimeError) as exc:
            raise ServiceUnavailableError(f"Ray cluster at {address} is unreachable ({exc})") from None
    else:
        # Ray's notice that it turned token auth on for the local Ray is good news, not a warning for our users;
        # its warning that auth is *off* still shows
        logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
            lambda record: "Token authentication is enabled" not in record.getMessage())
        ray.init(num_cpus=settings.ray.num_cpus or os.cpu_count(), include_dashboard=False, **quiet)


def use_gpu(settings: Settings) -> bool:
    """``scaling.use_gpu``, with ``auto`` resolved from the cluster's resources."""
    import ray

    if settings.scaling.use_gpu == "auto":
        return float(ray.cluster_resources().get("GPU", 0)) > 0
    return bool(settings.scaling.use_gpu)


def prepare_ray(settings: Settings, reporter: Reporter = NULL) -> bool:
    """Start or join Ray, decide ``use_gpu`` and check the workers' resources (see :func:`check_resources`);
    returns ``use_gpu``."""
    ensure_ray(settings)
    gpu = use_gpu(settings)
    check_resources(settings, gpu, reporter)
    return gpu


def check_resources(settings: Settings, use_gpu: bool, reporter: Reporter) -> None:
    """Ray Train waits, silently and without end, for resources a fixed cluster never gets: refuse at once on the
    local Ray modelsvc started; on a cluster (which may autoscale) say what the training waits for."""
    import ray

    scaling = settings.scaling
    need = {"CPU": scaling.num_workers * scaling.cpus_per_worker}
    if use_gpu:
        need["GPU"] = float(scaling.num_workers)
    have = ray.cluster_resources()
    short = [f"{n:g} {k} (Ray has {float(have.get(k, 0)):g})" for k, n in need.items() if float(have.get(k, 0)) < n]
    if not short:
        return
    what = f"training needs {' and '.join(short)} for scaling.num_workers={scaling.num_workers}"
    if settings.ray_address() is None:
        raise ConfigError(f"{what}: lower scaling.num_workers / scaling.cpus_per_worker"
                          f"{', set scaling.use_gpu to auto or false' if 'GPU' in what else ''}"
                          " or raise ray.num_cpus")
    reporter.log(f"{what}: waiting for the cluster to provide them")


@contextmanager
def controller_env(settings: Settings) -> Iterator[None]:
    """The controller's poll interval (``ray.poll_interval_s``) for the duration of one ``fit``; Ray's default of
    2 s made a 1 s epoch take 2 s, because each checkpoint report waits for the next poll."""
    if POLL_INTERVAL_ENV in os.environ:  # the user's own Ray setting wins
        yield
        return
    os.environ[POLL_INTERVAL_ENV] = str(settings.ray.poll_interval_s)
    try:
        yield
    finally:
        os.environ.pop(POLL_INTERVAL_ENV, None)


def cause(exc: BaseException) -> str:
    """The most specific one-line reason found in a (possibly nested, multi-line) Ray error."""
    text = str(exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception)\b:", ln):
            return ln[:300]
    return (lines[0] if lines else type(exc).__name__)[:300]


class ProgressSink:
    """A Ray actor owned by the driver: rank 0 puts each epoch's metrics, the driver polls them (works the same on
    a local Ray and on a cluster, and survives worker restarts)."""

    def __init__(self) -> None:
        self._epochs: list[dict[str, Any]] = []

    def put(self, data: dict[str, Any]) -> None:
        self._epochs.append(data)

    def since(self, n: int) -> list[dict[str, Any]]:
        return self._epochs[n:]
