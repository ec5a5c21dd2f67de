"""Models for experiments: logistic regression, an MLP, a small CNN and a ResNet-18 for
28x28 images.

Every model maps a batch X to logits of shape (batch, n_classes) and is usable with
Opacus DP-SGD: normalisation is GroupNorm, never BatchNorm (BatchNorm mixes samples of a
batch, which breaks per-sample gradients and so the DP guarantee).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from experiments._config import (
    CNNConfig,
    LogRegConfig,
    MLPConfig,
    RandomFeaturesConfig,
    ResNet18Config,
)
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
    """Conv-GroupNorm-ReLU-MaxPool blocks, then a two-layer head; input 1x28x28.

    With ``global_pool`` the last feature map is averaged to one value per channel before
    the head, which then has ``channels[-1] * hidden`` weights instead of
    ``channels[-1] * side**2 * hidden``: under DP-SGD the noise grows with the number of
    parameters, so the pooled head trades a little capacity for much less noise.
    """

    def __init__(
        self,
        n_classes: int,
        channels: list[int],
        groups: int,
        hidden: int,
        *,
        global_pool: bool = False,
    ) -> None:
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
        if global_pool:
            blocks.append(nn.AdaptiveAvgPool2d(1))
            side = 1
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * side * side, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    """Two 3x3 conv-GroupNorm layers and a residual connection (ResNet's basic block).

    Every operation is out of place (``out + shortcut``, ``nn.ReLU()``): Opacus's
    per-sample gradient hooks need each activation intact, which the in-place residual add
    of torchvision's ResNet breaks.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False
        )
        self.norm1 = nn.GroupNorm(groups, out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.GroupNorm(groups, out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 as MedMNIST v2 trains it on 28x28 inputs, made DP-ready.

    Layout (Yang et al. 2023, after He et al. 2016's CIFAR variant): a 3x3 stride-1 stem
    and no max-pool, four stages of two basic blocks with ``width``, 2, 4 and 8 x ``width``
    channels (strides 1, 2, 2, 2), global average pooling and one linear layer. BatchNorm
    is replaced by GroupNorm (De et al. 2022), so no statistic mixes the samples of a batch
    and per-sample gradients, hence DP-SGD, stay exact. ``width=64`` is the published model
    (11.2M parameters for one input channel and two classes).
    """

    def __init__(self, in_channels: int, n_classes: int, *, width: int, groups: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False),
            nn.GroupNorm(groups, width),
            nn.ReLU(),
        )
        stages: list[nn.Module] = []
        channels = width
        for index, out_channels in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if index == 0 else 2
            stages.append(
                nn.Sequential(
                    BasicBlock(channels, out_channels, stride, groups),
                    BasicBlock(out_channels, out_channels, 1, groups),
                )
            )
            channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.pool(self.stages(self.stem(x)))
        return self.head(torch.flatten(features, start_dim=1))


class RandomFeatures(nn.Module):
    """A linear classifier on frozen random convolution features of an image.

    The filter bank is a buffer, not a parameter: it is drawn once from torch's generator
    (seeded by :func:`build_model`), is never trained and never leaves a client as part of
    an update. Features: ``relu(+r)`` and ``relu(-r)`` of each filter's response ``r`` (at
    ``stride``) to the image centred by the public constant 0.5, average-pooled to
    ``grid`` x ``grid``, then standardised per image (a per-sample operation: no statistic
    mixes records). Only ``head`` (``2 * filters * grid**2 + 1`` weights per class) is trained.
    """

    bank: torch.Tensor

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        *,
        filters: int,
        kernel: int,
        grid: int,
        stride: int = 1,
    ) -> None:
        super().__init__()
        bank = torch.randn(filters, in_channels, kernel, kernel)
        bank = bank - bank.mean(dim=(1, 2, 3), keepdim=True)
        bank = bank / bank.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None, None]
        self.register_buffer("bank", bank)
        self.padding = kernel // 2
        self.stride = stride
        self.pool = nn.AdaptiveAvgPool2d(grid)
        n_features = 2 * filters * grid * grid
        self.normalize = nn.GroupNorm(1, n_features, affine=False)
        self.head = nn.Linear(n_features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        response = nn.functional.conv2d(
            x - 0.5, self.bank, padding=self.padding, stride=self.stride
        )
        both = torch.cat([torch.relu(response), torch.relu(-response)], dim=1)
        features = torch.flatten(self.pool(both), start_dim=1)
        return self.head(self.normalize(features))


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
    return SmallCNN(
        data.n_classes,
        list(cfg.channels),
        cfg.groups,
        cfg.hidden,
        global_pool=cfg.global_pool,
    )


def _build_resnet18(cfg: ResNet18Config, data: FederatedData) -> nn.Module:
    if len(data.input_shape) != 3:
        raise ConfigError(
            f"model=resnet18 needs images (channels, height, width), got dataset={data.name} "
            f"with input shape {data.input_shape}"
        )
    return ResNet18(data.input_shape[0], data.n_classes, width=cfg.width, groups=cfg.groups)


def _build_rfnet(cfg: RandomFeaturesConfig, data: FederatedData) -> nn.Module:
    if len(data.input_shape) != 3:
        raise ConfigError(
            f"model=rfnet needs images (channels, height, width), got dataset={data.name} "
            f"with input shape {data.input_shape}"
        )
    return RandomFeatures(
        data.input_shape[0],
        data.n_classes,
        filters=cfg.filters,
        kernel=cfg.kernel,
        grid=cfg.grid,
        stride=cfg.stride,
    )


ModelBuilder = Callable[[Any, FederatedData], nn.Module]

MODELS: dict[str, ModelBuilder] = {
    "logreg": _build_logreg,
    "mlp": _build_mlp,
    "cnn": _build_cnn,
    "resnet18": _build_resnet18,
    "rfnet": _build_rfnet,
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
