"""Models-from-code entry point of the logged pyfunc: MLflow runs this file to build the model object, so the
logged model holds no pickle at all (weights: ``torch.load(weights_only=True)``; preprocessing: JSON)."""

import mlflow

from modelsvc.training.pyfunc import CTRPyfunc

mlflow.models.set_model(CTRPyfunc())
