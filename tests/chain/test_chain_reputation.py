"""Pure checks of the subjective-logic reputation model and of epsilon fixed point."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain import ChainConfigError, budget_to_fixed, epsilon_to_fixed, opinion


def test_no_history_is_base_rate_and_negative_weighs_more() -> None:
    assert opinion(0, 0).score_fixed == 500_000
    assert opinion(1, 0).score > opinion(0, 0).score > opinion(0, 1).score
    assert opinion(5, 1).score < opinion(6, 0).score
    assert 0.5 - opinion(0, 1).score > opinion(1, 0).score - 0.5  # a miss costs more than a hit
    with pytest.raises(ChainConfigError):
        opinion(-1, 0)


@given(st.integers(0, 10**6), st.integers(0, 10**6))
def test_opinion_is_a_valid_distribution(p: int, n: int) -> None:
    o = opinion(p, n)
    assert o.belief + o.disbelief + o.uncertainty == pytest.approx(1.0)
    assert 0 <= o.score_fixed <= 1_000_000


@given(st.floats(0, 1e6, allow_nan=False))
def test_epsilon_claim_rounds_up_and_budget_rounds_down(eps: float) -> None:
    claim, budget = epsilon_to_fixed(eps), budget_to_fixed(eps)
    assert claim >= eps * 1e6 - 1e-3 and budget <= eps * 1e6 + 1e-3
    assert budget <= claim


def test_epsilon_rejects_bad_values() -> None:
    for bad in (-0.1, float("nan"), float("inf"), 2.0**70):
        with pytest.raises(ChainConfigError, match="epsilon"):
            epsilon_to_fixed(bad)
    assert epsilon_to_fixed(1.0000001) == 1_000_001
    assert epsilon_to_fixed(0.1 + 0.2) == 300_000
