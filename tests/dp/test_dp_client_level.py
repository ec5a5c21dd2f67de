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


# ----------------------------------------------------------------- worst-case budgets


def _scenario_accountant(**kwargs: object) -> ClientLevelAccountant:
    """5 clients, every one selected every round, 20 rounds, target epsilon 1 at 1e-3."""
    args: dict[str, object] = dict(
        n_clients=5,
        client_sample_rate=1.0,
        planned_rounds=20,
        distributed=True,
        selected=5,
    )
    args.update(kwargs)
    config = args.pop("config", DPConfig(target_epsilon=1.0, delta=1e-3))
    return ClientLevelAccountant.from_config(config, **args)  # type: ignore[arg-type]


def _run_rounds(accountant: ClientLevelAccountant, survivors: list[int]) -> None:
    for round_id, alive in enumerate(survivors, start=1):
        accountant.check_budget(1)
        accountant.record_round(round_id=round_id, selected=5, survivors=alive, distributed=True)


def test_planned_sigma_budget_ends_above_it_after_a_dropout_round() -> None:
    # The scenario under the old rule (budget checked at the planned sigma, i.e.
    # assuming every selected client survives): 19 full rounds and one with 1 of 5
    # survivors end at epsilon 1.112 against a budget of 1.0.
    old_rule = _scenario_accountant(min_survivors=5)
    _run_rounds(old_rule, [5] * 19 + [1])
    assert old_rule.epsilon == pytest.approx(1.112, abs=1e-3)
    assert old_rule.epsilon > 1.0


def test_worst_case_budget_refuses_the_round_that_could_pass_it() -> None:
    # Same sigma as the old rule, but the threshold accepts a sum of a single survivor:
    # each check assumes that worst case, so the budget can no longer be passed. With
    # every client surviving, the federation is stopped at round 17 (16 full rounds and a
    # worst-case one would pass 1), never beyond epsilon 1.
    old_sigma = _scenario_accountant(min_survivors=5).noise_multiplier
    accountant = _scenario_accountant(
        config=DPConfig(noise_multiplier=old_sigma, delta=1e-3, epsilon_budget=1.0),
        min_survivors=1,
    )
    refused_at = None
    for round_id in range(1, 21):
        try:
            accountant.check_budget(1)
        except PrivacyBudgetExceededError as error:
            assert "1 of 5 survive" in str(error)
            refused_at = round_id
            break
        accountant.record_round(round_id=round_id, selected=5, survivors=5, distributed=True)
    assert refused_at == 17
    assert accountant.epsilon <= 1.0
    # What the refusal prevented: round 17 with a single survivor would have passed 1.
    accountant.record_round(round_id=17, selected=5, survivors=1, distributed=True)
    assert accountant.epsilon > 1.0


def test_worst_case_calibration_keeps_the_dropout_scenario_within_target() -> None:
    accountant = _scenario_accountant(min_survivors=1)
    _run_rounds(accountant, [5] * 19 + [1])
    assert accountant.epsilon <= 1.0
    assert recompute_epsilon(list(accountant.events)) == pytest.approx(accountant.epsilon)
    # All twenty rounds at the worst case would also have stayed within it.
    worst = _scenario_accountant(min_survivors=1)
    _run_rounds(worst, [1] * 20)
    assert worst.epsilon <= 1.0


def test_colluding_clients_noise_is_not_counted() -> None:
    accountant = ClientLevelAccountant(
        noise_multiplier=2.0,
        clip_norm=1.0,
        client_sample_rate=1.0,
        delta=1e-3,
        distributed=True,
        selected=5,
        min_survivors=3,
        max_colluding=1,
    )
    assert accountant.worst_case_noise_multiplier == pytest.approx(2.0 * math.sqrt(2 / 5))
    event = accountant.record_round(round_id=1, selected=5, survivors=5, distributed=True)
    assert event.noise_multiplier == pytest.approx(2.0 * math.sqrt(4 / 5))
    assert "colluding=1" in event.note
    assert effective_noise_multiplier(
        noise_multiplier=2.0, selected=5, survivors=5, distributed=False, colluding=4
    ) == pytest.approx(2.0)  # central noise: the releasing party's, unknown to clients
    with pytest.raises(InvalidDPConfigError, match="no honest noise"):
        effective_noise_multiplier(
            noise_multiplier=2.0, selected=5, survivors=2, distributed=True, colluding=2
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(min_survivors=2, max_colluding=2), "max_colluding"),
        (dict(min_survivors=6), "min_survivors"),
        (dict(min_survivors=0), "min_survivors"),
        (dict(max_colluding=-1), "max_colluding"),
    ],
)
def test_worst_case_parameters_are_checked(kwargs: dict[str, int], message: str) -> None:
    args: dict[str, object] = dict(
        noise_multiplier=1.0,
        clip_norm=1.0,
        client_sample_rate=1.0,
        delta=1e-3,
        distributed=True,
        selected=5,
    )
    args.update(kwargs)
    with pytest.raises(InvalidDPConfigError, match=message):
        ClientLevelAccountant(**args)  # type: ignore[arg-type]
