"""The loopback deployment: anvil, ``flower-superlink`` and one ``flower-supernode`` per
site on 127.0.0.1 (free ports), ``flwr run . loopback``, two CKKS rounds; one hospital's
SuperNode is killed once round 2 is open (a dropout, left out), and ``secagg audit
--results`` from another process exits 0. Every process is stopped at the end.

The masking variant (two masking rounds planned for one dropout in four; the killed
hospital's masks are recovered) is opt-in, ``SECAGG_LOOPBACK_MASKING=1``, and so is the
decryption committee variant (three ``role='committee'`` SuperNodes instead of the key
holder, threshold 2), ``SECAGG_LOOPBACK_COMMITTEE=1``, so the suite runs one loopback
deployment only."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from web3 import HTTPProvider, Web3

from chain._build import load_artifact
from deploy._loopback import Loopback
from experiments._datasets import HEART_DISEASE_HOWTO, resolve_data_dir
from tests.flower.conftest import HEART, scheme_overrides
from tests.flower.test_inprocess import audit_cli

pytestmark = [pytest.mark.anvil, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
LOST_PARTITION = 2


def _round_opened(url: str, round_id: int) -> bool:
    from eth_utils import event_abi_to_log_topic

    abi = next(
        e for e in load_artifact("ConsortiumLedger")["abi"] if e.get("name") == "RoundOpened"
    )
    w3 = Web3(HTTPProvider(url))
    topic = "0x" + bytes(event_abi_to_log_topic(abi)).hex()
    logs = w3.eth.get_logs({"fromBlock": 0, "toBlock": "latest", "topics": [topic]})
    return any(int.from_bytes(bytes(log["topics"][1]), "big") == round_id for log in logs)


@pytest.mark.parametrize(
    "scheme",
    [
        "ckks",
        pytest.param(
            "masking",
            marks=pytest.mark.skipif(
                os.environ.get("SECAGG_LOOPBACK_MASKING") != "1",
                reason="opt-in: SECAGG_LOOPBACK_MASKING=1 (one loopback run in the suite)",
            ),
        ),
        pytest.param(
            "committee",
            marks=pytest.mark.skipif(
                os.environ.get("SECAGG_LOOPBACK_COMMITTEE") != "1",
                reason="opt-in: SECAGG_LOOPBACK_COMMITTEE=1 (one loopback run in the suite)",
            ),
        ),
    ],
)
def test_loopback_two_rounds_with_a_killed_hospital(heart_data, tmp_path, scheme):
    data_dir = str(resolve_data_dir(None, "heart_disease", HEART_DISEASE_HOWTO))
    committee = 3 if scheme == "committee" else 0
    if committee:
        schemes: tuple[str, ...] = (
            "secagg=ckks",
            f"secagg.committee_size={committee}",
            "secagg.committee_threshold=2",
        )
    else:
        schemes = scheme_overrides(scheme)
    extra = ("secagg.max_dropout_fraction=0.25",) if scheme == "masking" else ()
    overrides = ",".join((*HEART, *schemes, *extra))
    output = tmp_path / "out"
    loopback = Loopback(
        workdir=tmp_path / "sites",
        hospital_data_dirs=[data_dir] * 4,
        key_holder=not committee,
        committee=committee,
    )
    nodes = f" key-holder=false committee={committee}" if committee else ""
    try:
        loopback.start()
        run = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("flwr")),
                "run",
                str(REPO_ROOT),
                "loopback",
                "--stream",
                "--run-config",
                f'overrides="{overrides}" ledger-url="{loopback.ledger_url}" '
                f'output-dir="{output}" stage-timeout=90.0{nodes}',
            ],
            env=loopback.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 900
        while not _round_opened(loopback.ledger_url, 2):
            assert run.poll() is None, run.stdout.read().decode() if run.stdout else ""
            assert time.monotonic() < deadline, "round 2 never opened"
            time.sleep(1)
        loopback.kill(f"hospital-{LOST_PARTITION}")
        log, _ = run.communicate(timeout=max(1.0, deadline - time.monotonic()))
        assert run.returncode == 0, log.decode()
        results = output / "results.json"
        assert results.is_file(), log.decode()
        import json

        rounds = json.loads(results.read_text())["rounds"]
        assert [r["n_clients"] for r in rounds] == [4, 3]
        assert rounds[1]["dropped"] == [LOST_PARTITION]
        if committee:  # every member on its own SuperNode took part in both releases
            assert all(set(r["committee"]) == {"1", "2", "3"} for r in rounds)
        audit = audit_cli(results)  # another process, against the live anvil node
        assert audit.returncode == 0, audit.stdout + audit.stderr
    finally:
        loopback.stop()
    assert all(p.poll() is not None for p in loopback.processes.values())
