"""MLflow bookkeeping of a training: the run (tags, params, dataset input), the per-epoch metrics, the logged
pyfunc model with its plots, and the small run-state file beside the Ray checkpoints that ties a rerun to its run."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from modelsvc import __version__, storage
from modelsvc.config import Settings
from modelsvc.dataset import CATEGORICAL_FEATURES, FEATURES, NUMERIC_FEATURES, DatasetManifest
from modelsvc.tracking import TAG_DATASET_FINGERPRINT, TAG_DATASET_NAME, TAG_DATASET_VERSION
from modelsvc.training.result import EpochMetrics

RUN_STATE_FILE = "modelsvc_run.json"
WORKERS_TAG = "modelsvc.train.workers"  # run tag: JSON list of {rank, node_id, host, pid}
EPOCH_METRICS = ("train_loss", "val_loss", "val_auc", "samples_per_s", "epoch_time_s")  # logged per epoch (step)


class RunState:
    """A small JSON file beside the Ray run's checkpoints (a local path or a URI: ``modelsvc.storage``).

    A missing or unreadable file is an empty state; an unreachable store or refused credentials are their own
    errors (69, 77), never taken for "no run yet". A missing bucket reads as no file: ``train`` checks the
    bucket first (:func:`modelsvc.training.ray_runtime.storage_location`, 66)."""

    def __init__(self, storage: str, run_name: str) -> None:
        from modelsvc import storage as store

        self.path = store.join(storage, run_name, RUN_STATE_FILE)

    def read(self) -> dict[str, Any]:
        from modelsvc import storage as store

        if not store.is_file(self.path):
            return {}
        try:
            return dict(json.loads(store.read_text(self.path)))
        except (ValueError, TypeError):
            return {}

    def write(self, data: dict[str, Any]) -> None:
        from modelsvc import storage as store

        store.write_text(self.path, json.dumps(data, indent=2))


def existing_run(client: Any, run_id: str | None) -> str | None:
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


def create_run(client: Any, settings: Settings, experiment_id: str, run_name: str,
               manifest: DatasetManifest, open_run: list[str] | None = None) -> str:
    from mlflow.entities import Dataset, DatasetInput, InputTag, Param

    tags = {
        TAG_DATASET_NAME: manifest.name,
        TAG_DATASET_VERSION: manifest.version,
        TAG_DATASET_FINGERPRINT: manifest.fingerprint,
        "modelsvc.feature_refs": ",".join(manifest.feature_refs or manifest.features),
        "modelsvc.version": __version__,
        "modelsvc.ray_run_name": run_name,
    }
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    run_id = str(run.info.run_id)
    if open_run is not None:  # [ops] the caller ends it if what follows fails
        open_run.append(run_id)
    params = {}
    for section in ("training", "model", "scaling"):
        params.update(_flatten(section, getattr(settings, section).model_dump(mode="json")))
    params["dataset.name"], params["dataset.version"] = manifest.name, manifest.version
    params["dataset.label"] = settings.dataset.label
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    dataset = Dataset(name=f"{manifest.name}/{manifest.version}", digest=manifest.fingerprint[:36],
                      source_type="local", source=json.dumps({"uri": storage.display(manifest.path)}),
                      schema=json.dumps({"features": manifest.features, "label": manifest.label}),
                      profile=json.dumps({"rows": manifest.rows, "label_rate": manifest.label_rate}))
    client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])])
    return run_id


def log_epochs(client: Any, run_id: str, history: list[dict[str, Any]]) -> None:
    """Log the per-epoch metrics rank 0 could not (e.g. a worker without the tracking server's credentials)."""
    from mlflow.entities import Metric

    logged = {m.step for m in client.get_metric_history(run_id, "val_loss")}
    ts = int(time.time() * 1000)
    missing = [Metric(k, float(h[k]), ts, int(h["epoch"])) for h in history if int(h["epoch"]) not in logged
               for k in EPOCH_METRICS if k in h]
    for i in range(0, len(missing), 900):  # MLflow takes at most 1000 metrics per batch
        client.log_batch(run_id, metrics=missing[i:i + 900])


def log_model_and_finish(settings: Settings, client: Any, run_id: str, manifest: DatasetManifest, pre: Any,
                          state: dict[str, Any], history: list[EpochMetrics], best: EpochMetrics) -> None:
    """Log the best epoch's model (pyfunc, with its plots) and end the run FINISHED."""
    ModelLogging(manifest, pre).finish(client, run_id, settings.model, state, history, best)


class ModelLogging:
    """Logging the trained model, in two halves: :meth:`prepare` does what needs no weights (imports of MLflow's
    pyfunc, torch and matplotlib, the validation split and the input example, about 2 s), so that it can run
    while the epochs do (``modelsvc.training.tracker``); :meth:`finish` loads the best weights and logs."""

    def __init__(self, manifest: DatasetManifest, pre: Any) -> None:
        self.manifest, self.pre = manifest, pre
        self._ready: dict[str, Any] | None = None

    def prepare(self) -> None:
        if self._ready is not None:
            return
        import mlflow.pyfunc  # noqa: F401
        import torch  # noqa: F401

        from modelsvc.dataset import read_dataset
        from modelsvc.training import loop, plots

        plots.prepare()
        manifest, pre = self.manifest, self.pre
        val = read_dataset(manifest, split="validation", columns=[*FEATURES, manifest.label])
        example = val[FEATURES].head(5).copy()
        for col in NUMERIC_FEATURES:
            example[col] = example[col].astype("float64")
        requirements = _requirements()
        # log_model checks the requirements against what is installed, mapping every installed distribution's
        # modules first (about 1 s, cached by MLflow for the process): done here, the same call
        from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches

        warn_dependency_requirement_mismatches(requirements)
        self._ready = {"tensors": loop.to_tensors(pre, val, manifest.label), "example": example,
                       "signature": _signature(), "requirements": requirements}

    def finish(self, client: Any, run_id: str, model_settings: Any, state: dict[str, Any],
               history: list[EpochMetrics], best: EpochMetrics) -> None:
        import mlflow
        import torch

        from modelsvc.training import loop, plots
        from modelsvc.training.model import build_model
        from modelsvc.training.pyfunc import MODEL_CONFIG, PREPROCESSING, WEIGHTS, CTRPyfunc

        self.prepare()
        assert self._ready is not None
        pre = self.pre
        model = build_model(model_settings, pre.num_numeric_outputs, pre.cardinalities)
        model.load_state_dict(state["best_state"])
        model.eval()
        num, cat, y = self._ready["tensors"]
        scores = torch.sigmoid(loop.predict_logits(model, torch.from_numpy(num), torch.from_numpy(cat))).numpy()
        example = self._ready["example"]

        with tempfile.TemporaryDirectory(prefix="modelsvc-model-") as tmp:
            t = Path(tmp)
            (t / "preprocessing.json").write_text(pre.to_json())
            (t / "model_config.json").write_text(json.dumps(model.config, indent=2))
            torch.save(model.state_dict(), t / "weights.pt")
            code = _code_bundle(t / "code")
            CTRPyfunc.predict_frame(pre, model, example)  # fail here, not at serving time
            plots.loss_curves([h.model_dump() for h in history], t / "loss_curves.png")
            plots.roc_curve(y, scores, best.val_auc, t / "roc_validation.png")
            with mlflow.start_run(run_id=run_id):
                mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(Path(__file__).with_name("pyfunc_entry.py")),  # models from code: no pickle
                    artifacts={PREPROCESSING: str(t / "preprocessing.json"),
                               MODEL_CONFIG: str(t / "model_config.json"), WEIGHTS: str(t / "weights.pt")},
                    code_paths=[str(code)],
                    signature=self._ready["signature"],
                    input_example=example,
                    pip_requirements=self._ready["requirements"],
                )
                mlflow.log_artifact(str(t / "loss_curves.png"), "plots")
                mlflow.log_artifact(str(t / "roc_validation.png"), "plots")
                mlflow.log_artifact(str(t / "preprocessing.json"))
                mlflow.log_metrics({"best_epoch": best.epoch, "best_val_loss": best.val_loss,
                                    "best_val_auc": best.val_auc})
                mlflow.set_tags({WORKERS_TAG: json.dumps(state.get("workers", [])),
                                 "modelsvc.data_path": str(state.get("data_path", "")),
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
