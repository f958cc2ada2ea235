"""The MLflow pyfunc: raw feature rows in, ``p_click`` out, preprocessing (JSON) and weights bundled.

Artifacts: ``preprocessing.json`` (the fitted :class:`Preprocessor`), ``model_config.json`` (the MLP shape)
and ``weights.pt`` (a ``state_dict`` saved with ``torch.save`` and loaded with ``weights_only=True``).
This module, ``preprocessing`` and ``model`` are bundled as code with the logged model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel

PREPROCESSING = "preprocessing"
MODEL_CONFIG = "model_config"
WEIGHTS = "weights"


class CTRPyfunc(PythonModel):
    """Predicts click probability from a DataFrame of the raw feature columns (nulls, unknown values allowed)."""

    def load_context(self, context: Any) -> None:
        import torch

        from modelsvc.training.model import CTRModel
        from modelsvc.training.preprocessing import Preprocessor

        self.pre = Preprocessor.from_json(Path(context.artifacts[PREPROCESSING]).read_text())
        config = json.loads(Path(context.artifacts[MODEL_CONFIG]).read_text())
        self.model = CTRModel.from_config(config)
        state = torch.load(context.artifacts[WEIGHTS], map_location="cpu", weights_only=True)
        self.model.load_state_dict(state)
        self.model.eval()

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        # a DataFrame hint: MLflow validates against the logged signature and infers nothing from the hint
        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self.predict_frame(self.pre, self.model, df)

    def predict_columns(self, columns: Mapping[str, Any], n: int) -> Any:
        """``p_click`` (float64 array) for ``n`` rows given as feature columns: the prediction service's path, the
        same transform and network as :meth:`predict`, without building a DataFrame (see
        ``Preprocessor.transform_columns`` for the column types)."""
        return self.scores(self.model, *self.pre.transform_columns(columns, n))

    @staticmethod
    def predict_frame(pre: Any, model: Any, df: Any) -> Any:
        """``p_click`` for the rows of ``df`` (the same transform as in training)."""
        import pandas as pd

        model.eval()
        p = CTRPyfunc.scores(model, *pre.transform(df))
        return pd.DataFrame({"p_click": p}, index=df.index)

    @staticmethod
    def scores(model: Any, num: Any, cat: Any) -> Any:
        """The network (in eval mode) on transformed features: p_click as float64."""
        import torch

        with torch.inference_mode():
            p = torch.sigmoid(model(torch.from_numpy(num), torch.from_numpy(cat))).numpy()
        return p.astype("float64")
