"""``secagg audit`` from a second process on a merkle round run on a live anvil node: clean,
then a tampered leaf set in the store names the aggregator's root."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from chain import AnvilBackend, find_anvil
from secagg._consortium import Consortium
from secagg._protocol import SecureRoundProtocol
from secagg._scheme import PlainScheme
from secagg._store import LocalDirectoryStore

pytestmark = pytest.mark.anvil


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "secagg", "audit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_audit_command_checks_a_merkle_round_from_the_store(tmp_path):
    if find_anvil() is None:
        if os.environ.get("CI"):
            pytest.fail("anvil missing in CI: run `npm ci` (node_modules/.bin/anvil)")
        pytest.skip("anvil binary missing (run `npm ci`); required when CI is set")
    store = LocalDirectoryStore(tmp_path / "store")
    with AnvilBackend() as node:
        consortium = Consortium.create(
            node, n_clients=3, store=store, epsilon_budget=10.0, commit_mode="merkle"
        )
        protocol = SecureRoundProtocol(
            consortium=consortium,
            scheme=PlainScheme(),
            scheme_config={"name": "plain"},
            dim=8,
            audit_each_round=False,
        )
        rng = np.random.default_rng(3)
        outcome = protocol.run_round(
            1,
            selected=[0, 1, 2],
            weights=dict.fromkeys([0, 1, 2], 1 / 3),
            updates={c: rng.normal(0, 0.05, 8) / 3 for c in range(3)},
        )
        assert outcome.included == (0, 1, 2)
        target = ["--rpc", node.public_url, "--address", consortium.ledger.address]
        clean = _cli(*target, "--store", str(store.root), "--json")
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert json.loads(clean.stdout)["verdict"] == "clean"

        leaves = consortium.ledger.round_info(1).leaves_digest
        assert leaves is not None
        path = store.root / bytes(leaves).hex()
        path.write_bytes(path.read_bytes().replace(b'"version":1', b'"version":1 '))
        tampered = _cli(*target, "--store", str(store.root), "--round", "1")
        assert tampered.returncode == 1, tampered.stdout + tampered.stderr
        assert consortium.parties.aggregator.address in tampered.stdout
        assert "leaf set" in tampered.stdout
