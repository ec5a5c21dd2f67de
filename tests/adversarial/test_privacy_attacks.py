"""Privacy claims a client made up: parameters it chose itself, a delta of 0.5, a sample
rate of 1e-4, an accountant the manifest does not commit, and steps in the hundred
thousands that would make composition run for minutes. The round manifest commits each
client's whole policy; the auditor names every such event before it composes anything."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from chain import InProcessBackend
from dp import PrivacyEvent, compose_epsilon
from dp._accounting import Segment
from secagg import PrivacyPolicy
from secagg._consortium import Consortium
from secagg._protocol import SecureRoundOutcome, SecureRoundProtocol
from secagg._scheme import PlainScheme
from secagg._store import LocalDirectoryStore

DIM = 16
N_CLIENTS = 3
LIAR = 1
Q, SIGMA, STEPS, DELTA = 0.05, 1.2, 5, 1e-5


def _policy(accountant: str = "rdp") -> PrivacyPolicy:
    return PrivacyPolicy(
        mechanism="dpsgd-sample",
        sample_rate=Q,
        noise_multiplier=SIGMA,
        max_grad_norm=1.0,
        delta=DELTA,
        accountant=accountant,
        poisson_sampling=True,
        steps=STEPS,
    )


def _event(client: int, round_id: int = 1, **changes: object) -> PrivacyEvent:
    """An event whose claimed epsilon is consistent with its own (maybe chosen) parameters."""
    fields = {
        "client_id": f"client-{client}",
        "round_id": round_id,
        "mechanism": "dpsgd-sample",
        "sample_rate": Q,
        "noise_multiplier": SIGMA,
        "steps": STEPS,
        "max_grad_norm": 1.0,
        "delta": DELTA,
        "accountant": "rdp",
        "poisson_sampling": True,
        "cumulative_steps": STEPS,
        **changes,
    }
    segment = Segment(
        sample_rate=float(fields["sample_rate"]),  # type: ignore[arg-type]
        noise_multiplier=float(fields["noise_multiplier"]),  # type: ignore[arg-type]
        steps=int(fields["steps"]),  # type: ignore[call-overload]
    )
    if "cumulative_epsilon" not in fields:
        fields["cumulative_epsilon"] = compose_epsilon(
            [segment],
            delta=float(fields["delta"]),  # type: ignore[arg-type]
            accountant=str(fields["accountant"]),
        )
    return PrivacyEvent(**fields)  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class _RawEvent:
    """Bytes a hostile client commits as its privacy event."""

    payload: bytes
    cumulative_epsilon: float = 0.1

    def canonical_bytes(self) -> bytes:
        return self.payload


def _protocol(root: Path) -> SecureRoundProtocol:
    consortium = Consortium.create(
        InProcessBackend(),
        n_clients=N_CLIENTS,
        store=LocalDirectoryStore(root / "store"),
        epsilon_budget=10.0,
    )
    return SecureRoundProtocol(
        consortium=consortium,
        scheme=PlainScheme(),
        scheme_config={"name": "plain"},
        dim=DIM,
        dp_mode="sample",
    )


def _round(
    protocol: SecureRoundProtocol, liar_event: object, *, accountant: str = "rdp"
) -> SecureRoundOutcome:
    rng = np.random.default_rng(1)
    selected = list(range(N_CLIENTS))
    events: dict[int, object] = {c: _event(c, accountant=accountant) for c in selected}
    events[LIAR] = liar_event
    return protocol.run_round(
        1,
        selected=selected,
        weights=dict.fromkeys(selected, 1 / N_CLIENTS),
        updates={c: rng.normal(0, 0.05, DIM) / N_CLIENTS for c in selected},
        events=events,  # type: ignore[arg-type]
        policies=dict.fromkeys(selected, _policy(accountant)),
    )


def _liar_findings(protocol: SecureRoundProtocol, outcome: SecureRoundOutcome) -> list[str]:
    liar = protocol.consortium.address_of(LIAR).lower()
    named = {f.client.lower() for f in outcome.findings if f.client is not None}
    assert named == {liar}, [f.detail for f in outcome.findings]
    assert outcome.flagged == {LIAR: 3}
    return [f.detail for f in outcome.findings if f.check == "privacy"]


def test_honest_events_matching_the_committed_policy_audit_clean(tmp_path: Path) -> None:
    for accountant in ("rdp", "prv"):
        protocol = _protocol(tmp_path / accountant)
        outcome = _round(protocol, _event(LIAR, accountant=accountant), accountant=accountant)
        assert outcome.findings == () and outcome.flagged == {}


def test_a_client_that_spent_epsilon_7_6_and_claims_delta_one_half_is_named(
    tmp_path: Path,
) -> None:
    spent = {"noise_multiplier": SIGMA, "sample_rate": 0.5, "steps": STEPS}
    true_epsilon = compose_epsilon(
        [Segment(sample_rate=0.5, noise_multiplier=SIGMA, steps=STEPS)],
        delta=DELTA,
        accountant="rdp",
    )
    assert true_epsilon > 5  # a large spender at the committed delta ...
    lie = _event(LIAR, **spent, delta=0.5)  # ... whose claim is consistent at delta 0.5
    assert lie.cumulative_epsilon < true_epsilon / 2
    protocol = _protocol(tmp_path)
    (detail,) = _liar_findings(protocol, _round(protocol, lie))
    assert "refused before composition" in detail
    assert "delta 0.5 where the manifest commits 1e-05" in detail
    assert "sample_rate 0.5 where the manifest commits 0.05" in detail


def test_a_client_that_picks_its_own_sample_rate_and_sigma_is_named(tmp_path: Path) -> None:
    lie = _event(LIAR, sample_rate=1e-4, noise_multiplier=50.0)
    assert lie.cumulative_epsilon < 0.2  # against about 1.0 at the committed parameters
    protocol = _protocol(tmp_path)
    (detail,) = _liar_findings(protocol, _round(protocol, lie))
    assert "sample_rate 0.0001 where the manifest commits 0.05" in detail
    assert "noise_multiplier 50.0 where the manifest commits 1.2" in detail


def test_a_gdp_claim_is_named(tmp_path: Path) -> None:
    honest = json.loads(_event(LIAR, sample_rate=1e-4, noise_multiplier=50.0).canonical_bytes())
    honest["accountant"] = "gdp"
    payload = json.dumps(honest, sort_keys=True, separators=(",", ":")).encode()
    protocol = _protocol(tmp_path)
    (detail,) = _liar_findings(protocol, _round(protocol, _RawEvent(payload)))
    assert "privacy event chain unusable" in detail and "accountant" in detail


def test_an_event_with_huge_steps_is_refused_before_composition(tmp_path: Path) -> None:
    huge = 10**5
    lie = _event(LIAR, steps=huge, cumulative_steps=huge, accountant="prv", cumulative_epsilon=0.5)
    protocol = _protocol(tmp_path)
    (detail,) = _liar_findings(protocol, _round(protocol, lie, accountant="prv"))
    assert "refused before composition" in detail
    assert f"steps {huge} where the manifest commits {STEPS}" in detail
    assert "its parameters give" not in detail  # nothing was composed


def test_a_forged_ancestor_with_huge_steps_is_refused_before_composition(
    tmp_path: Path,
) -> None:
    protocol = _protocol(tmp_path)
    huge = 10**5
    ancestor = _event(LIAR, round_id=0, steps=huge, cumulative_steps=huge, cumulative_epsilon=0.4)
    protocol.consortium.store.put(ancestor.canonical_bytes())
    lie = _event(
        LIAR,
        cumulative_steps=huge + STEPS,
        cumulative_epsilon=0.5,
        previous_digest=ancestor.digest_hex(),
    )
    (detail,) = _liar_findings(protocol, _round(protocol, lie))
    assert "refused before composition" in detail
    assert f"cumulative_steps {huge + STEPS} exceed {STEPS}" in detail


def test_a_policy_no_honest_client_ran_blames_the_aggregator_not_the_clients(
    tmp_path: Path,
) -> None:
    """The aggregator declares a policy (delta 1e-9) that none of the clients ran: every
    honest event is off it, so the declaration is at fault and no client is flagged."""
    protocol = _protocol(tmp_path)
    rng = np.random.default_rng(1)
    selected = list(range(N_CLIENTS))
    outcome = protocol.run_round(
        1,
        selected=selected,
        weights=dict.fromkeys(selected, 1 / N_CLIENTS),
        updates={c: rng.normal(0, 0.05, DIM) / N_CLIENTS for c in selected},
        events={c: _event(c) for c in selected},  # type: ignore[arg-type]
        policies=dict.fromkeys(selected, dataclasses.replace(_policy(), delta=1e-9)),
    )
    assert outcome.flagged == {}
    assert {f.check for f in outcome.findings} == {"manifest"}
    assert all(f.client is None for f in outcome.findings)
    (finding,) = outcome.findings
    assert protocol.consortium.parties.aggregator.address in finding.detail
    assert "the manifest is at fault, not the clients" in finding.detail


def _round_with_client_policies(
    protocol: SecureRoundProtocol, declared: dict[int, PrivacyPolicy]
) -> tuple[SecureRoundOutcome, dict[int, np.ndarray]]:
    rng = np.random.default_rng(2)
    selected = list(range(N_CLIENTS))
    updates = {c: rng.normal(0, 0.05, DIM) / N_CLIENTS for c in selected}
    outcome = protocol.run_round(
        1,
        selected=selected,
        weights=dict.fromkeys(selected, 1 / N_CLIENTS),
        updates=updates,
        events={c: _event(c) for c in selected},  # type: ignore[arg-type]
        expected_steps=dict.fromkeys(selected, STEPS),
        policies=declared,
        client_policies=dict.fromkeys(selected, _policy()),  # what each client runs
    )
    return outcome, updates


def test_a_client_refuses_a_manifest_that_commits_another_policy_for_it(tmp_path: Path) -> None:
    """Threat model 9: the aggregator declares a wrong policy for one client only. That
    client checks the manifest against its own policy before committing and refuses (its
    event is still stored: the privacy was spent); the others' sum is released, nobody is
    flagged, and the refusing client's update is not in it."""
    protocol = _protocol(tmp_path)
    declared = dict.fromkeys(range(N_CLIENTS), _policy())
    declared[LIAR] = dataclasses.replace(_policy(), noise_multiplier=SIGMA * 10)  # "more private"
    outcome, updates = _round_with_client_policies(protocol, declared)
    assert LIAR not in outcome.included
    assert "own privacy policy" in outcome.excluded[LIAR]
    assert outcome.included == tuple(c for c in range(N_CLIENTS) if c != LIAR)
    assert outcome.total is not None
    expected = sum(updates[c] for c in outcome.included)
    np.testing.assert_allclose(outcome.total, expected, atol=1e-9)
    assert outcome.flagged == {}
    event = _event(LIAR)
    assert protocol.consortium.store.get(event.digest()) == event.canonical_bytes()
    committed = {c.client.lower() for c in protocol.consortium.ledger.commitments(1)}
    assert protocol.consortium.address_of(LIAR).lower() not in committed


def test_with_their_own_policies_no_client_commits_to_a_policy_none_of_them_ran(
    tmp_path: Path,
) -> None:
    protocol = _protocol(tmp_path)
    declared = dict.fromkeys(range(N_CLIENTS), dataclasses.replace(_policy(), delta=1e-9))
    outcome, _ = _round_with_client_policies(protocol, declared)
    assert outcome.included == () and outcome.total is None
    assert all("own privacy policy" in r for r in outcome.excluded.values())
    assert protocol.consortium.ledger.commitments(1) == []
