"""Frozen DP configuration (:class:`DPConfig`), validated at construction.

The configuration holds only privacy parameters. Quantities that depend on the data (the
record count, hence ``delta < 1/n``) are checked by :meth:`DPConfig.validate_for` once the
client's data size is known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from dp._errors import InvalidDPConfigError, UnsoundAccountantError

__all__ = [
    "ACCOUNTANTS",
    "DIAGNOSTIC_ACCOUNTANTS",
    "GRAD_SAMPLE_MODES",
    "AccountantName",
    "DPConfig",
]

#: Accountants whose epsilon is a sound upper bound: the only ones a claim or budget uses.
AccountantName = Literal["rdp", "prv"]
ACCOUNTANTS: tuple[str, ...] = get_args(AccountantName)
#: Accountants that may under-report (GDP's CLT approximation): diagnostics only.
DIAGNOSTIC_ACCOUNTANTS: tuple[str, ...] = ("gdp",)

#: Opacus per-sample gradient engines; ``ghost`` is ghost clipping (Li et al. 2022), which
#: never materialises per-sample gradients (fastest for the MLPs in benchmarks/bench_dp.py).
#: ``ew`` (ExpandedWeights) is left out: it raises on the empty batches Poisson sampling makes.
#: Defined here, not in :mod:`dp._trainer`, so that config validation needs no torch.
GRAD_SAMPLE_MODES: tuple[str, ...] = ("ghost", "hooks", "functorch")


def _positive_finite(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidDPConfigError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise InvalidDPConfigError(f"{name} must be > 0 and finite, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class DPConfig:
    """Differential-privacy parameters of one client (sample level) or of the federation.

    Exactly one of ``noise_multiplier`` (sigma: noise std divided by the clip norm) and
    ``target_epsilon`` is set. In target mode sigma is calibrated once, for the planned total
    number of steps over all rounds, so the final epsilon lands at or below the target.

    ``max_grad_norm`` is the per-sample gradient clip norm C (sample level) or the
    per-client update clip norm S (client level). ``delta`` must lie in (0, 1) and, checked
    by :meth:`validate_for`, below ``1/n`` for ``n`` records (or clients) unless
    ``allow_large_delta`` is set explicitly.

    ``poisson_sampling`` (default on) is what the amplification-by-sampling bound assumes.
    Turning it off is recorded in every privacy event, and the accounting then claims no
    amplification: each step is accounted as an unsampled Gaussian mechanism with
    replace-one sensitivity 2C (sample rate 1, noise multiplier sigma/2). That bound is
    sound for any batch selection but much larger.

    ``epsilon_budget`` (optional) is the cumulative epsilon a client may spend; a round that
    would exceed it is refused before training. ``secure_mode`` asks Opacus for its
    cryptographically secure noise generator (needs ``torchcsprng``).
    """

    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    accountant: AccountantName = "rdp"
    poisson_sampling: bool = True
    secure_mode: bool = False
    epsilon_budget: float | None = None
    allow_large_delta: bool = False

    def __post_init__(self) -> None:
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise InvalidDPConfigError(
                "exactly one of noise_multiplier and target_epsilon must be set, got "
                f"noise_multiplier={self.noise_multiplier!r}, "
                f"target_epsilon={self.target_epsilon!r}"
            )
        if self.noise_multiplier is not None:
            _positive_finite("noise_multiplier", self.noise_multiplier)
        if self.target_epsilon is not None:
            _positive_finite("target_epsilon", self.target_epsilon)
        _positive_finite("max_grad_norm", self.max_grad_norm)
        if isinstance(self.delta, bool) or not isinstance(self.delta, int | float):
            raise InvalidDPConfigError(f"delta must be a number in (0, 1), got {self.delta!r}")
        if not 0.0 < self.delta < 1.0:
            raise InvalidDPConfigError(f"delta must be in (0, 1), got {self.delta!r}")
        if self.accountant in DIAGNOSTIC_ACCOUNTANTS:
            raise UnsoundAccountantError(
                f"accountant {self.accountant!r} can under-report epsilon (CLT approximation) "
                f"and may not back a claim or a budget; use one of {ACCOUNTANTS}"
            )
        if self.accountant not in ACCOUNTANTS:
            raise InvalidDPConfigError(
                f"accountant must be one of {ACCOUNTANTS}, got {self.accountant!r}"
            )
        for flag in ("poisson_sampling", "secure_mode", "allow_large_delta"):
            if not isinstance(getattr(self, flag), bool):
                raise InvalidDPConfigError(f"{flag} must be a bool, got {getattr(self, flag)!r}")
        if self.epsilon_budget is not None:
            _positive_finite("epsilon_budget", self.epsilon_budget)
            if self.target_epsilon is not None and self.target_epsilon > self.epsilon_budget:
                raise InvalidDPConfigError(
                    f"target_epsilon ({self.target_epsilon}) must not exceed epsilon_budget "
                    f"({self.epsilon_budget})"
                )

    @property
    def budget(self) -> float:
        """The cumulative epsilon this configuration may spend (``inf`` when unbounded).

        In target mode without an explicit budget, the target itself is the budget.
        """
        if self.epsilon_budget is not None:
            return float(self.epsilon_budget)
        if self.target_epsilon is not None:
            return float(self.target_epsilon)
        return math.inf

    def validate_for(self, n_records: int) -> None:
        """Check the parameters against a data set of ``n_records`` records (or clients).

        Raises :class:`InvalidDPConfigError` when ``n_records < 1`` or when
        ``delta >= 1/n_records`` and ``allow_large_delta`` is not set: such a delta permits
        mechanisms that publish a random record in the clear.
        """
        if isinstance(n_records, bool) or not isinstance(n_records, int) or n_records < 1:
            raise InvalidDPConfigError(f"n_records must be an int >= 1, got {n_records!r}")
        if not self.allow_large_delta and self.delta >= 1.0 / n_records:
            raise InvalidDPConfigError(
                f"delta must be < 1/n_records = {1.0 / n_records:.3g} for {n_records} records, "
                f"got {self.delta!r} (set allow_large_delta=True to override)"
            )
