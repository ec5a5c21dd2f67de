"""One-run empirical privacy audit: the statistics (dp._empirical) and real DP-SGD canaries.

The statistics are checked against closed forms and exact binomial sums; the canary tests
train with real Opacus on a tiny model and check that an honest run's lower bound stays
below its claim while a broken run (noise near 0, or an accountant that under-counts
steps) is caught.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from opacus import PrivacyEngine
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.data import TensorDataset

import dp._chain as chain_module
import dp._trainer as trainer_module
from dp import DPConfig, InvalidDPConfigError, SampleLevelDPClient, Segment, compose_epsilon
from dp._canaries import GradientCanaries
from dp._empirical import (
    InvalidAuditError,
    audit_one_run,
    default_guess_counts,
    one_run_epsilon_lower,
    one_run_p_value,
)

DELTA = 1e-5


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _exact_tail(r: int, v: int, q: float) -> float:
    return sum(math.comb(r, k) * q**k * (1 - q) ** (r - k) for k in range(v, r + 1))


# ----------------------------------------------------------------------------- statistics


@pytest.mark.parametrize(("r", "v", "epsilon"), [(10, 7, 0.0), (20, 18, 1.0), (50, 30, 0.3)])
def test_p_value_without_delta_is_the_binomial_tail(r: int, v: int, epsilon: float) -> None:
    q = math.exp(epsilon) / (1 + math.exp(epsilon))
    got = one_run_p_value(canaries=100, guesses=r, correct=v, epsilon=epsilon, delta=0.0)
    assert got == pytest.approx(_exact_tail(r, v, q), rel=1e-9)


def test_p_value_delta_term_is_two_m_delta_times_the_worst_average_mass() -> None:
    m, r, v, epsilon, delta = 200, 30, 25, 1.0, 1e-4
    q = math.exp(epsilon) / (1 + math.exp(epsilon))

    def pmf(k: int) -> float:
        return math.comb(r, k) * q**k * (1 - q) ** (r - k)

    alpha = max(sum(pmf(k) for k in range(v - i, v)) / i for i in range(1, v + 1))
    expected = _exact_tail(r, v, q) + 2 * m * delta * alpha
    got = one_run_p_value(canaries=m, guesses=r, correct=v, epsilon=epsilon, delta=delta)
    assert got == pytest.approx(expected, rel=1e-9)
    assert got > one_run_p_value(canaries=m, guesses=r, correct=v, epsilon=epsilon, delta=0.0)


@pytest.mark.parametrize("m", [10, 100, 1000])
def test_perfect_guesses_give_the_known_maximum_for_m(m: int) -> None:
    # All m guesses right: p = q^m, so the bound is logit(significance^(1/m)).
    got = one_run_epsilon_lower(canaries=m, guesses=m, correct=m, delta=0.0, significance=0.05)
    assert got == pytest.approx(_logit(0.05 ** (1 / m)), rel=1e-6)
    with_delta = one_run_epsilon_lower(
        canaries=m, guesses=m, correct=m, delta=DELTA, significance=0.05
    )
    assert with_delta < got  # the delta term only weakens the bound


def test_bound_is_monotone_in_correct_guesses() -> None:
    bounds = [
        one_run_epsilon_lower(canaries=1000, guesses=200, correct=v, delta=DELTA, significance=0.05)
        for v in range(100, 201, 5)
    ]
    assert bounds[0] == 0.0  # half right is what a coin does
    assert all(b2 >= b1 for b1, b2 in itertools.pairwise(bounds))
    positive = [b for b in bounds if b > 0]
    assert all(b2 > b1 for b1, b2 in itertools.pairwise(positive))
    assert bounds[-1] > 3.0


def test_higher_confidence_gives_a_lower_bound() -> None:
    loose = one_run_epsilon_lower(
        canaries=1000, guesses=100, correct=90, delta=DELTA, significance=0.1
    )
    strict = one_run_epsilon_lower(
        canaries=1000, guesses=100, correct=90, delta=DELTA, significance=0.001
    )
    assert 0 < strict < loose


def test_null_scores_give_no_evidence() -> None:
    # Canaries with no effect: scores independent of the secret bits. At 95% confidence at
    # most 5% of runs may show any positive bound; none shows more than 0.1.
    bounds = []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        included = rng.random(1000) < 0.5
        audit = audit_one_run(
            scores=rng.standard_normal(1000), included=included, delta=DELTA, confidence=0.95
        )
        bounds.append(audit.epsilon_lower)
    assert np.mean(np.asarray(bounds) > 0) <= 0.05
    assert max(bounds) <= 0.1


def test_constant_scores_give_no_evidence() -> None:
    rng = np.random.default_rng(7)
    included = rng.random(1000) < 0.5
    audit = audit_one_run(scores=np.zeros(1000), included=included, delta=DELTA)
    assert audit.epsilon_lower == 0.0


def test_perfect_separation_pays_the_union_bound_over_guess_counts() -> None:
    rng = np.random.default_rng(3)
    included = rng.random(1000) < 0.5
    audit = audit_one_run(
        scores=included.astype(float) + 0.01 * rng.random(1000),
        included=included,
        delta=0.0,
        confidence=0.95,
    )
    assert audit.correct == audit.guesses
    assert audit.hypotheses == len(default_guess_counts(1000))
    corrected = (1 - 0.95) / audit.hypotheses
    assert audit.epsilon_lower == pytest.approx(_logit(corrected ** (1 / audit.guesses)), rel=1e-6)
    single = audit_one_run(
        scores=included.astype(float),
        included=included,
        delta=0.0,
        guess_counts=[(audit.guesses_in, audit.guesses_out)],
    )
    assert single.epsilon_lower > audit.epsilon_lower  # one hypothesis needs no correction


def test_guess_grid_depends_only_on_m() -> None:
    pairs = default_guess_counts(1000)
    assert (5, 5) in pairs and (500, 500) in pairs and (500, 0) in pairs
    assert all(k_in + k_out <= 1000 for k_in, k_out in pairs)
    assert len(set(pairs)) == len(pairs)
    assert default_guess_counts(1) == ((1, 0),)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (
            {"canaries": 10, "guesses": 5, "correct": 6, "delta": 0.0, "significance": 0.05},
            "correct",
        ),
        (
            {"canaries": 10, "guesses": 11, "correct": 6, "delta": 0.0, "significance": 0.05},
            "guesses",
        ),
        ({"canaries": 10, "guesses": 5, "correct": 3, "delta": 1.0, "significance": 0.05}, "delta"),
        (
            {"canaries": 10, "guesses": 5, "correct": 3, "delta": 0.0, "significance": 1.0},
            "significance",
        ),
        (
            {"canaries": 0, "guesses": 0, "correct": 0, "delta": 0.0, "significance": 0.05},
            "canaries",
        ),
        (
            {"canaries": 10, "guesses": True, "correct": 0, "delta": 0.0, "significance": 0.05},
            "guesses",
        ),
    ],
)
def test_bad_counts_are_named(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidAuditError, match=field):
        one_run_epsilon_lower(**kwargs)


def test_bad_scores_are_named() -> None:
    bits = np.array([True, False, True])
    with pytest.raises(InvalidAuditError, match="included"):
        audit_one_run(scores=[1.0, 2.0], included=bits, delta=DELTA)
    with pytest.raises(InvalidAuditError, match="included"):
        audit_one_run(scores=[1.0, 2.0, 3.0], included=[1, 0, 1], delta=DELTA)
    with pytest.raises(InvalidAuditError, match="finite"):
        audit_one_run(scores=[1.0, math.nan, 3.0], included=bits, delta=DELTA)
    with pytest.raises(InvalidAuditError, match="confidence"):
        audit_one_run(scores=[1.0, 2.0, 3.0], included=bits, delta=DELTA, confidence=1.0)
    with pytest.raises(InvalidAuditError, match="k\\+ \\+ k-"):
        audit_one_run(scores=[1.0, 2.0, 3.0], included=bits, delta=DELTA, guess_counts=[(2, 2)])
    assert issubclass(InvalidAuditError, ValueError)


# ----------------------------------------------------------------------------- DP-SGD canaries

N_RECORDS = 50  # batch_size = N_RECORDS: sample rate 1, where one-run audits are sharpest
FEATURES = 32
CLASSES = 32  # Linear(32, 32): 1056 parameters, so 1000 Dirac canaries fit
ROUNDS = 2
STEPS = 25


@pytest.fixture(scope="module")
def tiny_data() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(N_RECORDS, FEATURES, generator=generator)
    targets = torch.randint(0, CLASSES, (N_RECORDS,), generator=generator)
    return TensorDataset(features, targets)


def _train_audited(
    dataset: TensorDataset,
    *,
    config: DPConfig,
    canaries: int = 1000,
    rounds: int = ROUNDS,
    steps: int = STEPS,
    grad_sample_mode: str = "ghost",
    features: int = FEATURES,
    classes: int = CLASSES,
) -> tuple[SampleLevelDPClient, GradientCanaries]:
    torch.manual_seed(0)
    model = nn.Linear(features, classes)
    client = SampleLevelDPClient(
        client_id="hospital-0",
        config=config,
        n_records=len(dataset),
        batch_size=len(dataset),
        planned_rounds=rounds,
        steps_per_round=steps,
        grad_sample_mode=grad_sample_mode,
    )
    dimension = sum(p.numel() for p in model.parameters())
    audit_canaries = GradientCanaries(
        count=canaries,
        dimension=dimension,
        max_grad_norm=config.max_grad_norm,
        sample_rate=client.sample_rate,
        seed=11,
    )
    for round_id in range(1, rounds + 1):
        result = client.train_round(
            model=model,
            dataset=dataset,
            round_id=round_id,
            local_steps=steps,
            lr=0.5,
            generator=torch.Generator().manual_seed(round_id),
            canaries=audit_canaries,
        )
        with torch.no_grad():
            flat = torch.tensor(result.parameters, dtype=torch.float32)
            torch.nn.utils.vector_to_parameters(flat, model.parameters())
    return client, audit_canaries


@pytest.fixture
def noise_near_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mechanism runs at sigma 1e-3 while the accountant keeps the configured sigma."""
    make_private = PrivacyEngine.make_private

    def quiet(self: PrivacyEngine, **kwargs: Any) -> Any:
        return make_private(self, **{**kwargs, "noise_multiplier": 1e-3})

    monkeypatch.setattr(PrivacyEngine, "make_private", quiet)


def test_honest_run_stays_below_its_claim(tiny_data: TensorDataset) -> None:
    client, canaries = _train_audited(tiny_data, config=DPConfig(target_epsilon=1.0, delta=DELTA))
    audit = canaries.audit(delta=DELTA, confidence=0.95)
    assert canaries.steps_injected == client.total_steps == ROUNDS * STEPS
    assert audit.canaries == 1000
    assert audit.epsilon_lower <= client.epsilon


@pytest.mark.parametrize("grad_sample_mode", ["ghost", "hooks"])
def test_noise_near_zero_is_caught(
    tiny_data: TensorDataset, noise_near_zero: None, grad_sample_mode: str
) -> None:
    client, canaries = _train_audited(
        tiny_data,
        config=DPConfig(target_epsilon=1.0, delta=DELTA),
        rounds=1,
        steps=10,
        grad_sample_mode=grad_sample_mode,
    )
    audit = canaries.audit(delta=DELTA, confidence=0.95)
    assert client.epsilon <= 1.0
    assert audit.epsilon_lower > 2 * client.epsilon


def test_random_direction_canaries_when_they_outnumber_parameters(
    tiny_data: TensorDataset, noise_near_zero: None
) -> None:
    features, targets = tiny_data.tensors
    _, canaries = _train_audited(
        TensorDataset(features, targets % 2),
        config=DPConfig(target_epsilon=1.0, delta=DELTA),
        canaries=200,
        rounds=1,
        steps=10,
        classes=2,  # 66 parameters < 200 canaries
    )
    assert not canaries.dirac
    # Overlapping directions interfere (weak evidence, but evidence: null scores give 0).
    assert canaries.audit(delta=DELTA).epsilon_lower > 0.0


def test_accountant_counts_the_steps_actually_taken(tiny_data: TensorDataset) -> None:
    # The miscount of a well-known FL example (the accountant told "15 epochs" while each
    # client ran 100 steps per round for 15 rounds) cannot happen here: the accountant is
    # fed the steps the loop took, checked against Opacus's own count, round after round.
    taken: list[int] = []

    def count(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        taken.append(1)

    handle = register_optimizer_step_post_hook(count)
    try:
        client, _ = _train_audited(
            tiny_data, config=DPConfig(noise_multiplier=2.0, delta=DELTA), canaries=10, steps=7
        )
    finally:
        handle.remove()
    assert len(taken) == ROUNDS * 7 == client.total_steps
    assert [event.steps for event in client.events] == [7] * ROUNDS
    expected = compose_epsilon(
        [Segment(sample_rate=1.0, noise_multiplier=2.0, steps=len(taken), poisson_sampling=True)],
        delta=DELTA,
        accountant="rdp",
    )
    assert client.epsilon == pytest.approx(expected, rel=1e-9)


@pytest.fixture
def accountant_undercounts(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], int]]:
    """Force the miscount: calibration and accounting see 1/25 of the steps taken."""
    factor = 25

    def seen(steps: int) -> int:
        return max(1, steps // factor)

    calibrate = trainer_module.calibrate_noise
    compose = chain_module.compose_epsilon  # the one accountant composes through it

    def calibrate_undercounted(**kwargs: Any) -> float:
        return calibrate(**{**kwargs, "steps": seen(kwargs["steps"])})

    def compose_undercounted(segments: list[Segment], **kwargs: Any) -> float:
        shrunk = [
            Segment(
                sample_rate=s.sample_rate,
                noise_multiplier=s.noise_multiplier,
                steps=seen(s.steps),
                poisson_sampling=s.poisson_sampling,
            )
            for s in segments
        ]
        return compose(shrunk, **kwargs)

    monkeypatch.setattr(trainer_module, "calibrate_noise", calibrate_undercounted)
    monkeypatch.setattr(chain_module, "compose_epsilon", compose_undercounted)
    yield seen


def test_forced_step_miscount_is_caught_by_the_audit(
    tiny_data: TensorDataset, accountant_undercounts: Callable[[int], int]
) -> None:
    client, canaries = _train_audited(tiny_data, config=DPConfig(target_epsilon=1.0, delta=DELTA))
    true_epsilon = compose_epsilon(
        [
            Segment(
                sample_rate=1.0,
                noise_multiplier=client.noise_multiplier,
                steps=ROUNDS * STEPS,
                poisson_sampling=True,
            )
        ],
        delta=DELTA,
        accountant="rdp",
    )
    audit = canaries.audit(delta=DELTA, confidence=0.95)
    assert client.epsilon <= 1.0 < true_epsilon
    assert audit.epsilon_lower > client.epsilon


def test_canaries_must_match_the_client(tiny_data: TensorDataset) -> None:
    config = DPConfig(noise_multiplier=1.0, delta=DELTA)
    client = SampleLevelDPClient(
        client_id="hospital-0",
        config=config,
        n_records=N_RECORDS,
        batch_size=10,
        planned_rounds=1,
        steps_per_round=1,
    )
    wrong_rate = GradientCanaries(
        count=10, dimension=1056, max_grad_norm=1.0, sample_rate=1.0, seed=0
    )
    with pytest.raises(InvalidDPConfigError, match="sample rate"):
        client.train_round(
            model=nn.Linear(FEATURES, CLASSES),
            dataset=tiny_data,
            round_id=1,
            local_steps=1,
            lr=0.1,
            canaries=wrong_rate,
        )
    assert client.events == ()
    wrong_size = GradientCanaries(
        count=10, dimension=99, max_grad_norm=1.0, sample_rate=0.2, seed=0
    )
    with pytest.raises(InvalidAuditError, match="1056 parameters"):
        client.train_round(
            model=nn.Linear(FEATURES, CLASSES),
            dataset=tiny_data,
            round_id=1,
            local_steps=1,
            lr=0.1,
            canaries=wrong_size,
        )
    assert client.events == ()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"count": 0}, "count"),
        ({"dimension": 0}, "dimension"),
        ({"max_grad_norm": -1.0}, "max_grad_norm"),
        ({"sample_rate": 0.0}, "sample_rate"),
        ({"count": 100_001, "dimension": 1000}, "count \\* dimension"),
    ],
)
def test_bad_canary_parameters_are_named(kwargs: dict[str, Any], field: str) -> None:
    base: dict[str, Any] = {"count": 10, "dimension": 20, "max_grad_norm": 1.0, "sample_rate": 0.5}
    with pytest.raises(InvalidAuditError, match=field):
        GradientCanaries(**{**base, **kwargs})
