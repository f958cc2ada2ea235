"""Training: preprocessing, the MLP, the fast data path, Ray Train + MLflow.

``train`` is the public entry point; heavy modules (torch, ray, mlflow) load only when it is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelsvc.training.result import TrainResult

__all__ = ["TrainResult", "train"]


def train(settings: Any, *, dataset: str | None = None, version: str | None = None,
          reporter: Any = None, tracker: Any = None) -> TrainResult:
    """Train the model on a dataset version with Ray Train and log it to MLflow (see trainer.train)."""
    from modelsvc.training.trainer import train as _train

    return _train(settings, dataset=dataset, version=version, reporter=reporter, tracker=tracker)


def __getattr__(name: str) -> Any:
    if name == "TrainResult":
        from modelsvc.training.result import TrainResult

        return TrainResult
    raise AttributeError(name)
