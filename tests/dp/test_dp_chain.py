"""The one accountant over an event chain (``dp.EventChain``), used by both DP levels."""

from __future__ import annotations

import dataclasses
import math

import pytest

from dp import (
    GENESIS_DIGEST,
    ClientLevelAccountant,
    EventChain,
    EventChainError,
    InvalidDPConfigError,
    PrivacyEvent,
    Segment,
    compose_epsilon,
    recompute_epsilon,
    verify_event_chain,
)

SEGMENT = Segment(sample_rate=0.07, noise_multiplier=1.3, steps=25)


def _chain(rounds: int = 3, owner: str = "hospital-a") -> EventChain:
    chain = EventChain(owner=owner, delta=1e-5, accountant="rdp")
    for round_id in range(rounds):
        chain.record(
            round_id=round_id,
            mechanism="dpsgd-sample",
            segment=SEGMENT,
            max_grad_norm=1.0,
            epsilon_budget=8.0,
        )
    return chain


def test_record_composes_every_event_and_links_the_chain() -> None:
    chain = _chain(3)
    events = chain.events
    verify_event_chain(events)  # the chain's own verifier agrees
    assert events[0].previous_digest == GENESIS_DIGEST
    assert chain.head == events[-1].digest_hex()
    assert chain.cumulative_steps == 75 and len(chain) == 3
    expected = compose_epsilon([SEGMENT] * 3, delta=1e-5, accountant="rdp")
    assert chain.epsilon == pytest.approx(expected, rel=1e-12)
    assert recompute_epsilon(events) == pytest.approx(chain.epsilon, rel=1e-12)
    # projecting composes the history with the extra segments, recording nothing
    more = chain.projected_epsilon(SEGMENT)
    assert more > chain.epsilon and len(chain) == 3
    assert chain.projected_epsilon() == pytest.approx(chain.epsilon, rel=1e-12)


def test_a_round_that_does_not_follow_is_refused_and_changes_nothing() -> None:
    chain = _chain(2)
    before = chain.to_state()
    for round_id in (0, 1, -1):
        with pytest.raises(InvalidDPConfigError, match="round_id"):
            chain.record(
                round_id=round_id,
                mechanism="dpsgd-sample",
                segment=SEGMENT,
                max_grad_norm=1.0,
                epsilon_budget=None,
            )
    assert chain.to_state() == before


def test_restore_round_trips_and_verifies() -> None:
    chain = _chain(3)
    again = EventChain(owner="hospital-a", delta=1e-5, accountant="rdp")
    again.restore(chain.to_state())
    assert again.events == chain.events and again.epsilon == chain.epsilon
    again.record(
        round_id=7, mechanism="dpsgd-sample", segment=SEGMENT, max_grad_norm=1.0, epsilon_budget=8
    )
    assert again.events[-1].previous_digest == chain.head


def _tampered_states(chain: EventChain) -> dict[str, list[str]]:
    events = list(chain.events)

    def encode(items: list[PrivacyEvent]) -> list[str]:
        return [e.canonical_bytes().decode("ascii") for e in items]

    lower = dataclasses.replace(events[-1], cumulative_epsilon=events[-1].cumulative_epsilon / 2)
    fewer_steps = dataclasses.replace(events[1], steps=1)  # its successor's link breaks too
    relinked = dataclasses.replace(events[1], previous_digest=GENESIS_DIGEST)
    stranger = [dataclasses.replace(e, client_id="hospital-b") for e in events[:1]]
    other_delta = [dataclasses.replace(events[0], delta=1e-6)]
    swapped = [events[1], events[0]]
    return {
        "epsilon": encode([*events[:-1], lower]),
        "dropped middle": encode([events[0], events[2]]),
        "steps": encode([events[0], fewer_steps]),
        "link": encode([events[0], relinked]),
        "owner": encode(stranger),
        "delta": encode(other_delta),
        "order": encode(swapped),
    }


@pytest.mark.parametrize(
    "case", ["epsilon", "dropped middle", "steps", "link", "owner", "delta", "order"]
)
def test_restore_refuses_a_tampered_chain_and_keeps_the_current_one(case: str) -> None:
    source = _chain(3)
    target = _chain(1)
    before = target.to_state()
    with pytest.raises(EventChainError):
        target.restore(_tampered_states(source)[case])
    assert target.to_state() == before


def test_both_dp_levels_account_through_the_same_chain() -> None:
    accountant = ClientLevelAccountant(
        noise_multiplier=1.1, clip_norm=1.0, client_sample_rate=0.5, delta=1e-5
    )
    for round_id in range(3):
        accountant.record_round(round_id=round_id, selected=4, survivors=4, distributed=False)
    chain = EventChain(owner="federation", delta=1e-5, accountant="rdp")
    chain.restore(accountant.state_dict()["events"])
    assert chain.events == accountant.events
    segment = Segment(sample_rate=0.5, noise_multiplier=1.1, steps=1)
    assert math.isclose(accountant.projected_epsilon(1), chain.projected_epsilon(segment))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"owner": "", "delta": 1e-5, "accountant": "rdp"},
        {"owner": "a", "delta": 0.0, "accountant": "rdp"},
        {"owner": "a", "delta": 1e-5, "accountant": "none"},
    ],
)
def test_bad_parameters_are_named(kwargs: dict) -> None:
    with pytest.raises(InvalidDPConfigError):
        EventChain(**kwargs)
