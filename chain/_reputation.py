"""Subjective-logic reputation (Kang et al. 2019), the same arithmetic as the contract.

An opinion about a client is (belief b, disbelief d, uncertainty u) with b + d + u = 1:
with weighted evidence P = wP*positive and N = wN*negative and prior weight W,
b = P / (P + N + W), d = N / (P + N + W), u = W / (P + N + W), and the expected
reputation is score = b + a*u for base rate a. Negative events (missed deadlines, auditor
flags) weigh more than positive ones (wN = 2 > wP = 1), as in Kang et al.

The contract computes ``score_fixed = floor((wP*p*S + a_fixed*W) / (wP*p + wN*n + W))`` with
S = 1e6; ``opinion`` reproduces that integer exactly so off-chain selection agrees with the
chain.
"""

from __future__ import annotations

from dataclasses import dataclass

from chain._errors import ChainConfigError
from chain._types import REPUTATION_SCALE

POSITIVE_WEIGHT = 1
NEGATIVE_WEIGHT = 2
PRIOR_WEIGHT = 2
BASE_RATE_FIXED = 500_000  # a = 0.5


@dataclass(frozen=True)
class Opinion:
    """A subjective-logic opinion and its fixed-point expected score."""

    belief: float
    disbelief: float
    uncertainty: float
    base_rate: float
    score_fixed: int

    @property
    def score(self) -> float:
        """Expected reputation b + a*u as the contract reports it (fixed point -> float)."""
        return self.score_fixed / REPUTATION_SCALE


def opinion(positive: int, negative: int) -> Opinion:
    """Opinion from event counts, with the contract's exact fixed-point score."""
    if positive < 0 or negative < 0:
        raise ChainConfigError(f"positive and negative must be >= 0, got {positive}, {negative}")
    p, n = POSITIVE_WEIGHT * positive, NEGATIVE_WEIGHT * negative
    total = p + n + PRIOR_WEIGHT
    score_fixed = (p * REPUTATION_SCALE + BASE_RATE_FIXED * PRIOR_WEIGHT) // total
    return Opinion(
        belief=p / total,
        disbelief=n / total,
        uncertainty=PRIOR_WEIGHT / total,
        base_rate=BASE_RATE_FIXED / REPUTATION_SCALE,
        score_fixed=score_fixed,
    )
