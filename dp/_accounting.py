"""Pure privacy-accounting maths: no training state, no I/O.

Every mechanism this package runs is a (Poisson-)subsampled Gaussian mechanism: per-sample
DP-SGD steps (``"dpsgd-sample"``, sample rate = expected batch / records) and DP-FedAvg
rounds (``"dp-fedavg-client"``, sample rate = client sampling rate). A history is a list of
:class:`Segment` objects ``(sample_rate, noise_multiplier, steps, poisson_sampling)``; the
epsilon of a history is the epsilon of the composition of all its steps, at one ``delta``.

The numerical analyses are Opacus's (``opacus.accountants.analysis``, imported lazily so
that ``import dp`` pulls in neither torch nor Opacus): RDP (Mironov et al. 2019, the
default and the tightest sound bound for integer/fractional orders here) and PRV (Gopi et
al. 2021, the reported value is the upper end of its error interval). These two are the
only accountants a claim or a budget may use (:data:`dp.ACCOUNTANTS`). GDP (Dong et al.
2019) is a CLT approximation that *underestimates* epsilon (calibrated to epsilon 1 at
q=0.05 for one step, the PRV bound of the same mechanism is 4.67): it is kept only as a
labelled diagnostic, :func:`gdp_epsilon_diagnostic`, and refused everywhere else with
:class:`~dp.UnsoundAccountantError`. :mod:`dp._independent` recomputes RDP and PLD epsilons
with Google's ``dp_accounting`` as an independent check.

Segments with the same ``(sample_rate, noise_multiplier, poisson_sampling)`` are merged
before the analysis (composition is commutative), so R rounds of T steps and one run of
R*T steps give the same epsilon with every accountant.

Without Poisson sampling no amplification-by-sampling is claimed: each step is accounted as
an unsampled Gaussian mechanism with replace-one sensitivity 2C, i.e. sample rate 1 and
noise multiplier sigma/2. That is sound for any batch selection (shuffling, fixed-size
batches), at the price of a far larger epsilon.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from dp._config import ACCOUNTANTS, DIAGNOSTIC_ACCOUNTANTS
from dp._errors import InvalidDPConfigError, UnsoundAccountantError

__all__ = [
    "MECHANISMS",
    "RDP_ORDERS",
    "Mechanism",
    "Segment",
    "accounted_parameters",
    "calibrate_noise",
    "compose_epsilon",
    "epsilon_for",
    "gdp_epsilon_diagnostic",
    "merge_segments",
]

Mechanism = Literal["dpsgd-sample", "dp-fedavg-client"]
MECHANISMS: tuple[str, ...] = get_args(Mechanism)

#: RDP orders searched for the RDP -> (epsilon, delta) conversion: Opacus's
#: ``RDPAccountant.DEFAULT_ALPHAS`` (a test checks they are equal), written out so that
#: this module does not import Opacus.
RDP_ORDERS: tuple[float, ...] = tuple(
    [1 + x / 10.0 for x in range(1, 100)] + [float(a) for a in range(12, 64)]
)

_MAX_SIGMA = 1e6


@dataclass(frozen=True, kw_only=True)
class Segment:
    """``steps`` consecutive steps of one subsampled Gaussian mechanism.

    ``noise_multiplier`` is the noise std divided by the sensitivity (clip norm), and
    ``sample_rate`` the probability that a record (client) takes part in a step (round).
    """

    sample_rate: float
    noise_multiplier: float
    steps: int
    poisson_sampling: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.sample_rate, int | float) and 0.0 < self.sample_rate <= 1.0):
            raise InvalidDPConfigError(f"sample_rate must be in (0, 1], got {self.sample_rate!r}")
        if not (
            isinstance(self.noise_multiplier, int | float)
            and math.isfinite(self.noise_multiplier)
            and self.noise_multiplier > 0
        ):
            raise InvalidDPConfigError(
                f"noise_multiplier must be > 0 and finite, got {self.noise_multiplier!r}"
            )
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise InvalidDPConfigError(f"steps must be an int >= 0, got {self.steps!r}")
        if not isinstance(self.poisson_sampling, bool):
            raise InvalidDPConfigError(
                f"poisson_sampling must be a bool, got {self.poisson_sampling!r}"
            )


def accounted_parameters(segment: Segment) -> tuple[float, float]:
    """The ``(sample_rate, noise_multiplier)`` the analysis uses for ``segment``.

    With Poisson sampling these are the segment's own values; without it, ``(1.0, sigma/2)``
    (no amplification, replace-one sensitivity 2C).
    """
    if segment.poisson_sampling:
        return float(segment.sample_rate), float(segment.noise_multiplier)
    return 1.0, float(segment.noise_multiplier) / 2.0


def merge_segments(segments: Iterable[Segment]) -> list[tuple[float, float, int]]:
    """Group steps by accounted ``(sample_rate, noise_multiplier)``; drop empty segments.

    Returns ``(sample_rate, noise_multiplier, steps)`` triples in first-seen order.
    """
    merged: dict[tuple[float, float], int] = {}
    for segment in segments:
        if segment.steps == 0:
            continue
        key = accounted_parameters(segment)
        merged[key] = merged.get(key, 0) + segment.steps
    return [(q, sigma, steps) for (q, sigma), steps in merged.items()]


def _check_delta(delta: float) -> None:
    if not (isinstance(delta, int | float) and 0.0 < delta < 1.0):
        raise InvalidDPConfigError(f"delta must be in (0, 1), got {delta!r}")


def _check_accountant(accountant: str) -> None:
    if accountant in DIAGNOSTIC_ACCOUNTANTS:
        raise UnsoundAccountantError(
            f"accountant {accountant!r} can under-report epsilon and is a diagnostic only; "
            f"a claim or a budget needs one of {ACCOUNTANTS}"
        )
    if accountant not in ACCOUNTANTS:
        raise InvalidDPConfigError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")


@functools.lru_cache(maxsize=4096)
def _rdp_per_step(q: float, sigma: float) -> tuple[float, ...]:
    """RDP of one step at every order; RDP composes additively, so T steps cost T times
    this. Cached: a federation repeats the same (q, sigma) every round, and the auditor
    re-derives every round's epsilon."""
    from opacus.accountants.analysis import rdp as rdp_analysis

    return tuple(
        float(value)
        for value in rdp_analysis.compute_rdp(
            q=q, noise_multiplier=sigma, steps=1, orders=list(RDP_ORDERS)
        )
    )


def _rdp_epsilon(history: Sequence[tuple[float, float, int]], delta: float) -> float:
    from opacus.accountants.analysis import rdp as rdp_analysis

    rdp = np.zeros(len(RDP_ORDERS))
    for q, sigma, steps in history:
        rdp = rdp + steps * np.asarray(_rdp_per_step(q, sigma))
    eps, _ = rdp_analysis.get_privacy_spent(orders=list(RDP_ORDERS), rdp=rdp, delta=delta)
    return float(eps)


def _prv_epsilon(history: Sequence[tuple[float, float, int]], delta: float) -> float:
    from opacus.accountants.prv import PRVAccountant

    accountant = PRVAccountant()
    accountant.history = [(sigma, q, steps) for q, sigma, steps in history]
    with np.errstate(divide="ignore"):  # log(1 - q) at q = 1 is -inf, which the PRV handles
        return float(accountant.get_epsilon(delta=delta))


def gdp_epsilon_diagnostic(segments: Iterable[Segment], *, delta: float) -> float:
    """GDP (CLT) epsilon of ``segments``: a DIAGNOSTIC that can under-report, never a claim.

    Opacus's Gaussian-DP approximation of the subsampled Gaussian (exact only at sample
    rate 1, where T steps at sigma are ``sqrt(T)/sigma``-GDP). It may be printed beside a
    sound epsilon; :func:`compose_epsilon`, budgets and events refuse ``"gdp"``.
    """
    from opacus.accountants.analysis import gdp as gdp_analysis

    _check_delta(delta)
    mu_squared = 0.0
    for q, sigma, steps in merge_segments(segments):
        if q >= 1.0:
            mu = math.sqrt(steps) / sigma  # exact: T-fold Gaussian mechanism is sqrt(T)/sigma-GDP
        else:
            mu = gdp_analysis.compute_mu_poisson(steps=steps, noise_multiplier=sigma, sample_rate=q)
        mu_squared += float(mu) ** 2
    if mu_squared == 0.0:
        return 0.0
    mu_total = math.sqrt(mu_squared)
    if gdp_analysis.delta_eps_mu(eps=0.0, mu=mu_total) <= delta:
        return 0.0
    return float(gdp_analysis.eps_from_mu(mu=mu_total, delta=delta))


_ANALYSES = {"rdp": _rdp_epsilon, "prv": _prv_epsilon}


def compose_epsilon(segments: Iterable[Segment], *, delta: float, accountant: str) -> float:
    """Epsilon at ``delta`` of the composition of every step in ``segments``.

    An empty history (or one with zero steps) spends nothing and returns 0.0.
    """
    _check_delta(delta)
    _check_accountant(accountant)
    history = merge_segments(segments)
    if not history:
        return 0.0
    return _ANALYSES[accountant](history, float(delta))


def epsilon_for(
    *,
    mechanism: str,
    sample_rate: float,
    noise_multiplier: float,
    steps: int,
    delta: float,
    accountant: str,
    poisson_sampling: bool = True,
) -> float:
    """Epsilon at ``delta`` after ``steps`` steps of one subsampled Gaussian ``mechanism``.

    ``mechanism`` is ``"dpsgd-sample"`` (sample rate = expected batch size / records) or
    ``"dp-fedavg-client"`` (sample rate = client sampling rate per round); both are analysed
    as a Poisson-subsampled Gaussian mechanism with the given noise multiplier.
    """
    if mechanism not in MECHANISMS:
        raise InvalidDPConfigError(f"mechanism must be one of {MECHANISMS}, got {mechanism!r}")
    segment = Segment(
        sample_rate=sample_rate,
        noise_multiplier=noise_multiplier,
        steps=steps,
        poisson_sampling=poisson_sampling,
    )
    return compose_epsilon([segment], delta=delta, accountant=accountant)


def calibrate_noise(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str,
    poisson_sampling: bool = True,
    prior: Sequence[Segment] = (),
    rel_tolerance: float = 1e-3,
) -> float:
    """The smallest noise multiplier (to ``rel_tolerance``) whose total epsilon is <= target.

    The total is the composition of ``prior`` (steps already spent) and ``steps`` new steps
    at ``sample_rate`` with the returned sigma. The returned sigma is the upper end of a
    bisection, so its epsilon is verified to be at or below ``target_epsilon``.
    Raises :class:`InvalidDPConfigError` when the target cannot be reached (the prior alone
    exceeds it, or sigma would have to exceed 1e6).
    """
    if not (isinstance(target_epsilon, int | float) and target_epsilon > 0):
        raise InvalidDPConfigError(f"target_epsilon must be > 0, got {target_epsilon!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidDPConfigError(f"steps must be an int >= 1, got {steps!r}")

    def total(sigma: float) -> float:
        new = Segment(
            sample_rate=sample_rate,
            noise_multiplier=sigma,
            steps=steps,
            poisson_sampling=poisson_sampling,
        )
        return compose_epsilon([*prior, new], delta=delta, accountant=accountant)

    spent = compose_epsilon(prior, delta=delta, accountant=accountant)
    if spent >= target_epsilon:
        raise InvalidDPConfigError(
            f"target_epsilon={target_epsilon} is unreachable: the prior steps already spend "
            f"epsilon {spent:.4g}"
        )
    sigma_low, sigma_high = 0.0, 1.0
    while total(sigma_high) > target_epsilon:
        sigma_low, sigma_high = sigma_high, 2.0 * sigma_high
        if sigma_high > _MAX_SIGMA:
            raise InvalidDPConfigError(
                f"target_epsilon={target_epsilon} is unreachable for {steps} steps at "
                f"sample_rate={sample_rate} and delta={delta} (sigma would exceed {_MAX_SIGMA:g})"
            )
    while sigma_high - sigma_low > rel_tolerance * sigma_high:
        sigma = 0.5 * (sigma_low + sigma_high)
        if total(sigma) <= target_epsilon:
            sigma_high = sigma
        else:
            sigma_low = sigma
    return sigma_high
