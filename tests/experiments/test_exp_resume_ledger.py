"""Resuming a ledger-backed run on a persistent node (``secagg node``, chain=rpc).

One real anvil node on a free port serves the whole scenario: a DP-SGD + CKKS federation
stops after round 2, resumes to round 4 on the SAME contract with the parties' keys
derived from the same seed file, and a fresh auditor (``secagg audit --results``) passes
the whole run; a resumption with another seed, with round 5 left open on chain, and
after the node restarted without its state (a fresh chain) are each refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf
from web3 import Web3
from web3.providers.rpc import HTTPProvider

from chain import ANVIL_DEV_KEY, DEFAULT_KEY_ENV, Ledger, RoundStatus, WrongRound, find_anvil
from experiments._checkpoint import CHECKPOINT_FILE, read_checkpoint, write_checkpoint
from experiments._config import RunConfig
from experiments._errors import CheckpointError
from experiments._federation import RunResults
from experiments._runner import run_experiment
from secagg import Parties, read_seed_file

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.anvil


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Node:
    """``secagg node --port PORT`` as a subprocess (started and stopped by the test)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "secagg", "node", "--port", str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == self.url

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture
def node() -> Iterator[_Node]:
    if find_anvil() is None:
        pytest.skip("anvil binary missing (run `npm ci`)")
    running = _Node(_free_port())
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _tiny(rounds: int) -> list[str]:
    return [
        "dataset=synthetic",
        "dataset.n_samples=200",
        "dataset.n_features=6",
        "dataset.n_informative=4",
        "federation.clients=4",
        "federation.batch_size=16",
        "federation.local_steps=2",
        "federation.lr=0.5",
        f"federation.rounds={rounds}",
    ]


def _overrides(url: str, seed_file: Path, rounds: int = 4) -> list[str]:
    """DP-SGD + CKKS with a single key holder on the node at ``url``."""
    return [
        *_tiny(rounds),
        "dp=sample",
        "dp.noise_multiplier=1.0",
        "secagg=ckks",
        "secagg.committee_size=1",
        "secagg.committee_threshold=1",
        "chain=rpc",
        f"chain.url={url}",
        f"chain.keys_seed_file={seed_file}",
    ]


def _run(compose: object, output: Path, *overrides: str) -> RunResults:
    composed: DictConfig = compose(*overrides)  # type: ignore[operator]
    cfg = OmegaConf.to_object(composed)
    resolved = OmegaConf.to_container(composed, resolve=True)
    assert isinstance(cfg, RunConfig) and isinstance(resolved, dict)
    return run_experiment(
        cfg,
        resolved_config={str(k): v for k, v in resolved.items()},
        output_dir=output,
        progress=False,
    )


def _command(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CI": "1", "PYTHONPATH": str(REPO_ROOT), DEFAULT_KEY_ENV: ANVIL_DEV_KEY}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.slow
def test_a_ledger_run_resumes_on_the_same_contract_and_passes_the_audit(
    compose_cfg: object, node: _Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DEFAULT_KEY_ENV, ANVIL_DEV_KEY)
    seed_file, other_seed = tmp_path / "party.seed", tmp_path / "other.seed"
    seed_file.write_text(os.urandom(32).hex() + "\n")
    other_seed.write_text(os.urandom(32).hex() + "\n")
    out = tmp_path / "run"

    stopped = _run(compose_cfg, out, *_overrides(node.url, seed_file), "run.stop_after=2")
    assert stopped.meta is not None and stopped.meta["stopped_after"] == 2
    first = read_checkpoint(out)
    assert first.ledger is not None
    assert [r["status"] for r in first.ledger["rounds"]] == ["FINALIZED", "FINALIZED"]
    derived = Parties.derive(4, seed=read_seed_file(seed_file)).addresses()
    assert first.ledger["parties"] == derived

    # Another seed: other parties than the ones registered on the contract (exit 2).
    wrong = _command(
        "experiments.run",
        [*_overrides(node.url, other_seed), f"run.resume={out}", f"hydra.run.dir={tmp_path / 'w'}"],
        cwd=tmp_path,
    )
    assert wrong.returncode == 2, wrong.stderr
    assert "party keys derived from chain.keys_seed_file are not the checkpoint's" in wrong.stderr
    assert not (tmp_path / "w" / "results.json").exists()

    resumed = _run(compose_cfg, out, *_overrides(node.url, seed_file), f"run.resume={out}")
    results = json.loads((out / "results.json").read_text())
    assert [r["round"] for r in results["rounds"]] == [1, 2, 3, 4]
    assert results["meta"]["resumed_from"]["round"] == 2
    assert results["ledger"]["address"] == first.ledger["address"]  # one contract
    assert results["ledger"]["parties"] == derived and results["ledger"]["party_keys"] == "seed"
    assert results["final"]["audit"]["verdict"] == "clean"
    assert all(r.n_clients == 4 for r in resumed.rounds)
    # Epsilon composes over all four rounds: one event chain per client, 2 steps a round.
    for summary in results["final"]["privacy"].values():
        assert summary["rounds"] == 4 and summary["total_steps"] == 8
    ledger = Ledger.attach(Web3(HTTPProvider(node.url)), results["ledger"]["address"])
    assert [ledger.round_info(r).status for r in range(1, 5)] == [RoundStatus.FINALIZED] * 4
    with pytest.raises(WrongRound):
        ledger.round_info(5)
    seed_text = seed_file.read_text().strip()
    for path in out.rglob("*"):  # the seed is never written (only the addresses are)
        if path.is_file():
            assert seed_text.encode() not in path.read_bytes(), path

    audited = _command("secagg", ["audit", "--results", str(out / "results.json")], cwd=tmp_path)
    assert audited.returncode == 0, audited.stdout + audited.stderr

    # A checkpoint whose recorded round state is not the ledger's: refused, naming the round.
    good = read_checkpoint(out)
    assert good.ledger is not None
    rounds = [dict(r) for r in good.ledger["rounds"]]
    rounds[0]["aggregate_digest"] = "00" * 32
    forged = dataclasses.replace(good, ledger={**good.ledger, "rounds": rounds})
    write_checkpoint(forged, tmp_path / "forged" / CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match=r"round 1 on the ledger .* checkpoint recorded"):
        _run(
            compose_cfg,
            tmp_path / "f",
            *_overrides(node.url, seed_file, 6),
            f"run.resume={tmp_path / 'forged'}",
        )

    # Round 5 opened on chain but not checkpointed (a crash mid-round): refused, and why.
    parties = Parties.derive(4, seed=read_seed_file(seed_file))
    writer = Ledger.attach(Web3(HTTPProvider(node.url)), results["ledger"]["address"])
    writer.open_round(
        5,
        config_digest=b"\x01" * 32,
        clients=[a.address for a in parties.clients],
        deadline=writer.block_number() + 50,
        sender=parties.aggregator,
    )
    with pytest.raises(CheckpointError, match=r"round 5 .* still open on chain .*CKKS secret key"):
        _run(compose_cfg, tmp_path / "r5", *_overrides(node.url, seed_file, 6), f"run.resume={out}")
    assert read_checkpoint(out / CHECKPOINT_FILE).round == 4

    # The node restarted without its state: a fresh chain with no code at the address.
    node.stop()
    node.start()
    restarted = _command(
        "experiments.run",
        [
            *_overrides(node.url, seed_file, 6),
            f"run.resume={out}",
            f"hydra.run.dir={tmp_path / 'x'}",
        ],
        cwd=tmp_path,
    )
    assert restarted.returncode == 2, restarted.stderr
    assert "no contract code at the checkpoint's ledger address" in restarted.stderr


def test_a_run_with_its_own_anvil_and_a_state_file_stops_and_resumes(
    compose_cfg: object, tmp_path: Path
) -> None:
    """chain=anvil with chain.state_file: the run's own node dumps its state when the run
    stops and loads it when the resumed run starts it again (secagg=plain, no DP)."""
    if find_anvil() is None:
        pytest.skip("anvil binary missing (run `npm ci`)")
    seed_file = tmp_path / "party.seed"
    seed_file.write_text(os.urandom(32).hex())
    out = tmp_path / "run"
    overrides = [
        *_tiny(3),
        "dp=off",
        "secagg=plain",
        "chain=anvil",
        f"chain.state_file={tmp_path / 'anvil-state.json'}",
        f"chain.keys_seed_file={seed_file}",
    ]
    _run(compose_cfg, out, *overrides, "run.stop_after=1")
    assert (tmp_path / "anvil-state.json").is_file()
    address = read_checkpoint(out).ledger["address"]  # type: ignore[index]
    resumed = _run(compose_cfg, out, *overrides, f"run.resume={out}")
    assert [r.round for r in resumed.rounds] == [1, 2, 3]
    assert resumed.ledger is not None and resumed.ledger["address"] == address
    assert [s["status"] for s in read_checkpoint(out).ledger["rounds"]] == ["FINALIZED"] * 3  # type: ignore[index]
    assert resumed.final.audit is not None and resumed.final.audit["verdict"] == "clean"
