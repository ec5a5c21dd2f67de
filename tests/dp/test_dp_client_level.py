"""DP-FedAvg (client-level DP): clipping, noise shares, dropout-aware accounting."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting import dp_event, rdp

from dp import (
    ClientLevelAccountant,
    DPConfig,
    InvalidDPConfigError,
    PrivacyBudgetExceededError,
    SecureAggregationRequiredError,
    add_noise,
    clip_update,
    effective_noise_multiplier,
    epsilon_for,
    recompute_epsilon,
    require_secure_aggregation,
)


def test_clip_update_bounds_norm_and_keeps_small_updates() -> None:
    big = np.array([3.0, 4.0])
    clipped = clip_update(big, clip_norm=1.0)
    assert np.linalg.norm(clipped) == pytest.approx(1.0)
    assert np.allclose(clipped, big / 5.0)
    small = np.array([0.1, -0.2, 0.05])
    assert np.array_equal(clip_update(small, clip_norm=1.0), small)
    assert np.array_equal(big, [3.0, 4.0])  # input untouched
    with pytest.raises(InvalidDPConfigError, match="clip_norm"):
        clip_update(big, clip_norm=0.0)
    with pytest.raises(InvalidDPConfigError, match="NaN"):
        clip_update(np.array([np.nan]), clip_norm=1.0)


def test_distributed_shares_sum_to_central_noise() -> None:
    rng = np.random.default_rng(7)
    n, dim, sigma, clip = 8, 20000, 1.5, 0.5
    total = sum(
        add_noise(np.zeros(dim), noise_multiplier=sigma, clip_norm=clip, n_shares=n, rng=rng)
        for _ in range(n)
    )
    assert np.std(total) == pytest.approx(sigma * clip, rel=0.03)
    survivors = sum(
        add_noise(np.zeros(dim), noise_multiplier=sigma, clip_norm=clip, n_shares=n, rng=rng)
        for _ in range(n // 2)
    )
    assert np.std(survivors) == pytest.approx(sigma * clip * math.sqrt(0.5), rel=0.03)


def test_effective_noise_multiplier() -> None:
    kwargs = dict(noise_multiplier=2.0, selected=10)
    assert effective_noise_multiplier(survivors=10, distributed=True, **kwargs) == 2.0  # type: ignore[arg-type]
    assert effective_noise_multiplier(survivors=4, distributed=True, **kwargs) == pytest.approx(
        2.0 * math.sqrt(0.4)  # type: ignore[arg-type]
    )
    assert effective_noise_multiplier(survivors=4, distributed=False, **kwargs) == 2.0  # type: ignore[arg-type]
    with pytest.raises(InvalidDPConfigError, match="survivors"):
        effective_noise_multiplier(survivors=11, distributed=True, **kwargs)  # type: ignore[arg-type]


def test_dropouts_are_accounted_not_ignored() -> None:
    def run(survivors: list[int]) -> ClientLevelAccountant:
        accountant = ClientLevelAccountant(
            noise_multiplier=1.2, clip_norm=1.0, client_sample_rate=0.3, delta=1e-4
        )
        for round_id, alive in enumerate(survivors):
            accountant.record_round(
                round_id=round_id, selected=10, survivors=alive, distributed=True
            )
        return accountant

    full = run([10] * 5)
    dropped = run([10, 10, 5, 10, 10])
    assert dropped.epsilon > full.epsilon
    assert dropped.events[2].noise_multiplier == pytest.approx(1.2 * math.sqrt(0.5))
    assert "survivors=5" in dropped.events[2].note
    # Independent cross-check of the full-survival run.
    event = dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(0.3, dp_event.GaussianDpEvent(1.2)), 5
    )
    google = rdp.RdpAccountant().compose(event).get_epsilon(1e-4)
    assert full.epsilon == pytest.approx(google, rel=0.01)
    assert recompute_epsilon(dropped.events) == dropped.epsilon


def test_budget_refuses_before_the_round_and_state_round_trips() -> None:
    config = DPConfig(target_epsilon=2.0, delta=1e-3, max_grad_norm=0.7)
    accountant = ClientLevelAccountant.from_config(
        config, n_clients=20, client_sample_rate=0.5, planned_rounds=4
    )
    for round_id in range(4):
        accountant.check_budget()
        accountant.record_round(round_id=round_id, selected=10, survivors=10, distributed=False)
    assert accountant.epsilon <= 2.0
    before = accountant.state_dict()
    with pytest.raises(PrivacyBudgetExceededError, match="budget"):
        accountant.check_budget()
    assert accountant.state_dict() == before
    restored = ClientLevelAccountant.from_config(
        config, n_clients=20, client_sample_rate=0.5, planned_rounds=4
    )
    restored.load_state_dict(before)
    assert restored.epsilon == accountant.epsilon
    assert restored.events == accountant.events


def test_delta_checked_against_number_of_clients() -> None:
    with pytest.raises(InvalidDPConfigError, match="delta"):
        ClientLevelAccountant.from_config(
            DPConfig(noise_multiplier=1.0, delta=0.1),
            n_clients=10,
            client_sample_rate=1.0,
            planned_rounds=3,
        )


def test_fixed_size_selection_claims_no_amplification() -> None:
    accountant = ClientLevelAccountant(
        noise_multiplier=4.0,
        clip_norm=1.0,
        client_sample_rate=0.2,
        delta=1e-5,
        poisson_sampling=False,
    )
    event = accountant.record_round(round_id=0, selected=4, survivors=4, distributed=False)
    assert not event.poisson_sampling
    unsampled = epsilon_for(
        mechanism="dp-fedavg-client",
        sample_rate=1.0,
        noise_multiplier=2.0,
        steps=1,
        delta=1e-5,
        accountant="rdp",
    )
    assert accountant.epsilon == pytest.approx(unsampled)


def test_distributed_noise_requires_secure_aggregation() -> None:
    require_secure_aggregation(False, "plain")
    require_secure_aggregation(True, "ckks")
    require_secure_aggregation(True, "masking")
    with pytest.raises(SecureAggregationRequiredError, match="plain"):
        require_secure_aggregation(True, "plain")
