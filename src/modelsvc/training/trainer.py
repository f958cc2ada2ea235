"""``train``: fit the preprocessor, run the loop under Ray Train V2, log one MLflow run with the pyfunc model.

A training is named after the dataset version and a hash of the settings that shape it, so running the same
training again resumes it from its latest checkpoint (same Ray ``RunConfig(name, storage_path)``) and continues
the same MLflow run (its id is kept in ``<storage>/<run name>/modelsvc_run.json``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from modelsvc import __version__
from modelsvc.config import Settings, mask_uri
from modelsvc.dataset import CATEGORICAL_FEATURES, FEATURES, NUMERIC_FEATURES, DatasetManifest, load_dataset
from modelsvc.errors import ConfigError, DataError, RetryableError, ServiceUnavailableError
from modelsvc.progress import NULL, Reporter
from modelsvc.tracking import map_tracking_errors
from modelsvc.training.result import EpochMetrics, TrainResult

RUN_STATE_FILE = "modelsvc_run.json"
EPOCH_METRICS = ("train_loss", "val_loss", "val_auc", "samples_per_s", "epoch_time_s")  # logged per epoch (step)
FAIL_AT_EPOCH_ENV = "MODELSVCTEST_FAIL_AT_EPOCH"  # test hook: a worker fails once at this epoch
FAIL_AFTER_LOG_ENV = "MODELSVCTEST_FAIL_AFTER_LOG_EPOCH"  # [ops] test hook: fail once after logging this epoch
_HASH_EXCLUDE = {"training": {"max_failures", "resident_max_bytes"}}


@map_tracking_errors
def train(settings: Settings, *, dataset: str | None = None, version: str | None = None,
          reporter: Reporter | None = None) -> TrainResult:
    """Train on a dataset version (default: the latest of ``settings.dataset.name``); see the module doc."""
    reporter = reporter or NULL
    t_start = time.perf_counter()
    manifest = load_dataset(settings, dataset, version)
    pre, train_rows = _fit_preprocessor(manifest)
    run_name = run_name_for(settings, manifest)
    storage = settings.ray_storage_path()
    run_state = _RunState(storage, run_name)

    # One MLflow run per training; a rerun continues it.
    from modelsvc.tracking import ensure_experiment, mlflow_client

    experiment_id = ensure_experiment(settings)
    client = mlflow_client(settings)
    stored = run_state.read()
    run_id = _existing_run(client, stored.get("mlflow_run_id"))
    if run_id and stored.get("result") and client.get_run(run_id).info.status == "FINISHED":
        reporter.log(f"training {run_name} already finished: MLflow run {run_id}")
        return TrainResult.model_validate(stored["result"])
    use_gpu = prepare_ray(settings, reporter)  # before there is a run to mark FAILED
    resumed = run_id is not None
    _end_orphaned_runs(client, experiment_id, run_name, keep=run_id)  # [ops] SIGKILLed earlier attempts
    with _ends_run_on_failure(client) as open_run:  # [ops] no path leaves the run RUNNING
        if run_id is None:
            run_id = _create_run(client, settings, experiment_id, run_name, manifest, open_run)
            run_state.write({"mlflow_run_id": run_id, "tracking_uri": mask_uri(settings.tracking_uri())})
        else:
            open_run.append(run_id)
            client.update_run(run_id, status="RUNNING")
            reporter.log(f"resuming training {run_name} (MLflow run {run_id})")

        result, state = fit_workers(settings, manifest, pre, train_rows, run_name, run_id, reporter,
                                    use_gpu=use_gpu)
        history = [EpochMetrics(**{k: h[k] for k in EpochMetrics.model_fields}) for h in state["history"]]
        best = min(history, key=lambda h: h.val_loss)
        uses_gpu = result.metrics.get("device", "cpu") == "cuda" if result.metrics else False
        _log_missing_epochs(client, run_id, state["history"])
        _log_model_and_finish(settings, client, run_id, manifest, pre, state, history, best)

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
        num_workers=settings.scaling.num_workers,
        wall_s=time.perf_counter() - t_start,
        history=history,
    )
    run_state.write({**run_state.read(), "result": out.model_dump(mode="json")})
    return out


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


class _RunState:
    """A small JSON file beside the Ray run's checkpoints (local path or any pyarrow filesystem URI)."""

    def __init__(self, storage: str, run_name: str) -> None:
        import pyarrow.fs as pafs

        if "://" not in storage:
            storage = str(Path(storage).resolve())
        self.fs, root = pafs.FileSystem.from_uri(storage)
        self.dir = f"{root.rstrip('/')}/{run_name}"
        self.path = f"{self.dir}/{RUN_STATE_FILE}"

    def read(self) -> dict[str, Any]:
        try:
            with self.fs.open_input_stream(self.path) as f:
                return dict(json.loads(f.read().decode()))
        except (FileNotFoundError, OSError, ValueError):
            return {}

    def write(self, data: dict[str, Any]) -> None:
        self.fs.create_dir(self.dir, recursive=True)
        with self.fs.open_output_stream(self.path) as f:
            f.write(json.dumps(data, indent=2).encode())


# -- preprocessing ---------------------------------------------------------------------------------------------
def _fit_preprocessor(manifest: DatasetManifest) -> tuple[Any, int]:
    """Fit on the train split only; check the dataset has what training needs."""
    import pyarrow.parquet as pq

    from modelsvc.dataset import read_dataset
    from modelsvc.training.preprocessing import Preprocessor

    try:
        schema = pq.read_schema(manifest.data_path)
    except FileNotFoundError:
        from modelsvc.errors import NotFoundError

        raise NotFoundError(f"dataset file {manifest.data_path} is missing") from None
    missing = [c for c in [*FEATURES, manifest.label, "split"] if c not in schema.names]
    if missing:
        raise DataError(f"dataset {manifest.name}/{manifest.version} lacks column(s): {', '.join(missing)}")
    train_df = read_dataset(manifest, split="train", columns=FEATURES)
    if train_df.empty:
        raise DataError(f"dataset {manifest.name}/{manifest.version} has no train rows")
    val_rows = pq.read_table(manifest.data_path, columns=["split"], filters=[("split", "=", "validation")]).num_rows
    if val_rows == 0:
        raise DataError(f"dataset {manifest.name}/{manifest.version} has no validation rows (needed to stop early)")
    pre = Preprocessor.fit(train_df, NUMERIC_FEATURES, CATEGORICAL_FEATURES)
    return pre, len(train_df)


# -- MLflow ----------------------------------------------------------------------------------------------------
def _existing_run(client: Any, run_id: str | None) -> str | None:
    if not run_id:
        return None
    try:
        run = client.get_run(run_id)
    except Exception:  # deleted, or another tracking store: start a new run
        return None
    return run_id if run.info.lifecycle_stage == "active" else None


def _flatten(prefix: str, data: Any) -> dict[str, str]:
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for k, v in data.items():
            out.update(_flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: json.dumps(data) if isinstance(data, list) else str(data)}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _create_run(client: Any, settings: Settings, experiment_id: str, run_name: str,
                manifest: DatasetManifest, open_run: list[str] | None = None) -> str:
    from mlflow.entities import Dataset, DatasetInput, InputTag, Param

    tags = {
        "modelsvc.dataset.name": manifest.name,
        "modelsvc.dataset.version": manifest.version,
        "modelsvc.dataset.fingerprint": manifest.fingerprint,
        "modelsvc.feature_refs": ",".join(manifest.feature_refs or manifest.features),
        "modelsvc.version": __version__,
        "modelsvc.ray_run_name": run_name,
    }
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    run_id = str(run.info.run_id)
    if open_run is not None:
        open_run.append(run_id)
    params = {}
    for section in ("training", "model", "scaling"):
        params.update(_flatten(section, getattr(settings, section).model_dump(mode="json")))
    params["dataset.name"], params["dataset.version"] = manifest.name, manifest.version
    params["dataset.label"] = settings.dataset.label
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    dataset = Dataset(name=f"{manifest.name}/{manifest.version}", digest=manifest.fingerprint[:36],
                      source_type="local", source=json.dumps({"uri": str(manifest.data_path)}),
                      schema=json.dumps({"features": manifest.features, "label": manifest.label}),
                      profile=json.dumps({"rows": manifest.rows, "label_rate": manifest.label_rate}))
    client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])])
    return run_id


def _log_missing_epochs(client: Any, run_id: str, history: list[dict[str, Any]]) -> None:
    """Log the per-epoch metrics rank 0 could not (e.g. a worker without the tracking server's credentials)."""
    from mlflow.entities import Metric

    logged = {m.step for m in client.get_metric_history(run_id, "val_loss")}
    ts = int(time.time() * 1000)
    missing = [Metric(k, float(h[k]), ts, int(h["epoch"])) for h in history if int(h["epoch"]) not in logged
               for k in EPOCH_METRICS if k in h]
    for i in range(0, len(missing), 900):  # MLflow takes at most 1000 metrics per batch
        client.log_batch(run_id, metrics=missing[i:i + 900])


def _log_model_and_finish(settings: Settings, client: Any, run_id: str, manifest: DatasetManifest, pre: Any,
                          state: dict[str, Any], history: list[EpochMetrics], best: EpochMetrics) -> None:
    import mlflow
    import torch

    from modelsvc.dataset import read_dataset
    from modelsvc.training import loop, plots
    from modelsvc.training.model import CTRModel
    from modelsvc.training.pyfunc import MODEL_CONFIG, PREPROCESSING, WEIGHTS, CTRPyfunc

    model = CTRModel(pre.num_numeric_outputs, pre.cardinalities, embedding_dim=settings.model.embedding_dim,
                     hidden_layers=list(settings.model.hidden_layers), dropout=settings.model.dropout)
    model.load_state_dict(state["best_state"])
    model.eval()
    val = read_dataset(manifest, split="validation", columns=[*FEATURES, manifest.label])
    num, cat, y = loop.to_tensors(pre, val, manifest.label)
    scores = torch.sigmoid(loop.predict_logits(model, torch.from_numpy(num), torch.from_numpy(cat))).numpy()

    with tempfile.TemporaryDirectory(prefix="modelsvc-model-") as tmp:
        t = Path(tmp)
        (t / "preprocessing.json").write_text(pre.to_json())
        (t / "model_config.json").write_text(json.dumps(model.config, indent=2))
        torch.save(model.state_dict(), t / "weights.pt")
        code = _code_bundle(t / "code")
        example = val[FEATURES].head(5).copy()
        for col in NUMERIC_FEATURES:
            example[col] = example[col].astype("float64")
        signature = _signature()
        CTRPyfunc.predict_frame(pre, model, example)  # fail here, not at serving time
        plots.loss_curves([h.model_dump() for h in history], t / "loss_curves.png")
        plots.roc_curve(y, scores, best.val_auc, t / "roc_validation.png")
        with mlflow.start_run(run_id=run_id):
            mlflow.pyfunc.log_model(
                name="model",
                python_model=str(Path(__file__).with_name("pyfunc_entry.py")),  # models from code: no pickle
                artifacts={PREPROCESSING: str(t / "preprocessing.json"), MODEL_CONFIG: str(t / "model_config.json"),
                           WEIGHTS: str(t / "weights.pt")},
                code_paths=[str(code)],
                signature=signature,
                input_example=example,
                pip_requirements=_requirements(),
            )
            mlflow.log_artifact(str(t / "loss_curves.png"), "plots")
            mlflow.log_artifact(str(t / "roc_validation.png"), "plots")
            mlflow.log_artifact(str(t / "preprocessing.json"))
            mlflow.log_metrics({"best_epoch": best.epoch, "best_val_loss": best.val_loss,
                                "best_val_auc": best.val_auc})
            mlflow.set_tags({"modelsvc.data_path": str(state.get("data_path", "")),
                             "modelsvc.stopped_early": str(bool(state["stopped"])).lower()})


def _signature() -> Any:
    """Every feature column required (a request without one gets MLflow's schema error), values nullable (a
    required column still takes nulls); numeric features as double, the platform as string."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs: list[Any] = [ColSpec("double", c) for c in NUMERIC_FEATURES]
    inputs += [ColSpec("string", c) for c in CATEGORICAL_FEATURES]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([ColSpec("double", "p_click")]))


def _code_bundle(dest: Path) -> Path:
    """The few modules the pyfunc needs (no pydantic, ray or mlflow imports at load)."""
    import modelsvc

    src = Path(modelsvc.__file__).parent
    pkg = dest / "modelsvc"
    (pkg / "training").mkdir(parents=True)
    for rel in ("__init__.py", "errors.py", "training/__init__.py", "training/result.py",
                "training/preprocessing.py", "training/model.py", "training/pyfunc.py"):
        shutil.copyfile(src / rel, pkg / rel)
    return pkg


def _requirements() -> list[str]:
    import mlflow
    import numpy
    import pandas
    import torch

    return [f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__.split('+')[0]}",
            f"numpy=={numpy.__version__}", f"pandas=={pandas.__version__}", "pydantic>=2"]


# -- Ray -------------------------------------------------------------------------------------------------------
def _ensure_ray(settings: Settings) -> None:
    import ray

    if ray.is_initialized():
        return
    address = settings.ray_address()
    quiet: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False, "configure_logging": True}
    if address:
        from modelsvc.doctor import require_ray_cluster

        require_ray_cluster(settings)  # [ops] fail within ray.connect_timeout_s (69), never wait without end
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


def _use_gpu(settings: Settings) -> bool:
    import ray

    if settings.scaling.use_gpu == "auto":
        return float(ray.cluster_resources().get("GPU", 0)) > 0
    return bool(settings.scaling.use_gpu)


def prepare_ray(settings: Settings, reporter: Reporter = NULL) -> bool:
    """Start or join Ray, decide ``use_gpu`` and check the workers' resources (see :func:`_check_resources`);
    returns ``use_gpu``."""
    _ensure_ray(settings)
    use_gpu = _use_gpu(settings)
    _check_resources(settings, use_gpu, reporter)
    return use_gpu


def _check_resources(settings: Settings, use_gpu: bool, reporter: Reporter) -> None:
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


def fit_workers(settings: Settings, manifest: DatasetManifest, pre: Any, train_rows: int, run_name: str,
                run_id: str | None, reporter: Reporter = NULL, *,
                use_gpu: bool | None = None) -> tuple[Any, dict[str, Any]]:
    """The Ray Train part of ``train``: run the workers, return (Ray result, latest checkpoint state).

    With ``run_id=None`` nothing is logged to MLflow (the GPU benchmark runs it where MLflow is not installed).
    ``use_gpu`` from :func:`prepare_ray` when the caller already ran it; otherwise it runs here.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from modelsvc.training.loop import load_state, train_loop_per_worker
    from modelsvc.training.model import build_model

    if use_gpu is None:
        use_gpu = prepare_ray(settings, reporter)
    model_config = build_model(settings.model, pre.num_numeric_outputs, pre.cardinalities).config
    fail_at = os.environ.get(FAIL_AT_EPOCH_ENV)
    t = settings.training
    config = {
        "data_file": str(manifest.data_path),
        "label": manifest.label,
        "preprocessor": pre.to_dict(),
        "model_config": model_config,
        "train_rows": train_rows,
        "lr": t.lr,
        "weight_decay": t.weight_decay,
        "batch_size": t.batch_size,
        "epochs": t.epochs,
        "seed": t.seed,
        "patience": t.early_stopping_patience,
        "data_path_mode": t.data_path,
        "resident_max_bytes": t.resident_max_bytes,
        "mlflow_tracking_uri": settings.tracking_uri(),
        "mlflow_run_id": run_id,
        "fail_at_epoch": int(fail_at) if fail_at else None,
        "fail_after_log_epoch": int(os.environ[FAIL_AFTER_LOG_ENV]) if os.environ.get(FAIL_AFTER_LOG_ENV) else None,
    }
    resources = {"CPU": settings.scaling.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = 1
    try:
        with _live_epochs(settings, run_id, t.epochs, reporter) as sink:
            trainer = TorchTrainer(
                train_loop_per_worker,
                train_loop_config={**config, "progress_sink": sink},
                scaling_config=ScalingConfig(num_workers=settings.scaling.num_workers, use_gpu=use_gpu,
                                             resources_per_worker=resources),
                run_config=RunConfig(
                    name=run_name,
                    storage_path=settings.ray_storage_path(),
                    failure_config=FailureConfig(max_failures=t.max_failures),
                    checkpoint_config=CheckpointConfig(num_to_keep=2),
                ),
            )
            with _controller_env(settings):
                result = trainer.fit()
    except Exception as exc:
        raise RetryableError(
            f"training run '{run_name}' failed: {_cause(exc)}",
            hint="run the same command again to resume from the last checkpoint",
        ) from exc
    if result.checkpoint is None:
        raise RetryableError(f"training run '{run_name}' finished without a checkpoint")
    with result.checkpoint.as_directory() as d:
        state = load_state(d)
    return result, state


POLL_INTERVAL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"  # Ray Train V2 propagates it to its controller actor


@contextmanager
def _controller_env(settings: Settings) -> Iterator[None]:
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


def _cause(exc: BaseException) -> str:
    """The most specific one-line reason found in a (possibly nested, multi-line) Ray error."""
    text = str(exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception)\b:", ln):
            return ln[:300]
    return (lines[0] if lines else type(exc).__name__)[:300]


class _ProgressSink:
    """A Ray actor owned by the driver: rank 0 puts each epoch's metrics, the driver polls them (works the same on
    a local Ray and on a cluster, and survives worker restarts)."""

    def __init__(self) -> None:
        self._epochs: list[dict[str, Any]] = []

    def put(self, data: dict[str, Any]) -> None:
        self._epochs.append(data)

    def since(self, n: int) -> list[dict[str, Any]]:
        return self._epochs[n:]


@contextmanager
def _live_epochs(settings: Settings, run_id: str | None, epochs: int, reporter: Reporter) -> Iterator[Any]:
    """While ``fit`` blocks: show rank 0's epochs through the reporter, and log to MLflow the epochs rank 0 could
    not (a worker on another node may lack the tracking server's credentials or route)."""
    import ray

    sink: Any = ray.remote(num_cpus=0)(_ProgressSink).remote()
    client = None
    if run_id is not None:
        from modelsvc.tracking import mlflow_client

        client = mlflow_client(settings)
    stop = threading.Event()
    with reporter.task("training", total=epochs) as task:

        def drain(seen: int) -> int:
            try:
                new = ray.get(sink.since.remote(seen), timeout=10)
            except Exception:  # noqa: BLE001 - progress is cosmetic; the checkpoint holds the truth
                return seen
            for data in new:
                task.update(completed=int(data["epoch"]) + 1, loss=data["train_loss"], val_loss=data["val_loss"],
                            val_auc=data["val_auc"], samples_per_s=round(data["samples_per_s"]))
                if client is not None and run_id is not None and not data.get("mlflow_logged"):
                    with contextlib.suppress(Exception):  # the driver's final check fills any gap
                        _log_missing_epochs(client, run_id, [data])
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
            with contextlib.suppress(Exception):
                ray.kill(sink)


# -- [ops] no MLflow run left RUNNING --------------------------------------------------------------------------
@contextmanager
def _ends_run_on_failure(client: Any) -> Iterator[list[str]]:
    """Whatever fails after the run is created (a bad ``paths.ray``, the workers, logging the model) ends it:
    KILLED for Ctrl-C / SIGTERM, FAILED otherwise. The caller appends the run id once it exists."""
    open_run: list[str] = []
    try:
        yield open_run
    except BaseException as exc:
        if open_run:
            from modelsvc import interrupts

            with contextlib.suppress(Exception):
                client.set_terminated(open_run[0], "KILLED" if interrupts.is_interrupt(exc) else "FAILED")
        raise


def _end_orphaned_runs(client: Any, experiment_id: str, run_name: str, keep: str | None) -> None:
    """Mark FAILED the runs of this training still RUNNING that no process continues: an attempt killed with
    SIGKILL, or one that died before its id was recorded. (The data-root lock keeps a second modelsvc from
    training the same run name meanwhile.)"""
    with contextlib.suppress(Exception):
        runs = client.search_runs([experiment_id], filter_string=f"tags.`modelsvc.ray_run_name` = '{run_name}' "
                                  "and attributes.status = 'RUNNING'", max_results=100)
        for run in runs:
            if run.info.run_id != keep:
                client.set_terminated(run.info.run_id, "FAILED")
