"""``secagg audit`` from a second process against a live anvil node, node restarts, and
hostile stores and results files (exit codes: 0 clean, 1 findings, 2 cannot audit)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from chain import AnvilBackend, Ledger, find_anvil
from secagg._auditor import audit
from secagg._consortium import Consortium
from secagg._protocol import SecureRoundProtocol
from secagg._store import LocalDirectoryStore
from secagg.ckks import CKKSSchema, build_ckks_scheme

pytestmark = pytest.mark.anvil


def _anvil_or_skip() -> None:
    if find_anvil() is None:
        if os.environ.get("CI"):
            pytest.fail("anvil missing in CI: run `npm ci` (node_modules/.bin/anvil)")
        pytest.skip("anvil binary missing (run `npm ci`); required when CI is set")


def _protocol(consortium: Consortium) -> SecureRoundProtocol:
    schema = CKKSSchema()
    return SecureRoundProtocol(
        consortium=consortium,
        scheme=build_ckks_scheme(schema),
        scheme_config=dataclasses.asdict(schema),
        dim=32,
        audit_each_round=False,
    )


def _round(protocol: SecureRoundProtocol, round_id: int, n: int = 3) -> None:
    rng = np.random.default_rng(round_id)
    selected = list(range(n))
    protocol.run_round(
        round_id,
        selected=selected,
        weights=dict.fromkeys(selected, 1 / n),
        updates={c: rng.normal(0, 0.05, 32) / n for c in selected},
    )


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "secagg", "audit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_audit_command_from_a_second_process(tmp_path):
    _anvil_or_skip()
    store = LocalDirectoryStore(tmp_path / "store")
    with AnvilBackend() as node:
        consortium = Consortium.create(node, n_clients=3, store=store, epsilon_budget=10.0)
        protocol = _protocol(consortium)
        _round(protocol, 1)
        _round(protocol, 2)
        target = ["--rpc", node.public_url, "--address", consortium.ledger.address]
        clean = _cli(*target, "--store", str(store.root), "--json")
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert json.loads(clean.stdout)["verdict"] == "clean"

        commitment = consortium.ledger.commitments(2)[1]
        path = store.root / bytes(commitment.blob_digest).hex()
        path.write_bytes(path.read_bytes()[:-1] + b"\x00")
        tampered = _cli(*target, "--store", str(store.root), "--round", "2")
        assert tampered.returncode == 1, tampered.stdout + tampered.stderr
        assert commitment.client in tampered.stdout
        assert "does not match its commitment" in tampered.stdout

        nowhere = _cli(*target[:2], "--address", "0x" + "11" * 20, "--store", str(store.root))
        assert nowhere.returncode == 2
        assert "CANNOT AUDIT" in nowhere.stdout


def test_unreachable_ledger_cannot_be_audited(tmp_path):
    result = _cli(
        "--rpc", "http://127.0.0.1:9", "--address", "0x" + "22" * 20, "--store", str(tmp_path)
    )
    assert result.returncode == 2
    assert "cannot reach" in result.stdout


def test_anvil_restart_loses_nothing(tmp_path):
    _anvil_or_skip()
    state = tmp_path / "anvil-state.json"
    store = LocalDirectoryStore(tmp_path / "store")
    with AnvilBackend(state_file=state) as node:
        consortium = Consortium.create(node, n_clients=3, store=store, epsilon_budget=10.0)
        protocol = _protocol(consortium)
        _round(protocol, 1)
        address = consortium.ledger.address
        before = consortium.ledger.round_info(1)
    with AnvilBackend(state_file=state) as restarted:
        ledger = Ledger.attach(restarted, address)
        assert ledger.round_info(1) == before
        consortium.ledger = ledger
        protocol = _protocol(consortium)
        _round(protocol, 2)
        report = audit(ledger, store)
        assert report.exit_code == 0, report.to_table()
        assert [r.round_id for r in report.rounds] == [1, 2]


@pytest.mark.slow
def test_runner_on_a_live_node_then_audit_from_results_json(tmp_path):
    _anvil_or_skip()
    with AnvilBackend() as node:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "experiments.run",
                "chain=anvil",
                f"chain.url={node.public_url}",
                "federation.rounds=2",
                "federation.clients=3",
                f"hydra.run.dir={tmp_path / 'run'}",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        results = json.loads((tmp_path / "run" / "results.json").read_text())
        assert results["ledger"]["backend"] == "anvil"
        assert results["final"]["audit"]["verdict"] == "clean"
        audited = _cli("--results", str(tmp_path / "run" / "results.json"), "--json")
        assert audited.returncode == 0, audited.stdout + audited.stderr
        report = json.loads(audited.stdout)
        assert [r["round_id"] for r in report["rounds"]] == [1, 2]


def test_hostile_stores_from_a_second_process_never_hang_or_crash(tmp_path):
    """Exit codes: 2 for an empty or wrong store (no client named), 1 naming the client
    whose blob was replaced by a FIFO (the command must not block on it)."""
    _anvil_or_skip()
    store = LocalDirectoryStore(tmp_path / "store")
    with AnvilBackend() as node:
        consortium = Consortium.create(node, n_clients=3, store=store, epsilon_budget=10.0)
        _round(_protocol(consortium), 1)
        target = ["--rpc", node.public_url, "--address", consortium.ledger.address]

        empty = tmp_path / "empty"
        empty.mkdir()
        wrong = LocalDirectoryStore(tmp_path / "wrong")
        wrong.put(b"an artifact of another federation")
        for directory in (empty, wrong.root):
            result = _cli(*target, "--store", str(directory))
            assert result.returncode == 2, result.stdout + result.stderr
            assert "holds no manifest" in result.stdout
            assert all(c.client not in result.stdout for c in consortium.ledger.commitments(1))

        commitment = consortium.ledger.commitments(1)[2]
        path = store.root / bytes(commitment.blob_digest).hex()
        path.unlink()
        os.mkfifo(path)
        fifo = _cli(*target, "--store", str(store.root), "--json")
        assert fifo.returncode == 1, fifo.stdout + fifo.stderr
        report = json.loads(fifo.stdout)
        assert {f["client"] for f in report["findings"] if f["client"]} == {commitment.client}
        assert "Traceback" not in fifo.stderr


def test_a_results_file_with_a_number_for_the_store_exits_2_without_a_traceback(tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"ledger": {"url": "http://127.0.0.1:9", "store": 5}}))
    result = _cli("--results", str(results), "--address", "0x" + "22" * 20)
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert "ledger.store must be a string" in result.stdout


def test_a_chain_none_results_file_exits_2_and_points_at_its_own_final_audit(tmp_path):
    """A chain=none run's ledger lived in memory: nothing to re-check from outside."""
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"ledger": None, "final": {"audit": {"verdict": "clean"}}}))
    result = _cli("--results", str(results))
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert "chain=none" in result.stdout and "final.audit" in result.stdout
