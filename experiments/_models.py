"""Models for experiments: logistic regression, an MLP, a small CNN for 28x28 images.

Every model maps a batch X to logits of shape (batch, n_classes) and is usable with
Opacus DP-SGD: normalisation is GroupNorm, never BatchNorm (BatchNorm mixes samples of a
batch, which breaks per-sample gradients and so the DP guarantee).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from experiments._config import CNNConfig, LogRegConfig, MLPConfig
from experiments._datasets import FederatedData
from experiments._errors import ConfigError


class LogisticRegression(nn.Module):
    """Multinomial logistic regression: flatten, then one linear layer to the logits."""

    def __init__(self, n_features: int, n_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(x, start_dim=1))


class MLP(nn.Module):
    """Fully connected network with ReLU activations (and optional dropout)."""

    def __init__(
        self, n_features: int, n_classes: int, hidden: list[int], dropout: float = 0.0
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(torch.flatten(x, start_dim=1))


class SmallCNN(nn.Module):
    """Conv-GroupNorm-ReLU-MaxPool blocks, then a two-layer head; input 1x28x28."""

    def __init__(self, n_classes: int, channels: list[int], groups: int, hidden: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        in_channels, side = 1, 28
        for out_channels in channels:
            blocks += [
                nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
                nn.GroupNorm(groups, out_channels),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            in_channels, side = out_channels, side // 2
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * side * side, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _build_logreg(cfg: LogRegConfig, data: FederatedData) -> nn.Module:
    return LogisticRegression(data.n_features, data.n_classes)


def _build_mlp(cfg: MLPConfig, data: FederatedData) -> nn.Module:
    return MLP(data.n_features, data.n_classes, list(cfg.hidden), cfg.dropout)


def _build_cnn(cfg: CNNConfig, data: FederatedData) -> nn.Module:
    if data.input_shape != (1, 28, 28):
        raise ConfigError(
            f"model=cnn needs 1x28x28 images, got dataset={data.name} with input shape "
            f"{data.input_shape}"
        )
    return SmallCNN(data.n_classes, list(cfg.channels), cfg.groups, cfg.hidden)


ModelBuilder = Callable[[Any, FederatedData], nn.Module]

MODELS: dict[str, ModelBuilder] = {
    "logreg": _build_logreg,
    "mlp": _build_mlp,
    "cnn": _build_cnn,
}


def build_model(cfg: Any, data: FederatedData, *, seed: int) -> nn.Module:
    """Build the model a ``model`` schema names, initialised from ``seed`` only.

    The global torch RNG is forked, so building a model leaves it untouched.
    """
    name = getattr(cfg, "name", None)
    if name not in MODELS:
        raise ConfigError(f"model.name must be one of {list(MODELS)}, got {name!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name](cfg, data)
