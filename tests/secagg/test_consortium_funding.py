"""Funding a consortium: when the faucet cannot pay everyone the default, it is split evenly.

At 1,000 clients the default share (1,000 ether each) is more than eth-tester's faucet
holds (10^6 ether); the consortium must still be created, every party funded alike.
"""

from __future__ import annotations

from pathlib import Path

from eth_account import Account

from chain import InProcessBackend
from secagg._consortium import DEFAULT_FUNDING_WEI, Consortium
from secagg._store import LocalDirectoryStore


def test_a_faucet_short_of_the_default_is_split_evenly(tmp_path: Path) -> None:
    backend = InProcessBackend()
    w3, faucet = backend.w3, backend.faucet
    parties = 3 + 4  # clients, then admin, aggregator, key holder, auditor
    # Leave the faucet enough for 5 default shares: too little for 7 parties.
    backend.fund(
        [Account.create().address], w3.eth.get_balance(faucet.address) - 5 * DEFAULT_FUNDING_WEI
    )
    before = w3.eth.get_balance(faucet.address)
    consortium = Consortium.create(
        backend, n_clients=3, store=LocalDirectoryStore(tmp_path), epsilon_budget=1.0
    )
    share = int(before * 0.9) // parties
    assert share < DEFAULT_FUNDING_WEI
    # Clients have not transacted yet: each holds exactly its share.
    assert [w3.eth.get_balance(c.address) for c in consortium.parties.clients] == [share] * 3
    assert w3.eth.get_balance(faucet.address) > 0  # the rest pays the funding gas


def test_a_rich_faucet_pays_the_default(tmp_path: Path) -> None:
    backend = InProcessBackend()
    consortium = Consortium.create(
        backend, n_clients=2, store=LocalDirectoryStore(tmp_path), epsilon_budget=1.0
    )
    balances = [backend.w3.eth.get_balance(c.address) for c in consortium.parties.clients]
    assert balances == [DEFAULT_FUNDING_WEI] * 2
