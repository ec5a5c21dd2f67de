"""The deployed round on Flower 1.42's simulation engine (Ray): one SuperNode per hospital
plus a key holder, a real anvil ledger, real TenSEAL ciphertexts; the same results as the
in-process transport for the same seed (dp=off), and ``secagg audit`` exits 0."""

from __future__ import annotations

import sys

import cloudpickle
import numpy as np
import pytest
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from deploy import EVALUATE, JOIN, RELEASE, REVEAL, TRAIN, DeploymentSettings, RoundDriver
from deploy._transport import parse_request
from deploy._wire import flower_action
from deploy.flower_app import handle, run_in_simulation
from tests.flower.conftest import in_process_sites, scheme_overrides
from tests.flower.test_inprocess import FailingAt, audit_cli

pytestmark = pytest.mark.anvil

# Flower ships the ClientApp to its Ray actors: send this module's functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

LOST_PARTITION = 2


def lose_a_hospital_in_round_two(message: Message, context: Context) -> Message:
    """A ClientApp whose hospital of partition 2 is unreachable from round 2's training on."""
    request = parse_request(message)
    partition = int(context.node_config.get("partition-id", -1))
    if request.type == TRAIN and request.integer("round") >= 2 and partition == LOST_PARTITION:
        raise ConnectionError("SuperNode unreachable")
    return handle(message, context)


def settings_precision_bits(run) -> int:
    return int(run.results.config["secagg"]["precision_bits"])


def flaky_client_app() -> ClientApp:
    app = ClientApp()
    app.query(flower_action(JOIN))(lose_a_hospital_in_round_two)
    app.train(flower_action(TRAIN))(lose_a_hospital_in_round_two)
    app.query(flower_action(REVEAL))(lose_a_hospital_in_round_two)
    app.query(flower_action(RELEASE))(lose_a_hospital_in_round_two)
    app.evaluate(flower_action(EVALUATE))(lose_a_hospital_in_round_two)
    return app


@pytest.mark.slow
def test_ckks_on_flower_equals_in_process_and_a_lost_hospital_is_a_dropout(heart_settings):
    flower = run_in_simulation(heart_settings("ckks", name="flower"), client=flaky_client_app())
    transport = in_process_sites(4)
    node = 100 + LOST_PARTITION
    transport.sites[node] = FailingAt(transport.sites[node], message_type=TRAIN, round_id=2)
    local = RoundDriver(heart_settings("ckks", name="local"), transport).run()
    assert [r.n_clients for r in flower.results.rounds] == [4, 3]
    assert flower.results.rounds[1].dropped == [LOST_PARTITION]
    assert flower.results.meta["transport"] == "FlowerTransport"
    # CKKS is approximate: each run has its own key pair and flooding noise, so the two
    # models agree to the release grid (2^-precision_bits per round), not bit for bit.
    grid = 2.0 ** -settings_precision_bits(flower)
    assert np.max(np.abs(flower.params - local.params)) <= 16 * grid
    assert not np.array_equal(flower.params, np.zeros_like(flower.params))
    audit = audit_cli(flower.results_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_plain_on_flower_is_the_in_process_runners_model_bit_for_bit(heart_settings, run_reference):
    flower = run_in_simulation(heart_settings("plain"))
    assert [r.n_clients for r in flower.results.rounds] == [4, 4]
    assert np.array_equal(flower.params, run_reference("plain"))
    assert audit_cli(flower.results_path).returncode == 0


@pytest.mark.slow
def test_twenty_supernodes(anvil_url, tmp_path):
    """19 hospitals and a key holder on 20 SuperNodes (synthetic data), one CKKS round."""
    settings = DeploymentSettings(
        overrides=(
            "dataset=synthetic",
            "model=logreg",
            "federation.clients=19",
            "federation.rounds=1",
            "federation.local_steps=2",
            "dp=off",
            "chain=anvil",
            *scheme_overrides("ckks"),
        ),
        ledger_url=anvil_url,
        output_dir=tmp_path,
        hospitals=19,
        stage_timeout_s=120.0,
    )
    run = run_in_simulation(settings)
    assert run.results.rounds[0].n_clients == 19
    assert run.results.final.audit["exit_code"] == 0
