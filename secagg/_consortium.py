"""A consortium: the ledger, the artifact store and every party's ledger account.

Accounts are fresh keys made with ``eth_account`` (never logged, never written to results).
Clients are ordered by address so that the simulation's client ids ascend with the
addresses the ledger stores (ascending): the order in which the aggregator combines blobs
is then the order of the participants on chain, which is what lets an auditor recombine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_account import Account
from eth_account.signers.local import LocalAccount

from chain import Ledger, Role
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


@dataclass
class Consortium:
    """Ledger + store + parties, with the policy knobs of the round protocol."""

    ledger: Ledger
    store: ArtifactStore
    parties: Parties
    deadline_blocks: int = 50
    batch_commits: bool = False
    reputation_threshold: float = 0.0

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
    ) -> Consortium:
        """Deploy a ledger on ``backend``, fund and register every party."""
        parties = Parties.create(n_clients)
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
        ledger.register(Role.CLIENT, [a.address for a in parties.clients], sender=parties.admin)
        ledger.register(Role.AGGREGATOR, parties.aggregator.address, sender=parties.admin)
        ledger.register(Role.KEY_HOLDER, parties.key_holder.address, sender=parties.admin)
        ledger.register(Role.AUDITOR, parties.auditor.address, sender=parties.admin)
        return cls(
            ledger=ledger,
            store=store,
            parties=parties,
            deadline_blocks=deadline_blocks,
            batch_commits=batch_commits,
            reputation_threshold=reputation_threshold,
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
