"""Training knobs of the imaging presets: ``federation.augmult`` (validated at start; the
plain trainer trains on the augmented views) and ``federation.lr_schedule``."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from experiments._config import FederationConfig, RunConfig, validate
from experiments._errors import ConfigError
from experiments._preflight import check_command_line
from experiments._training import SGDTrainer, round_lr


@pytest.mark.parametrize("value", [-1, True, 1.5])
def test_augmult_must_be_a_non_negative_int(
    run_cfg: Callable[..., RunConfig], value: object
) -> None:
    cfg = run_cfg("dataset=medmnist", "model=cnn")
    cfg.federation.augmult = value  # type: ignore[assignment]
    with pytest.raises(ConfigError, match=r"federation\.augmult"):
        validate(cfg)


def test_augmult_needs_images(run_cfg: Callable[..., RunConfig]) -> None:
    validate(run_cfg("dataset=medmnist", "model=cnn", "federation.augmult=4"))
    with pytest.raises(ConfigError, match=r"federation\.augmult=4 augments images"):
        validate(run_cfg("dataset=breast_cancer", "federation.augmult=4"))


class _Recorder(nn.Module):
    """A linear model that records the batches it is trained on."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(28 * 28, 2)
        self.batches: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.detach().clone())
        return self.linear(torch.flatten(x, start_dim=1))


def _train(augmult: int) -> tuple[_Recorder, TensorDataset]:
    data = TensorDataset(torch.rand(8, 1, 28, 28), torch.arange(8) % 2)
    config = FederationConfig(batch_size=4, local_steps=2, augmult=augmult, lr=0.1)
    model = _Recorder()
    SGDTrainer(config).train(
        model,
        data,
        client_id=0,
        round_id=1,
        generator=torch.Generator().manual_seed(0),
        device=torch.device("cpu"),
    )
    return model, data


def test_plain_trainer_sees_augmented_views() -> None:
    plain, data = _train(0)
    assert [tuple(b.shape) for b in plain.batches] == [(4, 1, 28, 28)] * 2
    images = {bytes(image.numpy()) for image in data.tensors[0]}
    assert all(bytes(image.numpy()) in images for batch in plain.batches for image in batch)
    augmented, data = _train(3)
    assert [tuple(b.shape) for b in augmented.batches] == [(12, 1, 28, 28)] * 2
    # the views are crops and flips, not the stored images
    seen = [bytes(image.numpy()) in images for batch in augmented.batches for image in batch]
    assert not all(seen)


def test_cosine_schedule_decays_from_lr_and_constant_keeps_it() -> None:
    constant = FederationConfig(rounds=10, lr=0.4)
    assert [round_lr(constant, r) for r in (1, 5, 10)] == [0.4, 0.4, 0.4]
    cosine = FederationConfig(rounds=10, lr=0.4, lr_schedule="cosine")
    rates = [round_lr(cosine, r) for r in range(1, 11)]
    assert rates[0] == pytest.approx(0.4)
    assert rates[5] == pytest.approx(0.2)  # halfway (round 6 of 10)
    assert all(a > b > 0 for a, b in itertools.pairwise(rates))
    assert rates[-1] < 0.01


def test_lr_schedule_is_validated(run_cfg: Callable[..., RunConfig]) -> None:
    validate(run_cfg("federation.lr_schedule=cosine"))
    cfg = run_cfg()
    cfg.federation.lr_schedule = "step"
    with pytest.raises(ConfigError, match=r"federation\.lr_schedule"):
        validate(cfg)


def test_command_line_with_a_preset_is_left_to_the_composed_check() -> None:
    # model=cnn alone would fail against the default dataset (tabular); the preset's
    # dataset is known only once composed, where check_composed validates the result.
    check_command_line(["+experiment=breastmnist", "model=cnn", "federation.augmult=4"])
    with pytest.raises(ConfigError, match="model=cnn needs 28x28 images"):
        check_command_line(["model=cnn"])
