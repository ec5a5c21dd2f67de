"""``MemoryLedger``: the consortium ledger's rules kept in memory, for ``chain=none``.

One round driver serves every configuration: ``chain=none`` runs the same hardened round
(:class:`secagg.SecureRoundProtocol`: manifests, commitments, blind combination, attested
release, finalization, the auditor, reputation) against this ledger instead of a contract.
It keeps the contract's rules for what ``chain=none`` runs (direct rounds and the CKKS
decryption committee: roles, deadlines, the epsilon budget, one release per round,
finalization and flags) and raises the contract's own errors
(:class:`chain.LedgerRevertError` subclasses, with the contract's argument names), so every
caller handles both alike. ``tests/chain/test_chain_memory.py`` runs the same scenarios
against this class and the compiled contract on the in-process EVM and compares the
results, events and errors.

What it is not: a ledger anyone else can read. Its state lives in the process that made it
and dies with it, so nothing is attested to a party outside the run: the in-run auditor
checks the round, an outside auditor has nothing to check (``results.json`` records no
ledger). There is no gas (``gas_used`` is 0) and no signature: a ``sender`` is trusted to
be who it says, as every party lives in the same process. Batched and merkle rounds (whose
point is the gas on a real chain) need a real ledger and are refused.

Blocks: each write is one block (like an automining node); :meth:`advance_past` mines
empty blocks, so deadlines behave as on chain.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from chain._errors import REVERT_CLASSES, ChainConfigError, LedgerRevertError
from chain._ledger import (
    DEFAULT_CHALLENGE_WINDOW,
    Ledger,
    LedgerInfo,
    _address,
    _check_round,
    _normalise,
    _sort_addresses,
    _wrong_round,
    list_hash,
)
from chain._merkle import LeafSet
from chain._reputation import opinion
from chain._types import (
    COMMIT_MODES,
    Address,
    Commitment,
    CommitteeInfo,
    Digest,
    LedgerEvent,
    Reputation,
    Role,
    RoundInfo,
    RoundStatus,
    TxResult,
    as_digest,
    budget_to_fixed,
    epsilon_to_fixed,
)

__all__ = ["MEMORY_CHAIN_ID", "MemoryLedger"]

#: The chain id a memory ledger reports (no real chain has it; EIP-155 leaves it unused).
MEMORY_CHAIN_ID = 0
_ALL_ROLES = 31
_MAX_CLIENTS = 4096
_MAX_COMMITTEE = 8
_UNSUPPORTED = (
    "chain=none keeps direct rounds in memory; batched and merkle commit modes need a "
    "ledger (chain=inprocess, anvil or rpc)"
)


@dataclass
class _Round:
    """A direct round's state (the contract's ``Round`` and its per-client words)."""

    config_digest: Digest
    clients: tuple[Address, ...]
    deadline: int
    reveal_deadline: int
    budget: int
    status: RoundStatus = RoundStatus.OPEN
    commits: int = 0
    reveals: int = 0
    committed: set[str] = field(default_factory=set)  # lower-case addresses
    revealed: set[str] = field(default_factory=set)
    aggregate_digest: Digest | None = None
    participants: tuple[Address, ...] | None = None
    reveal_digest: Digest | None = None
    refusal_code: int = 0
    done: int = 0
    missed: int = 0
    partials: dict[str, Digest] = field(default_factory=dict)


@dataclass
class _Member:
    roles: int = 0
    positive: int = 0
    negative: int = 0


class MemoryLedger(Ledger):
    """The contract's direct-round and committee rules in memory (module docstring).

    It has :class:`Ledger`'s interface, so the round protocol, the auditor and the runner
    take it where they take a ledger; it does not call ``Ledger.__init__`` (there is no
    node and no contract).
    """

    def __init__(self, *, admin: str, epsilon_budget_fixed: int) -> None:
        # No node, no contract: every attribute Ledger's readers use is set here.
        self.deploy_gas = None
        self.start_block = 1
        self.chain_id = MEMORY_CHAIN_ID
        self.address = Address(_address("0x" + keccak(os.urandom(32))[-20:].hex()))
        self.history: list[tuple[int | None, TxResult]] = []
        self._admin = _address(admin, field="admin")
        self._budget = int(epsilon_budget_fixed)
        self._block = 1
        self._log_index = 0
        self._members: dict[str, _Member] = {}
        self._rounds: dict[int, _Round] = {}
        self._flagged: set[tuple[str, int, int]] = set()
        self._events: list[LedgerEvent] = []
        self._senders: dict[bytes, Address] = {}
        self._committee: tuple[Address, ...] = ()
        self._threshold = 0
        self._seed = Digest(bytes(32))
        self._shares: dict[str, Digest] = {}
        self._emit(None, "EpsilonBudgetSet", {"epsilonBudget": self._budget}, self._admin)

    @classmethod
    def create(cls, *, admin: LocalAccount, epsilon_budget: float) -> MemoryLedger:
        """A fresh memory ledger whose admin is ``admin`` (``epsilon_budget`` per client)."""
        return cls(admin=admin.address, epsilon_budget_fixed=budget_to_fixed(epsilon_budget))

    def __repr__(self) -> str:
        return f"MemoryLedger(address={self.address}, rounds={len(self._rounds)})"

    @property
    def w3(self) -> Any:
        raise ChainConfigError("a memory ledger has no node (chain=none)")

    def info(self) -> LedgerInfo:
        return LedgerInfo(backend="memory", url=None, chain_id=self.chain_id, address=self.address)

    # ------------------------------------------------------------------ machinery
    def _revert(self, name: str, **args: Any) -> NoReturn:
        raise REVERT_CLASSES.get(name, LedgerRevertError)(name, args)

    def _emit(self, round_id: int | None, name: str, args: dict[str, Any], sender: str) -> TxResult:
        """One write: a new block, its event(s), a zero-gas ``TxResult``."""
        return self._mine(round_id, name, [(name, args)], sender)

    def _mine(
        self,
        round_id: int | None,
        function: str,
        events: Sequence[tuple[str, dict[str, Any]]],
        sender: str,
    ) -> TxResult:
        self._block += 1
        tx_hash = hashlib.sha256(
            self.address.encode() + self._block.to_bytes(8, "big") + function.encode()
        ).digest()
        for name, args in events:
            self._events.append(
                LedgerEvent(
                    name=name,
                    args=dict(args),
                    block_number=self._block,
                    tx_hash=tx_hash,
                    log_index=self._log_index,
                )
            )
            self._log_index += 1
        self._senders[tx_hash] = _address(sender)
        result = TxResult(tx_hash=tx_hash, block_number=self._block, gas_used=0, function=function)
        self.history.append((round_id, result))
        return result

    def _member(self, address: str) -> _Member:
        return self._members.setdefault(address.lower(), _Member())

    def _require_role(self, sender: str, role: Role) -> None:
        if not self._member(sender).roles & int(role):
            self._revert("NotRegistered", account=_address(sender), role=int(role))

    def _require_releaser(self, sender: str) -> None:
        if self._committee:
            if self._committee_index(sender) == 0:
                self._revert("NotCommitteeMember", account=_address(sender))
        elif not self._member(sender).roles & int(Role.KEY_HOLDER):
            self._revert("NotRegistered", account=_address(sender), role=int(Role.KEY_HOLDER))

    def _committee_index(self, address: str) -> int:
        wanted = address.lower()
        for index, member in enumerate(self._committee, start=1):
            if member.lower() == wanted:
                return index
        return 0

    def _round(self, round_id: int) -> _Round:
        _check_round(round_id)
        found = self._rounds.get(round_id)
        if found is None:
            raise _wrong_round(round_id)
        return found

    def _next_block(self) -> int:
        """``block.number`` inside the next write."""
        return self._block + 1

    # ------------------------------------------------------------------ registry
    def fund(self, addresses: Sequence[str], wei: int) -> None:
        """Nothing to fund: a memory ledger has no gas."""

    def set_roles(
        self, accounts: Sequence[str], roles: Role | int, *, sender: LocalAccount
    ) -> TxResult:
        addrs = [_address(a, field="accounts") for a in accounts]
        if not addrs:
            raise ChainConfigError("accounts must not be empty")
        if sender.address.lower() != self._admin.lower():
            self._revert("NotAdmin", sender=_address(sender.address))
        bits = int(roles)
        if bits & ~_ALL_ROLES:
            self._revert("InvalidRoles", roles=bits)
        for account in addrs:
            if int(account, 16) == 0:
                self._revert("ZeroAddress")
        events = []
        for account in addrs:
            self._member(account).roles = bits
            events.append(("RolesSet", {"account": account, "roles": bits}))
        return self._mine(None, "setRoles", events, sender.address)

    def roles_of(self, address: str) -> Role:
        return Role(self._member(_address(address)).roles)

    def set_epsilon_budget(self, epsilon_budget: float, *, sender: LocalAccount) -> TxResult:
        if sender.address.lower() != self._admin.lower():
            self._revert("NotAdmin", sender=_address(sender.address))
        self._budget = budget_to_fixed(epsilon_budget)
        return self._emit(None, "EpsilonBudgetSet", {"epsilonBudget": self._budget}, sender.address)

    def epsilon_budget_fixed(self) -> int:
        return self._budget

    @property
    def admin(self) -> Address:
        return self._admin

    # ------------------------------------------------------------------ rounds
    def block_number(self) -> int:
        return self._block

    def advance_past(self, block: int) -> int:
        missing = block + 1 - self._block
        if missing <= 0:
            return 0
        self._block += missing
        return missing

    def open_round(
        self,
        round_id: int,
        *,
        config_digest: bytes,
        clients: Sequence[str],
        deadline: int,
        reveal_deadline: int | None = None,
        batched: bool = False,
        commit_mode: str | None = None,
        challenge_window: int = DEFAULT_CHALLENGE_WINDOW,
        sender: LocalAccount,
    ) -> TxResult:
        _check_round(round_id)
        mode = commit_mode or ("batched" if batched else "direct")
        if mode not in COMMIT_MODES:
            raise ChainConfigError(f"commit_mode must be one of {COMMIT_MODES}, got {mode!r}")
        if mode != "direct":
            raise ChainConfigError(_UNSUPPORTED)
        digest, ordered, reveal_deadline = self._opening_args(
            config_digest, clients, deadline, reveal_deadline
        )
        # The contract's order: role, round, list size, deadlines, then each client in
        # turn (strictly ascending, registered).
        self._require_role(sender.address, Role.AGGREGATOR)
        if round_id in self._rounds:
            self._revert("RoundExists", round=round_id)
        if len(ordered) > _MAX_CLIENTS:
            self._revert("BadClientList", round=round_id)
        block = self._next_block()
        if deadline < block:
            self._revert("DeadlineInPast", deadline=deadline, blockNumber=block)
        if reveal_deadline <= deadline:
            self._revert("BadRevealDeadline", deadline=deadline, revealDeadline=reveal_deadline)
        previous = 0
        for position, client in enumerate(ordered):
            if int(client, 16) <= previous:
                self._revert("ClientsNotSorted", position=position)
            previous = int(client, 16)
            if not self._member(client).roles & int(Role.CLIENT):
                self._revert("NotRegistered", account=client, role=int(Role.CLIENT))
        self._rounds[round_id] = _Round(
            config_digest=digest,
            clients=tuple(ordered),
            deadline=deadline,
            reveal_deadline=reveal_deadline,
            budget=self._budget,
        )
        args = {
            "round": round_id,
            "configDigest": bytes(digest),
            "deadline": deadline,
            "revealDeadline": reveal_deadline,
            "epsilonBudget": self._budget,
            "mode": 0,
            "clients": list(ordered),
        }
        return self._mine(round_id, "openRound", [("RoundOpened", args)], sender.address)

    def open_merkle_round(self, leaf_set: LeafSet, **_: Any) -> TxResult:
        raise ChainConfigError(_UNSUPPORTED)

    def _unsupported(self, *_: Any, **__: Any) -> NoReturn:
        raise ChainConfigError(_UNSUPPORTED)

    # Batched and merkle rounds (and their challenges and settlement) need a real ledger.
    sign_commit = commit_batch = merkle_state = publish_merkle = _unsupported
    sign_publication = publish_and_reserve = challenge_omission = _unsupported
    challenge_over_budget = challenge_equivocation = settle_reputation = _unsupported
    settle_reputations = expected_accumulator = commitment_hash = _unsupported

    def commit(
        self,
        round_id: int,
        *,
        manifest_digest: bytes,
        blob_digest: bytes,
        event_digest: bytes,
        epsilon: float,
        sender: LocalAccount,
    ) -> TxResult:
        _check_round(round_id)
        manifest = as_digest(manifest_digest, field="manifest_digest")
        blob = as_digest(blob_digest, field="blob_digest")
        event = as_digest(event_digest, field="event_digest")
        fixed = epsilon_to_fixed(epsilon)
        rd = self._round(round_id)
        who = _address(sender.address)
        if rd.status != RoundStatus.OPEN:
            self._revert("WrongRound", round=round_id, status=int(rd.status))
        block = self._next_block()
        if block > rd.deadline:
            self._revert("DeadlinePassed", round=round_id, deadline=rd.deadline, blockNumber=block)
        if manifest != rd.config_digest:
            self._revert("WrongManifest", round=round_id, manifestDigest=bytes(manifest))
        if fixed > rd.budget:
            self._revert("BudgetExceeded", client=who, claimed=fixed, budget=rd.budget)
        if who.lower() in rd.committed:
            self._revert("AlreadyCommitted", round=round_id, client=who)
        if who.lower() not in {c.lower() for c in rd.clients}:
            if not self._member(who).roles & int(Role.CLIENT):
                self._revert("NotRegistered", account=who, role=int(Role.CLIENT))
            self._revert("NotSelected", round=round_id, client=who)
        rd.committed.add(who.lower())
        rd.commits += 1
        args = {
            "round": round_id,
            "client": who,
            "blobDigest": bytes(blob),
            "eventDigest": bytes(event),
            "epsilon": fixed,
        }
        return self._mine(round_id, "commit", [("Committed", args)], who)

    def reveal(self, round_id: int, *, sender: LocalAccount) -> TxResult:
        rd = self._round(round_id)
        who = _address(sender.address)
        if rd.status != RoundStatus.OPEN:
            self._revert("WrongRound", round=round_id, status=int(rd.status))
        block = self._next_block()
        if not (block > rd.deadline or rd.commits == len(rd.clients)):
            self._revert("CommitPhaseOpen", round=round_id)
        if block > rd.reveal_deadline:
            self._revert(
                "DeadlinePassed", round=round_id, deadline=rd.reveal_deadline, blockNumber=block
            )
        if who.lower() not in rd.committed:
            self._revert("NotCommitted", round=round_id, client=who)
        if who.lower() in rd.revealed:
            self._revert("AlreadyRevealed", round=round_id, client=who)
        rd.revealed.add(who.lower())
        rd.reveals += 1
        return self._mine(
            round_id, "reveal", [("Revealed", {"round": round_id, "client": who})], who
        )

    def publish_aggregate(
        self,
        round_id: int,
        *,
        aggregate_digest: bytes,
        participants: Sequence[str],
        sender: LocalAccount,
    ) -> TxResult:
        digest = as_digest(aggregate_digest, field="aggregate_digest")
        ordered = _sort_addresses(participants)
        rd = self._round(round_id)
        self._require_role(sender.address, Role.AGGREGATOR)
        if rd.status != RoundStatus.OPEN:
            self._revert("WrongRound", round=round_id, status=int(rd.status))
        block = self._next_block()
        if not (block > rd.deadline or rd.commits == len(rd.clients)):
            self._revert("CommitPhaseOpen", round=round_id)
        previous = ""
        for position, participant in enumerate(ordered):
            if participant.lower() == previous:
                self._revert("ClientsNotSorted", position=position)
            previous = participant.lower()
            if participant.lower() not in rd.committed:
                self._revert("NotCommitted", round=round_id, client=participant)
            if participant.lower() not in rd.revealed:
                self._revert("NotRevealed", round=round_id, client=participant)
        if len(ordered) != rd.commits and block <= rd.reveal_deadline:
            self._revert("RevealPhaseOpen", round=round_id)
        rd.status = RoundStatus.AGGREGATED
        rd.aggregate_digest = digest
        rd.participants = tuple(ordered)
        args = {"round": round_id, "aggregateDigest": bytes(digest), "participants": ordered}
        return self._mine(
            round_id, "publishAggregate", [("AggregatePublished", args)], sender.address
        )

    def reserve_release(self, round_id: int, *, sender: LocalAccount) -> TxResult:
        self._require_releaser(sender.address)
        rd = self._round(round_id)
        if rd.status != RoundStatus.AGGREGATED:
            self._revert("WrongRound", round=round_id, status=int(rd.status))
        rd.status = RoundStatus.RELEASING
        return self._emit(round_id, "ReleaseReserved", {"round": round_id}, sender.address)

    def attest_reveal(
        self, round_id: int, *, reveal_digest: bytes, sender: LocalAccount
    ) -> TxResult:
        digest = as_digest(reveal_digest, field="reveal_digest")
        self._require_releaser(sender.address)
        rd = self._round(round_id)
        if rd.status != RoundStatus.RELEASING:
            self._revert("WrongRound", round=round_id, status=int(rd.status))
        rd.status = RoundStatus.REVEALED
        rd.reveal_digest = digest
        args = {"round": round_id, "revealDigest": bytes(digest)}
        return self._mine(round_id, "attestReveal", [("RevealAttested", args)], sender.address)

    def attest_refusal(self, round_id: int, *, reason_code: int, sender: LocalAccount) -> TxResult:
        if not 0 < reason_code < 2**32:
            raise ChainConfigError(f"reason_code must be in [1, 2**32), got {reason_code}")
        self._require_releaser(sender.address)
        rd = self._round(round_id)
        if rd.status not in (RoundStatus.AGGREGATED, RoundStatus.RELEASING):
            self._revert("WrongRound", round=round_id, status=int(rd.status))
        rd.status = RoundStatus.REFUSED
        rd.refusal_code = reason_code
        args = {"round": round_id, "reasonCode": reason_code}
        return self._mine(round_id, "attestRefusal", [("ReleaseRefused", args)], sender.address)

    # ------------------------------------------------------------------ committee
    def setup_committee(
        self, members: Sequence[str], *, threshold: int, sender: LocalAccount
    ) -> TxResult:
        addrs = [_address(a, field="members") for a in members]
        if not 0 < threshold <= len(addrs):
            raise ChainConfigError(f"threshold must be in [1, {len(addrs)}], got {threshold}")
        if sender.address.lower() != self._admin.lower():
            self._revert("NotAdmin", sender=_address(sender.address))
        size = len(addrs)
        if self._committee or size < 2 or size > _MAX_COMMITTEE:
            self._revert("BadCommittee", size=size, threshold=threshold)
        for account in addrs:
            if not self._member(account).roles & int(Role.COMMITTEE):
                self._revert("NotRegistered", account=account, role=int(Role.COMMITTEE))
        if len({a.lower() for a in addrs}) != size:
            self._revert("BadCommittee", size=size, threshold=threshold)
        # The contract takes the seed from the chain (previous block hash, prevrandao);
        # here it is fresh randomness bound to the members and threshold.
        self._seed = Digest(
            keccak(
                os.urandom(32)
                + self.address.encode()
                + b"".join(bytes.fromhex(a[2:]) for a in addrs)
                + bytes([threshold])
            )
        )
        self._committee = tuple(addrs)
        self._threshold = threshold
        args = {"seed": bytes(self._seed), "members": list(addrs), "threshold": threshold}
        return self._mine(None, "setupCommittee", [("CommitteeSetUp", args)], sender.address)

    def commit_key_share(self, share_digest: bytes, *, sender: LocalAccount) -> TxResult:
        digest = as_digest(share_digest, field="share_digest")
        index = self._committee_index(sender.address)
        if index == 0:
            self._revert("NotCommitteeMember", account=_address(sender.address))
        if sender.address.lower() in self._shares:
            self._revert("AlreadyAttested", member=_address(sender.address))
        if bytes(digest) == bytes(32):
            self._revert("BadReason", reasonCode=0)
        self._shares[sender.address.lower()] = digest
        args = {"member": _address(sender.address), "index": index, "shareDigest": bytes(digest)}
        return self._mine(None, "commitKeyShare", [("KeyShareCommitted", args)], sender.address)

    def attest_partial(
        self, round_id: int, *, partial_digest: bytes, sender: LocalAccount
    ) -> TxResult:
        _check_round(round_id)
        digest = as_digest(partial_digest, field="partial_digest")
        index = self._committee_index(sender.address)
        if index == 0:
            self._revert("NotCommitteeMember", account=_address(sender.address))
        rd = self._rounds.get(round_id)
        status = RoundStatus.NONE if rd is None else rd.status
        if rd is None or status != RoundStatus.RELEASING:
            self._revert("WrongRound", round=round_id, status=int(status))
        if sender.address.lower() in rd.partials:
            self._revert("AlreadyAttested", member=_address(sender.address))
        if bytes(digest) == bytes(32):
            self._revert("BadReason", reasonCode=0)
        rd.partials[sender.address.lower()] = digest
        args = {
            "round": round_id,
            "member": _address(sender.address),
            "index": index,
            "partialDigest": bytes(digest),
        }
        return self._mine(round_id, "attestPartial", [("PartialAttested", args)], sender.address)

    def committee(self) -> CommitteeInfo | None:
        if not self._committee:
            return None
        return CommitteeInfo(
            seed=self._seed,
            members=self._committee,
            threshold=self._threshold,
            share_digests={
                index: self._shares[member.lower()]
                for index, member in enumerate(self._committee, start=1)
                if member.lower() in self._shares
            },
        )

    # ------------------------------------------------------------------ end of round
    def finalize(self, round_id: int, *, sender: LocalAccount) -> TxResult:
        rd = self._round(round_id)
        self._require_role(sender.address, Role.AGGREGATOR)
        if rd.status not in (RoundStatus.AGGREGATED, RoundStatus.REVEALED, RoundStatus.REFUSED):
            self._revert("WrongRound", round=round_id, status=int(rd.status))
        done = 0
        for client in rd.clients:
            member = self._member(client)
            if client.lower() in rd.committed and client.lower() in rd.revealed:
                done += 1
                member.positive += 1
            else:
                member.negative += 1
        rd.status = RoundStatus.FINALIZED
        rd.done = done
        rd.missed = len(rd.clients) - done
        args = {"round": round_id, "committed": done, "missed": rd.missed}
        return self._mine(round_id, "finalize", [("RoundFinalized", args)], sender.address)

    def flag(
        self, client: str, round_id: int, reason_code: int, *, sender: LocalAccount
    ) -> TxResult:
        _check_round(round_id)
        if not 0 <= reason_code < 2**32:
            raise ChainConfigError(f"reason_code must be in [0, 2**32), got {reason_code}")
        who = _address(client)
        self._require_role(sender.address, Role.AUDITOR)
        if not self._member(who).roles & int(Role.CLIENT):
            self._revert("NotRegistered", account=who, role=int(Role.CLIENT))
        if round_id not in self._rounds:
            self._revert("WrongRound", round=round_id, status=0)
        key = (who.lower(), round_id, reason_code)
        if key in self._flagged:
            self._revert("AlreadyFlagged", client=who, round=round_id, reasonCode=reason_code)
        self._flagged.add(key)
        self._member(who).negative += 1
        args = {
            "client": who,
            "round": round_id,
            "reasonCode": reason_code,
            "auditor": _address(sender.address),
        }
        return self._mine(round_id, "flag", [("Flagged", args)], sender.address)

    # ------------------------------------------------------------------ readers
    def selected_clients(self, round_id: int) -> tuple[Address, ...]:
        return self._round(round_id).clients

    def round_info(self, round_id: int) -> RoundInfo:
        rd = self._round(round_id)
        aggregated = rd.status >= RoundStatus.AGGREGATED
        return RoundInfo(
            round_id=round_id,
            status=rd.status,
            batched=False,
            config_digest=rd.config_digest,
            clients=rd.clients,
            clients_hash=list_hash(rd.clients),
            deadline=rd.deadline,
            reveal_deadline=rd.reveal_deadline,
            commits=rd.commits,
            reveals=rd.reveals,
            epsilon_budget_fixed=rd.budget,
            accumulator=None,
            aggregate_digest=rd.aggregate_digest if aggregated else None,
            participants=rd.participants if aggregated else None,
            participants_hash=list_hash(rd.participants or ()) if aggregated else None,
            reveal_digest=rd.reveal_digest,
            committed=rd.done,
            missed=rd.missed,
            refusal_code=rd.refusal_code,
            mode="direct",
        )

    def revealed(self, round_id: int) -> frozenset[Address]:
        rd = self._round(round_id)
        return frozenset(c for c in rd.clients if c.lower() in rd.revealed)

    def commitments(self, round_id: int, *, page_size: int = 1000) -> list[Commitment]:
        return [
            Commitment(
                round_id=round_id,
                client=_address(ev.args["client"]),
                blob_digest=Digest(bytes(ev.args["blobDigest"])),
                event_digest=Digest(bytes(ev.args["eventDigest"])),
                epsilon_fixed=int(ev.args["epsilon"]),
                block_number=ev.block_number,
                tx_hash=ev.tx_hash,
            )
            for ev in self.events("Committed", argument_filters={"round": round_id})
        ]

    def partial_attestations(self, round_id: int) -> dict[int, Digest]:
        _check_round(round_id)
        return {
            int(e.args["index"]): Digest(bytes(e.args["partialDigest"]))
            for e in self.events("PartialAttested", argument_filters={"round": round_id})
        }

    def merkle_challenges(self, round_id: int, client: str) -> int:
        return 0

    def reputation(self, address: str) -> Reputation:
        member = self._member(_address(address))
        score = opinion(member.positive, member.negative).score_fixed
        return Reputation(positive=member.positive, negative=member.negative, score_fixed=score)

    def events(
        self,
        name: str,
        *,
        from_block: int | None = None,
        to_block: int | None = None,
        page_size: int = 1000,
        argument_filters: dict[str, Any] | None = None,
    ) -> Iterator[LedgerEvent]:
        if page_size < 1:
            raise ChainConfigError(f"page_size must be >= 1, got {page_size}")
        start = self.start_block if from_block is None else from_block
        last = self._block if to_block is None else to_block
        wanted = {key: _normalise(value) for key, value in (argument_filters or {}).items()}
        for event in list(self._events):
            if event.name != name or not start <= event.block_number <= last:
                continue
            if any(_normalise(event.args.get(k)) != v for k, v in wanted.items()):
                continue
            yield event

    def transaction_sender(self, tx_hash: bytes) -> Address:
        found = self._senders.get(bytes(tx_hash))
        if found is None:
            raise ChainConfigError(f"no transaction {bytes(tx_hash).hex()} on this ledger")
        return found
