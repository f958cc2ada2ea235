"""The value ``train`` returns (pydantic only: the CLI imports it without torch or ray)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class EpochMetrics(BaseModel):
    epoch: int
    train_loss: float
    val_loss: float
    val_auc: float
    samples_per_s: float
    epoch_time_s: float


class TrainResult(BaseModel):
    """One training: the MLflow run, where the model is, what it was trained on, how it did."""

    run_id: str = Field(description="MLflow run id")
    experiment_id: str
    model_uri: str = Field(description="runs:/<run_id>/model")
    ray_run_name: str
    ray_storage_path: str
    dataset_name: str
    dataset_version: str
    dataset_fingerprint: str
    metrics: dict[str, float] = Field(description="metrics of the best epoch (the model that was logged)")
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    resumed: bool = Field(description="continued an interrupted run of the same training")
    data_path: str = Field(description="resident or streaming")
    device: str
    num_workers: int
    wall_s: float
    history: list[EpochMetrics] = Field(default_factory=list)
