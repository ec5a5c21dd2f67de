"""Shared ledger suite: every case runs against the in-process EVM and a real anvil node.

The contract is what auditors trust, so each security case asserts the NAMED custom error
decoded from the revert (not just "it failed").
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from chain import (
    AlreadyCommitted,
    AlreadyFlagged,
    AlreadyRevealed,
    AnvilBackend,
    BadRevealDeadline,
    BudgetExceeded,
    ChainConfigError,
    ClientsNotSorted,
    CommitPhaseOpen,
    DeadlinePassed,
    HighS,
    InProcessBackend,
    InvalidSignature,
    Ledger,
    LedgerRevertError,
    NotAdmin,
    NotCommitted,
    NotRegistered,
    NotRevealed,
    NotSelected,
    RevealPhaseOpen,
    Role,
    RoundExists,
    RoundStatus,
    WrongManifest,
    WrongMode,
    WrongRound,
    find_anvil,
    list_hash,
    opinion,
    sign_commit,
)
from chain._eip712 import SECP256K1_ORDER

WEI = 10**18
BUDGET = 4.0


def _anvil_or_skip() -> None:
    if find_anvil() is None:
        if os.environ.get("CI"):
            pytest.fail("anvil missing in CI: run `npm ci` (node_modules/.bin/anvil)")
        pytest.skip("anvil binary missing (run `npm ci`); required when CI is set")


@dataclass
class Env:
    """One deployed ledger with its consortium, shared by the tests of one backend."""

    backend: InProcessBackend | AnvilBackend
    ledger: Ledger
    admin: LocalAccount
    aggregator: LocalAccount
    key_holder: LocalAccount
    auditor: LocalAccount
    clients: list[LocalAccount]
    outsider: LocalAccount
    round_ids: Iterator[int]

    def close_commits(self, round_id: int) -> None:
        """Let the commit deadline pass (mine empty blocks)."""
        self.ledger.advance_past(self.ledger.round_info(round_id).deadline)

    def new_round(
        self, members: list[LocalAccount], *, batched: bool = False, blocks: int = 50
    ) -> int:
        round_id = next(self.round_ids)
        self.ledger.open_round(
            round_id,
            config_digest=_config(round_id),
            clients=[c.address for c in members],
            deadline=self.ledger.block_number() + blocks,
            batched=batched,
            sender=self.aggregator,
        )
        return round_id


@pytest.fixture(scope="module", params=["inprocess", "anvil"])
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    if request.param == "anvil":
        _anvil_or_skip()
        backend: InProcessBackend | AnvilBackend = AnvilBackend()
    else:
        backend = InProcessBackend()
    with backend:
        admin = backend.faucet
        accounts = [Account.create() for _ in range(14)]
        aggregator, key_holder, auditor, outsider = accounts[:4]
        clients = accounts[4:]
        backend.fund([a.address for a in accounts], WEI)
        ledger = Ledger.deploy(backend, admin=admin, epsilon_budget=BUDGET)
        ledger.register(Role.AGGREGATOR, aggregator.address, sender=admin)
        ledger.register(Role.KEY_HOLDER, key_holder.address, sender=admin)
        ledger.register(Role.AUDITOR, auditor.address, sender=admin)
        ledger.register(Role.CLIENT, [c.address for c in clients], sender=admin)
        yield Env(
            backend,
            ledger,
            admin,
            aggregator,
            key_holder,
            auditor,
            clients,
            outsider,
            itertools.count(1),
        )


def _config(round_id: int) -> bytes:
    return keccak(text=f"config-{round_id}")


def _digests(tag: str) -> tuple[bytes, bytes]:
    return keccak(text=f"blob-{tag}"), keccak(text=f"event-{tag}")


def _commit(
    env: Env,
    round_id: int,
    client: LocalAccount,
    *,
    epsilon: float = 1.0,
    manifest: bytes | None = None,
) -> int:
    blob, event = _digests(f"{round_id}-{client.address}")
    res = env.ledger.commit(
        round_id,
        manifest_digest=_config(round_id) if manifest is None else manifest,
        blob_digest=blob,
        event_digest=event,
        epsilon=epsilon,
        sender=client,
    )
    return res.gas_used


def _sign(
    env: Env,
    round_id: int,
    client: LocalAccount,
    *,
    epsilon: float = 1.0,
    manifest: bytes | None = None,
):  # type: ignore[no-untyped-def]
    blob, event = _digests(f"{round_id}-{client.address}")
    return env.ledger.sign_commit(
        client,
        round_id=round_id,
        manifest_digest=_config(round_id) if manifest is None else manifest,
        blob_digest=blob,
        event_digest=event,
        epsilon=epsilon,
    )


# ------------------------------------------------------------------------------ life cycle
def test_direct_round_lifecycle_records_state_and_reputation(env: Env) -> None:
    ledger, members = env.ledger, env.clients[:3]
    before = {c.address: ledger.reputation(c.address) for c in members}
    round_id = env.new_round(members)
    gas = [_commit(env, round_id, c, epsilon=0.5 + i) for i, c in enumerate(members[:2])]
    assert all(g <= 40_000 for g in gas), gas  # total tx gas incl. 21k
    env.close_commits(round_id)
    reveal_gas = [ledger.reveal(round_id, sender=c).gas_used for c in members[:2]]
    assert all(g <= 35_000 for g in reveal_gas), reveal_gas  # the one extra tx per client
    agg_digest = keccak(text="aggregate")
    ledger.publish_aggregate(
        round_id,
        aggregate_digest=agg_digest,
        participants=[c.address for c in members[:2]],
        sender=env.aggregator,
    )
    ledger.reserve_release(round_id, sender=env.key_holder)
    ledger.attest_reveal(round_id, reveal_digest=keccak(text="reveal"), sender=env.key_holder)
    ledger.finalize(round_id, sender=env.aggregator)

    info = ledger.round_info(round_id)
    assert info.status is RoundStatus.FINALIZED and info.finalized and not info.batched
    assert info.config_digest == keccak(text=f"config-{round_id}")
    assert set(info.clients) == {c.address for c in members}
    assert info.clients_hash == list_hash(info.clients)
    assert info.aggregate_digest == agg_digest
    assert set(info.participants or ()) == {c.address for c in members[:2]}
    assert info.reveal_digest == keccak(text="reveal")
    assert (info.committed, info.missed) == (2, 1)
    assert info.epsilon_budget_fixed == int(BUDGET * 1_000_000)

    commits = ledger.commitments(round_id)
    assert [c.client for c in commits] == [c.address for c in members[:2]]
    for i, c in enumerate(commits):
        blob, event = _digests(f"{round_id}-{c.client}")
        assert (c.blob_digest, c.event_digest, c.epsilon) == (blob, event, 0.5 + i)
        stored = int.from_bytes(ledger.commitment_hash(round_id, c.client), "big")
        expected = int.from_bytes(keccak(blob + event + c.epsilon_fixed.to_bytes(32, "big")))
        assert stored == (expected & ~3) | 3  # committed and revealed flags in the low bits
    assert int.from_bytes(ledger.commitment_hash(round_id, members[2].address), "big") == 1

    for c in members[:2]:
        r = ledger.reputation(c.address)
        assert (r.positive, r.negative) == (
            before[c.address].positive + 1,
            before[c.address].negative,
        )
    missed = ledger.reputation(members[2].address)
    assert missed.negative == before[members[2].address].negative + 1
    assert missed.score < before[members[2].address].score
    gas_report = ledger.gas_by_round(round_id)
    assert set(gas_report) >= {
        "openRound",
        "commit",
        "publishAggregate",
        "attestReveal",
        "finalize",
    }


def test_batched_round_accumulator_matches_events(env: Env) -> None:
    ledger, members = env.ledger, env.clients[3:7]
    round_id = env.new_round(members, batched=True)
    signed = [_sign(env, round_id, c, epsilon=0.25 * (i + 1)) for i, c in enumerate(members[:3])]
    ledger.commit_batch(round_id, signed[:2], sender=env.aggregator)
    ledger.commit_batch(round_id, signed[2:], sender=env.aggregator)
    info = ledger.round_info(round_id)
    assert info.batched and info.accumulator is not None
    assert info.accumulator == ledger.expected_accumulator(round_id)
    commits = ledger.commitments(round_id)
    assert [c.client for c in commits] == [s.client for s in signed]
    assert [c.epsilon_fixed for c in commits] == [250_000, 500_000, 750_000]
    env.close_commits(round_id)
    ledger.publish_aggregate(
        round_id,
        aggregate_digest=keccak(text="agg"),
        participants=[s.client for s in signed],
        sender=env.aggregator,
    )
    ledger.finalize(round_id, sender=env.aggregator)
    assert (ledger.round_info(round_id).committed, ledger.round_info(round_id).missed) == (3, 1)


def test_paged_event_reader_sees_every_event_once(env: Env) -> None:
    ledger = env.ledger
    all_at_once = [(e.block_number, e.log_index) for e in ledger.events("RolesSet")]
    paged = [(e.block_number, e.log_index) for e in ledger.events("RolesSet", page_size=2)]
    assert paged == all_at_once and len(all_at_once) >= 13
    with pytest.raises(ChainConfigError):
        list(ledger.events("RolesSet", page_size=0))


def test_auditor_flag_is_negative_event_once_per_reason(env: Env) -> None:
    ledger, client = env.ledger, env.clients[7]
    round_id = env.new_round([client])
    before = ledger.reputation(client.address)
    ledger.flag(client.address, round_id, 3, sender=env.auditor)
    after = ledger.reputation(client.address)
    assert after.negative == before.negative + 1 and after.score < before.score
    with pytest.raises(AlreadyFlagged):
        ledger.flag(client.address, round_id, 3, sender=env.auditor)
    with pytest.raises(NotRegistered):
        ledger.flag(client.address, round_id, 4, sender=env.aggregator)


def test_reputation_threshold_hook(env: Env) -> None:
    ledger = env.ledger
    flagged_client, fresh = env.clients[8], Account.create()
    round_id = env.new_round([flagged_client])
    ledger.flag(flagged_client.address, round_id, 1, sender=env.auditor)
    kept = ledger.filter_by_reputation([flagged_client.address, fresh.address], threshold=0.5)
    assert kept == [fresh.address]  # no history: score = base rate 0.5
    with pytest.raises(ChainConfigError):
        ledger.filter_by_reputation([fresh.address], threshold=1.5)


# ------------------------------------------------------------------------- security cases
def test_unregistered_sender_cannot_commit(env: Env) -> None:
    round_id = env.new_round(env.clients[:2])
    with pytest.raises(NotRegistered) as info:
        _commit(env, round_id, env.outsider)
    assert info.value.error_name == "NotRegistered"
    assert info.value.args_dict["account"] == env.outsider.address
    with pytest.raises(NotSelected):
        _commit(env, round_id, env.clients[5])  # registered, not selected


def test_second_commit_reverts(env: Env) -> None:
    round_id = env.new_round(env.clients[:1])
    _commit(env, round_id, env.clients[0])
    with pytest.raises(AlreadyCommitted):
        _commit(env, round_id, env.clients[0])


def test_second_batched_commit_reverts(env: Env) -> None:
    members = env.clients[:2]
    round_id = env.new_round(members, batched=True)
    signed = _sign(env, round_id, members[0])
    env.ledger.commit_batch(round_id, [signed], sender=env.aggregator)
    with pytest.raises(AlreadyCommitted):
        env.ledger.commit_batch(round_id, [signed], sender=env.aggregator)
    round2 = env.new_round(members, batched=True)
    twice = _sign(env, round2, members[1])
    with pytest.raises(AlreadyCommitted):
        env.ledger.commit_batch(round2, [twice, twice], sender=env.aggregator)


def test_commit_after_deadline_reverts(env: Env) -> None:
    round_id = env.new_round(env.clients[:2], blocks=2)
    env.backend.mine(3)
    with pytest.raises(DeadlinePassed):
        _commit(env, round_id, env.clients[0])


def test_wrong_round_reverts(env: Env) -> None:
    with pytest.raises(WrongRound):
        _commit(env, 10**9, env.clients[0])  # never opened
    round_id = env.new_round(env.clients[:2], blocks=2)
    env.close_commits(round_id)
    env.ledger.publish_aggregate(
        round_id, aggregate_digest=keccak(text="a"), participants=[], sender=env.aggregator
    )
    with pytest.raises(WrongRound):
        _commit(env, round_id, env.clients[0])  # closed by the aggregate
    with pytest.raises(WrongRound):
        env.ledger.round_info(10**9)
    with pytest.raises(RoundExists):
        env.ledger.open_round(
            round_id,
            config_digest=keccak(text="x"),
            clients=[env.clients[0].address],
            deadline=env.ledger.block_number() + 5,
            sender=env.aggregator,
        )


def test_commit_mode_is_fixed_per_round(env: Env) -> None:
    batched = env.new_round(env.clients[:1], batched=True)
    blob, event = _digests("mode")
    with pytest.raises(WrongMode):  # the direct-round entry point
        env.ledger._transact(
            "commit", [batched, _config(batched), blob, event, 1], env.clients[0], batched
        )
    direct = env.new_round(env.clients[:1])
    with pytest.raises(WrongMode):
        env.ledger.commit_batch(direct, [_sign(env, direct, env.clients[0])], sender=env.aggregator)
    with pytest.raises(WrongMode):
        env.ledger._transact(
            "revealOwn", [direct, [env.clients[0].address]], env.clients[0], direct
        )


def test_signature_replayed_in_another_round_reverts(env: Env) -> None:
    members = env.clients[:2]
    round_a = env.new_round(members, batched=True)
    round_b = env.new_round(members, batched=True)
    signed_a = _sign(env, round_a, members[0])
    replay = dataclasses.replace(signed_a, round_id=round_b)
    with pytest.raises(InvalidSignature):
        env.ledger.commit_batch(round_b, [replay], sender=env.aggregator)


def test_signature_replayed_on_another_contract_reverts(env: Env) -> None:
    other = Ledger.deploy(env.backend, admin=env.admin, epsilon_budget=BUDGET)
    members = env.clients[:2]
    round_id = env.new_round(members, batched=True)
    blob, event = _digests("other-contract")
    foreign = other.sign_commit(
        members[0],
        round_id=round_id,
        manifest_digest=_config(round_id),
        blob_digest=blob,
        event_digest=event,
        epsilon=1.0,
    )
    with pytest.raises(InvalidSignature):
        env.ledger.commit_batch(round_id, [foreign], sender=env.aggregator)


def test_signature_replayed_from_another_chain_reverts(env: Env) -> None:
    members = env.clients[:2]
    round_id = env.new_round(members, batched=True)
    blob, event = _digests("other-chain")
    foreign = sign_commit(
        members[0],
        chain_id=env.ledger.chain_id + 1,
        verifying_contract=env.ledger.address,
        round_id=round_id,
        manifest_digest=_config(round_id),
        blob_digest=blob,
        event_digest=event,
        epsilon=1.0,
    )
    with pytest.raises(InvalidSignature):
        env.ledger.commit_batch(round_id, [foreign], sender=env.aggregator)
    # the same message signed for this chain is accepted
    genuine = sign_commit(
        members[0],
        chain_id=env.ledger.chain_id,
        verifying_contract=env.ledger.address,
        round_id=round_id,
        manifest_digest=_config(round_id),
        blob_digest=blob,
        event_digest=event,
        epsilon=1.0,
    )
    env.ledger.commit_batch(round_id, [genuine], sender=env.aggregator)


def test_high_s_signature_reverts(env: Env) -> None:
    members = env.clients[:2]
    round_id = env.new_round(members, batched=True)
    good = _sign(env, round_id, members[0])
    high_s = SECP256K1_ORDER - int.from_bytes(good.s, "big")
    malleated = dataclasses.replace(
        good,
        s=high_s.to_bytes(32, "big"),
        v=55 - good.v,  # same signer, other half of the curve
    )
    with pytest.raises(HighS):
        env.ledger.commit_batch(round_id, [malleated], sender=env.aggregator)
    env.ledger.commit_batch(round_id, [good], sender=env.aggregator)


def test_epsilon_over_budget_reverts(env: Env) -> None:
    members = env.clients[:2]
    round_id = env.new_round(members)
    with pytest.raises(BudgetExceeded) as info:
        _commit(env, round_id, members[0], epsilon=BUDGET + 1e-6)
    assert info.value.args_dict["claimed"] == int(BUDGET * 1_000_000) + 1
    with pytest.raises(BudgetExceeded):  # 1e-7 over rounds UP to one micro-epsilon over
        _commit(env, round_id, members[0], epsilon=BUDGET + 1e-7)
    _commit(env, round_id, members[0], epsilon=BUDGET)  # exactly at the budget is allowed
    batched = env.new_round(members, batched=True)
    with pytest.raises(BudgetExceeded):
        env.ledger.commit_batch(
            batched, [_sign(env, batched, members[1], epsilon=BUDGET * 2)], sender=env.aggregator
        )


def test_budget_change_applies_to_later_rounds(env: Env) -> None:
    ledger, members = env.ledger, env.clients[9:10]
    open_before = env.new_round(members)
    ledger.set_epsilon_budget(1.0, sender=env.admin)
    try:
        later = env.new_round(members)
        with pytest.raises(BudgetExceeded):
            _commit(env, later, members[0], epsilon=2.0)
        _commit(env, open_before, members[0], epsilon=2.0)  # snapshot taken at opening
    finally:
        ledger.set_epsilon_budget(BUDGET, sender=env.admin)


def test_non_admin_cannot_change_roles(env: Env) -> None:
    for sender in (env.aggregator, env.outsider):
        with pytest.raises(NotAdmin):
            env.ledger.register(Role.AGGREGATOR, sender.address, sender=sender)
        with pytest.raises(NotAdmin):
            env.ledger.set_epsilon_budget(100.0, sender=sender)
    assert env.ledger.roles_of(env.outsider.address) == Role(0)


def test_roles_are_enforced_on_round_calls(env: Env) -> None:
    members = env.clients[:1]
    with pytest.raises(NotRegistered):
        env.ledger.open_round(
            10**8,
            config_digest=keccak(text="c"),
            clients=[members[0].address],
            deadline=env.ledger.block_number() + 5,
            sender=env.clients[0],
        )
    with pytest.raises(NotRegistered):  # selecting an unregistered client
        env.ledger.open_round(
            10**8,
            config_digest=keccak(text="c"),
            clients=[env.outsider.address],
            deadline=env.ledger.block_number() + 5,
            sender=env.aggregator,
        )
    round_id = env.new_round(members, blocks=2)
    env.close_commits(round_id)
    env.ledger.publish_aggregate(
        round_id, aggregate_digest=keccak(text="a"), participants=[], sender=env.aggregator
    )
    with pytest.raises(NotRegistered):
        env.ledger.reserve_release(round_id, sender=env.aggregator)
    with pytest.raises(NotRegistered):
        env.ledger.attest_reveal(round_id, reveal_digest=keccak(text="r"), sender=env.aggregator)
    with pytest.raises(NotRegistered):
        env.ledger.finalize(round_id, sender=env.key_holder)


def test_contract_rejects_unsorted_or_duplicate_selection(env: Env) -> None:
    a, b = sorted((c.address for c in env.clients[:2]), key=lambda x: int(x, 16))
    deadline = env.ledger.block_number() + 5
    for clients in ([b, a], [a, a]):
        with pytest.raises(ClientsNotSorted):  # the typed API sorts; the contract still checks
            env.ledger._transact(
                "openRound",
                [10**7, keccak(text="c"), clients, deadline, deadline + 5, False],
                env.aggregator,
                None,
            )


def test_bad_inputs_raise_named_value_errors(env: Env) -> None:
    zero = b"\0" * 32
    for round_id, blob, epsilon in ((1, b"short", 1.0), (1, zero, -1.0), (-1, zero, 1.0)):
        with pytest.raises(ChainConfigError):
            env.ledger.commit(
                round_id,
                manifest_digest=zero,
                blob_digest=blob,
                event_digest=zero,
                epsilon=epsilon,
                sender=env.clients[0],
            )
    with pytest.raises(ChainConfigError):
        env.ledger.attest_refusal(1, reason_code=0, sender=env.key_holder)
    assert issubclass(NotAdmin, LedgerRevertError)


def test_attach_reads_the_same_ledger(env: Env) -> None:
    attached = Ledger.attach(env.backend, env.ledger.address)
    assert attached.admin == env.admin.address
    assert attached.chain_id == env.ledger.chain_id
    info = attached.info()
    assert info.address == env.ledger.address and info.backend == env.backend.name
    with pytest.raises(ChainConfigError):
        Ledger.attach(env.backend, env.outsider.address)  # no code there


def test_participants_must_have_committed(env: Env) -> None:
    members = env.clients[:3]
    for batched in (False, True):
        round_id = env.new_round(members, batched=batched)
        if batched:
            env.ledger.commit_batch(
                round_id, [_sign(env, round_id, members[0])], sender=env.aggregator
            )
        else:
            _commit(env, round_id, members[0])
        env.close_commits(round_id)
        if not batched:
            env.ledger.reveal(round_id, sender=members[0])
        for bogus in (members[1], env.clients[9]):  # selected but silent; never selected
            with pytest.raises(NotCommitted):
                env.ledger.publish_aggregate(
                    round_id,
                    aggregate_digest=keccak(text="agg"),
                    participants=[members[0].address, bogus.address],
                    sender=env.aggregator,
                )
        env.ledger.publish_aggregate(
            round_id,
            aggregate_digest=keccak(text="agg"),
            participants=[members[0].address],
            sender=env.aggregator,
        )
        info = env.ledger.round_info(round_id)
        assert info.participants == (members[0].address,)
        assert info.participants_hash == list_hash([members[0].address])


def test_onchain_score_matches_subjective_logic_model(env: Env) -> None:
    client = env.clients[9]
    rep = env.ledger.reputation(client.address)
    model = opinion(rep.positive, rep.negative)
    assert rep.score_fixed == model.score_fixed
    assert model.belief + model.disbelief + model.uncertainty == pytest.approx(1.0)
    assert model.score == pytest.approx(
        model.belief + model.base_rate * model.uncertainty, abs=1e-6
    )


# ------------------------------------------------------------------ commit, then reveal
def test_commit_binds_the_round_manifest(env: Env) -> None:
    members = env.clients[:2]
    direct = env.new_round(members)
    with pytest.raises(WrongManifest):
        _commit(env, direct, members[0], manifest=keccak(text="another manifest"))
    batched = env.new_round(members, batched=True)
    other = _sign(env, batched, members[0], manifest=keccak(text="another manifest"))
    with pytest.raises(InvalidSignature):  # signed over another manifest digest
        env.ledger.commit_batch(batched, [other], sender=env.aggregator)
    with pytest.raises(WrongManifest):  # the batched round's own-commit fallback
        _commit(env, batched, members[0], manifest=keccak(text="another manifest"))


def test_reveal_only_once_no_one_can_commit(env: Env) -> None:
    ledger, members = env.ledger, env.clients[:2]
    round_id = env.new_round(members, blocks=10)
    _commit(env, round_id, members[0])
    with pytest.raises(CommitPhaseOpen):  # members[1] could still commit a blob built on it
        ledger.reveal(round_id, sender=members[0])
    with pytest.raises(CommitPhaseOpen):
        ledger.publish_aggregate(
            round_id,
            aggregate_digest=keccak(text="a"),
            participants=[members[0].address],
            sender=env.aggregator,
        )
    _commit(env, round_id, members[1])  # every selected client committed: the phase closes
    assert ledger.round_info(round_id).commit_phase_closed(ledger.block_number())
    ledger.reveal(round_id, sender=members[0])
    with pytest.raises(AlreadyRevealed):
        ledger.reveal(round_id, sender=members[0])
    with pytest.raises(NotCommitted):
        ledger.reveal(round_id, sender=env.clients[5])
    ledger.advance_past(ledger.round_info(round_id).reveal_deadline)
    with pytest.raises(DeadlinePassed):  # a late reveal does not count
        ledger.reveal(round_id, sender=members[1])
    with pytest.raises(NotRevealed):
        ledger.publish_aggregate(
            round_id,
            aggregate_digest=keccak(text="a"),
            participants=[c.address for c in members],
            sender=env.aggregator,
        )


def test_no_early_close_and_no_penalty_for_a_revealed_client_left_out(env: Env) -> None:
    ledger, members = env.ledger, env.clients[:3]
    before = {c.address: ledger.reputation(c.address) for c in members}
    round_id = env.new_round(members, blocks=10)
    for c in members[:2]:
        _commit(env, round_id, c)
    env.close_commits(round_id)
    for c in members[:2]:
        ledger.reveal(round_id, sender=c)
    with pytest.raises(RevealPhaseOpen):  # leaves out a committed client before the deadline
        ledger.publish_aggregate(
            round_id,
            aggregate_digest=keccak(text="a"),
            participants=[members[0].address],
            sender=env.aggregator,
        )
    ledger.advance_past(ledger.round_info(round_id).reveal_deadline)
    ledger.publish_aggregate(
        round_id,
        aggregate_digest=keccak(text="a"),
        participants=[members[0].address],
        sender=env.aggregator,
    )
    ledger.finalize(round_id, sender=env.aggregator)
    after = {c.address: ledger.reputation(c.address) for c in members}
    for c in members[:2]:  # the one left out committed and revealed: still positive
        assert after[c.address].positive == before[c.address].positive + 1
        assert after[c.address].negative == before[c.address].negative
    assert after[members[2].address].negative == before[members[2].address].negative + 1


def test_commit_without_reveal_is_a_dropout(env: Env) -> None:
    ledger, members = env.ledger, env.clients[3:5]
    before = ledger.reputation(members[1].address)
    round_id = env.new_round(members, blocks=10)
    for c in members:
        _commit(env, round_id, c)
    ledger.reveal(round_id, sender=members[0])
    ledger.advance_past(ledger.round_info(round_id).reveal_deadline)
    ledger.publish_aggregate(
        round_id,
        aggregate_digest=keccak(text="a"),
        participants=[members[0].address],
        sender=env.aggregator,
    )
    ledger.finalize(round_id, sender=env.aggregator)
    after = ledger.reputation(members[1].address)
    assert (after.positive, after.negative) == (before.positive, before.negative + 1)
    assert ledger.revealed(round_id) == {members[0].address}


def test_batched_round_falls_back_to_own_commit_and_reveal(env: Env) -> None:
    ledger = env.ledger
    members = sorted(env.clients[5:8], key=lambda a: int(a.address, 16))
    before = {c.address: ledger.reputation(c.address) for c in members}
    round_id = env.new_round(members, batched=True, blocks=10)
    ledger.commit_batch(round_id, [_sign(env, round_id, members[0])], sender=env.aggregator)
    _commit(env, round_id, members[1])  # left out of the batch: commits by itself
    with pytest.raises(AlreadyCommitted):
        _commit(env, round_id, members[1])
    with pytest.raises(AlreadyCommitted):
        ledger.commit_batch(round_id, [_sign(env, round_id, members[1])], sender=env.aggregator)
    _commit(env, round_id, members[2])
    info = ledger.round_info(round_id)
    assert info.commits == 3 and info.accumulator == ledger.expected_accumulator(round_id)
    ledger.reveal(round_id, sender=members[1])  # revealOwn: it fears being left out
    with pytest.raises(RevealPhaseOpen):
        ledger.publish_aggregate(
            round_id,
            aggregate_digest=keccak(text="a"),
            participants=[members[0].address],
            sender=env.aggregator,
        )
    ledger.advance_past(info.reveal_deadline)
    ledger.publish_aggregate(
        round_id,
        aggregate_digest=keccak(text="a"),
        participants=[members[0].address],
        sender=env.aggregator,
    )
    assert ledger.revealed(round_id) == {members[0].address, members[1].address}
    ledger.finalize(round_id, sender=env.aggregator)
    after = {c.address: ledger.reputation(c.address) for c in members}
    assert after[members[0].address].positive == before[members[0].address].positive + 1
    assert after[members[1].address].positive == before[members[1].address].positive + 1
    assert after[members[2].address].negative == before[members[2].address].negative + 1


def test_release_is_reserved_once_and_refusals_are_attested(env: Env) -> None:
    ledger, members = env.ledger, env.clients[8:9]
    round_id = env.new_round(members, blocks=2)
    with pytest.raises(WrongRound):  # nothing published yet
        ledger.reserve_release(round_id, sender=env.key_holder)
    env.close_commits(round_id)
    ledger.advance_past(ledger.round_info(round_id).reveal_deadline)
    ledger.publish_aggregate(
        round_id, aggregate_digest=keccak(text="a"), participants=[], sender=env.aggregator
    )
    with pytest.raises(WrongRound):  # an attestation needs a reservation first
        ledger.attest_reveal(round_id, reveal_digest=keccak(text="r"), sender=env.key_holder)
    ledger.reserve_release(round_id, sender=env.key_holder)
    assert ledger.round_info(round_id).status is RoundStatus.RELEASING
    with pytest.raises(WrongRound):
        ledger.reserve_release(round_id, sender=env.key_holder)
    ledger.attest_refusal(round_id, reason_code=2, sender=env.key_holder)
    info = ledger.round_info(round_id)
    assert info.status is RoundStatus.REFUSED and info.refusal_code == 2
    with pytest.raises(WrongRound):
        ledger.attest_reveal(round_id, reveal_digest=keccak(text="r"), sender=env.key_holder)
    ledger.finalize(round_id, sender=env.aggregator)
    assert ledger.round_info(round_id).refusal_code == 2


def test_reveal_deadline_must_follow_the_commit_deadline(env: Env) -> None:
    deadline = env.ledger.block_number() + 5
    with pytest.raises(BadRevealDeadline):
        env.ledger.open_round(
            10**6,
            config_digest=keccak(text="c"),
            clients=[env.clients[0].address],
            deadline=deadline,
            reveal_deadline=deadline,
            sender=env.aggregator,
        )
