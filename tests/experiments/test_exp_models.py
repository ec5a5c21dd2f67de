"""Models: logits of the right shape, Opacus-compatible, trainable with real DP-SGD."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from opacus import PrivacyEngine
from opacus.validators import ModuleValidator
from torch import nn
from torch.nn.utils import parameters_to_vector
from torch.utils.data import DataLoader, TensorDataset

from experiments._config import (
    CNNConfig,
    LogRegConfig,
    MLPConfig,
    RandomFeaturesConfig,
    ResNet18Config,
    RunConfig,
    validate,
)
from experiments._datasets import FederatedData
from experiments._errors import ConfigError
from experiments._models import ResNet18, build_model


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
    (CNNConfig(channels=[8, 16], hidden=8, global_pool=True), (1, 28, 28)),
    (CNNConfig(channels=[32, 64, 128], groups=8, hidden=128), (1, 28, 28)),  # cnn_medmnist
    (RandomFeaturesConfig(filters=8, kernel=3, grid=2), (1, 28, 28)),
    (ResNet18Config(width=8, groups=4), (1, 28, 28)),
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
@pytest.mark.parametrize("mode", ["hooks", "ghost"])
def test_model_trains_one_dp_sgd_step_with_opacus(
    cfg: object, shape: tuple[int, ...], mode: str
) -> None:
    model = build_model(cfg, _meta(shape), seed=0)
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(16, *shape, generator=generator),
        torch.randint(0, 3, (16,), generator=generator),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    criterion = nn.CrossEntropyLoss()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        private = PrivacyEngine().make_private(
            module=model,
            optimizer=optimizer,
            criterion=criterion,
            data_loader=DataLoader(data, batch_size=8),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            grad_sample_mode=mode,
        )
    private_model, private_optimizer = private[0], private[1]
    loss_fn = private[2] if mode == "ghost" else criterion
    loader = private[-1]
    before = parameters_to_vector(private_model.parameters()).detach().clone()
    features, labels = next(iter(loader))
    private_optimizer.zero_grad()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ghost clipping's backward-hook notice
        loss_fn(private_model(features), labels).backward()
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


def test_resnet18_is_medmnists_layout_with_groupnorm_and_no_inplace_ops() -> None:
    model = build_model(ResNet18Config(), _meta((1, 28, 28), n_classes=2), seed=0)
    assert isinstance(model, ResNet18)
    # The published ResNet-18 (28): 3x3 stride-1 stem, no max-pool, 64..512 channels.
    stem = model.stem[0]
    assert isinstance(stem, nn.Conv2d)
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    modules = list(model.modules())
    assert not any(isinstance(m, nn.MaxPool2d | nn.modules.batchnorm._BatchNorm) for m in modules)
    assert sum(isinstance(m, nn.GroupNorm) for m in modules) == 1 + 16 + 3
    assert [m.out_channels for m in modules if isinstance(m, nn.Conv2d)][-1] == 512
    assert not any(getattr(m, "inplace", False) for m in modules)
    assert sum(p.numel() for p in model.parameters()) == 11_168_706


def test_resnet18_keeps_its_input_intact_and_pools_any_image_size() -> None:
    model = build_model(ResNet18Config(width=8, groups=2), _meta((3, 32, 32)), seed=0)
    images = torch.randn(2, 3, 32, 32)
    copy = images.clone()
    assert model(images).shape == (2, 3)
    assert torch.equal(images, copy)


def test_resnet18_on_tabular_data_is_a_named_error() -> None:
    with pytest.raises(ConfigError, match="model=resnet18"):
        build_model(ResNet18Config(), _meta((30,)), seed=0)


def test_resnet18_config_is_validated_at_start(run_cfg: Callable[..., RunConfig]) -> None:
    cfg = run_cfg("dataset=medmnist", "model=resnet18", "model.width=32")
    validate(cfg)
    assert isinstance(cfg.model, ResNet18Config) and cfg.model.width == 32
    with pytest.raises(ConfigError, match=r"model\.width must be a multiple of model\.groups"):
        validate(run_cfg("dataset=medmnist", "model=resnet18", "model.width=24"))
    with pytest.raises(ConfigError, match="model=resnet18 needs 28x28 images"):
        validate(run_cfg("model=resnet18"))


def test_cnn_global_pool_shrinks_the_head() -> None:
    flat = build_model(CNNConfig(), _meta((1, 28, 28)), seed=0)
    pooled = build_model(CNNConfig(global_pool=True), _meta((1, 28, 28)), seed=0)
    size = sum(p.numel() for p in flat.parameters())
    pooled_size = sum(p.numel() for p in pooled.parameters())
    # the flattened head reads 32 x 7 x 7 values, the pooled one 32
    assert size - pooled_size == 32 * 48 * 64


def test_cnn_global_pool_must_be_a_bool(run_cfg: Callable[..., RunConfig]) -> None:
    cfg = run_cfg("dataset=medmnist", "model=cnn")
    cfg.model.global_pool = "yes"
    with pytest.raises(ConfigError, match=r"model\.global_pool"):
        validate(cfg)


def test_rfnet_trains_only_its_head_and_its_filters_come_from_the_seed() -> None:
    cfg = RandomFeaturesConfig(filters=16, kernel=5, grid=2)
    model = build_model(cfg, _meta((1, 28, 28), n_classes=2), seed=0)
    # only the linear head is a parameter: 2 * 16 * 2 * 2 features, 2 classes
    assert [name for name, _ in model.named_parameters()] == ["head.weight", "head.bias"]
    assert sum(p.numel() for p in model.parameters()) == 128 * 2 + 2
    bank = dict(model.named_buffers())["bank"]
    assert bank.shape == (16, 1, 5, 5)
    norms = bank.flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.ones(16), atol=1e-5)
    assert torch.allclose(bank.mean(dim=(1, 2, 3)), torch.zeros(16), atol=1e-6)
    same = build_model(cfg, _meta((1, 28, 28), n_classes=2), seed=0)
    other = build_model(cfg, _meta((1, 28, 28), n_classes=2), seed=1)
    assert torch.equal(dict(same.named_buffers())["bank"], bank)
    assert not torch.equal(dict(other.named_buffers())["bank"], bank)


def test_rfnet_config_is_validated_at_start(run_cfg: Callable[..., RunConfig]) -> None:
    validate(run_cfg("dataset=medmnist", "model=rfnet"))
    for field, value, message in (
        ("kernel", 4, "odd"),
        ("filters", 0, ">= 1"),
        ("grid", 11, "at most 10"),
        ("stride", 0, ">= 1"),
    ):
        cfg = run_cfg("dataset=medmnist", "model=rfnet")
        setattr(cfg.model, field, value)
        with pytest.raises(ConfigError, match=f"model.{field}.*{message}"):
            validate(cfg)
    with pytest.raises(ConfigError, match="needs 28x28 images"):
        validate(run_cfg("dataset=breast_cancer", "model=rfnet"))
