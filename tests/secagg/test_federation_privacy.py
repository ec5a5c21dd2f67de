"""dp=client: the federation's privacy events are committed on chain through the manifest
that opens the next round, and the auditor checks them like a client's events."""

from __future__ import annotations

import numpy as np

from dp import GENESIS_DIGEST, PrivacyEvent, compose_epsilon
from dp._accounting import Segment
from secagg import PrivacyPolicy

from .conftest import DIM

SIGMA, DELTA = 2.0, 1e-5
POLICY = PrivacyPolicy(
    mechanism="dp-fedavg-client",
    sample_rate=1.0,
    noise_multiplier=SIGMA,
    max_grad_norm=1.0,
    delta=DELTA,
    accountant="rdp",
    poisson_sampling=True,
    steps=1,
)


def _event(round_id: int, previous: PrivacyEvent | None, *, claim: float | None = None):
    steps = round_id
    honest = compose_epsilon(
        [Segment(sample_rate=1.0, noise_multiplier=SIGMA, steps=steps)],
        delta=DELTA,
        accountant="rdp",
    )
    return PrivacyEvent(
        client_id="federation",
        round_id=round_id,
        mechanism="dp-fedavg-client",
        sample_rate=1.0,
        noise_multiplier=SIGMA,
        steps=1,
        max_grad_norm=1.0,
        delta=DELTA,
        accountant="rdp",
        poisson_sampling=True,
        cumulative_steps=steps,
        cumulative_epsilon=honest if claim is None else claim,
        previous_digest=GENESIS_DIGEST if previous is None else previous.digest_hex(),
    )


def _client_round(fed, round_id: int, head: PrivacyEvent | None):  # type: ignore[no-untyped-def]
    selected = list(range(fed.n_clients))
    if head is not None:
        fed.consortium.store.put(head.canonical_bytes())
    outcome = fed.protocol.run_round(
        round_id,
        selected=selected,
        weights=dict.fromkeys(selected, 1 / len(selected)),
        updates={c: fed.rng.normal(0, 0.05, DIM) / len(selected) for c in selected},
        release_noise_std=SIGMA / len(selected),
        federation_policy=POLICY,
        federation_event=None if head is None else head.digest().hex(),
    )
    manifest = fed.protocol.aggregator.manifest(round_id)
    assert manifest.federation_policy == POLICY
    return outcome


def _federation(make_federation):  # type: ignore[no-untyped-def]
    fed = make_federation("ckks")
    fed.protocol.dp_mode = "client"
    fed.protocol.audit_each_round = True
    return fed


def test_an_honest_federation_chain_committed_round_after_round_audits_clean(
    make_federation,
) -> None:
    fed = _federation(make_federation)
    first = _event(1, None)
    second = _event(2, first)
    for round_id, head in ((1, None), (2, first), (3, second)):
        outcome = _client_round(fed, round_id, head)
        assert outcome.findings == (), [f.detail for f in outcome.findings]


def test_a_federation_event_whose_epsilon_is_understated_is_named(make_federation) -> None:
    fed = _federation(make_federation)
    first = _event(1, None)
    assert _client_round(fed, 1, None).findings == ()
    assert _client_round(fed, 2, first).findings == ()
    lying = _event(2, first, claim=first.cumulative_epsilon)  # no spending for round 2
    (finding,) = _client_round(fed, 3, lying).findings
    assert finding.check == "privacy" and finding.client is None
    assert "federation event claims cumulative epsilon" in finding.detail
    assert "aggregator 0x" in finding.detail


def test_a_manifest_that_leaves_out_a_release_is_named(make_federation) -> None:
    fed = _federation(make_federation)
    first = _event(1, None)
    assert _client_round(fed, 1, None).findings == ()
    assert _client_round(fed, 2, first).findings == ()
    (finding,) = _client_round(fed, 3, first).findings  # round 2's release left out
    assert finding.check == "privacy" and finding.client is None
    assert "leaving out the release of round 2" in finding.detail
    (finding,) = _client_round(fed, 4, None).findings
    assert "commits no federation privacy event" in finding.detail


def test_a_federation_event_off_the_committed_policy_is_refused_before_composition(
    make_federation,
) -> None:
    fed = _federation(make_federation)
    assert _client_round(fed, 1, None).findings == ()
    huge = PrivacyEvent(
        **{
            **_event(1, None).__dict__,
            "steps": 10**5,
            "cumulative_steps": 10**5,
            "noise_multiplier": 50.0,
        }
    )
    (finding,) = _client_round(fed, 2, huge).findings
    assert "refused before composition" in finding.detail
    assert "noise_multiplier 50.0 where the manifest commits 2.0" in finding.detail
    assert "its parameters give" not in finding.detail
    assert np.isfinite(huge.cumulative_epsilon)
