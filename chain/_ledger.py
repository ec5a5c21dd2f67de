"""Typed web3.py client of the ``ConsortiumLedger`` contract.

Every transaction is built here, signed locally by an ``eth_account`` LocalAccount (the same
code path on every backend) and awaited; a revert is decoded from its 4-byte selector into
the ``LedgerRevertError`` subclass named after the contract's custom error.

Threat model: the contract, not this client, enforces roles, deadlines, budgets and
signatures; the client only validates inputs early and decodes failures. Only digests and
fixed-point numbers are sent; no key material leaves the signing account.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, cast

from eth_abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from eth_tester.exceptions import TransactionFailed as _TesterTransactionFailed
from eth_utils import event_abi_to_log_topic, keccak, to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError, Web3RPCError
from web3.types import TxParams

from chain._build import load_artifact
from chain._eip712 import sign_commit as _sign_commit
from chain._eip712 import sign_publication as _sign_publication
from chain._errors import (
    REVERT_CLASSES,
    ChainConfigError,
    LedgerRevertError,
    NotSelected,
    TransactionFailedError,
)
from chain._merkle import LeafSet, MerkleFormatError
from chain._types import (
    COMMIT_MODES,
    Address,
    Commitment,
    CommitteeInfo,
    Digest,
    LedgerEvent,
    MerkleState,
    Reputation,
    Role,
    RoundInfo,
    RoundStatus,
    SignedCommit,
    SignedPublication,
    TxResult,
    as_digest,
    budget_to_fixed,
    epsilon_to_fixed,
)

CONTRACT_NAME = "ConsortiumLedger"
_REVERT_ERRORS = (ContractCustomError, ContractLogicError, Web3RPCError, _TesterTransactionFailed)
_TESTER_PREFIX = "execution reverted: "
PRIORITY_FEE_WEI = 10**9
GAS_MARGIN = 1.2
DEFAULT_CHALLENGE_WINDOW = 20
MAX_CHALLENGE_WINDOW = 2**16 - 1


class SupportsWeb3(Protocol):
    """Anything holding a connected ``Web3`` (every backend)."""

    @property
    def w3(self) -> Web3: ...


@dataclass(frozen=True)
class LedgerInfo:
    """Where the ledger lives (safe to write into results: no URL credentials, no keys)."""

    backend: str
    url: str | None
    chain_id: int
    address: Address


def _address(value: str, *, field: str = "address") -> Address:
    try:
        return Address(to_checksum_address(value))
    except (ValueError, TypeError) as exc:
        raise ChainConfigError(f"{field} must be a 20-byte hex address, got {value!r}") from exc


def _sort_addresses(addresses: Sequence[str]) -> list[Address]:
    return sorted((_address(a, field="clients") for a in addresses), key=lambda a: int(a, 16))


def list_hash(addresses: Sequence[str]) -> Digest:
    """keccak256 of the addresses, each left-padded to 32 bytes (abi.encodePacked(address[]))."""
    return Digest(keccak(b"".join(bytes.fromhex(a[2:]).rjust(32, b"\0") for a in addresses)))


def _error_table(abi: list[dict[str, Any]]) -> dict[bytes, tuple[str, list[str], list[str]]]:
    table = {}
    for entry in abi:
        if entry.get("type") != "error":
            continue
        types = [i["type"] for i in entry["inputs"]]
        names = [i["name"] for i in entry["inputs"]]
        selector = keccak(text=f"{entry['name']}({','.join(types)})")[:4]
        table[selector] = (entry["name"], types, names)
    return table


def _fee_fields(w3: Web3) -> dict[str, int]:
    base = int(w3.eth.get_block("latest").get("baseFeePerGas", 0) or 0)
    return {"maxFeePerGas": 2 * base + PRIORITY_FEE_WEI, "maxPriorityFeePerGas": PRIORITY_FEE_WEI}


def send_signed(w3: Web3, sender: LocalAccount, params: Mapping[str, Any]) -> Any:
    """Fill nonce/fees/chain id, sign ``params`` with ``sender`` and return the mined receipt."""
    tx = dict(params)
    tx.setdefault("chainId", w3.eth.chain_id)
    tx["nonce"] = w3.eth.get_transaction_count(sender.address, "pending")
    tx["from"] = sender.address
    tx.update(_fee_fields(w3))
    signed = sender.sign_transaction(tx)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    return w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120)


class Ledger:
    """Client of one deployed ``ConsortiumLedger``.

    Writes take the signing account as keyword ``sender`` and return a frozen ``TxResult``
    (hash, block, ``gas_used``). ``history`` keeps ``(round_id, TxResult)`` of every write.
    """

    def __init__(
        self, w3: Web3, address: str, *, backend: Any = None, start_block: int = 0
    ) -> None:
        art = load_artifact(CONTRACT_NAME)
        self.deploy_gas: int | None = None
        self.start_block = start_block
        self._w3 = w3
        self._backend = backend
        self._abi: list[dict[str, Any]] = art["abi"]
        self._errors = _error_table(self._abi)
        self.address: Address = _address(address)
        self.contract = w3.eth.contract(address=self.address, abi=self._abi)
        self._event_topics = {
            entry["name"]: bytes(event_abi_to_log_topic(entry))
            for entry in self._abi
            if entry.get("type") == "event"
        }
        self._logs: list[Any] = []
        self._scanned_to = start_block - 1
        self.chain_id: int = int(w3.eth.chain_id)
        self._clients_cache: dict[int, tuple[Address, ...]] = {}
        self._opening_cache: dict[int, tuple[Address, dict[str, Any]]] = {}
        self.history: list[tuple[int | None, TxResult]] = []

    def __repr__(self) -> str:
        return f"Ledger(address={self.address}, chain_id={self.chain_id})"

    # ------------------------------------------------------------------ construction
    @classmethod
    def deploy(cls, backend: SupportsWeb3, *, admin: LocalAccount, epsilon_budget: float) -> Ledger:
        """Deploy a new ledger whose admin is ``admin``; ``epsilon_budget`` per client."""
        w3 = backend.w3
        art = load_artifact(CONTRACT_NAME)
        factory = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        budget = budget_to_fixed(epsilon_budget)
        params = {"from": admin.address} | _fee_fields(w3)
        tx = factory.constructor(budget).build_transaction(cast(TxParams, params))
        receipt = send_signed(w3, admin, tx)
        if receipt["status"] != 1 or not receipt.get("contractAddress"):
            raise TransactionFailedError("ledger deployment failed")
        ledger = cls(
            w3, receipt["contractAddress"], backend=backend, start_block=int(receipt["blockNumber"])
        )
        ledger.deploy_gas = int(receipt["gasUsed"])
        return ledger

    @classmethod
    def attach(
        cls, backend_or_w3: SupportsWeb3 | Web3, address: str, *, start_block: int = 0
    ) -> Ledger:
        """Client of an existing ledger (checks code is deployed at ``address``).

        ``start_block`` (the deployment block, if known) is where event scans begin."""
        if isinstance(backend_or_w3, Web3):
            w3, backend = backend_or_w3, None
        else:
            w3, backend = backend_or_w3.w3, backend_or_w3
        if not w3.eth.get_code(_address(address)):
            raise ChainConfigError(f"no contract code at address {address}")
        if start_block < 0:
            raise ChainConfigError(f"start_block must be >= 0, got {start_block}")
        return cls(w3, address, backend=backend, start_block=start_block)

    @property
    def w3(self) -> Web3:
        """The connected Web3 instance."""
        return self._w3

    def info(self) -> LedgerInfo:
        """Backend name, redacted URL, chain id and address (for results.json)."""
        name = getattr(self._backend, "name", "web3")
        url = getattr(self._backend, "public_url", None)
        return LedgerInfo(backend=name, url=url, chain_id=self.chain_id, address=self.address)

    # ---------------------------------------------------------------- transactions
    def fund(self, addresses: Sequence[str], wei: int) -> None:
        """Fund ``addresses`` from the backend's faucet (new party accounts)."""
        fund = getattr(self._backend, "fund", None)
        if fund is None:
            raise ChainConfigError("this ledger's backend cannot fund accounts")
        fund(list(addresses), wei)

    def _decode_revert(self, data: Any) -> LedgerRevertError | None:
        if isinstance(data, dict):
            data = data.get("data")
        if isinstance(data, bytes):
            data = "0x" + data.hex()
        if not isinstance(data, str) or len(data) < 10:
            return None
        raw = bytes.fromhex(data[2:] if data.startswith("0x") else data)
        entry = self._errors.get(raw[:4])
        if entry is None:
            return None
        name, types, names = entry
        values = abi_decode(types, raw[4:])
        args = {
            n: (to_checksum_address(v) if t == "address" else v)
            for n, t, v in zip(names, types, values, strict=True)
        }
        return REVERT_CLASSES.get(name, LedgerRevertError)(name, args)

    def _raise_from(self, exc: Exception, function: str) -> NoReturn:
        data = getattr(exc, "data", None)
        if data is None and exc.args and isinstance(exc.args[0], str):
            message = exc.args[0]
            if message.startswith(_TESTER_PREFIX):  # web3's eth-tester provider: bytes repr
                try:
                    data = ast.literal_eval(message[len(_TESTER_PREFIX) :])
                except (ValueError, SyntaxError):
                    data = None
        decoded = self._decode_revert(data)
        if decoded is not None:
            raise decoded from None
        raise TransactionFailedError(f"{function} failed: {exc}") from exc

    def _transact(
        self, function: str, args: Sequence[Any], sender: LocalAccount, round_id: int | None
    ) -> TxResult:
        fn = self.contract.functions[function](*args)
        try:
            gas = fn.estimate_gas({"from": sender.address})
        except _REVERT_ERRORS as exc:
            self._raise_from(exc, function)
        params = {"from": sender.address, "gas": int(gas * GAS_MARGIN) + 10_000}
        tx = fn.build_transaction(cast(TxParams, params | _fee_fields(self._w3)))
        receipt = send_signed(self._w3, sender, tx)
        if receipt["status"] != 1:
            try:
                self._w3.eth.call(
                    {"from": sender.address, "to": self.address, "data": tx["data"]},
                    block_identifier=receipt["blockNumber"] - 1,
                )
            except _REVERT_ERRORS as exc:
                self._raise_from(exc, function)
            raise TransactionFailedError(f"{function} reverted (tx {receipt['transactionHash']})")
        result = TxResult(
            tx_hash=bytes(receipt["transactionHash"]),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            function=function,
        )
        self.history.append((round_id, result))
        return result

    def _call(self, function: str, *args: Any) -> Any:
        try:
            return self.contract.functions[function](*args).call()
        except _REVERT_ERRORS as exc:
            self._raise_from(exc, function)

    # -------------------------------------------------------------------- registry
    def set_roles(
        self, accounts: Sequence[str], roles: Role | int, *, sender: LocalAccount
    ) -> TxResult:
        """Set (replace) the role bits of ``accounts``; ``Role(0)`` revokes every role."""
        addrs = [_address(a, field="accounts") for a in accounts]
        if not addrs:
            raise ChainConfigError("accounts must not be empty")
        return self._transact("setRoles", [addrs, int(roles)], sender, None)

    def register(
        self, role: Role | int, addresses: str | Sequence[str], *, sender: LocalAccount
    ) -> TxResult:
        """Give ``role`` to one address or many in one transaction (admin only)."""
        addrs = [addresses] if isinstance(addresses, str) else list(addresses)
        return self.set_roles(addrs, role, sender=sender)

    def roles_of(self, address: str) -> Role:
        """Role bits of ``address``."""
        return Role(int(self._call("rolesOf", _address(address))))

    def set_epsilon_budget(self, epsilon_budget: float, *, sender: LocalAccount) -> TxResult:
        """Set the per-client cumulative epsilon budget (applies to rounds opened later)."""
        return self._transact("setEpsilonBudget", [budget_to_fixed(epsilon_budget)], sender, None)

    def epsilon_budget_fixed(self) -> int:
        """Current per-client budget in micro-epsilon."""
        return int(self._call("epsilonBudget"))

    @property
    def admin(self) -> Address:
        """The admin account."""
        return Address(self._call("admin"))

    # ---------------------------------------------------------------------- rounds
    def block_number(self) -> int:
        """Current block number (deadlines are block numbers, inclusive)."""
        return int(self._w3.eth.block_number)

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
        """Open ``round_id`` for ``clients``: commits until block ``deadline``, reveals until
        block ``reveal_deadline`` (both inclusive; default: as many blocks after the commit
        deadline as the commit phase has from now).

        The clients are stored in ascending address order; that order defines the indices
        used by batched commits. ``commit_mode`` (``direct`` or ``batched``; default from
        ``batched``) selects the commit path of the whole round. Merkle rounds open with
        their root: :meth:`open_merkle_round`.
        """
        _check_round(round_id)
        mode = commit_mode or ("batched" if batched else "direct")
        if mode == "merkle":
            raise ChainConfigError(
                "a merkle round opens with the root of its signed leaves: use open_merkle_round"
            )
        if mode not in COMMIT_MODES:
            raise ChainConfigError(f"commit_mode must be one of {COMMIT_MODES}, got {mode!r}")
        digest, ordered, reveal_deadline = self._opening_args(
            config_digest, clients, deadline, reveal_deadline
        )
        args = [round_id, digest, ordered, deadline, reveal_deadline, mode == "batched"]
        result = self._transact("openRound", args, sender, round_id)
        self._clients_cache[round_id] = tuple(ordered)
        return result

    def _opening_args(
        self,
        config_digest: bytes,
        clients: Sequence[str],
        deadline: int,
        reveal_deadline: int | None,
    ) -> tuple[Digest, list[Address], int]:
        """A direct or batched opening's checked arguments: the config digest, the clients
        in ascending order (non-empty) and the reveal deadline (default: as many blocks
        after the commit deadline as the commit phase has from now)."""
        digest = as_digest(config_digest, field="config_digest")
        ordered = _sort_addresses(clients)
        if not ordered:
            raise ChainConfigError("clients must not be empty")
        if deadline < 0:
            raise ChainConfigError(f"deadline must be a block number >= 0, got {deadline}")
        if reveal_deadline is None:
            reveal_deadline = deadline + max(1, deadline - self.block_number())
        return digest, ordered, reveal_deadline

    def open_merkle_round(
        self,
        leaf_set: LeafSet,
        *,
        config_digest: bytes,
        leaves_digest: bytes,
        reveal_deadline: int,
        challenge_window: int = DEFAULT_CHALLENGE_WINDOW,
        sender: LocalAccount,
    ) -> TxResult:
        """Aggregator: open merkle round ``leaf_set.round_id`` over ``leaf_set.clients`` (in
        ascending order) with the root of the signed leaves it accepted, their count and
        the store digest of the leaf set, in one transaction (the commit phase is closed at
        once: the clients signed before, for this round and manifest). Reveals until block
        ``reveal_deadline``; challenges from now until ``reveal_deadline +
        challenge_window``. The round snapshots the epsilon budget in force, which must
        be the one read here (the leaves were checked against it)."""
        round_id = leaf_set.round_id
        _check_round(round_id)
        if not 1 <= challenge_window <= MAX_CHALLENGE_WINDOW:
            raise ChainConfigError(
                f"challenge_window must be in [1, {MAX_CHALLENGE_WINDOW}] blocks, "
                f"got {challenge_window}"
            )
        clients = tuple(_address(c) for c in leaf_set.clients)
        if not clients or list(clients) != _sort_addresses(clients):
            raise MerkleFormatError("a leaf set's clients must be non-empty and ascending")
        if leaf_set.chain_id != self.chain_id or leaf_set.contract.lower() != self.address.lower():
            raise MerkleFormatError(f"leaf set is not for this ledger ({self.address})")
        args = [
            round_id,
            as_digest(config_digest, field="config_digest"),
            list(clients),
            reveal_deadline,
            challenge_window,
            self.epsilon_budget_fixed(),
            leaf_set.tree().root,
            leaf_set.leaf_count,
            as_digest(leaves_digest, field="leaves_digest"),
        ]
        result = self._transact("openRoundWithRoot", args, sender, round_id)
        self._clients_cache[round_id] = clients
        return result

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
        """Commit by the selected client ``sender`` (epsilon rounded up), binding the
        manifest digest it saw. Direct rounds: ``commit``; batched rounds: ``commitOwn``
        (the fallback when the aggregator's batch left the client out)."""
        _check_round(round_id)
        digests = [
            as_digest(manifest_digest, field="manifest_digest"),
            as_digest(blob_digest, field="blob_digest"),
            as_digest(event_digest, field="event_digest"),
            epsilon_to_fixed(epsilon),
        ]
        info = self.round_info(round_id)
        if info.merkle:
            raise ChainConfigError(
                f"round {round_id} is a merkle round: sign the leaf for the aggregator's root "
                "(a client it leaves out proves the omission with challenge_omission)"
            )
        if info.batched:
            clients = list(self.selected_clients(round_id))
            return self._transact("commitOwn", [round_id, clients, *digests], sender, round_id)
        return self._transact("commit", [round_id, *digests], sender, round_id)

    def reveal(self, round_id: int, *, sender: LocalAccount) -> TxResult:
        """The committed client ``sender`` records its reveal (reveal phase only). Direct
        rounds: ``reveal``; batched rounds: ``revealOwn`` (its fallback)."""
        _check_round(round_id)
        info = self.round_info(round_id)
        if info.merkle:
            raise ChainConfigError(f"round {round_id} is a merkle round: reveals are off chain")
        if info.batched:
            clients = list(self.selected_clients(round_id))
            return self._transact("revealOwn", [round_id, clients], sender, round_id)
        return self._transact("reveal", [round_id], sender, round_id)

    def advance_past(self, block: int) -> int:
        """Mine empty blocks until the chain is past ``block`` (a deadline); returns the
        number mined. Needs a backend that can mine (in-process EVM, anvil)."""
        missing = block + 1 - self.block_number()
        if missing <= 0:
            return 0
        mine = getattr(self._backend, "mine", None)
        if mine is None:
            raise ChainConfigError("this ledger's backend cannot mine blocks; wait instead")
        mine(missing)
        return missing

    def sign_commit(
        self,
        account: LocalAccount,
        *,
        round_id: int,
        manifest_digest: bytes,
        blob_digest: bytes,
        event_digest: bytes,
        epsilon: float,
    ) -> SignedCommit:
        """EIP-712 signature of a commitment, bound to this chain, contract, round and the
        manifest digest the client saw."""
        return _sign_commit(
            account,
            chain_id=self.chain_id,
            verifying_contract=self.address,
            round_id=round_id,
            manifest_digest=manifest_digest,
            blob_digest=blob_digest,
            event_digest=event_digest,
            epsilon=epsilon,
        )

    def commit_batch(
        self, round_id: int, commits: Sequence[SignedCommit], *, sender: LocalAccount
    ) -> TxResult:
        """Submit many clients' signed commitments in one transaction (aggregator only)."""
        _check_round(round_id)
        if not commits:
            raise ChainConfigError("commits must not be empty")
        clients = self.selected_clients(round_id)
        index = {c: i for i, c in enumerate(clients)}
        rows = []
        for c in commits:
            client = _address(c.client)
            if client not in index:
                raise NotSelected("NotSelected", {"round": round_id, "client": client})
            if c.round_id != round_id:
                raise ChainConfigError(f"a commit signed for round {c.round_id}, not {round_id}")
            meta = index[client] | (c.epsilon_fixed << 16) | (c.v << 80)
            rows.append((c.blob_digest, c.event_digest, c.r, c.s, meta))
        return self._transact("commitBatch", [round_id, list(clients), rows], sender, round_id)

    def publish_aggregate(
        self,
        round_id: int,
        *,
        aggregate_digest: bytes,
        participants: Sequence[str],
        sender: LocalAccount,
    ) -> TxResult:
        """Publish the aggregate's digest and its participants (each committed, and in direct
        rounds revealed). Only after the commit phase; before the reveal deadline only with
        every committed client."""
        _check_round(round_id)
        args = [
            round_id,
            as_digest(aggregate_digest, field="aggregate_digest"),
            list(self.selected_clients(round_id)),
            _sort_addresses(participants),
        ]
        return self._transact("publishAggregate", args, sender, round_id)

    def reserve_release(self, round_id: int, *, sender: LocalAccount) -> TxResult:
        """Key holder reserves the round's one release, before it decrypts."""
        _check_round(round_id)
        return self._transact("reserveRelease", [round_id], sender, round_id)

    def attest_reveal(
        self, round_id: int, *, reveal_digest: bytes, sender: LocalAccount
    ) -> TxResult:
        """Key holder attests the digest of what it revealed (after ``reserve_release``)."""
        _check_round(round_id)
        digest = as_digest(reveal_digest, field="reveal_digest")
        return self._transact("attestReveal", [round_id, digest], sender, round_id)

    def attest_refusal(self, round_id: int, *, reason_code: int, sender: LocalAccount) -> TxResult:
        """Key holder attests it refused the round's release, with a reason code > 0."""
        _check_round(round_id)
        if not 0 < reason_code < 2**32:
            raise ChainConfigError(f"reason_code must be in [1, 2**32), got {reason_code}")
        return self._transact("attestRefusal", [round_id, reason_code], sender, round_id)

    # ---------------------------------------------------------- decryption committee
    def setup_committee(
        self, members: Sequence[str], *, threshold: int, sender: LocalAccount
    ) -> TxResult:
        """Admin: set up the decryption committee once (member i is ``members[i-1]``, each
        holding ``Role.COMMITTEE``); the contract fixes the CRP seed from the chain."""
        addrs = [_address(a, field="members") for a in members]
        if not 0 < threshold <= len(addrs):
            raise ChainConfigError(f"threshold must be in [1, {len(addrs)}], got {threshold}")
        return self._transact("setupCommittee", [addrs, threshold], sender, None)

    def commit_key_share(self, share_digest: bytes, *, sender: LocalAccount) -> TxResult:
        """A committee member commits its public key share's digest (once)."""
        digest = as_digest(share_digest, field="share_digest")
        return self._transact("commitKeyShare", [digest], sender, None)

    def attest_partial(
        self, round_id: int, *, partial_digest: bytes, sender: LocalAccount
    ) -> TxResult:
        """A committee member attests its partial decryption's digest (once per round,
        while the round's release is reserved)."""
        _check_round(round_id)
        digest = as_digest(partial_digest, field="partial_digest")
        return self._transact("attestPartial", [round_id, digest], sender, round_id)

    def committee(self) -> CommitteeInfo | None:
        """The decryption committee on chain, or ``None`` when none is set up."""
        events = list(self.events("CommitteeSetUp"))
        if not events:
            return None
        args = events[0].args
        members = tuple(_address(a) for a in args["members"])
        digests = {}
        for index, member in enumerate(members, start=1):
            _, digest = self._call("committeeMember", member)
            if bytes(digest) != bytes(32):
                digests[index] = Digest(bytes(digest))
        return CommitteeInfo(
            seed=Digest(bytes(args["seed"])),
            members=members,
            threshold=int(args["threshold"]),
            share_digests=digests,
        )

    def partial_attestations(self, round_id: int) -> dict[int, Digest]:
        """Member index -> attested partial digest, for ``round_id`` (from events)."""
        _check_round(round_id)
        return {
            int(e.args["index"]): Digest(bytes(e.args["partialDigest"]))
            for e in self.events("PartialAttested", argument_filters={"round": round_id})
        }

    def finalize(self, round_id: int, *, sender: LocalAccount) -> TxResult:
        """Finalize after ``publish_aggregate`` (and the key holder's attested release or
        refusal, where one exists): reputation +1 for each client that committed and
        revealed, -1 for every other selected client. Merkle rounds: ``settle_reputation``
        (only after the challenge window)."""
        _check_round(round_id)
        if self.round_info(round_id).merkle:
            return self.settle_reputation(round_id, sender=sender)
        clients = list(self.selected_clients(round_id))
        return self._transact("finalize", [round_id, clients], sender, round_id)

    def flag(
        self, client: str, round_id: int, reason_code: int, *, sender: LocalAccount
    ) -> TxResult:
        """An auditor flags ``client`` in ``round_id`` (negative reputation event)."""
        _check_round(round_id)
        if not 0 <= reason_code < 2**32:
            raise ChainConfigError(f"reason_code must be in [0, 2**32), got {reason_code}")
        return self._transact("flag", [_address(client), round_id, reason_code], sender, round_id)

    # --------------------------------------------------------------------- readers
    def selected_clients(self, round_id: int) -> tuple[Address, ...]:
        """The round's selected clients in on-chain (ascending) order, from RoundOpened."""
        cached = self._clients_cache.get(round_id)
        if cached is not None:
            return cached
        events = list(self.events("RoundOpened", argument_filters={"round": round_id}))
        if not events:
            raise _wrong_round(round_id)
        listed = events[0].args["clients"]
        if not listed and COMMIT_MODES[int(events[0].args["mode"])] == "merkle":
            # merkle rounds log no clients: they are in the opening call's calldata
            listed = self._opening(round_id)[1]["clients"]
        clients = tuple(_address(a) for a in listed)
        self._clients_cache[round_id] = clients
        return clients

    def _opening(self, round_id: int) -> tuple[Address, dict[str, Any]]:
        """A merkle round's opening transaction: its sender (the aggregator) and decoded
        arguments (clients, challenge window: the round logs neither)."""
        cached = self._opening_cache.get(round_id)
        if cached is not None:
            return cached
        opened = next(iter(self.events("RoundOpened", argument_filters={"round": round_id})), None)
        if opened is None:
            raise _wrong_round(round_id)
        tx = self._w3.eth.get_transaction(HexBytes(opened.tx_hash))
        _, call_args = self.contract.decode_function_input(tx["input"])
        found = (_address(tx["from"]), dict(call_args))
        self._opening_cache[round_id] = found
        return found

    def round_info(self, round_id: int) -> RoundInfo:
        """The round's state and its opening/aggregate events."""
        deadline, reveal_deadline, budget, _n, commits, reveals, status, mode = self._call(
            "roundHeader", round_id
        )
        if status == RoundStatus.NONE:
            raise _wrong_round(round_id)
        if COMMIT_MODES[mode] == "merkle":  # the header word holds a hash: use the events
            return self._merkle_round_info(round_id, status)
        batched = COMMIT_MODES[mode] == "batched"
        cfg, clients_hash, acc, agg, parts_hash, reveal, committed, missed, refusal = self._call(
            "roundDigests", round_id
        )
        participants = None
        if status >= RoundStatus.AGGREGATED:
            ev = list(self.events("AggregatePublished", argument_filters={"round": round_id}))
            participants = tuple(_address(a) for a in ev[0].args["participants"])
        aggregated = status >= RoundStatus.AGGREGATED
        return RoundInfo(
            round_id=round_id,
            status=RoundStatus(status),
            batched=bool(batched),
            config_digest=Digest(bytes(cfg)),
            clients=self.selected_clients(round_id),
            clients_hash=Digest(bytes(clients_hash)),
            deadline=int(deadline),
            reveal_deadline=int(reveal_deadline),
            commits=int(commits),
            reveals=int(reveals),
            epsilon_budget_fixed=int(budget),
            accumulator=Digest(bytes(acc)) if batched else None,
            aggregate_digest=Digest(bytes(agg)) if aggregated else None,
            participants=participants,
            participants_hash=Digest(bytes(parts_hash)) if aggregated else None,
            reveal_digest=Digest(bytes(reveal)) if any(reveal) else None,
            committed=int(committed),
            missed=int(missed),
            refusal_code=int(refusal),
            mode=COMMIT_MODES[mode],
        )

    def _merkle_round_info(self, round_id: int, status: int) -> RoundInfo:
        """A merkle round's info: its state lives in events and the opening calldata (the
        contract keeps a hash); the commit phase closed at the opening."""
        refusal = 0
        if status == RoundStatus.REFUSED:  # merkle rounds keep the code in the event only
            found = self.events("ReleaseRefused", argument_filters={"round": round_id})
            refused = next(iter(found))
            refusal = int(refused.args["reasonCode"])
        opened = next(iter(self.events("RoundOpened", argument_filters={"round": round_id})))
        reveal_deadline = int(opened.args["revealDeadline"])
        window = int(self._opening(round_id)[1]["challengeWindow"])
        root_ev = next(iter(self.events("RootPosted", argument_filters={"round": round_id})), None)
        published = next(
            iter(self.events("MerklePublished", argument_filters={"round": round_id})), None
        )
        reveal_ev = next(
            iter(self.events("RevealAttested", argument_filters={"round": round_id})), None
        )
        finalized = next(
            iter(self.events("RoundFinalized", argument_filters={"round": round_id})), None
        )
        clients = self.selected_clients(round_id)
        participants = None
        participants_hash = None
        aggregate = None
        if published is not None:
            words = [int(w) for w in published.args["participantWords"]]
            participants = tuple(
                c for i, c in enumerate(clients) if (words[i // 256] >> (i % 256)) & 1
            )
            participants_hash = Digest(keccak(b"".join(w.to_bytes(32, "big") for w in words)))
            aggregate = Digest(bytes(published.args["aggregateDigest"]))
        return RoundInfo(
            round_id=round_id,
            status=RoundStatus(status),
            batched=False,
            config_digest=Digest(bytes(opened.args["configDigest"])),
            clients=clients,
            clients_hash=list_hash(clients),
            deadline=int(opened.args["deadline"]),
            reveal_deadline=reveal_deadline,
            commits=0 if root_ev is None else int(root_ev.args["leafCount"]),
            reveals=0,
            epsilon_budget_fixed=int(opened.args["epsilonBudget"]),
            accumulator=None,
            aggregate_digest=aggregate,
            participants=participants,
            participants_hash=participants_hash,
            reveal_digest=None
            if reveal_ev is None
            else Digest(bytes(reveal_ev.args["revealDigest"])),
            committed=0 if finalized is None else int(finalized.args["committed"]),
            missed=0 if finalized is None else int(finalized.args["missed"]),
            refusal_code=int(refusal),
            mode="merkle",
            merkle_root=None if root_ev is None else Digest(bytes(root_ev.args["root"])),
            leaves_digest=None if root_ev is None else Digest(bytes(root_ev.args["leavesDigest"])),
            challenge_deadline=reveal_deadline + window,
        )

    def commitment_hash(self, round_id: int, client: str) -> Digest:
        """Direct rounds: the commitment word stored for ``client`` (0/1 if none):
        keccak256(blob, event, epsilon) with bit 1 set (committed) and bit 0 = revealed."""
        return Digest(bytes(self._call("commitment", round_id, _address(client))))

    def revealed(self, round_id: int) -> frozenset[Address]:
        """Clients that revealed in ``round_id``: their own ``Revealed`` events, and in
        batched rounds the published participants (publication marks them revealed)."""
        found = {
            _address(ev.args["client"])
            for ev in self.events("Revealed", argument_filters={"round": round_id})
        }
        info = self.round_info(round_id)
        if info.mode != "direct" and info.participants is not None:
            found.update(info.participants)
        return frozenset(found)

    def commitments(self, round_id: int, *, page_size: int = 1000) -> list[Commitment]:
        """Every commitment of ``round_id`` (``Committed`` and ``BatchCommitted`` events),
        in chain order."""
        found: list[tuple[int, int, int, Commitment]] = []
        filters = {"round": round_id}
        for ev in self.events("Committed", argument_filters=filters, page_size=page_size):
            a: dict[str, Any] = ev.args
            found.append(
                (
                    ev.block_number,
                    ev.log_index,
                    0,
                    self._commitment(
                        round_id, ev, a["client"], a["blobDigest"], a["eventDigest"], a["epsilon"]
                    ),
                )
            )
        for ev in self.events("BatchCommitted", argument_filters=filters, page_size=page_size):
            a = ev.args
            rows = zip(
                a["clients"], a["blobDigests"], a["eventDigests"], a["epsilons"], strict=True
            )
            for k, (client, blob, event, eps) in enumerate(rows):
                found.append(
                    (
                        ev.block_number,
                        ev.log_index,
                        k,
                        self._commitment(round_id, ev, client, blob, event, eps),
                    )
                )
        found.sort(key=lambda row: row[:3])
        return [row[3] for row in found]

    @staticmethod
    def _commitment(
        round_id: int, ev: LedgerEvent, client: str, blob: bytes, event: bytes, eps: int
    ) -> Commitment:
        return Commitment(
            round_id=round_id,
            client=_address(client),
            blob_digest=Digest(bytes(blob)),
            event_digest=Digest(bytes(event)),
            epsilon_fixed=int(eps),
            block_number=ev.block_number,
            tx_hash=ev.tx_hash,
        )

    def expected_accumulator(self, round_id: int) -> Digest:
        """Recompute a batched round's accumulator from its config digest and events
        (what an auditor compares with ``round_info(round_id).accumulator``)."""
        info = self.round_info(round_id)
        domain = bytes(self._call("domainSeparator"))
        acc = keccak(domain + round_id.to_bytes(32, "big") + info.config_digest)
        for c in self.commitments(round_id):
            acc = keccak(
                acc
                + bytes.fromhex(c.client[2:]).rjust(32, b"\0")
                + c.blob_digest
                + c.event_digest
                + c.epsilon_fixed.to_bytes(32, "big")
            )
        return Digest(acc)

    # --------------------------------------------------------- merkle (optimistic) rounds
    def merkle_state(self, round_id: int) -> MerkleState:
        """What the round committed, rebuilt from its events and checked against the hash
        chain the contract stores (challenges and the settlement pass it back)."""
        info = self.round_info(round_id)
        if not info.merkle:
            raise ChainConfigError(f"round {round_id} is not a merkle round")
        aggregator, opening = self._opening(round_id)
        zero = Digest(bytes(32))
        state = MerkleState(
            config_digest=info.config_digest,
            clients_hash=info.clients_hash,
            reveal_deadline=info.reveal_deadline,
            epsilon_budget_fixed=info.epsilon_budget_fixed,
            num_clients=len(info.clients),
            challenge_window=int(opening["challengeWindow"]),
            root=info.merkle_root or zero,
            leaf_count=info.commits,
            aggregator=aggregator,
            aggregate_digest=info.aggregate_digest or zero,
            participants_hash=info.participants_hash or zero,
        )
        if state.key() != bytes(self._call("roundMerkleKey", round_id)):
            raise ChainConfigError(f"round {round_id}: events do not match the merkle key")
        return state

    def _participant_words(self, round_id: int, participants: Sequence[str]) -> list[int]:
        clients = self.selected_clients(round_id)
        index = {c.lower(): i for i, c in enumerate(clients)}
        words = [0] * ((len(clients) + 255) // 256)
        for p in participants:
            i = index.get(p.lower())
            if i is None:
                raise NotSelected("NotSelected", {"round": round_id, "client": _address(p)})
            words[i // 256] |= 1 << (i % 256)
        return words

    def publish_merkle(
        self,
        round_id: int,
        *,
        aggregate_digest: bytes,
        participants: Sequence[str],
        sender: LocalAccount,
    ) -> TxResult:
        """Merkle rounds: publish the aggregate's digest and its participants (a bitmap over
        the selected list) in one transaction."""
        _check_round(round_id)
        words = self._participant_words(round_id, participants)
        state = self.merkle_state(round_id)
        digest = as_digest(aggregate_digest, field="aggregate_digest")
        args = [round_id, state.as_tuple(), digest, words]
        return self._transact("publishMerkleRound", args, sender, round_id)

    def sign_publication(
        self,
        round_id: int,
        *,
        aggregate_digest: bytes,
        participants: Sequence[str],
        account: LocalAccount,
    ) -> SignedPublication:
        """Aggregator of a merkle round with a key holder: sign the publication (aggregate
        digest, participants) for the key holder to send with its reservation."""
        _check_round(round_id)
        return _sign_publication(
            account,
            chain_id=self.chain_id,
            verifying_contract=self.address,
            round_id=round_id,
            aggregate_digest=aggregate_digest,
            participant_words=tuple(self._participant_words(round_id, participants)),
        )

    def publish_and_reserve(
        self, publication: SignedPublication, *, sender: LocalAccount
    ) -> TxResult:
        """Key holder of a merkle round: send the aggregator's signed ``publication`` and
        reserve the round's one release in the same transaction, before decrypting (a
        second reservation reverts)."""
        round_id = publication.round_id
        _check_round(round_id)
        state = self.merkle_state(round_id)
        args = [
            round_id,
            state.as_tuple(),
            publication.aggregate_digest,
            list(publication.participant_words),
            publication.v,
            publication.r,
            publication.s,
        ]
        return self._transact("reserveAndPublish", args, sender, round_id)

    @staticmethod
    def _leaf_tuple(signed: SignedCommit) -> tuple[Any, ...]:
        return (
            signed.manifest_digest,
            signed.blob_digest,
            signed.event_digest,
            signed.epsilon_fixed,
            signed.v,
            signed.r,
            signed.s,
        )

    def _challenge_args(self, round_id: int, client: str) -> tuple[MerkleState, list[Address], int]:
        clients = list(self.selected_clients(round_id))
        lowered = [c.lower() for c in clients]
        if client.lower() not in lowered:
            raise NotSelected("NotSelected", {"round": round_id, "client": _address(client)})
        return self.merkle_state(round_id), clients, lowered.index(client.lower())

    def challenge_omission(
        self,
        round_id: int,
        *,
        leaf: SignedCommit,
        at_index: bytes,
        proof: Sequence[bytes],
        sender: LocalAccount,
    ) -> TxResult:
        """Prove that the root holds ``at_index`` (with ``proof``), not the validly signed
        ``leaf``, at its client's index: the aggregator is flagged, the client counts."""
        _check_round(round_id)
        state, clients, index = self._challenge_args(round_id, leaf.client)
        args = [
            round_id,
            state.as_tuple(),
            clients,
            index,
            self._leaf_tuple(leaf),
            as_digest(at_index, field="at_index"),
            [as_digest(p, field="proof") for p in proof],
        ]
        return self._transact("proveLeafMissing", args, sender, round_id)

    def challenge_over_budget(
        self, round_id: int, *, leaf: SignedCommit, proof: Sequence[bytes], sender: LocalAccount
    ) -> TxResult:
        """Prove a signed leaf in the root claims more epsilon than the round's budget."""
        _check_round(round_id)
        state, clients, index = self._challenge_args(round_id, leaf.client)
        args = [
            round_id,
            state.as_tuple(),
            clients,
            index,
            self._leaf_tuple(leaf),
            [as_digest(p, field="proof") for p in proof],
        ]
        return self._transact("proveBudgetOverrun", args, sender, round_id)

    def challenge_equivocation(
        self, round_id: int, *, first: SignedCommit, second: SignedCommit, sender: LocalAccount
    ) -> TxResult:
        """Prove a client signed two different leaves for the round."""
        _check_round(round_id)
        if first.client.lower() != second.client.lower():
            raise ChainConfigError("equivocation needs two leaves of the same client")
        state, clients, index = self._challenge_args(round_id, first.client)
        args = [
            round_id,
            state.as_tuple(),
            clients,
            index,
            self._leaf_tuple(first),
            self._leaf_tuple(second),
        ]
        return self._transact("proveConflictingLeaf", args, sender, round_id)

    def settle_reputation(self, round_id: int, *, sender: LocalAccount) -> TxResult:
        """Merkle rounds, after the challenge window: +1 per participant or proven
        omission, -1 per other selected client; finalizes the round (anyone may send).
        The one-round case of :meth:`settle_reputations`."""
        return self.settle_reputations([round_id], sender=sender)[0]

    def settle_reputations(
        self, round_ids: Sequence[int], *, sender: LocalAccount
    ) -> list[TxResult]:
        """Settle several merkle rounds after their challenge windows: one transaction per
        distinct selected list (rounds with the same list share it, in first-seen order),
        so each client's reputation is written once for all of that list's rounds. Each
        round counts as in :meth:`settle_reputation`; a failing check in any round of a
        transaction reverts that transaction (transactions already sent stay). A
        transaction's gas is recorded under its first round."""
        if not round_ids:
            raise ChainConfigError("round_ids must name at least one round")
        groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        firsts: dict[tuple[str, ...], int] = {}
        for round_id in round_ids:
            _check_round(round_id)
            info = self.round_info(round_id)
            words = self._participant_words(round_id, info.participants or ())
            state = self.merkle_state(round_id)
            clients = tuple(info.clients)
            groups.setdefault(clients, []).append((round_id, state.as_tuple(), words))
            firsts.setdefault(clients, round_id)
        return [
            self._transact(
                "finalizeOptimisticRoundBatch", [batch, list(clients)], sender, firsts[clients]
            )
            for clients, batch in groups.items()
        ]

    def merkle_challenges(self, round_id: int, client: str) -> int:
        """What challenges proved for ``client`` in ``round_id`` (bits: 1 omission, 2 over
        budget, 4 equivocation)."""
        return int(self._call("provenChallenges", round_id, _address(client)))

    def reputation(self, address: str) -> Reputation:
        """Positive/negative counts and score (fixed point, REPUTATION_SCALE)."""
        p, n, score = self._call("reputation", _address(address))
        return Reputation(positive=int(p), negative=int(n), score_fixed=int(score))

    def filter_by_reputation(self, clients: Sequence[str], *, threshold: float) -> list[Address]:
        """Clients whose reputation score is >= ``threshold`` (in [0, 1]), input order kept."""
        if not 0.0 <= threshold <= 1.0:
            raise ChainConfigError(f"threshold must be in [0, 1], got {threshold}")
        return [_address(c) for c in clients if self.reputation(c).score >= threshold]

    def events(
        self,
        name: str,
        *,
        from_block: int | None = None,
        to_block: int | None = None,
        page_size: int = 1000,
        argument_filters: dict[str, Any] | None = None,
    ) -> Iterator[LedgerEvent]:
        """Decoded ``name`` events from ``from_block`` (default: the ledger's
        ``start_block``) to ``to_block`` (latest), read from full-node logs.

        The contract's logs are fetched once, in ranges of ``page_size`` blocks, and kept:
        later calls fetch only blocks not seen yet (an auditor reads every round's events
        many times; re-reading the whole chain each time made audits quadratic). This
        assumes mined blocks are final, as they are on the in-process EVM and anvil; on a
        chain with reorganisations attach a fresh ``Ledger`` after one.
        """
        if page_size < 1:
            raise ChainConfigError(f"page_size must be >= 1, got {page_size}")
        try:
            event = self.contract.events[name]()
        except Exception as exc:
            raise ChainConfigError(f"unknown event {name!r}") from exc
        last = self.block_number() if to_block is None else to_block
        start = self.start_block if from_block is None else from_block
        self._refresh_logs(last, page_size)
        topic = self._event_topics[name]
        wanted = {key: _normalise(value) for key, value in (argument_filters or {}).items()}
        for log in self._logs:
            block = int(log["blockNumber"])
            if block < start or block > last or not log["topics"] or log["topics"][0] != topic:
                continue
            decoded = event.process_log(log)
            args = dict(decoded["args"])
            if any(_normalise(args.get(key)) != value for key, value in wanted.items()):
                continue
            yield LedgerEvent(
                name=name,
                args=args,
                block_number=block,
                tx_hash=bytes(log["transactionHash"]),
                log_index=int(log["logIndex"]),
            )

    def _refresh_logs(self, to_block: int, page_size: int) -> None:
        """Fetch the contract's logs of blocks not fetched yet, up to ``to_block``."""
        start = max(self._scanned_to + 1, self.start_block)
        to_block = min(to_block, self.block_number())  # never mark unmined blocks as read
        while start <= to_block:
            end = min(start + page_size - 1, to_block)
            self._logs.extend(
                self._w3.eth.get_logs({"address": self.address, "fromBlock": start, "toBlock": end})
            )
            self._scanned_to = end
            start = end + 1

    def transaction_sender(self, tx_hash: bytes) -> Address:
        """The account that sent the transaction ``tx_hash`` (who emitted an event)."""
        return _address(str(self._w3.eth.get_transaction(HexBytes(tx_hash))["from"]))

    def gas_by_round(self, round_id: int) -> dict[str, int]:
        """Gas used per contract function by this client's writes for ``round_id``."""
        totals: dict[str, int] = {}
        for rid, res in self.history:
            if rid == round_id:
                totals[res.function] = totals.get(res.function, 0) + res.gas_used
        return totals


def _normalise(value: Any) -> Any:
    """Compare event arguments case-insensitively for addresses and by value for bytes."""
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return value


def _check_round(round_id: int) -> None:
    if not isinstance(round_id, int) or round_id < 0 or round_id >= 2**256:
        raise ChainConfigError(f"round_id must be an integer in [0, 2**256), got {round_id!r}")


def _wrong_round(round_id: int) -> LedgerRevertError:
    return REVERT_CLASSES["WrongRound"]("WrongRound", {"round": round_id, "status": 0})
