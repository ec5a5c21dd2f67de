"""``MemoryLedger`` against the compiled contract: the same scenarios, the same outcomes.

``chain=none`` runs the hardened round on :class:`chain.MemoryLedger`, which restates the
contract's rules for direct rounds and the decryption committee in Python. Every scenario
below drives both ledgers with the same accounts and the same calls (honest steps and
attacks: an outsider, a non-selected client, a wrong manifest, an over-budget claim, a
replayed commit or reveal, a premature publication, a second release, a second flag) and
requires the same trace: each call's success or the NAME and arguments of the error it
raised, then the same round states, reputations and events. A rule the memory ledger got
wrong shows as a differing line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from chain import (
    ChainConfigError,
    InProcessBackend,
    Ledger,
    LedgerRevertError,
    MemoryLedger,
    Role,
    RoundStatus,
    WrongRound,
)

WEI = 10**18
BUDGET = 4.0
# Arguments that hold absolute block numbers (the two chains start at different heights).
_BLOCK_ARGS = {"blockNumber", "deadline", "revealDeadline"}


class Parties:
    """Fixed accounts, so both ledgers see the same addresses (and the same sort order)."""

    def __init__(self) -> None:
        accounts = [Account.create() for _ in range(12)]
        self.admin = accounts[0]
        self.aggregator, self.key_holder, self.auditor, self.outsider = accounts[1:5]
        self.clients = sorted(accounts[5:9], key=lambda a: int(a.address, 16))
        self.members = accounts[9:12]

    def everyone(self) -> list[LocalAccount]:
        return [
            self.admin,
            self.aggregator,
            self.key_holder,
            self.auditor,
            self.outsider,
            *self.clients,
            *self.members,
        ]


@pytest.fixture(scope="module")
def parties() -> Parties:
    return Parties()


@pytest.fixture
def ledgers(parties: Parties) -> Iterator[dict[str, Ledger]]:
    backend = InProcessBackend()
    with backend:
        backend.fund([a.address for a in parties.everyone()], WEI)
        evm = Ledger.deploy(backend, admin=parties.admin, epsilon_budget=BUDGET)
        memory = MemoryLedger.create(admin=parties.admin, epsilon_budget=BUDGET)
        for ledger in (evm, memory):
            ledger.register(Role.AGGREGATOR, parties.aggregator.address, sender=parties.admin)
            ledger.register(Role.KEY_HOLDER, parties.key_holder.address, sender=parties.admin)
            ledger.register(Role.AUDITOR, parties.auditor.address, sender=parties.admin)
            ledger.register(Role.CLIENT, [c.address for c in parties.clients], sender=parties.admin)
        yield {"evm": evm, "memory": memory}


def _norm(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, list | tuple):
        return [_norm(v) for v in value]
    return value


def _outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    try:
        call()
    except LedgerRevertError as error:
        args = {k: _norm(v) for k, v in error.args_dict.items() if k not in _BLOCK_ARGS}
        return ("revert", error.error_name, tuple(sorted(args.items())))
    except ChainConfigError:  # refused by the client before any transaction
        return ("refused",)
    return ("ok",)


def _config(round_id: int) -> bytes:
    return keccak(text=f"config-{round_id}")


class Script:
    """Calls made on one ledger, recorded as a trace."""

    def __init__(self, ledger: Ledger, parties: Parties) -> None:
        self.ledger = ledger
        self.p = parties
        self.trace: list[tuple[str, tuple[Any, ...]]] = []

    def step(self, label: str, call: Callable[[], Any]) -> None:
        self.trace.append((label, _outcome(call)))

    def open(self, round_id: int, clients: list[LocalAccount], *, by: LocalAccount) -> None:
        bn = self.ledger.block_number()
        self.step(
            f"open {round_id} by {self._who(by)}",
            lambda: self.ledger.open_round(
                round_id,
                config_digest=_config(round_id),
                clients=[c.address for c in clients],
                deadline=bn + 8,
                sender=by,
            ),
        )

    def commit(
        self,
        round_id: int,
        client: LocalAccount,
        *,
        epsilon: float = 1.0,
        manifest: bytes | None = None,
        label: str = "",
    ) -> None:
        blob = keccak(text=f"blob-{round_id}-{client.address}")
        event = keccak(text=f"event-{round_id}-{client.address}")
        self.step(
            f"commit {round_id} {self._who(client)} {label}",
            lambda: self.ledger.commit(
                round_id,
                manifest_digest=_config(round_id) if manifest is None else manifest,
                blob_digest=blob,
                event_digest=event,
                epsilon=epsilon,
                sender=client,
            ),
        )

    def reveal(self, round_id: int, client: LocalAccount) -> None:
        self.step(
            f"reveal {round_id} {self._who(client)}",
            lambda: self.ledger.reveal(round_id, sender=client),
        )

    def publish(self, round_id: int, participants: list[LocalAccount], *, by: LocalAccount) -> None:
        self.step(
            f"publish {round_id} {[self._who(c) for c in participants]} by {self._who(by)}",
            lambda: self.ledger.publish_aggregate(
                round_id,
                aggregate_digest=keccak(text=f"aggregate-{round_id}"),
                participants=[c.address for c in participants],
                sender=by,
            ),
        )

    def _who(self, account: LocalAccount) -> str:
        for name in ("admin", "aggregator", "key_holder", "auditor", "outsider"):
            if getattr(self.p, name) is account:
                return name
        if account in self.p.clients:
            return f"client{self.p.clients.index(account)}"
        return f"member{self.p.members.index(account)}"

    def state(self, round_ids: list[int]) -> list[Any]:
        """Round states, reputations and events, without absolute block numbers."""
        rows: list[Any] = []
        for round_id in round_ids:
            try:
                info = self.ledger.round_info(round_id)
            except WrongRound:
                rows.append((round_id, "none"))
                continue
            rows.append(
                (
                    round_id,
                    info.status.name,
                    info.commits,
                    info.reveals,
                    info.committed,
                    info.missed,
                    info.refusal_code,
                    info.epsilon_budget_fixed,
                    info.reveal_deadline - info.deadline,
                    _norm(info.clients),
                    _norm(info.participants),
                    _norm(info.aggregate_digest),
                    _norm(info.participants_hash),
                    _norm(info.reveal_digest),
                    _norm(info.clients_hash),
                    sorted(_norm(a) for a in self.ledger.revealed(round_id)),
                    [
                        (_norm(c.client), _norm(c.blob_digest))
                        for c in self.ledger.commitments(round_id)
                    ],
                )
            )
        for account in self.p.everyone():
            rep = self.ledger.reputation(account.address)
            rows.append((self._who(account), int(self.ledger.roles_of(account.address)), rep))
        for name in (
            "RoundOpened",
            "Committed",
            "Revealed",
            "AggregatePublished",
            "ReleaseReserved",
            "RevealAttested",
            "ReleaseRefused",
            "RoundFinalized",
            "Flagged",
            "KeyShareCommitted",
            "PartialAttested",
            "RolesSet",
        ):
            for event in self.ledger.events(name):
                args = {k: _norm(v) for k, v in event.args.items() if k not in _BLOCK_ARGS}
                rows.append((name, tuple(sorted(args.items()))))
        return rows


def _run_both(
    ledgers: dict[str, Ledger], parties: Parties, scenario: Callable[[Script], list[int]]
) -> dict[str, Script]:
    scripts = {}
    for name, ledger in ledgers.items():
        script = Script(ledger, parties)
        round_ids = scenario(script)
        script.trace.append(("state", tuple(map(repr, script.state(round_ids)))))
        scripts[name] = script
    return scripts


def _assert_same(scripts: dict[str, Script]) -> None:
    evm, memory = scripts["evm"].trace, scripts["memory"].trace
    for (label, expected), (_, got) in zip(evm, memory, strict=True):
        if label == "state":
            for want, have in zip(expected, got, strict=True):
                assert have == want, f"state differs:\n  evm    {want}\n  memory {have}"
        assert got == expected, f"{label}: evm {expected}, memory {got}"


def _direct_round(s: Script) -> list[int]:
    p, agg, kh = s.p, s.p.aggregator, s.p.key_holder
    c0, c1, c2, c3 = p.clients
    s.open(1, [c0, c1, c2], by=p.outsider)  # NotRegistered
    s.open(1, [c2, c0, c1], by=agg)  # sorted by the client
    s.open(1, [c0], by=agg)  # RoundExists
    s.open(2, [c0, c0], by=agg)  # ClientsNotSorted
    s.open(3, [c0, p.outsider], by=agg)  # NotRegistered (the outsider is no client)
    # several faults at once: the first the contract checks is the one reported
    s.open(3, [p.outsider, c0, c0], by=agg)  # an unregistered account before a repeated one
    s.open(3, [c1, c1, p.outsider], by=p.outsider)  # not the aggregator first
    for label, call in (
        (
            "reserve an unknown round by outsider",
            lambda: s.ledger.reserve_release(42, sender=p.outsider),
        ),
        (
            "attest an unknown round by outsider",
            lambda: s.ledger.attest_reveal(42, reveal_digest=_config(1), sender=p.outsider),
        ),
        (
            "refuse an unknown round by outsider",
            lambda: s.ledger.attest_refusal(42, reason_code=2, sender=p.outsider),
        ),
        ("reserve an unknown round", lambda: s.ledger.reserve_release(42, sender=kh)),
        (
            "publish an unknown round by outsider",
            lambda: s.ledger.publish_aggregate(
                42, aggregate_digest=_config(1), participants=[c0.address], sender=p.outsider
            ),
        ),
        ("finalize an unknown round by outsider", lambda: s.ledger.finalize(42, sender=p.outsider)),
        ("reveal an unknown round", lambda: s.ledger.reveal(42, sender=c0)),
    ):
        s.step(label, call)
    s.commit(1, c3)  # NotSelected
    s.commit(1, p.outsider)  # NotRegistered
    s.commit(1, c0, manifest=_config(9), label="other manifest")  # WrongManifest
    s.commit(1, c0, epsilon=BUDGET + 0.5, label="over budget")  # BudgetExceeded
    s.commit(1, c0, epsilon=BUDGET, label="at the budget")
    s.commit(1, c0, label="again")  # AlreadyCommitted
    s.reveal(1, c0)  # CommitPhaseOpen
    s.commit(1, c1)
    s.publish(1, [c0, c1], by=agg)  # CommitPhaseOpen
    s.step("close commits", lambda: s.ledger.advance_past(s.ledger.round_info(1).deadline))
    s.commit(1, c2, label="late")  # DeadlinePassed
    s.reveal(1, c0)
    s.reveal(1, c0)  # AlreadyRevealed
    s.reveal(1, c2)  # NotCommitted
    s.publish(1, [c0, c1], by=agg)  # NotRevealed (c1)
    s.publish(1, [c0], by=agg)  # RevealPhaseOpen (c1 committed, the reveal phase is open)
    s.publish(1, [c1, c0], by=agg)  # ClientsNotSorted? no: sorted by the client -> NotRevealed
    s.reveal(1, c1)
    s.publish(1, [c0, c1], by=p.outsider)  # NotRegistered
    s.publish(1, [c0, c1], by=agg)
    s.publish(1, [c0, c1], by=agg)  # WrongRound (already aggregated)
    s.reveal(1, c1)  # WrongRound
    digest = keccak(text="revealed-1")
    s.step(
        "attest before reserve", lambda: s.ledger.attest_reveal(1, reveal_digest=digest, sender=kh)
    )
    s.step("reserve by outsider", lambda: s.ledger.reserve_release(1, sender=p.outsider))
    s.step("reserve", lambda: s.ledger.reserve_release(1, sender=kh))
    s.step("reserve again", lambda: s.ledger.reserve_release(1, sender=kh))
    s.step("attest", lambda: s.ledger.attest_reveal(1, reveal_digest=digest, sender=kh))
    s.step("refuse after release", lambda: s.ledger.attest_refusal(1, reason_code=3, sender=kh))
    s.step("finalize by outsider", lambda: s.ledger.finalize(1, sender=p.outsider))
    s.step("finalize", lambda: s.ledger.finalize(1, sender=agg))
    s.step("finalize again", lambda: s.ledger.finalize(1, sender=agg))
    s.step("flag", lambda: s.ledger.flag(c2.address, 1, 7, sender=p.auditor))
    s.step("flag again", lambda: s.ledger.flag(c2.address, 1, 7, sender=p.auditor))
    s.step("flag other reason", lambda: s.ledger.flag(c2.address, 1, 8, sender=p.auditor))
    s.step("flag unknown round", lambda: s.ledger.flag(c2.address, 99, 7, sender=p.auditor))
    s.step("flag non-client", lambda: s.ledger.flag(agg.address, 1, 7, sender=p.auditor))
    s.step("flag by a client", lambda: s.ledger.flag(c2.address, 1, 9, sender=c0))
    # Round 4: everyone commits (the commit phase closes early), the key holder refuses.
    s.open(4, [c1, c3], by=agg)
    s.commit(4, c1)
    s.commit(4, c3)
    s.reveal(4, c3)
    s.publish(4, [c1, c3], by=agg)  # NotRevealed (c1)
    s.publish(4, [c3], by=agg)  # RevealPhaseOpen
    s.step(
        "advance past the reveal deadline",
        lambda: s.ledger.advance_past(s.ledger.round_info(4).reveal_deadline),
    )
    s.reveal(4, c1)  # DeadlinePassed
    s.publish(4, [c3], by=agg)  # after the reveal deadline: a subset is fine
    s.step("refuse code 0", lambda: s.ledger.attest_refusal(4, reason_code=0, sender=kh))
    s.step("refuse", lambda: s.ledger.attest_refusal(4, reason_code=5, sender=kh))
    s.step("reserve after refusal", lambda: s.ledger.reserve_release(4, sender=kh))
    s.step("finalize 4", lambda: s.ledger.finalize(4, sender=agg))
    s.step("budget by outsider", lambda: s.ledger.set_epsilon_budget(1.0, sender=p.outsider))
    s.step("budget", lambda: s.ledger.set_epsilon_budget(1.0, sender=p.admin))
    s.open(5, [c0], by=agg)
    s.commit(5, c0, epsilon=1.5, label="over the new budget")  # BudgetExceeded
    s.step(
        "roles by outsider",
        lambda: s.ledger.set_roles([c0.address], Role.CLIENT, sender=p.outsider),
    )
    s.step("invalid roles", lambda: s.ledger.set_roles([c0.address], 64, sender=p.admin))
    return [1, 2, 3, 4, 5]


def _committee_round(s: Script) -> list[int]:
    p, agg = s.p, s.p.aggregator
    c0, c1 = p.clients[:2]
    m0, m1, m2 = p.members
    s.step(
        "setup unregistered",
        lambda: s.ledger.setup_committee([m0.address, m1.address], threshold=2, sender=p.admin),
    )
    s.step(
        "register members",
        lambda: s.ledger.register(Role.COMMITTEE, [m.address for m in p.members], sender=p.admin),
    )
    s.step(
        "setup by outsider",
        lambda: s.ledger.setup_committee([m0.address, m1.address], threshold=2, sender=p.outsider),
    )
    s.step(
        "setup of one", lambda: s.ledger.setup_committee([m0.address], threshold=1, sender=p.admin)
    )
    s.step(
        "setup twice listed",
        lambda: s.ledger.setup_committee([m0.address, m0.address], threshold=2, sender=p.admin),
    )
    s.step(
        "setup",
        lambda: s.ledger.setup_committee(
            [m.address for m in p.members], threshold=2, sender=p.admin
        ),
    )
    s.step(
        "setup again",
        lambda: s.ledger.setup_committee([m0.address, m1.address], threshold=2, sender=p.admin),
    )
    share = keccak(text="share")
    s.step("share by outsider", lambda: s.ledger.commit_key_share(share, sender=p.outsider))
    s.step("zero share", lambda: s.ledger.commit_key_share(bytes(32), sender=m0))
    s.step("share", lambda: s.ledger.commit_key_share(share, sender=m0))
    s.step("share again", lambda: s.ledger.commit_key_share(share, sender=m0))
    s.open(1, [c0, c1], by=agg)
    s.commit(1, c0)
    s.commit(1, c1)
    s.reveal(1, c0)
    s.reveal(1, c1)
    partial = keccak(text="partial")
    s.step(
        "partial before reserve",
        lambda: s.ledger.attest_partial(1, partial_digest=partial, sender=m1),
    )
    s.publish(1, [c0, c1], by=agg)
    s.step("reserve by the key holder", lambda: s.ledger.reserve_release(1, sender=p.key_holder))
    s.step("reserve by a member", lambda: s.ledger.reserve_release(1, sender=m2))
    s.step(
        "partial by outsider",
        lambda: s.ledger.attest_partial(1, partial_digest=partial, sender=p.outsider),
    )
    s.step("partial", lambda: s.ledger.attest_partial(1, partial_digest=partial, sender=m1))
    s.step("partial again", lambda: s.ledger.attest_partial(1, partial_digest=partial, sender=m1))
    s.step("partial 2", lambda: s.ledger.attest_partial(1, partial_digest=partial, sender=m0))
    s.step(
        "partial unknown round",
        lambda: s.ledger.attest_partial(7, partial_digest=partial, sender=m2),
    )
    s.step("attest", lambda: s.ledger.attest_reveal(1, reveal_digest=keccak(text="r"), sender=m0))
    s.step("finalize", lambda: s.ledger.finalize(1, sender=agg))
    s.trace.append(
        (
            "partials",
            tuple(sorted((i, d.hex()) for i, d in s.ledger.partial_attestations(1).items())),
        )
    )
    info = s.ledger.committee()
    assert info is not None
    s.trace.append(("committee", (_norm(info.members), info.threshold, sorted(info.share_digests))))
    return [1]


@pytest.mark.parametrize("scenario", [_direct_round, _committee_round], ids=["direct", "committee"])
def test_memory_ledger_matches_the_contract(
    ledgers: dict[str, Ledger], parties: Parties, scenario: Callable[[Script], list[int]]
) -> None:
    scripts = _run_both(ledgers, parties, scenario)
    _assert_same(scripts)
    # the scenarios exercise the rules: most steps revert, some succeed
    outcomes = [o[0] for _, o in scripts["evm"].trace if o and o[0] in ("ok", "revert")]
    assert outcomes.count("revert") >= 8 and outcomes.count("ok") >= 8


def test_memory_ledger_refuses_batched_and_merkle_rounds(parties: Parties) -> None:
    ledger = MemoryLedger.create(admin=parties.admin, epsilon_budget=BUDGET)
    ledger.register(Role.AGGREGATOR, parties.aggregator.address, sender=parties.admin)
    ledger.register(Role.CLIENT, [c.address for c in parties.clients], sender=parties.admin)
    with pytest.raises(ChainConfigError, match="batched and merkle"):
        ledger.open_round(
            1,
            config_digest=_config(1),
            clients=[parties.clients[0].address],
            deadline=ledger.block_number() + 5,
            commit_mode="batched",
            sender=parties.aggregator,
        )
    with pytest.raises(ChainConfigError, match="batched and merkle"):
        ledger.settle_reputations([1], sender=parties.aggregator)
    with pytest.raises(ChainConfigError, match="no node"):
        _ = ledger.w3
    with pytest.raises(WrongRound):
        ledger.round_info(1)
    assert ledger.info().backend == "memory"


def test_memory_ledger_names_each_event_sender(
    ledgers: dict[str, Ledger], parties: Parties
) -> None:
    """The auditor attributes a publication to the account that sent it."""
    for ledger in ledgers.values():
        script = Script(ledger, parties)
        script.open(1, parties.clients[:1], by=parties.aggregator)
        opened = next(iter(ledger.events("RoundOpened")))
        assert ledger.transaction_sender(opened.tx_hash) == parties.aggregator.address
        assert ledger.round_info(1).status is RoundStatus.OPEN
