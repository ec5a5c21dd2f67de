"""Backends and Hydra options: anvil restart from a dumped state, rpc key handling, URLs."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from eth_account import Account
from eth_utils import keccak
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from chain import (
    ANVIL_DEV_KEY,
    AnvilBackend,
    BackendError,
    ChainAnvilSchema,
    ChainConfigError,
    ChainInProcessSchema,
    ChainRpcSchema,
    InProcessBackend,
    Ledger,
    Role,
    RoundStatus,
    RpcBackend,
    find_anvil,
    open_backend,
    redact_url,
    register_configs,
)


def _anvil_or_skip() -> None:
    if find_anvil() is None:
        if os.environ.get("CI"):
            pytest.fail("anvil missing in CI: run `npm ci` (node_modules/.bin/anvil)")
        pytest.skip("anvil binary missing (run `npm ci`); required when CI is set")


def test_restarted_anvil_keeps_every_round(tmp_path: Path) -> None:
    _anvil_or_skip()
    state = tmp_path / "anvil-state.json"
    clients = [Account.create() for _ in range(2)]
    aggregator = Account.create()
    with AnvilBackend(state_file=state) as node:
        admin = node.faucet
        node.fund([aggregator.address] + [c.address for c in clients], 10**18)
        ledger = Ledger.deploy(node, admin=admin, epsilon_budget=5.0)
        ledger.register(Role.AGGREGATOR, aggregator.address, sender=admin)
        ledger.register(Role.CLIENT, [c.address for c in clients], sender=admin)
        for round_id in (1, 2):
            ledger.open_round(
                round_id,
                config_digest=keccak(text=f"cfg{round_id}"),
                clients=[c.address for c in clients],
                deadline=ledger.block_number() + 20,
                sender=aggregator,
            )
            ledger.commit(
                round_id,
                manifest_digest=keccak(text=f"cfg{round_id}"),
                blob_digest=keccak(text="b"),
                event_digest=keccak(text="e"),
                epsilon=1.0,
                sender=clients[0],
            )
        ledger.advance_past(ledger.round_info(2).deadline)
        ledger.reveal(1, sender=clients[0])
        ledger.publish_aggregate(
            1,
            aggregate_digest=keccak(text="agg"),
            participants=[clients[0].address],
            sender=aggregator,
        )
        ledger.finalize(1, sender=aggregator)
        before = [ledger.round_info(r) for r in (1, 2)]
        commits_before = [ledger.commitments(r) for r in (1, 2)]
        address, pid = ledger.address, node._proc.pid if node._proc else None
    assert state.is_file() and state.stat().st_size > 0
    assert pid is not None
    with pytest.raises(ProcessLookupError):  # the first node is gone, not a zombie
        os.kill(pid, 0)

    with AnvilBackend(state_file=state) as restarted:
        again = Ledger.attach(restarted, address)
        assert [again.round_info(r) for r in (1, 2)] == before
        assert [again.commitments(r) for r in (1, 2)] == commits_before
        assert before[0].status is RoundStatus.FINALIZED
        assert again.reputation(clients[0].address).positive == 1
        # the restarted chain keeps working: round 2 continues (its one committed client
        # never revealed, so the aggregate waits for the reveal deadline)
        again.advance_past(again.round_info(2).reveal_deadline)
        again.publish_aggregate(
            2, aggregate_digest=keccak(text="agg2"), participants=[], sender=aggregator
        )
        assert again.round_info(2).status is RoundStatus.AGGREGATED


def test_state_survives_an_anvil_that_dies_of_the_stop_signal_without_dumping(
    tmp_path: Path,
) -> None:
    """On a loaded machine anvil can die of SIGINT before its handler dumps --state
    (seen in CI); the backend reads the state first and writes it itself."""
    _anvil_or_skip()
    state = tmp_path / "anvil-state.json"
    aggregator = Account.create()
    with AnvilBackend(state_file=state) as node:
        admin = node.faucet
        node.fund([aggregator.address], 10**18)
        ledger = Ledger.deploy(node, admin=admin, epsilon_budget=5.0)
        ledger.register(Role.AGGREGATOR, aggregator.address, sender=admin)
        block, address = ledger.block_number(), ledger.address
        proc = node._proc
        assert proc is not None
        # the failure: the process ends on the signal, no handler, no dump
        proc.send_signal = lambda _sig: os.kill(proc.pid, signal.SIGKILL)  # type: ignore[method-assign]
    assert proc.returncode == -signal.SIGKILL
    assert state.is_file() and not state.with_name(state.name + ".partial").exists()

    with AnvilBackend(state_file=state) as restarted:
        again = Ledger.attach(restarted, address)
        assert again.block_number() >= block
        assert Role.AGGREGATOR in again.roles_of(aggregator.address)


def test_rpc_backend_signs_with_env_key_and_never_shows_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _anvil_or_skip()
    with AnvilBackend() as node:
        assert node.public_url is not None
        url = node.public_url.replace("http://", "http://user:secret@")
        monkeypatch.setenv("TEST_LEDGER_KEY", ANVIL_DEV_KEY)
        rpc = RpcBackend(url, key_env="TEST_LEDGER_KEY")
        shown = repr(rpc) + str(rpc.public_url)
        assert "secret" not in shown and ANVIL_DEV_KEY[2:] not in shown
        ledger = Ledger.deploy(rpc, admin=rpc.faucet, epsilon_budget=1.0)
        assert ledger.info().url == rpc.public_url and ledger.info().backend == "rpc"
        assert Ledger.attach(node, ledger.address).admin == rpc.faucet.address


def test_attach_anvil_at_url() -> None:
    _anvil_or_skip()
    with AnvilBackend() as node, open_backend(ChainAnvilSchema(url=node.public_url)) as attached:
        assert attached.chain_id == node.chain_id
        attached.close()  # attaching never stops someone else's node
        assert node.w3.is_connected()


def test_rpc_backend_missing_key_is_named_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_LEDGER_KEY", raising=False)
    with pytest.raises(ChainConfigError, match="NO_SUCH_LEDGER_KEY"):
        RpcBackend("http://127.0.0.1:9", key_env="NO_SUCH_LEDGER_KEY")
    monkeypatch.setenv("BAD_LEDGER_KEY", "not-a-key-abc123")
    with pytest.raises(ChainConfigError) as info:
        RpcBackend("http://127.0.0.1:9", key_env="BAD_LEDGER_KEY")
    assert "abc123" not in str(info.value)


def test_unreachable_node_is_backend_error() -> None:
    with pytest.raises(BackendError) as info:
        AnvilBackend(url="http://user:pw@127.0.0.1:9/path?apikey=zzz")
    assert "pw" not in str(info.value) and "zzz" not in str(info.value)


def test_redact_url_drops_credentials_paths_and_queries() -> None:
    assert redact_url("https://u:p@node.example:8545/v3/KEY?x=1") == "https://node.example:8545/..."
    assert redact_url("http://127.0.0.1:8545") == "http://127.0.0.1:8545"
    assert redact_url(None) is None


def test_inprocess_backend_funds_and_mines() -> None:
    with InProcessBackend() as node:
        who = Account.create()
        node.fund([who.address], 12345)
        assert node.w3.eth.get_balance(who.address) == 12345
        start = node.w3.eth.block_number
        node.mine(3)
        assert node.w3.eth.block_number == start + 3
        with pytest.raises(ChainConfigError):
            node.fund([who.address], 0)


def test_hydra_schemas_registered_and_validated() -> None:
    store = ConfigStore.instance()
    register_configs(store)
    names = set(store.list("chain"))
    assert {"none.yaml", "inprocess.yaml", "anvil.yaml", "rpc.yaml"} <= names
    cfg = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(ChainInProcessSchema), {"deadline_blocks": 7})
    )
    assert isinstance(cfg, ChainInProcessSchema) and cfg.deadline_blocks == 7
    with open_backend(cfg) as node:
        assert isinstance(node, InProcessBackend)
    for bad in (
        ChainInProcessSchema(deadline_blocks=0),
        ChainInProcessSchema(epsilon_budget=float("nan")),
        ChainInProcessSchema(reputation_threshold=2.0),
    ):
        with pytest.raises(ChainConfigError), open_backend(bad):
            pass
    assert ChainRpcSchema().key_env == "SECAGG_LEDGER_KEY"
