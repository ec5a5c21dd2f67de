"""Models: logits of the right shape, Opacus-compatible, trainable with real DP-SGD."""

from __future__ import annotations

import warnings

import pytest
import torch
from opacus import PrivacyEngine
from opacus.validators import ModuleValidator
from torch import nn
from torch.nn.utils import parameters_to_vector
from torch.utils.data import DataLoader, TensorDataset

from experiments._config import CNNConfig, LogRegConfig, MLPConfig
from experiments._datasets import FederatedData
from experiments._errors import ConfigError
from experiments._models import build_model


def _meta(input_shape: tuple[int, ...], n_classes: int = 3) -> FederatedData:
    empty = TensorDataset(torch.zeros(0, *input_shape), torch.zeros(0, dtype=torch.int64))
    n_features = 1
    for size in input_shape:
        n_features *= size
    return FederatedData(
        name="meta",
        clients=(),
        pooled_test=empty,
        n_features=n_features,
        n_classes=n_classes,
        input_shape=input_shape,
    )


CASES = [
    (LogRegConfig(), (13,)),
    (MLPConfig(hidden=[32, 16]), (20,)),
    (CNNConfig(), (1, 28, 28)),
]


@pytest.mark.parametrize(("cfg", "shape"), CASES, ids=lambda c: getattr(c, "name", ""))
def test_model_maps_a_batch_to_class_logits(cfg: object, shape: tuple[int, ...]) -> None:
    model = build_model(cfg, _meta(shape), seed=0)
    assert model(torch.randn(5, *shape)).shape == (5, 3)


@pytest.mark.parametrize(("cfg", "shape"), CASES, ids=lambda c: getattr(c, "name", ""))
def test_model_passes_opacus_strict_validation(cfg: object, shape: tuple[int, ...]) -> None:
    model = build_model(cfg, _meta(shape), seed=0)
    assert ModuleValidator.validate(model, strict=True) == []


def test_opacus_validation_would_catch_batchnorm() -> None:
    errors = ModuleValidator.validate(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)))
    assert errors


@pytest.mark.parametrize(("cfg", "shape"), CASES, ids=lambda c: getattr(c, "name", ""))
def test_model_trains_one_dp_sgd_step_with_opacus(cfg: object, shape: tuple[int, ...]) -> None:
    model = build_model(cfg, _meta(shape), seed=0)
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(16, *shape, generator=generator),
        torch.randint(0, 3, (16,), generator=generator),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        private_model, private_optimizer, loader = PrivacyEngine().make_private(
            module=model,
            optimizer=optimizer,
            data_loader=DataLoader(data, batch_size=8),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
        )
    before = parameters_to_vector(private_model.parameters()).detach().clone()
    features, labels = next(iter(loader))
    private_optimizer.zero_grad()
    nn.functional.cross_entropy(private_model(features), labels).backward()
    private_optimizer.step()
    after = parameters_to_vector(private_model.parameters()).detach()
    assert not torch.equal(before, after)


def test_same_seed_same_initial_weights_and_global_rng_untouched() -> None:
    state = torch.random.get_rng_state()
    first = build_model(MLPConfig(), _meta((10,)), seed=3)
    second = build_model(MLPConfig(), _meta((10,)), seed=3)
    other = build_model(MLPConfig(), _meta((10,)), seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    vector = parameters_to_vector(first.parameters())
    assert torch.equal(vector, parameters_to_vector(second.parameters()))
    assert not torch.equal(vector, parameters_to_vector(other.parameters()))


def test_cnn_on_tabular_data_is_a_named_error() -> None:
    with pytest.raises(ConfigError, match="model=cnn"):
        build_model(CNNConfig(), _meta((30,)), seed=0)
