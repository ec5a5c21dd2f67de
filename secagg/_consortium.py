"""A consortium: the ledger, the artifact store and every party's ledger account.

Accounts are fresh keys made with ``eth_account`` (never logged, never written to results),
or keys derived from a seed supplied at run time (:mod:`secagg._party_keys`), so that
another process acts as the same parties.
Clients are ordered by address so that the simulation's client ids ascend with the
addresses the ledger stores (ascending): the order in which the aggregator combines blobs
is then the order of the participants on chain, which is what lets an auditor recombine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_account import Account
from eth_account.signers.local import LocalAccount

from chain import (
    COMMIT_MODES,
    DEFAULT_CHALLENGE_WINDOW,
    ChainConfigError,
    Ledger,
    MemoryLedger,
    Role,
    budget_to_fixed,
)
from chain._types import MAX_UINT64
from secagg._errors import PartyKeyError
from secagg._party_keys import derive_party_key
from secagg._store import ArtifactStore

DEFAULT_FUNDING_WEI = 10**21
#: Share of the faucet's balance handed out when funding everyone (the rest pays gas).
_FUNDED_SHARE = 0.9


@dataclass(frozen=True, repr=False)
class Parties:
    """The ledger accounts of every role (their keys stay in memory only)."""

    admin: LocalAccount
    aggregator: LocalAccount
    key_holder: LocalAccount
    auditor: LocalAccount
    clients: tuple[LocalAccount, ...]

    def __repr__(self) -> str:
        return f"Parties(clients={len(self.clients)}, aggregator={self.aggregator.address})"

    @classmethod
    def create(cls, n_clients: int) -> Parties:
        """Fresh accounts for every role; clients sorted by address."""
        clients = sorted(
            (Account.create() for _ in range(n_clients)), key=lambda a: a.address.lower()
        )
        return cls(
            admin=Account.create(),
            aggregator=Account.create(),
            key_holder=Account.create(),
            auditor=Account.create(),
            clients=tuple(clients),
        )

    @classmethod
    def derive(cls, n_clients: int, *, seed: bytes) -> Parties:
        """Every role's account derived from ``seed`` (:func:`derive_party_key`); the
        keys of client indices 0..N-1 are sorted by address, so client ids ascend with
        the addresses as in :meth:`create`."""
        clients = sorted(
            (
                Account.from_key(derive_party_key(seed, role="client", index=i))
                for i in range(n_clients)
            ),
            key=lambda a: a.address.lower(),
        )
        return cls(
            admin=Account.from_key(derive_party_key(seed, role="admin")),
            aggregator=Account.from_key(derive_party_key(seed, role="aggregator")),
            key_holder=Account.from_key(derive_party_key(seed, role="key_holder")),
            auditor=Account.from_key(derive_party_key(seed, role="auditor")),
            clients=tuple(clients),
        )

    @classmethod
    def for_clients(cls, n_clients: int, parties: Parties | None) -> Parties:
        """``parties`` (checked to hold ``n_clients`` clients), or fresh ones."""
        if parties is None:
            return cls.create(n_clients)
        if len(parties.clients) != n_clients:
            raise PartyKeyError(f"{len(parties.clients)} client accounts for {n_clients} clients")
        return parties

    def register_on(self, ledger: Ledger) -> None:
        """The admin gives every party its role on ``ledger`` (four transactions)."""
        ledger.register(Role.CLIENT, [a.address for a in self.clients], sender=self.admin)
        ledger.register(Role.AGGREGATOR, self.aggregator.address, sender=self.admin)
        ledger.register(Role.KEY_HOLDER, self.key_holder.address, sender=self.admin)
        ledger.register(Role.AUDITOR, self.auditor.address, sender=self.admin)

    def addresses(self) -> dict[str, str | list[str]]:
        """Every party's address by role (public; what a checkpoint may record)."""
        return {
            "admin": str(self.admin.address),
            "aggregator": str(self.aggregator.address),
            "key_holder": str(self.key_holder.address),
            "auditor": str(self.auditor.address),
            "clients": [str(a.address) for a in self.clients],
        }


@dataclass
class Consortium:
    """Ledger + store + parties, with the policy knobs of the round protocol.

    ``commit_mode`` is ``direct``, ``batched`` or ``merkle`` (empty: from the older
    ``batch_commits`` flag); ``challenge_window`` is the merkle rounds' window in blocks
    after the reveal deadline."""

    ledger: Ledger
    store: ArtifactStore
    parties: Parties
    deadline_blocks: int = 50
    batch_commits: bool = False
    reputation_threshold: float = 0.0
    commit_mode: str = ""
    challenge_window: int = DEFAULT_CHALLENGE_WINDOW

    def __post_init__(self) -> None:
        if not self.commit_mode:
            self.commit_mode = "batched" if self.batch_commits else "direct"
        if self.commit_mode not in COMMIT_MODES:
            raise ChainConfigError(
                f"commit_mode must be one of {COMMIT_MODES}, got {self.commit_mode!r}"
            )
        self.batch_commits = self.commit_mode == "batched"
        if not 1 <= self.challenge_window < 2**16:
            raise ChainConfigError(
                f"challenge_window must be in [1, 65535] blocks, got {self.challenge_window}"
            )

    @property
    def signs_commits(self) -> bool:
        """Whether clients sign their commitments for the aggregator (batched, merkle)."""
        return self.commit_mode != "direct"

    @classmethod
    def create(
        cls,
        backend: object,
        *,
        n_clients: int,
        store: ArtifactStore,
        epsilon_budget: float,
        deadline_blocks: int = 50,
        batch_commits: bool = False,
        reputation_threshold: float = 0.0,
        parties: Parties | None = None,
        commit_mode: str = "",
        challenge_window: int = DEFAULT_CHALLENGE_WINDOW,
    ) -> Consortium:
        """Deploy a ledger on ``backend``, fund and register every party (``parties``:
        derived accounts, :meth:`Parties.derive`; None: fresh ones)."""
        parties = Parties.for_clients(n_clients, parties)
        everyone = [
            parties.admin,
            parties.aggregator,
            parties.key_holder,
            parties.auditor,
            *parties.clients,
        ]
        # At most the faucet's balance split evenly (eth-tester's holds 10^24 wei: 1,000
        # clients at the default would exhaust it).
        faucet_wei = backend.w3.eth.get_balance(backend.faucet.address)  # type: ignore[attr-defined]
        funding = min(DEFAULT_FUNDING_WEI, int(faucet_wei * _FUNDED_SHARE) // len(everyone))
        backend.fund([a.address for a in everyone], funding)  # type: ignore[attr-defined]
        ledger = Ledger.deploy(backend, admin=parties.admin, epsilon_budget=epsilon_budget)  # type: ignore[arg-type]
        parties.register_on(ledger)
        return cls(
            ledger=ledger,
            store=store,
            parties=parties,
            deadline_blocks=deadline_blocks,
            batch_commits=batch_commits,
            reputation_threshold=reputation_threshold,
            commit_mode=commit_mode,
            challenge_window=challenge_window,
        )

    @classmethod
    def in_memory(
        cls,
        *,
        n_clients: int,
        store: ArtifactStore,
        epsilon_budget: float | None = None,
        deadline_blocks: int = 50,
        reputation_threshold: float = 0.0,
        parties: Parties | None = None,
    ) -> Consortium:
        """The consortium of a ``chain=none`` run: the same parties and rules on a
        :class:`chain.MemoryLedger` (direct rounds; ``epsilon_budget`` None: no budget on
        the ledger beyond what each client's own DP enforces)."""
        parties = Parties.for_clients(n_clients, parties)
        ledger = MemoryLedger(
            admin=parties.admin.address,
            epsilon_budget_fixed=MAX_UINT64
            if epsilon_budget is None
            else budget_to_fixed(epsilon_budget),
        )
        parties.register_on(ledger)
        return cls(
            ledger=ledger,
            store=store,
            parties=parties,
            deadline_blocks=deadline_blocks,
            reputation_threshold=reputation_threshold,
            commit_mode="direct",
        )

    def address_of(self, client_id: int) -> str:
        return str(self.parties.clients[client_id].address)

    def account_of(self, client_id: int) -> LocalAccount:
        return self.parties.clients[client_id]

    def client_id_of(self, address: str) -> int:
        wanted = address.lower()
        for client_id, account in enumerate(self.parties.clients):
            if account.address.lower() == wanted:
                return client_id
        raise KeyError(address)

    def addresses_of(self, client_ids: Sequence[int]) -> list[str]:
        return [self.address_of(c) for c in client_ids]
