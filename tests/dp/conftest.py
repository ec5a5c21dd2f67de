"""Shared fixtures of the dp tests: the breast_cancer data and a small MLP."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import TensorDataset


@pytest.fixture(scope="session")
def breast_cancer() -> tuple[TensorDataset, TensorDataset]:
    """(train, test) TensorDatasets of the standardised sklearn breast_cancer data."""
    data = load_breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.2, random_state=0, stratify=data.target
    )
    scaler = StandardScaler().fit(x_train)

    def to_dataset(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        return TensorDataset(
            torch.tensor(scaler.transform(x), dtype=torch.float32),
            torch.tensor(y, dtype=torch.long),
        )

    return to_dataset(x_train, y_train), to_dataset(x_test, y_test)


def _make_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(30, 32), nn.ReLU(), nn.Linear(32, 2))


def _accuracy(model: nn.Module, dataset: TensorDataset) -> float:
    features, targets = dataset.tensors
    with torch.no_grad():
        predictions = model(features).argmax(dim=1)
    return float((predictions == targets).float().mean())


@pytest.fixture
def make_mlp() -> Callable[..., nn.Module]:
    """Factory of 30 -> 32 -> 2 MLPs with seeded initial weights."""
    return _make_mlp


@pytest.fixture
def accuracy() -> Callable[[nn.Module, TensorDataset], float]:
    """Accuracy of a classifier on a TensorDataset."""
    return _accuracy
