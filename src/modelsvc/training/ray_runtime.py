"""Ray for training: how many workers (0: Ray Train's local mode), start or join Ray, decide ``use_gpu``, check the
workers' resources, and the controller's environment around one ``fit``. The driver's progress sink lives here too.

Local mode (``ScalingConfig(num_workers=0)``, Ray Train V2): ``fit`` calls the training function in this process
through the same ``ray.train`` API (context, ``get_device``, ``prepare_model``, ``report``) with no controller, no
worker actors and no ``ray.init``. What Ray's local mode does not do, read from the installed ray's
``train/v2/_internal/execution/local_mode``: it keeps the reported checkpoint in memory only (``RunConfig`` storage
is not written, ``Result.path`` is None), ``get_checkpoint()`` starts as None (no resume), and a failure is not
retried. modelsvc adds those three (``modelsvc.training.worker`` persists the checkpoint under the run's storage
folder; ``trainer.fit_workers`` retries up to ``training.max_failures``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from modelsvc.config import Settings
from modelsvc.errors import ConfigError, ServiceUnavailableError
from modelsvc.progress import NULL, Reporter

T = TypeVar("T")
R = TypeVar("R")
POLL_INTERVAL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"  # Ray Train V2 propagates it to its controller actor


def num_workers(settings: Settings) -> int:
    """``scaling.num_workers`` resolved: ``auto`` is 0 (local mode, measured: docs/performance.md) when no Ray
    address is configured, else 1."""
    n = settings.scaling.num_workers
    if n == "auto":
        return 0 if settings.ray_address() is None else 1
    return int(n)


def local_use_gpu(settings: Settings) -> bool:
    """``scaling.use_gpu`` for local mode (no Ray to ask): ``auto`` is whether torch sees a CUDA device."""
    import torch

    available = torch.cuda.is_available()
    if settings.scaling.use_gpu == "auto":
        return available
    if settings.scaling.use_gpu and not available:
        raise ConfigError("training needs 1 GPU (torch sees none) for scaling.num_workers=0: "
                          "set scaling.use_gpu to auto or false")
    return bool(settings.scaling.use_gpu)


@contextmanager
def local_mode(settings: Settings) -> Iterator[None]:
    """For the duration of one local-mode ``fit``: torch uses ``scaling.cpus_per_worker`` threads, as a Ray worker
    does (Ray sets its ``OMP_NUM_THREADS``; torch's default of one thread per core made the demo's epochs 20-40x
    slower on a busy 2-core machine), and Ray Train's INFO line per report stays off the user's terminal."""
    import torch

    log = logging.getLogger("ray.train")
    level, threads = log.level, torch.get_num_threads()
    log.setLevel(logging.WARNING)
    torch.set_num_threads(max(1, int(settings.scaling.cpus_per_worker)))
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        log.setLevel(level)


def ensure_ray(settings: Settings) -> None:
    """Join ``settings.ray_address()``, or start a local Ray (quiet, no dashboard); a no-op when Ray is up."""
    import ray

    if ray.is_initialized():
        return
    address = settings.ray_address()
    quiet: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False, "configure_logging": True}
    if address:
        require_ray_cluster(settings)  # fail within ray.connect_timeout_s (69), never wait without end
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

    workers = num_workers(settings)
    need = {"CPU": workers * settings.scaling.cpus_per_worker}
    if use_gpu:
        need["GPU"] = float(workers)
    have = ray.cluster_resources()
    short = [f"{n:g} {k} (Ray has {float(have.get(k, 0)):g})" for k, n in need.items() if float(have.get(k, 0)) < n]
    if not short:
        return
    what = f"training needs {' and '.join(short)} for scaling.num_workers={workers}"
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
    """Rank 0 puts each epoch's metrics, the driver polls them. With workers it is a Ray actor owned by the driver
    (works the same on a local Ray and on a cluster, and survives worker restarts); in local mode a plain object
    shared by the training function and the driver's polling thread (list appends and slices are atomic)."""

    def __init__(self) -> None:
        self._epochs: list[dict[str, Any]] = []

    def put(self, data: dict[str, Any]) -> None:
        self._epochs.append(data)

    def since(self, n: int) -> list[dict[str, Any]]:
        return self._epochs[n:]


# -- work spread over actors (batch scoring) -------------------------------------------------------------------

class _SetUpOnce:
    """A Ray actor's body: ``setup()`` once (e.g. load a model), then ``work(state, item)`` per item sent to it.

    A failed ``setup`` is raised by ``run``, not by ``__init__``: Ray reports an actor whose creation failed as an
    ``ActorDiedError`` that keeps only the text of the error, while a task's error arrives as itself."""

    def __init__(self, setup: Callable[[], Any]) -> None:
        self.state: Any = None
        self.error: Exception | None = None
        try:
            self.state = setup()
        except Exception as exc:
            self.error = exc

    def run(self, work: Callable[[Any, Any], Any], item: Any) -> tuple[Any, Any]:
        if self.error is not None:
            raise self.error
        return item, work(self.state, item)


def map_on_actors(settings: Settings, setup: Callable[[], Any], work: Callable[[Any, Any], R], items: Sequence[T],
                  *, actors: int = 0, what: str = "work",
                  on_start: Callable[[int], Any] | None = None) -> Iterator[tuple[T, R]]:
    """Join or start Ray (:func:`ensure_ray`), start ``actors`` actors of 1 CPU (0: one per CPU of the cluster;
    never more than ``items``; ``on_start`` is told how many), each calling ``setup()`` once, and hand out
    ``items`` to them, the next to the first free actor. Yields ``(item, work(state, item))`` as results come
    (any order). ``setup`` and ``work`` are module-level functions (or partials of them: pickled by reference, the
    workers import modelsvc, as Ray Train's do).

    A ModelsvcError raised by an actor is raised again here as itself; any other failure of an actor or a task is a
    RetryableError (75) naming ``what`` and its cause. The actors are stopped when the iteration ends."""
    import ray
    from ray.util import ActorPool

    if not items:
        return
    ensure_ray(settings)
    n = actors or max(1, int(float(ray.cluster_resources().get("CPU", 1))))
    handles: list[Any] = [ray.remote(num_cpus=1)(_SetUpOnce).remote(setup) for _ in range(min(n, len(items)))]
    if on_start is not None:
        on_start(len(handles))
    pool = ActorPool(handles)
    try:
        for item in items:
            pool.submit(lambda actor, it: actor.run.remote(work, it), item)
        while pool.has_next():
            try:
                yield pool.get_next_unordered()
            except ray.exceptions.RayError as exc:
                raise _actor_error(exc, what) from None
    finally:
        for handle in handles:
            ray.kill(handle)


def _actor_error(exc: BaseException, what: str) -> BaseException:
    import ray

    from modelsvc.errors import ModelsvcError, RetryableError

    # RayTaskError.cause is the task's exception; RayActorError.cause the actor's creation error (a RayTaskError)
    inner: Any = exc
    for _ in range(5):
        if isinstance(inner, ModelsvcError) and not isinstance(inner, ray.exceptions.RayError):
            return inner
        inner = getattr(inner, "cause", None)
        if inner is None:
            break
    return RetryableError(f"{what} on Ray failed: {cause(exc)}")


# -- where Ray Train keeps checkpoints and run state ----------------------------------------------------------


def storage_location(settings: Settings) -> str:
    """``ray.storage_path`` (default ``<root>/ray``), checked: a supported scheme, and on an object store a
    bucket that exists and takes our credentials, so a bad location fails at once with one line (66, 69, 77)
    instead of a retryable training failure (75) that a CronJob would keep retrying."""
    from modelsvc import storage

    location = storage.check_location(settings.ray_storage_path(), setting="ray.storage_path")
    storage.require_bucket(location, setting="ray.storage_path")
    return location


def run_config_storage(location: str) -> dict[str, Any]:
    """``RunConfig`` keywords for a storage location: a local folder as a path; a URI as the path inside
    modelsvc's own pyarrow filesystem (``storage.filesystem``), so Ray Train's controller and workers use the
    same endpoint (``AWS_ENDPOINT_URL``) and bounded retries. The filesystem travels to them pickled without
    credentials (they come from each node's own AWS_* variables or instance role)."""
    from modelsvc import storage

    if not storage.is_uri(location):
        local = storage.local_path(location)
        return {"storage_path": str(local.absolute() if local is not None else location)}
    fs, inner = storage.filesystem(location)
    return {"storage_path": inner, "storage_filesystem": fs}


# -- readiness check (modelsvc doctor) -------------------------------------------------------------------------

RAY_FIX = "start the cluster (ray start --head) or fix ray.address / RAY_ADDRESS"
_RAY_PROBE = """
import json, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
res = ray.cluster_resources()
nodes = [n for n in ray.nodes() if n.get("Alive")]
print(json.dumps({"nodes": len(nodes), "cpus": res.get("CPU", 0), "gpus": res.get("GPU", 0),
                  "version": ray.__version__}))
ray.shutdown()
"""


def check(settings: Settings, timeout: float) -> str:
    """Ray is installed; without an address the local Ray (or local mode) is used; a cluster address answers."""
    import importlib.util
    from urllib.parse import urlparse

    from modelsvc.health import CheckOutcome, tcp

    if importlib.util.find_spec("ray") is None:
        raise CheckOutcome("fail", "ray is not installed", fix="pip install 'ray[train,data]'")
    address = settings.ray_address()
    if not address:
        cpus = settings.ray.num_cpus or os.cpu_count() or 1
        from importlib.metadata import version

        return f"local Ray {version('ray')} (started on demand): {cpus} CPUs"
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    if address != "auto" and parsed.hostname and parsed.port:
        tcp(parsed.hostname, parsed.port, timeout, "Ray cluster")
    return _probe_cluster(address, timeout)


def require_ray_cluster(settings: Settings) -> None:
    """The doctor's Ray check, before joining a cluster: ``ray.init`` on an unreachable address waits without end,
    so raise ServiceUnavailableError (69) when ``ray.address`` does not answer within ``ray.connect_timeout_s``."""
    from modelsvc.health import CheckOutcome

    try:
        check(settings, settings.ray.connect_timeout_s)
    except CheckOutcome as out:
        raise ServiceUnavailableError(f"{out.detail} (ray.connect_timeout_s={settings.ray.connect_timeout_s:g})",
                                      hint=out.fix or RAY_FIX) from None


def _probe_cluster(address: str, timeout: float) -> str:
    # a child process: ray.init can block for long on a bad address, and must not join this process to a cluster
    import json
    import subprocess
    import sys

    from modelsvc.health import CheckOutcome

    try:
        out = subprocess.run([sys.executable, "-c", _RAY_PROBE, address], capture_output=True, text=True,
                             timeout=max(1.0, timeout - 1.0), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise CheckOutcome("fail", f"Ray cluster at {address}: no answer within {timeout:g}s") from None
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        err = [line for line in out.stderr.strip().splitlines() if line.strip()]
        raise CheckOutcome("fail", f"Ray cluster at {address}: {err[-1][:200] if err else 'connection failed'}")
    info = json.loads(lines[-1])
    return (f"cluster {address}: {info['nodes']} nodes, {info['cpus']:g} CPUs, {info['gpus']:g} GPUs "
            f"(Ray {info['version']})")


def shutdown_ray(log: Callable[[str], None] | None = None) -> None:
    """Stop the Ray this process started or joined (after an interrupt); nothing when ray was never imported."""
    import sys

    if "ray" not in sys.modules:
        return
    import ray

    if ray.is_initialized():
        if log:
            log("stopping Ray")
        ray.shutdown()
