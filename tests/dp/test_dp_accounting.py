"""Accounting maths, cross-checked against Opacus's published value and Google's dp_accounting."""

from __future__ import annotations

import math

import pytest
from dp_accounting import dp_event, pld, rdp
from opacus.accountants import RDPAccountant

from dp import (
    InvalidDPConfigError,
    Segment,
    UnsoundAccountantError,
    calibrate_noise,
    compose_epsilon,
    epsilon_for,
    gdp_epsilon_diagnostic,
)
from dp._accounting import RDP_ORDERS

DELTA = 1e-5
GRID = [
    (0.01, 1.0, 1000),
    (0.05, 1.5, 200),
    (0.1, 0.8, 100),
    (0.2, 2.0, 50),
    (1.0, 5.0, 10),
    (0.004, 0.9, 3000),
]


def _google_event(q: float, sigma: float, steps: int) -> dp_event.DpEvent:
    gaussian = dp_event.GaussianDpEvent(sigma)
    per_step = gaussian if q == 1.0 else dp_event.PoissonSampledDpEvent(q, gaussian)
    return dp_event.SelfComposedDpEvent(per_step, steps)


def test_rdp_matches_opacus_reference_value() -> None:
    eps = epsilon_for(
        mechanism="dpsgd-sample",
        sample_rate=0.04,
        noise_multiplier=1.5,
        steps=2250,
        delta=DELTA,
        accountant="rdp",
    )
    assert eps == pytest.approx(7.3291, abs=1e-3)


@pytest.mark.parametrize(("q", "sigma", "steps"), GRID)
def test_rdp_agrees_with_dp_accounting(q: float, sigma: float, steps: int) -> None:
    ours = epsilon_for(
        mechanism="dpsgd-sample",
        sample_rate=q,
        noise_multiplier=sigma,
        steps=steps,
        delta=DELTA,
        accountant="rdp",
    )
    google = rdp.RdpAccountant().compose(_google_event(q, sigma, steps)).get_epsilon(DELTA)
    assert ours == pytest.approx(google, rel=0.01)


@pytest.mark.parametrize(("q", "sigma", "steps"), GRID)
def test_prv_agrees_with_dp_accounting_pld(q: float, sigma: float, steps: int) -> None:
    ours = epsilon_for(
        mechanism="dpsgd-sample",
        sample_rate=q,
        noise_multiplier=sigma,
        steps=steps,
        delta=DELTA,
        accountant="prv",
    )
    accountant = pld.PLDAccountant(value_discretization_interval=1e-3)
    google = accountant.compose(_google_event(q, sigma, steps)).get_epsilon(DELTA)
    assert ours == pytest.approx(google, rel=0.01)


def test_heterogeneous_composition_agrees_with_dp_accounting() -> None:
    history = [(0.05, 1.2, 100), (0.1, 2.0, 40), (0.02, 0.9, 300)]
    segments = [Segment(sample_rate=q, noise_multiplier=s, steps=t) for q, s, t in history]
    google_event = dp_event.ComposedDpEvent([_google_event(*h) for h in history])
    google_rdp = rdp.RdpAccountant().compose(google_event).get_epsilon(DELTA)
    google_pld = (
        pld.PLDAccountant(value_discretization_interval=1e-3)
        .compose(google_event)
        .get_epsilon(DELTA)
    )
    assert compose_epsilon(segments, delta=DELTA, accountant="rdp") == pytest.approx(
        google_rdp, rel=0.01
    )
    assert compose_epsilon(segments, delta=DELTA, accountant="prv") == pytest.approx(
        google_pld, rel=0.01
    )


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_rounds_compose_like_one_run(accountant: str) -> None:
    rounds, steps = 6, 37
    split = [Segment(sample_rate=0.05, noise_multiplier=1.1, steps=steps) for _ in range(rounds)]
    whole = [Segment(sample_rate=0.05, noise_multiplier=1.1, steps=rounds * steps)]
    split_eps = compose_epsilon(split, delta=DELTA, accountant=accountant)
    whole_eps = compose_epsilon(whole, delta=DELTA, accountant=accountant)
    assert split_eps == whole_eps
    one_round = compose_epsilon(split[:1], delta=DELTA, accountant=accountant)
    assert split_eps > one_round > 0.0


def test_rdp_composition_matches_opacus_stepwise_accountant() -> None:
    reference = RDPAccountant()
    segments = []
    for sigma, steps in [(1.3, 50), (0.9, 20), (1.3, 30)]:
        for _ in range(steps):
            reference.step(noise_multiplier=sigma, sample_rate=0.03)
        segments.append(Segment(sample_rate=0.03, noise_multiplier=sigma, steps=steps))
    ours = compose_epsilon(segments, delta=DELTA, accountant="rdp")
    assert ours == pytest.approx(reference.get_epsilon(delta=DELTA), rel=1e-9)


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
@pytest.mark.parametrize("target", [0.5, 1.0, 3.0])
def test_calibration_lands_at_or_below_target(accountant: str, target: float) -> None:
    sigma = calibrate_noise(
        target_epsilon=target, delta=DELTA, sample_rate=0.1, steps=150, accountant=accountant
    )
    eps = epsilon_for(
        mechanism="dpsgd-sample",
        sample_rate=0.1,
        noise_multiplier=sigma,
        steps=150,
        delta=DELTA,
        accountant=accountant,
    )
    assert eps <= target
    assert eps > 0.97 * target  # and it is not wastefully noisy


def test_calibration_accounts_for_prior_spending() -> None:
    prior = [Segment(sample_rate=0.1, noise_multiplier=3.0, steps=50)]
    assert compose_epsilon(prior, delta=DELTA, accountant="rdp") < 2.0
    sigma = calibrate_noise(
        target_epsilon=2.0, delta=DELTA, sample_rate=0.1, steps=100, accountant="rdp", prior=prior
    )
    total = compose_epsilon(
        [*prior, Segment(sample_rate=0.1, noise_multiplier=sigma, steps=100)],
        delta=DELTA,
        accountant="rdp",
    )
    assert total <= 2.0


def test_unreachable_target_is_a_named_error() -> None:
    prior = [Segment(sample_rate=1.0, noise_multiplier=0.5, steps=100)]
    with pytest.raises(InvalidDPConfigError, match="unreachable"):
        calibrate_noise(
            target_epsilon=0.1,
            delta=DELTA,
            sample_rate=0.1,
            steps=10,
            accountant="rdp",
            prior=prior,
        )


def test_without_poisson_sampling_no_amplification_is_claimed() -> None:
    kwargs = dict(mechanism="dpsgd-sample", noise_multiplier=4.0, steps=20, delta=DELTA)
    poisson = epsilon_for(sample_rate=0.05, accountant="rdp", **kwargs)  # type: ignore[arg-type]
    shuffled = epsilon_for(
        sample_rate=0.05,
        accountant="rdp",
        poisson_sampling=False,
        **kwargs,  # type: ignore[arg-type]
    )
    # Unsampled Gaussian with sensitivity 2C, i.e. sigma/2 at rate 1: independent check.
    unsampled = rdp.RdpAccountant().compose(_google_event(1.0, 2.0, 20)).get_epsilon(DELTA)
    assert shuffled == pytest.approx(unsampled, rel=0.01)
    assert shuffled > 10 * poisson


def test_gdp_diagnostic_exact_for_unsampled_gaussian() -> None:
    # T Gaussian mechanisms at sigma are sqrt(T)/sigma-GDP; PLD of the same is near exact.
    ours = gdp_epsilon_diagnostic(
        [Segment(sample_rate=1.0, noise_multiplier=5.0, steps=10)], delta=DELTA
    )
    google = (
        pld.PLDAccountant(value_discretization_interval=1e-4)
        .compose(_google_event(1.0, 5.0, 10))
        .get_epsilon(DELTA)
    )
    assert ours == pytest.approx(google, rel=0.01)


def test_gdp_under_reports_and_backs_no_claim() -> None:
    # Calibrated to epsilon 1 under GDP at q=0.05 for one step, the mechanism's sound
    # epsilon (PRV, and PLD independently) is above 4: GDP may never back a claim.
    low, high = 0.05, 50.0
    for _ in range(60):
        sigma = (low + high) / 2
        segment = [Segment(sample_rate=0.05, noise_multiplier=sigma, steps=1)]
        if gdp_epsilon_diagnostic(segment, delta=DELTA) > 1.0:
            low = sigma
        else:
            high = sigma
    segment = [Segment(sample_rate=0.05, noise_multiplier=high, steps=1)]
    assert gdp_epsilon_diagnostic(segment, delta=DELTA) == pytest.approx(1.0, abs=1e-3)
    sound = compose_epsilon(segment, delta=DELTA, accountant="prv")
    google = (
        pld.PLDAccountant(value_discretization_interval=1e-3)
        .compose(_google_event(0.05, high, 1))
        .get_epsilon(DELTA)
    )
    assert sound > 4.0 and google > 4.0
    for call in (
        lambda: compose_epsilon(segment, delta=DELTA, accountant="gdp"),
        lambda: calibrate_noise(
            target_epsilon=1.0, delta=DELTA, sample_rate=0.05, steps=1, accountant="gdp"
        ),
    ):
        with pytest.raises(UnsoundAccountantError, match="gdp"):
            call()


def test_rdp_orders_are_opacus_defaults() -> None:
    assert list(RDP_ORDERS) == [float(a) for a in RDPAccountant.DEFAULT_ALPHAS]


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("sample_rate", dict(sample_rate=0.0)),
        ("sample_rate", dict(sample_rate=1.5)),
        ("noise_multiplier", dict(noise_multiplier=0.0)),
        ("noise_multiplier", dict(noise_multiplier=-1.0)),
        ("noise_multiplier", dict(noise_multiplier=math.nan)),
        ("steps", dict(steps=-1)),
        ("delta", dict(delta=1.0)),
        ("accountant", dict(accountant="moments")),
        ("mechanism", dict(mechanism="laplace")),
    ],
)
def test_bad_accounting_input_names_the_field(field: str, kwargs: dict[str, object]) -> None:
    args: dict[str, object] = dict(
        mechanism="dpsgd-sample",
        sample_rate=0.1,
        noise_multiplier=1.0,
        steps=10,
        delta=DELTA,
        accountant="rdp",
    )
    args.update(kwargs)
    with pytest.raises(InvalidDPConfigError, match=field):
        epsilon_for(**args)  # type: ignore[arg-type]


def test_empty_history_spends_nothing() -> None:
    assert compose_epsilon([], delta=DELTA, accountant="prv") == 0.0
    zero = [Segment(sample_rate=0.1, noise_multiplier=1.0, steps=0)]
    assert compose_epsilon(zero, delta=DELTA, accountant="rdp") == 0.0
