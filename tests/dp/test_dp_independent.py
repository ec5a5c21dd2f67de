"""Independent recomputation of epsilon with Google's dp_accounting, and a torch-free dp."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dp import (
    EventChainError,
    PrivacyEvent,
    Segment,
    UnsoundAccountantError,
    compose_epsilon,
    independent_compose_epsilon,
    independent_epsilon,
    recompute_epsilon,
)
from dp._events import GENESIS_DIGEST

#: (sample rate, steps) pairs from DP-SGD (small q, many steps) to DP-FedAvg (q=1, few
#: rounds), times noise multipliers and deltas; epsilons from ~0.01 to ~20. (Far above,
#: e.g. epsilon 100+ at q=0.3, sigma=0.9, 2000 steps, dp_accounting drops low RDP orders
#: that fail to converge and reports a larger, still sound, epsilon.)
RDP_GRID = [
    (q, sigma, steps, delta)
    for q, steps in [(0.004, 3000), (0.01, 1), (0.05, 500), (0.3, 20), (1.0, 5)]
    for sigma in (0.9, 1.3, 4.0)
    for delta in (1e-6, 1e-4)
]
PRV_GRID = [
    (q, sigma, steps, delta)
    for q, steps in [(0.01, 1), (0.01, 300), (0.2, 1), (0.2, 50), (1.0, 1), (1.0, 10)]
    for sigma in (0.8, 2.5)
    for delta in (1e-6, 1e-4)
]
#: Opacus's PRV reports the upper end of an interval of half-width eps_error = 0.01.
PRV_DECLARED_ERROR = 0.01


@pytest.mark.parametrize(("q", "sigma", "steps", "delta"), RDP_GRID)
def test_rdp_recomputation_agrees_within_one_percent(
    q: float, sigma: float, steps: int, delta: float
) -> None:
    segments = [Segment(sample_rate=q, noise_multiplier=sigma, steps=steps)]
    opacus = compose_epsilon(segments, delta=delta, accountant="rdp")
    google = independent_compose_epsilon(segments, delta=delta, accountant="rdp")
    assert google == pytest.approx(opacus, rel=0.01)


@pytest.mark.parametrize(("q", "sigma", "steps", "delta"), PRV_GRID)
def test_prv_recomputation_by_pld_agrees_within_one_percent_and_the_prv_error(
    q: float, sigma: float, steps: int, delta: float
) -> None:
    segments = [Segment(sample_rate=q, noise_multiplier=sigma, steps=steps)]
    opacus = compose_epsilon(segments, delta=delta, accountant="prv")
    google = independent_compose_epsilon(segments, delta=delta, accountant="prv")
    assert abs(google - opacus) <= 0.01 * opacus + PRV_DECLARED_ERROR


def test_mixed_and_unsampled_segments_agree() -> None:
    segments = [
        Segment(sample_rate=0.05, noise_multiplier=1.2, steps=100),
        Segment(sample_rate=0.1, noise_multiplier=2.0, steps=40, poisson_sampling=False),
        Segment(sample_rate=0.05, noise_multiplier=1.2, steps=60),
    ]
    for accountant, tolerance in (("rdp", 0.0), ("prv", PRV_DECLARED_ERROR)):
        opacus = compose_epsilon(segments, delta=1e-5, accountant=accountant)
        google = independent_compose_epsilon(segments, delta=1e-5, accountant=accountant)
        assert abs(google - opacus) <= 0.01 * opacus + tolerance


def _chain(accountant: str, rounds: int = 4) -> list[PrivacyEvent]:
    events: list[PrivacyEvent] = []
    segments: list[Segment] = []
    for round_id in range(1, rounds + 1):
        segments.append(Segment(sample_rate=0.02, noise_multiplier=1.1, steps=30))
        events.append(
            PrivacyEvent(
                client_id="client_0",
                round_id=round_id,
                mechanism="dpsgd-sample",
                sample_rate=0.02,
                noise_multiplier=1.1,
                steps=30,
                max_grad_norm=1.0,
                delta=1e-5,
                accountant=accountant,
                poisson_sampling=True,
                cumulative_steps=30 * round_id,
                cumulative_epsilon=compose_epsilon(segments, delta=1e-5, accountant=accountant),
                epsilon_budget=None,
                previous_digest=events[-1].digest_hex() if events else GENESIS_DIGEST,
            )
        )
    return events


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_independent_epsilon_is_a_drop_in_for_recompute_epsilon(accountant: str) -> None:
    events = _chain(accountant)
    ours = recompute_epsilon(events)
    google = independent_epsilon(events)
    tolerance = 0.0 if accountant == "rdp" else PRV_DECLARED_ERROR
    assert abs(google - ours) <= 0.01 * ours + tolerance
    assert abs(google - events[-1].cumulative_epsilon) <= 0.01 * ours + tolerance
    assert independent_epsilon([]) == 0.0
    with pytest.raises(EventChainError):
        independent_epsilon([events[0], events[2]])  # a dropped event breaks the chain


def test_gdp_cannot_be_recomputed() -> None:
    segments = [Segment(sample_rate=0.1, noise_multiplier=1.0, steps=5)]
    with pytest.raises(UnsoundAccountantError):
        independent_compose_epsilon(segments, delta=1e-5, accountant="gdp")


@pytest.mark.parametrize("module", ["dp", "dp._independent"])
def test_importing_dp_loads_neither_torch_nor_opacus(module: str) -> None:
    code = (
        f"import sys, {module}; "
        "loaded = [m for m in ('torch', 'opacus') if m in sys.modules]; "
        "assert not loaded, loaded; "
        "import dp; assert dp.independent_epsilon([]) == 0.0"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_trainer_names_still_load_from_dp() -> None:
    import dp

    assert dp.SampleLevelDPClient.__name__ == "SampleLevelDPClient"
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = dp.no_such_name  # type: ignore[attr-defined]
