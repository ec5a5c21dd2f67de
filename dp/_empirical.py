"""Empirical lower bound on privacy loss from one training run (pure statistics, no torch).

One-run auditing (Steinke, Nasr and Jagielski, "Privacy Auditing with One (1) Training
Run", NeurIPS 2023, arXiv 2305.08846). ``m`` canaries are each included in training
independently with probability 1/2 (secret bits ``S``). After training each canary gets a
score; the auditor guesses "in" for the ``k+`` highest scores and "out" for the ``k-``
lowest and abstains on the rest. If the mechanism is (epsilon, delta)-DP in each canary,
the number ``W`` of correct guesses among the ``r = k+ + k-`` made satisfies (their main
theorem with its (epsilon, delta) extension; the computation follows the p-value routine
printed in the paper)::

    P[W >= v] <= P[Binomial(r, q) >= v] + 2 m delta * max_{i=1..v} P[v-i <= Binomial(r, q) < v] / i

with ``q = e^eps / (1 + e^eps)``. The lower bound is the largest epsilon whose p-value is
still below the significance ``1 - confidence``: every (epsilon', delta) claim with
epsilon' below it is rejected by this run at that confidence.

The auditor does not know the best ``(k+, k-)`` in advance; :func:`audit_one_run` tries a
fixed grid of them on the same scores and corrects for it with a union bound (each of the
``h`` hypotheses is tested at ``(1 - confidence) / h``), so the reported bound keeps the
stated confidence.

What the bound means: with probability at least ``confidence`` over the canaries' secret
bits and the run's randomness, THIS run's mechanism is not (epsilon, delta)-DP for any
epsilon below ``epsilon_lower``, for the canaries' threat model (the auditor sees what the
scores are computed from). It is not a certificate of privacy: it can be far below the
true epsilon, especially with few canaries, sampling rates below 1, or weak scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from dp._errors import DPError

__all__ = [
    "AUDIT_METHODS",
    "InvalidAuditError",
    "OneRunAudit",
    "audit_one_run",
    "default_guess_counts",
    "one_run_epsilon_lower",
    "one_run_p_value",
]

#: Values of ``dp.audit``: ``none`` (no canaries) or ``one_run`` (this module).
AUDIT_METHODS: tuple[str, ...] = ("none", "one_run")

#: Fractions of the canaries guessed on each side in :func:`default_guess_counts`.
_GUESS_FRACTIONS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
_BISECTION_STEPS = 60


class InvalidAuditError(DPError, ValueError):
    """Bad input to the empirical privacy audit (counts, scores, confidence, delta)."""


def _count(name: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidAuditError(f"{name} must be an int, got {value!r}")
    if value < low or (high is not None and value > high):
        upper = "" if high is None else f", <= {high}"
        raise InvalidAuditError(f"{name} must be >= {low}{upper}, got {value}")
    return int(value)


def _probability(name: str, value: Any, *, open_low: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidAuditError(f"{name} must be a number, got {value!r}")
    low_ok = value > 0 if open_low else value >= 0
    if not (math.isfinite(value) and low_ok and value < 1):
        interval = "(0, 1)" if open_low else "[0, 1)"
        raise InvalidAuditError(f"{name} must be in {interval}, got {value!r}")
    return float(value)


def _p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    q = 1.0 / (1.0 + math.exp(-epsilon))  # accuracy of epsilon-DP randomized response
    tail = float(stats.binom.sf(v - 1, r, q))  # P[Binomial(r, q) >= v]
    if delta == 0.0 or v == 0:
        return min(tail, 1.0)
    # P[v - i <= Binomial(r, q) < v] for i = 1..v, summed from the top, divided by i.
    below = stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)
    alpha = float(np.max(np.cumsum(below) / np.arange(1, v + 1)))
    return min(tail + alpha * 2.0 * m * delta, 1.0)


def one_run_p_value(
    *, canaries: int, guesses: int, correct: int, epsilon: float, delta: float
) -> float:
    """P-value of ``correct`` right guesses out of ``guesses`` under (epsilon, delta)-DP.

    ``canaries`` is ``m`` (each included with probability 1/2); the null hypothesis is that
    the run is (epsilon, delta)-DP in each canary. Small values reject it.
    """
    m = _count("canaries", canaries, 1)
    r = _count("guesses", guesses, 0, m)
    v = _count("correct", correct, 0, r)
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float):
        raise InvalidAuditError(f"epsilon must be a number, got {epsilon!r}")
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise InvalidAuditError(f"epsilon must be >= 0 and finite, got {epsilon!r}")
    d = _probability("delta", delta, open_low=False)
    return _p_value(m, r, v, float(epsilon), d)


def one_run_epsilon_lower(
    *, canaries: int, guesses: int, correct: int, delta: float, significance: float
) -> float:
    """The largest epsilon whose p-value stays below ``significance`` (0.0 if none).

    Every (epsilon', delta) claim with ``epsilon' <`` the result is rejected at level
    ``significance`` by ``correct`` right guesses out of ``guesses``.
    """
    m = _count("canaries", canaries, 1)
    r = _count("guesses", guesses, 0, m)
    v = _count("correct", correct, 0, r)
    d = _probability("delta", delta, open_low=False)
    alpha = _probability("significance", significance, open_low=True)
    if _p_value(m, r, v, 0.0, d) >= alpha:
        return 0.0
    low, high = 0.0, 1.0  # invariant: p(low) < alpha <= p(high)
    while _p_value(m, r, v, high, d) < alpha:
        low, high = high, 2.0 * high
    for _ in range(_BISECTION_STEPS):
        middle = 0.5 * (low + high)
        if _p_value(m, r, v, middle, d) < alpha:
            low = middle
        else:
            high = middle
    return low


def default_guess_counts(canaries: int) -> tuple[tuple[int, int], ...]:
    """The ``(k+, k-)`` pairs :func:`audit_one_run` tries by default.

    Symmetric pairs ``(k, k)`` and one-sided pairs ``(k, 0)`` for ``k`` a fixed fraction
    of the canaries (0.5% up to 50%, at least 1), without duplicates. The grid depends only
    on ``canaries``, never on the scores, so the union-bound correction is exact.
    """
    m = _count("canaries", canaries, 1)
    sides = sorted({max(1, round(f * m)) for f in _GUESS_FRACTIONS})
    pairs: list[tuple[int, int]] = []
    for k in sides:
        if 2 * k <= m:
            pairs.append((k, k))
        if k <= m:
            pairs.append((k, 0))
    return tuple(dict.fromkeys(pairs))


@dataclass(frozen=True, kw_only=True)
class OneRunAudit:
    """Outcome of one one-run audit.

    ``guesses`` (``guesses_in + guesses_out``) and ``correct`` are those of the best
    ``(k+, k-)`` pair; ``hypotheses`` is how many pairs were tried, each at significance
    ``(1 - confidence) / hypotheses``; ``epsilon_lower`` is their maximum lower bound.
    """

    method: str
    canaries: int
    guesses: int
    guesses_in: int
    guesses_out: int
    correct: int
    hypotheses: int
    confidence: float
    delta: float
    epsilon_lower: float

    def to_dict(self, *, epsilon_claimed: float | None) -> dict[str, Any]:
        """The ``final.privacy_audit`` entry of ``results.json``."""
        return {
            "method": self.method,
            "canaries": self.canaries,
            "guesses": self.guesses,
            "correct": self.correct,
            "confidence": self.confidence,
            "delta": self.delta,
            "epsilon_lower": self.epsilon_lower,
            "epsilon_claimed": epsilon_claimed,
        }


def audit_one_run(
    *,
    scores: Sequence[float] | np.ndarray,
    included: Sequence[bool] | np.ndarray,
    delta: float,
    confidence: float = 0.95,
    guess_counts: Sequence[tuple[int, int]] | None = None,
) -> OneRunAudit:
    """Guess each canary in/out from its score and bound epsilon from below.

    ``scores[i]`` is high when canary ``i`` looks included; ``included[i]`` is its secret
    bit. For every ``(k+, k-)`` of ``guess_counts`` (default :func:`default_guess_counts`)
    the ``k+`` highest scores are guessed in and the ``k-`` lowest out; ties are broken by
    canary index, which is independent of the secret bits.
    """
    score_array = np.asarray(scores, dtype=np.float64)
    bits = np.asarray(included)
    if score_array.ndim != 1 or score_array.size == 0:
        raise InvalidAuditError(f"scores must be a non-empty vector, got shape {score_array.shape}")
    if bits.shape != score_array.shape or bits.dtype != np.bool_:
        raise InvalidAuditError(
            f"included must be a bool vector of the scores' shape {score_array.shape}, "
            f"got {bits.dtype} of shape {bits.shape}"
        )
    if not np.all(np.isfinite(score_array)):
        raise InvalidAuditError("scores must be finite")
    conf = _probability("confidence", confidence, open_low=True)
    d = _probability("delta", delta, open_low=False)
    m = int(score_array.size)
    pairs = default_guess_counts(m) if guess_counts is None else tuple(guess_counts)
    if not pairs:
        raise InvalidAuditError("guess_counts must not be empty")
    for k_in, k_out in pairs:
        _count("k+", k_in, 0, m)
        _count("k-", k_out, 0, m)
        if k_in + k_out > m:
            raise InvalidAuditError(f"k+ + k- must be <= {m} canaries, got ({k_in}, {k_out})")
    # Descending by score, ties by ascending index (a stable sort of the negated scores).
    order = np.argsort(-score_array, kind="stable")
    ordered_bits = bits[order]
    hits_in = np.concatenate(([0], np.cumsum(ordered_bits)))  # in-canaries among top k
    hits_out = np.concatenate(([0], np.cumsum(~ordered_bits[::-1])))  # out among bottom k
    significance = (1.0 - conf) / len(pairs)
    best: OneRunAudit | None = None
    for k_in, k_out in pairs:
        correct = int(hits_in[k_in] + hits_out[k_out])
        bound = one_run_epsilon_lower(
            canaries=m,
            guesses=k_in + k_out,
            correct=correct,
            delta=d,
            significance=significance,
        )
        if best is None or bound > best.epsilon_lower:
            best = OneRunAudit(
                method="one_run",
                canaries=m,
                guesses=k_in + k_out,
                guesses_in=k_in,
                guesses_out=k_out,
                correct=correct,
                hypotheses=len(pairs),
                confidence=conf,
                delta=d,
                epsilon_lower=bound,
            )
    if best is None:  # unreachable: pairs is non-empty
        raise InvalidAuditError("guess_counts must not be empty")
    return best
