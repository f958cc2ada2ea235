"""The click model: embeddings for categorical features + an MLP over them and the numeric features, one logit."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class CTRModel(nn.Module):
    """MLP with a logit output (train with ``BCEWithLogitsLoss``; ``sigmoid`` gives p_click)."""

    def __init__(self, num_numeric: int, cardinalities: list[int], *, embedding_dim: int,
                 hidden_layers: list[int], dropout: float) -> None:
        super().__init__()
        self.config = {
            "num_numeric": num_numeric,
            "cardinalities": list(cardinalities),
            "embedding_dim": embedding_dim,
            "hidden_layers": list(hidden_layers),
            "dropout": dropout,
        }
        self.embeddings = nn.ModuleList(nn.Embedding(c, embedding_dim) for c in cardinalities)
        width = num_numeric + embedding_dim * len(cardinalities)
        layers: list[nn.Module] = []
        for h in hidden_layers:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CTRModel:
        return cls(config["num_numeric"], config["cardinalities"], embedding_dim=config["embedding_dim"],
                   hidden_layers=config["hidden_layers"], dropout=config["dropout"])

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        parts = [numeric]
        parts += [emb(categorical[:, i]) for i, emb in enumerate(self.embeddings)]
        return self.mlp(torch.cat(parts, dim=1)).squeeze(1)


def build_model(settings_model: Any, num_numeric: int, cardinalities: list[int]) -> CTRModel:
    """The model for a ``ModelSettings`` section and a fitted preprocessor's shapes."""
    return CTRModel(num_numeric, cardinalities, embedding_dim=settings_model.embedding_dim,
                    hidden_layers=list(settings_model.hidden_layers), dropout=settings_model.dropout)


def set_threads(n: int) -> None:
    """torch's intra-op threads for this process (the serving process uses one: its tensors are tiny)."""
    torch.set_num_threads(n)
