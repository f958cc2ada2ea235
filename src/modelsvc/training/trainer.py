"""``train``: fit the preprocessor, run the loop under Ray Train V2, log one MLflow run with the pyfunc model.

A training is named after the dataset version and a hash of the settings that shape it, so running the same
training again resumes it from its latest checkpoint (same Ray ``RunConfig(name, storage_path)``) and continues
the same MLflow run (its id is kept in ``<storage>/<run name>/modelsvc_run.json``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from modelsvc.config import Settings, mask_uri
from modelsvc.dataset import CATEGORICAL_FEATURES, FEATURES, NUMERIC_FEATURES, DatasetManifest, load_dataset
from modelsvc.errors import DataError, RetryableError
from modelsvc.progress import NULL, Reporter
from modelsvc.tracking import map_tracking_errors
from modelsvc.training.ray_runtime import (
    ProgressSink,
    cause,
    controller_env,
    local_mode,
    local_use_gpu,
    num_workers,
    prepare_ray,
    run_config_storage,
    storage_location,
)
from modelsvc.training.result import EpochMetrics, TrainResult
from modelsvc.training.run_log import RunState

if TYPE_CHECKING:
    from modelsvc.training.tracker import RunTracker

FAIL_AT_EPOCH_ENV = "MODELSVCTEST_FAIL_AT_EPOCH"  # test hook: a worker fails once at this epoch
FAIL_AFTER_LOG_ENV = "MODELSVCTEST_FAIL_AFTER_LOG_EPOCH"  # [ops] test hook: fail once after handing this epoch
_HASH_EXCLUDE = {"training": {"max_failures", "resident_max_bytes"}}


@map_tracking_errors
def train(settings: Settings, *, dataset: str | None = None, version: str | None = None,
          reporter: Reporter | None = None, tracker: RunTracker | None = None) -> TrainResult:
    """Train on a dataset version (default: the latest of ``settings.dataset.name``); see the module doc.
    ``tracker``: a started :mod:`modelsvc.training.tracker` to log through (``run`` keeps one for its steps);
    default one of its own."""
    from modelsvc.training.tracker import start_tracker

    reporter = reporter or NULL
    t_start = time.perf_counter()
    storage = storage_location(settings)  # a bad location fails at once, before the data is read
    if tracker is not None:
        return _train(settings, tracker, storage, dataset, version, reporter, t_start)
    # MLflow's side (import, experiment, run, model logging) in a child process meanwhile: modelsvc.training.tracker
    own = start_tracker(settings)
    try:
        return _train(settings, own, storage, dataset, version, reporter, t_start)
    finally:
        own.close()


def _train(settings: Settings, tracker: RunTracker, storage: str, dataset: str | None, version: str | None,
           reporter: Reporter, t_start: float) -> TrainResult:
    manifest = load_dataset(settings, dataset, version)
    pre, train_rows = _fit_preprocessor(manifest)
    run_name = run_name_for(settings, manifest)
    run_state = RunState(storage, run_name)
    stored = run_state.read()
    workers = num_workers(settings)
    use_gpu: bool | None = None
    if not stored.get("result"):  # a training to run: what it imports first, while the child opens the experiment
        if workers == 0:
            use_gpu = local_use_gpu(settings)  # imports torch
        _import_training()

    # One MLflow run per training; a rerun continues it.
    found = tracker.lookup(stored.get("mlflow_run_id"), bool(stored.get("result")))
    experiment_id, run_id = str(found["experiment_id"]), found["run_id"]
    if found["finished"]:
        reporter.log(f"training {run_name} already finished: MLflow run {run_id}")
        return TrainResult.model_validate(stored["result"])
    if use_gpu is None:  # before there is a run to mark FAILED
        use_gpu = local_use_gpu(settings) if workers == 0 else prepare_ray(settings, reporter)
    resumed = run_id is not None
    try:  # [ops] no path leaves the run RUNNING: KILLED for Ctrl-C / SIGTERM, FAILED otherwise
        opened = tracker.open(run_name, manifest, run_id, pre.to_dict())
        if run_id is None:
            run_state.write({"mlflow_run_id": opened, "tracking_uri": mask_uri(settings.tracking_uri())})
        else:
            reporter.log(f"resuming training {run_name} (MLflow run {run_id})")
        run_id = opened
        result, state = fit_workers(settings, manifest, pre, train_rows, run_name, tracker, reporter,
                                    use_gpu=use_gpu)
        history = [EpochMetrics(**{k: h[k] for k in EpochMetrics.model_fields}) for h in state["history"]]
        best = min(history, key=lambda h: h.val_loss)
        uses_gpu = result.metrics.get("device", "cpu") == "cuda" if result.metrics else False
        tracker.finish({k: state.get(k) for k in ("history", "best_state", "workers", "data_path", "stopped")},
                       history, best)
    except BaseException as exc:
        from modelsvc import interrupts

        tracker.end("KILLED" if interrupts.is_interrupt(exc) else "FAILED")
        raise

    out = TrainResult(
        run_id=run_id,
        experiment_id=experiment_id,
        model_uri=f"runs:/{run_id}/model",
        ray_run_name=run_name,
        ray_storage_path=storage,
        dataset_name=manifest.name,
        dataset_version=manifest.version,
        dataset_fingerprint=manifest.fingerprint,
        metrics={
            "train_loss": best.train_loss,
            "val_loss": best.val_loss,
            "val_auc": best.val_auc,
            "samples_per_s": sorted(h.samples_per_s for h in history)[len(history) // 2],
        },
        best_epoch=best.epoch,
        epochs_run=len(history),
        stopped_early=bool(state["stopped"]),
        resumed=resumed,
        data_path=str(state.get("data_path", "resident")),
        device="cuda" if uses_gpu else "cpu",
        num_workers=workers,
        wall_s=time.perf_counter() - t_start,
        history=history,
    )
    run_state.write({**run_state.read(), "result": out.model_dump(mode="json")})
    return out


def _import_training() -> None:
    """Import Ray Train's TorchTrainer (about 1 s on 2 cores) ahead of ``fit_workers``: ``train`` does it while
    the tracker's child imports MLflow."""
    import ray.train.torch  # noqa: F401

    import modelsvc.training.worker  # noqa: F401


# -- naming ----------------------------------------------------------------------------------------------------
def config_hash(settings: Settings, manifest: DatasetManifest) -> str:
    """Hash of everything that shapes the trained weights (not max_failures or the memory budget)."""
    shaping = {
        "dataset": {"name": manifest.name, "version": manifest.version, "fingerprint": manifest.fingerprint},
        "training": settings.training.model_dump(mode="json", exclude=_HASH_EXCLUDE["training"]),
        "model": settings.model.model_dump(mode="json"),
        "scaling": settings.scaling.model_dump(mode="json"),
        "label": settings.dataset.label,
    }
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:10]


def run_name_for(settings: Settings, manifest: DatasetManifest) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{manifest.name}-{manifest.version}")
    return f"{base}-{config_hash(settings, manifest)}"


# -- preprocessing ---------------------------------------------------------------------------------------------
def _fit_preprocessor(manifest: DatasetManifest) -> tuple[Any, int]:
    """Fit on the train split only; check the dataset has what training needs."""
    from modelsvc.dataset import count_rows, open_file, read_dataset
    from modelsvc.training.preprocessing import Preprocessor

    schema = open_file(manifest.location_of(manifest.data_files()[0])).schema_arrow
    missing = [c for c in [*FEATURES, manifest.label, "split"] if c not in schema.names]
    if missing:
        raise DataError(f"dataset {manifest.name}/{manifest.version} lacks column(s): {', '.join(missing)}")
    train_df = read_dataset(manifest, split="train", columns=FEATURES)
    if train_df.empty:
        raise DataError(f"dataset {manifest.name}/{manifest.version} has no train rows")
    val_rows = count_rows(manifest, "validation")
    if val_rows == 0:
        raise DataError(f"dataset {manifest.name}/{manifest.version} has no validation rows (needed to stop early)")
    pre = Preprocessor.fit(train_df, NUMERIC_FEATURES, CATEGORICAL_FEATURES)
    return pre, len(train_df)


# -- Ray Train -------------------------------------------------------------------------------------------------
LOCAL_CHECKPOINT_DIR = "local_checkpoint"  # local mode: <storage>/<run name>/local_checkpoint/state.pt


def fit_workers(settings: Settings, manifest: DatasetManifest, pre: Any, train_rows: int, run_name: str,
                tracker: RunTracker | None, reporter: Reporter = NULL, *,
                use_gpu: bool | None = None) -> tuple[Any, dict[str, Any]]:
    """The Ray Train part of ``train``: run the workers (or, with ``scaling.num_workers`` resolving to 0, the
    training function in this process), return (Ray result, latest checkpoint state). Each epoch goes to
    ``tracker`` (the MLflow run, opened).

    With ``tracker=None`` nothing is logged to MLflow (the GPU benchmark runs it where MLflow is not installed).
    ``use_gpu`` from :func:`prepare_ray` (or ``local_use_gpu``) when the caller already ran it; otherwise here.
    """
    from modelsvc.training.loop import load_state
    from modelsvc.training.worker import WorkerConfig, read_state_file

    workers = num_workers(settings)
    local = workers == 0
    if use_gpu is None:
        use_gpu = local_use_gpu(settings) if local else prepare_ray(settings, reporter)
    fail_at = os.environ.get(FAIL_AT_EPOCH_ENV)
    t = settings.training
    config = WorkerConfig(
        dataset=manifest, label=manifest.label, preprocessor=pre.to_dict(), model=settings.model,
        train_rows=train_rows, lr=t.lr, weight_decay=t.weight_decay, batch_size=t.batch_size, epochs=t.epochs,
        seed=t.seed, patience=t.early_stopping_patience, min_delta=t.min_delta, data_path_mode=t.data_path,
        resident_max_bytes=t.resident_max_bytes, use_gpu=use_gpu if local else None,
        checkpoint_uri=_local_checkpoint_uri(settings, run_name) if local else None,
        fail_at_epoch=int(fail_at) if fail_at else None,
        fail_after_log_epoch=int(os.environ[FAIL_AFTER_LOG_ENV]) if os.environ.get(FAIL_AFTER_LOG_ENV) else None)
    try:
        with _live_epochs(tracker, t.epochs, reporter, local=local) as sink:
            config = config.model_copy(update={"progress_sink": sink})
            if local:
                with local_mode(settings):
                    result = _fit_local(config, run_name, t.max_failures, reporter)
            else:
                result = _fit_ray(settings, config, run_name, workers, use_gpu)
    except Exception as exc:
        raise RetryableError(
            f"training run '{run_name}' failed: {cause(exc)}",
            hint="run the same command again to resume from the last checkpoint",
        ) from exc
    state = read_state_file(config.checkpoint_uri) if config.checkpoint_uri else None
    if state is None and result.checkpoint is not None and not local:
        with result.checkpoint.as_directory() as d:
            state = load_state(d)
    if state is None:
        raise RetryableError(f"training run '{run_name}' finished without a checkpoint")
    return result, state


def _local_checkpoint_uri(settings: Settings, run_name: str) -> str:
    from modelsvc import storage

    return storage.join(settings.ray_storage_path(), run_name, LOCAL_CHECKPOINT_DIR)


def _trainer(config: Any, run_name: str, scaling: Any, run_config: Any = None) -> Any:
    from ray.train import RunConfig
    from ray.train.torch import TorchTrainer

    from modelsvc.training.worker import train_loop_per_worker

    return TorchTrainer(
        train_loop_per_worker,
        # a dict, as Ray Train passes it; the worker validates it back into a WorkerConfig
        train_loop_config=dict(config),
        scaling_config=scaling,
        run_config=run_config or RunConfig(name=run_name),
    )


def _fit_ray(settings: Settings, config: Any, run_name: str, workers: int, use_gpu: bool) -> Any:
    """Workers as Ray actors: Ray Train persists checkpoints under the storage path, resumes and retries."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

    resources = {"CPU": settings.scaling.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = 1
    trainer = _trainer(
        config, run_name,
        ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources),
        RunConfig(
            name=run_name,
            **run_config_storage(storage_location(settings)),
            failure_config=FailureConfig(max_failures=settings.training.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    with controller_env(settings):
        return trainer.fit()


def _fit_local(config: Any, run_name: str, max_failures: int, reporter: Reporter) -> Any:
    """Ray Train's local mode: the training function in this process, no Ray started. Its local mode neither
    persists checkpoints nor retries (see ``ray_runtime``): the worker persists its state file
    (``config.checkpoint_uri``) and this retries up to ``max_failures`` times, each attempt resuming from it."""
    from ray.train import ScalingConfig

    attempt = 0
    while True:
        try:
            return _trainer(config, run_name, ScalingConfig(num_workers=0)).fit()
        except Exception as exc:
            if attempt >= max_failures:
                raise
            attempt += 1
            reporter.log(f"training failed ({cause(exc)}); resuming from the last checkpoint "
                         f"(retry {attempt} of {max_failures})")


@contextmanager
def _live_epochs(tracker: RunTracker | None, epochs: int, reporter: Reporter, *,
                 local: bool = False) -> Iterator[Any]:
    """While ``fit`` blocks: show rank 0's epochs through the reporter and hand them to ``tracker`` to log (workers
    import no MLflow, and credentials stay with the driver). An epoch marked ``mlflow_logged`` is not logged again.
    ``local``: the sink is a plain object in this process (local mode, no Ray), else a Ray actor."""
    if local:
        sink: Any = ProgressSink()
    else:
        import ray

        sink = ray.remote(num_cpus=0)(ProgressSink).remote()
    stop = threading.Event()
    with reporter.task("training", total=epochs) as task:

        def drain(seen: int) -> int:
            try:
                new = sink.since(seen) if local else ray.get(sink.since.remote(seen), timeout=10)
            except Exception:
                return seen
            for data in new:
                task.update(completed=int(data["epoch"]) + 1, loss=data["train_loss"], val_loss=data["val_loss"],
                            val_auc=data["val_auc"], samples_per_s=round(data["samples_per_s"]))
                if tracker is not None and not data.get("mlflow_logged"):
                    with contextlib.suppress(Exception):  # finish logs any epoch still missing
                        tracker.epoch(data)
            return seen + len(new)

        def poll() -> None:
            seen = 0
            while not stop.wait(0.5):
                seen = drain(seen)
            drain(seen)

        thread = threading.Thread(target=poll, name="modelsvc-progress", daemon=True)
        thread.start()
        try:
            yield sink
        finally:
            stop.set()
            thread.join()
            if not local:
                with contextlib.suppress(Exception):
                    ray.kill(sink)


# -- [ops] no MLflow run left RUNNING --------------------------------------------------------------------------
def end_orphaned_runs(client: Any, experiment_id: str, run_name: str, keep: str | None) -> None:
    """Mark FAILED the runs of this training still RUNNING that no process continues: an attempt killed with
    SIGKILL, or one that died before its id was recorded. (The data-root lock keeps a second modelsvc from
    training the same run name meanwhile.)"""
    with contextlib.suppress(Exception):
        runs = client.search_runs([experiment_id], filter_string=f"tags.`modelsvc.ray_run_name` = '{run_name}' "
                                  "and attributes.status = 'RUNNING'", max_results=100)
        for run in runs:
            if run.info.run_id != keep:
                client.set_terminated(run.info.run_id, "FAILED")
