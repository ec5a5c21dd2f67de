"""Privacy events: canonical bytes, digests, hash chain and auditor recomputation."""

from __future__ import annotations

import dataclasses
import json

import pytest
from Crypto.Hash import SHA3_256
from eth_utils import keccak as eth_keccak

from dp import (
    GENESIS_DIGEST,
    EventChainError,
    PrivacyEvent,
    Segment,
    compose_epsilon,
    recompute_epsilon,
    summarize_events,
    verify_event_chain,
)


def _chain(rounds: int = 3, steps: int = 25, accountant: str = "rdp") -> list[PrivacyEvent]:
    events: list[PrivacyEvent] = []
    segments: list[Segment] = []
    for round_id in range(rounds):
        segments.append(Segment(sample_rate=0.07, noise_multiplier=1.3, steps=steps))
        events.append(
            PrivacyEvent(
                client_id="hospital-a",
                round_id=round_id,
                mechanism="dpsgd-sample",
                sample_rate=0.07,
                noise_multiplier=1.3,
                steps=steps,
                max_grad_norm=1.0,
                delta=1e-5,
                accountant=accountant,
                poisson_sampling=True,
                cumulative_steps=steps * (round_id + 1),
                cumulative_epsilon=compose_epsilon(segments, delta=1e-5, accountant=accountant),
                epsilon_budget=5.0,
                previous_digest=events[-1].digest_hex() if events else GENESIS_DIGEST,
            )
        )
    return events


def test_canonical_bytes_layout_and_round_trip() -> None:
    event = _chain(1)[0]
    raw = event.canonical_bytes()
    decoded = json.loads(raw)
    assert list(decoded) == sorted(decoded)  # sorted keys
    assert b" " not in raw  # compact
    assert decoded["delta"] == "1e-05"  # floats as repr strings
    assert decoded["steps"] == 25 and decoded["poisson_sampling"] is True
    assert decoded["format"] == "secagg-fl/dp-event/v1"
    again = PrivacyEvent.from_bytes(raw)
    assert again == event
    assert again.canonical_bytes() == raw


def test_digest_is_keccak256_of_canonical_bytes() -> None:
    event = _chain(1)[0]
    # Independent keccak implementation (eth-hash backend used by web3).
    assert event.digest() == eth_keccak(event.canonical_bytes())
    # Ethereum's keccak, not NIST SHA3-256 (different padding).
    assert event.digest() != SHA3_256.new(event.canonical_bytes()).digest()
    assert event.digest_hex() == "0x" + event.digest().hex()
    assert len(event.digest()) == 32


def test_digest_is_stable_and_sensitive() -> None:
    event = _chain(1)[0]
    rebuilt = PrivacyEvent(**{f.name: getattr(event, f.name) for f in dataclasses.fields(event)})
    assert rebuilt.digest() == event.digest()
    for change in (
        {"noise_multiplier": 1.3000000000000003},
        {"steps": 26},
        {"poisson_sampling": False},
        {"client_id": "hospital-b"},
    ):
        assert dataclasses.replace(event, **change).digest() != event.digest()  # type: ignore[arg-type]


def test_non_canonical_bytes_are_rejected() -> None:
    event = _chain(1)[0]
    pretty = json.dumps(json.loads(event.canonical_bytes()), indent=1).encode()
    with pytest.raises(EventChainError, match="canonical"):
        PrivacyEvent.from_bytes(pretty)
    raw = json.loads(event.canonical_bytes())
    raw["delta"] = 1e-5  # a JSON number instead of a repr string
    with pytest.raises(EventChainError, match="delta"):
        PrivacyEvent.from_bytes(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode())
    raw = json.loads(event.canonical_bytes())
    raw["extra"] = 1
    with pytest.raises(EventChainError, match="unexpected"):
        PrivacyEvent.from_bytes(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode())


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_recompute_epsilon_from_events_alone(accountant: str) -> None:
    events = _chain(4, accountant=accountant)
    restored = [PrivacyEvent.from_bytes(e.canonical_bytes()) for e in events]
    assert recompute_epsilon(restored) == events[-1].cumulative_epsilon
    assert recompute_epsilon([]) == 0.0


def test_tampered_chains_are_detected() -> None:
    events = _chain(3)
    verify_event_chain(events)
    with pytest.raises(EventChainError, match="links to"):
        recompute_epsilon([events[0], events[2]])  # a dropped round
    with pytest.raises(EventChainError, match="links to"):
        recompute_epsilon([events[1], events[0], events[2]])
    forged = dataclasses.replace(events[1], noise_multiplier=5.0)
    with pytest.raises(EventChainError, match="links to"):
        recompute_epsilon([events[0], forged, events[2]])
    with pytest.raises(EventChainError, match="cumulative steps"):
        recompute_epsilon([dataclasses.replace(events[0], cumulative_steps=1)])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sample_rate", 0.0),
        ("noise_multiplier", float("nan")),
        ("delta", 1.0),
        ("steps", -1),
        ("mechanism", "laplace"),
        ("accountant", "moments"),
        ("previous_digest", "0x1234"),
        ("client_id", ""),
    ],
)
def test_invalid_events_are_refused(field: str, value: object) -> None:
    with pytest.raises(EventChainError, match=field):
        dataclasses.replace(_chain(1)[0], **{field: value})  # type: ignore[arg-type]


def test_summary_has_what_an_auditor_needs() -> None:
    events = _chain(3)
    summary = summarize_events(events)
    json.dumps(summary)  # JSON-ready
    assert summary["epsilon"] == events[-1].cumulative_epsilon
    assert summary["total_steps"] == 75 and summary["rounds"] == 3
    assert summary["segments"] == [
        {"sample_rate": 0.07, "noise_multiplier": 1.3, "poisson_sampling": True, "steps": 75}
    ]
    assert summary["last_event_digest"] == events[-1].digest_hex()
    segments = [Segment(sample_rate=0.07, noise_multiplier=1.3, steps=75)]
    assert compose_epsilon(segments, delta=summary["delta"], accountant="rdp") == summary["epsilon"]
