"""Augmentation multiplicity (De et al. 2022) in real Opacus DP-SGD: K views of a record
give one gradient, clipped after averaging, and the accounting does not change."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from opacus import GradSampleModule
from torch import nn
from torch.utils.data import TensorDataset

from dp import (
    DPConfig,
    DPError,
    InvalidDPConfigError,
    SampleLevelDPClient,
    augment_views,
    average_views,
)


def _images(n: int, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    features = torch.rand(n, 1, 28, 28, generator=generator)
    labels = torch.arange(n) % 2
    return TensorDataset(features, labels)


def _cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, kernel_size=3, padding=1),
        nn.GroupNorm(2, 4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(64, 2),
    )


def _client(n: int, *, augmult: int, **config: float) -> SampleLevelDPClient:
    return SampleLevelDPClient(
        client_id="hospital",
        config=DPConfig(delta=1e-5, **config),  # type: ignore[arg-type]
        n_records=n,
        batch_size=n // 2,
        planned_rounds=2,
        steps_per_round=3,
        grad_sample_mode="ghost",
        augmult=augmult,
    )


def _is_shift_or_mirror(view: torch.Tensor, image: torch.Tensor, padding: int) -> bool:
    """Whether ``view`` is ``image`` (or its mirror) shifted by at most ``padding`` pixels."""
    inner = slice(padding, 28 - padding)
    for source in (image, image.flip(-1)):
        for dy in range(-padding, padding + 1):
            for dx in range(-padding, padding + 1):
                shifted = source[
                    :, padding + dy : 28 - padding + dy, padding + dx : 28 - padding + dx
                ]
                if torch.equal(view[:, inner, inner], shifted):
                    return True
    return False


def test_augment_views_keeps_each_records_views_together() -> None:
    images = _images(3).tensors[0]
    views = augment_views(images, views=5, generator=torch.Generator().manual_seed(1))
    assert views.shape == (15, 1, 28, 28)
    for index in range(15):
        assert _is_shift_or_mirror(views[index], images[index // 5], padding=2)
        assert not _is_shift_or_mirror(views[index], images[(index // 5 + 1) % 3], padding=2)
    assert not all(torch.equal(views[0], views[k]) for k in range(1, 5))


def test_augment_views_refuses_non_images() -> None:
    with pytest.raises(InvalidDPConfigError, match="images"):
        augment_views(torch.zeros(4, 30), views=2)
    with pytest.raises(InvalidDPConfigError, match="views"):
        augment_views(torch.zeros(4, 1, 28, 28), views=0)


def test_average_views_gives_one_gradient_per_record_equal_to_the_mean_view_gradient() -> None:
    torch.manual_seed(0)
    model = _cnn()
    reference = _cnn()
    records, views = 3, 4
    features = torch.randn(records * views, 1, 28, 28)
    labels = torch.tensor([0, 1, 1]).repeat_interleave(views)
    module = GradSampleModule(model, loss_reduction="mean")
    nn.CrossEntropyLoss()(module(features), labels).backward()
    average_views(list(model.parameters()), records=records, views=views)
    for record in range(records):
        reference.zero_grad()
        rows = slice(record * views, (record + 1) * views)
        # the mean over views of the per-view loss: its gradient is the mean view gradient
        nn.CrossEntropyLoss()(reference(features[rows]), labels[rows]).backward()
        for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
            assert ours.grad_sample.shape[0] == records
            torch.testing.assert_close(ours.grad_sample[record], theirs.grad, atol=1e-5, rtol=1e-4)


def test_average_views_refuses_a_row_count_that_is_not_records_times_views() -> None:
    model = _cnn()
    module = GradSampleModule(model, loss_reduction="mean")
    nn.CrossEntropyLoss()(module(torch.randn(5, 1, 28, 28)), torch.zeros(5).long()).backward()
    with pytest.raises(DPError, match="5 rows"):
        average_views(list(model.parameters()), records=2, views=2)


def test_accounting_is_unchanged_with_views() -> None:
    data = _images(40)
    results = {}
    for augmult in (0, 1, 8):
        client = _client(len(data), augmult=augmult, target_epsilon=4.0)
        result = client.train_round(
            model=_cnn(),
            dataset=data,
            round_id=0,
            local_steps=3,
            lr=0.1,
            generator=torch.Generator().manual_seed(0),
        )
        results[augmult] = (client, result)
    plain_client, plain = results[0]
    for augmult in (1, 8):
        client, result = results[augmult]
        assert client.noise_multiplier == plain_client.noise_multiplier
        assert client.sample_rate == plain_client.sample_rate
        assert result.steps == plain.steps == 3
        assert result.event.cumulative_epsilon == plain.event.cumulative_epsilon
        assert result.event.sample_rate == plain.event.sample_rate
        # the views did train the model differently
        assert not np.allclose(result.update, plain.update)


def test_per_sample_clipping_holds_with_views() -> None:
    # One record, sampled at rate 1, one SGD step at lr 1 with negligible noise: the
    # update is minus the record's clipped (view-averaged) gradient, so its norm is C.
    data = _images(2)
    clip = 1e-3
    for augmult in (4, 16):
        client = SampleLevelDPClient(
            client_id="hospital",
            config=DPConfig(noise_multiplier=1e-9, max_grad_norm=clip, delta=1e-5),
            n_records=2,
            batch_size=2,
            planned_rounds=1,
            steps_per_round=1,
            augmult=augmult,
        )
        model = _cnn()
        result = client.train_round(
            model=model,
            dataset=data,
            round_id=0,
            local_steps=1,
            lr=1.0,
            generator=torch.Generator().manual_seed(0),
        )
        # expected batch 2: the update is minus the mean of two clipped gradients
        assert float(np.linalg.norm(result.update)) <= clip * (1 + 1e-4)
        # without clipping the step would have been far larger: the clip acted
        model.zero_grad()
        nn.CrossEntropyLoss()(model(data.tensors[0]), data.tensors[1]).backward()
        raw = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).norm()
        assert float(raw) > 10 * clip


def test_augmult_is_validated() -> None:
    with pytest.raises(InvalidDPConfigError, match="augmult"):
        _client(40, augmult=-1, target_epsilon=4.0)
    with pytest.raises(InvalidDPConfigError, match="augmult"):
        _client(40, augmult=True, target_epsilon=4.0)  # type: ignore[arg-type]
    tabular = TensorDataset(torch.randn(40, 30), torch.zeros(40).long())
    client = _client(40, augmult=2, target_epsilon=4.0)
    with pytest.raises(InvalidDPConfigError, match="image"):
        client.train_round(
            model=nn.Linear(30, 2), dataset=tabular, round_id=0, local_steps=1, lr=0.1
        )
    assert client.events == ()  # a refused round is not accounted


def test_empty_poisson_batches_with_views_are_still_noisy_accounted_steps() -> None:
    data = _images(40)
    client = SampleLevelDPClient(
        client_id="hospital",
        config=DPConfig(noise_multiplier=1.0, delta=1e-5),
        n_records=40,
        batch_size=1,  # sample rate 0.025: about one step in three samples no record
        planned_rounds=1,
        steps_per_round=12,
        augmult=4,
    )
    result = client.train_round(
        model=_cnn(),
        dataset=data,
        round_id=0,
        local_steps=12,
        lr=0.1,
        generator=torch.Generator().manual_seed(0),
    )
    assert result.steps == 12 and result.empty_batches > 0
    assert result.event.steps == 12
