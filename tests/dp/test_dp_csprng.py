"""DP noise from ChaCha20 (dp.SecureGaussian): its distribution, and that client-level noise
and every DP-SGD step draw from it rather than from numpy's or torch's generators."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn
from torch.utils.data import TensorDataset

from dp import DPConfig, InvalidDPConfigError, SampleLevelDPClient, SecureGaussian, add_noise

KEY = bytes(range(32))


def test_keystream_gaussians_pass_a_normality_test() -> None:
    values = SecureGaussian(key=KEY).standard_normal(200_001)  # odd: the last pair is cut
    assert values.shape == (200_001,) and values.dtype == np.float64
    assert abs(values.mean()) < 0.01 and values.std() == pytest.approx(1.0, abs=0.01)
    assert stats.kstest(values, "norm").pvalue > 1e-3
    assert stats.kurtosis(values) == pytest.approx(0.0, abs=0.05)
    # Box-Muller pairs are independent: no correlation between the two halves.
    half = len(values) // 2
    assert abs(np.corrcoef(values[:half], values[half : 2 * half])[0, 1]) < 0.01


def test_the_same_key_replays_and_fresh_keys_differ() -> None:
    first = SecureGaussian(key=KEY).normal(2.0, (3, 4))
    again = SecureGaussian(key=KEY).normal(2.0, (3, 4))
    assert first.shape == (3, 4) and np.array_equal(first, again)
    assert not np.array_equal(SecureGaussian().normal(1.0, 16), SecureGaussian().normal(1.0, 16))
    sampler = SecureGaussian(key=KEY)
    assert not np.array_equal(sampler.normal(1.0, 8), sampler.normal(1.0, 8))  # stream moves on
    assert "key hidden" in repr(sampler) and KEY.hex() not in repr(sampler)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: SecureGaussian(key=b"short"), "key"),
        (lambda: SecureGaussian(key=KEY).normal(-1.0, 3), "std"),
        (lambda: SecureGaussian(key=KEY).normal(float("nan"), 3), "std"),
        (lambda: SecureGaussian(key=KEY).standard_normal((2, -1)), "shape"),
    ],
)
def test_bad_sampler_input_is_a_named_error(call: Callable[[], object], message: str) -> None:
    with pytest.raises(InvalidDPConfigError, match=message):
        call()


def test_client_level_noise_comes_from_the_keystream() -> None:
    update = np.zeros(1000)
    noised = add_noise(
        update, noise_multiplier=2.0, clip_norm=0.5, n_shares=4, sampler=SecureGaussian(key=KEY)
    )
    expected = SecureGaussian(key=KEY).normal(2.0 * 0.5 / 2.0, (1000,))
    assert np.array_equal(noised, expected)
    with pytest.raises(InvalidDPConfigError, match="at most one"):
        add_noise(
            update,
            noise_multiplier=1.0,
            clip_norm=1.0,
            rng=np.random.default_rng(0),
            sampler=SecureGaussian(key=KEY),
        )


def _train_once(train: TensorDataset, model: nn.Module, *, sigma: float) -> np.ndarray:
    client = SampleLevelDPClient(
        client_id="client-0",
        config=DPConfig(noise_multiplier=sigma, delta=1e-5, max_grad_norm=1.0),
        n_records=len(train),
        batch_size=64,
        planned_rounds=1,
        steps_per_round=1,
    )
    torch.manual_seed(1234)  # torch's generator: same batches, and same noise if torch drew it
    result = client.train_round(model=model, dataset=train, round_id=0, local_steps=1, lr=1.0)
    return np.asarray(result.update)


def test_dp_sgd_step_noise_does_not_come_from_torchs_generator(
    breast_cancer: tuple[TensorDataset, TensorDataset], make_mlp: Callable[..., nn.Module]
) -> None:
    train, _ = breast_cancer
    model = make_mlp()
    first = _train_once(train, model, sigma=50.0)
    second = _train_once(train, model, sigma=50.0)
    assert not np.allclose(first, second)  # torch reseeded identically: the noise is not torch's
    # One SGD step at lr 1: update = -(clipped sum + noise) / batch; the noise dominates at
    # sigma 50, so the update's spread is sigma * C / batch per coordinate.
    assert np.std(first) == pytest.approx(50.0 * 1.0 / 64, rel=0.1)
