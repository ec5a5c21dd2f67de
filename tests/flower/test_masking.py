"""Pairwise masking (``secagg=masking``) over the deployment: real sites (each hospital's own
masking client, its state restored per message where said), a real anvil ledger, the
real masking protocol; ``secagg audit --results`` from another process."""

from __future__ import annotations

import dataclasses
import sys

import cloudpickle
import numpy as np
import pytest
from eth_account import Account
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from deploy import (
    MASK_CONSISTENCY,
    MASK_REBUT,
    MASK_SHARE,
    MASK_UNMASK,
    TRAIN,
    DeploymentError,
    RoundDriver,
    WireMessage,
)
from deploy._hospital import HospitalSite
from deploy._sites import SitePolicy
from deploy._transport import parse_request
from deploy._wire import EVALUATE, JOIN, MASK_TYPES, REVEAL, flower_action
from deploy.flower_app import handle, run_in_simulation
from secagg import ManifestClient, RoundManifest
from secagg.masking import MaskingParams, MaskingSchema, StageError, plan_round
from tests.flower.conftest import in_process_sites
from tests.flower.test_inprocess import FailingAt, audit_cli

pytestmark = pytest.mark.anvil
#: Plan each round for one of the four hospitals dropping out (k=3 neighbours, t=2).
TOLERATE_ONE = "secagg.max_dropout_fraction=0.25"
# Flower ships the ClientApp to its Ray actors: send this module's functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
LOST_PARTITION = 2


class FreshProcess:
    """A hospital rebuilt for every message from the state its node kept (as a Flower
    1.42 SuperNode runs each message in a new ClientApp process)."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.account = HospitalSite(partition_id=partition).account
        self.state: dict = {}
        self.sent_state_keys: set[str] = set()

    def __call__(self, message: WireMessage) -> WireMessage:
        site = HospitalSite(
            partition_id=self.partition, account=self.account, policy=SitePolicy.permissive()
        )
        site.restore_state(self.state)
        reply = site.handle(message)
        self.state = site.export_state()
        self.sent_state_keys |= set(reply.fields)
        return reply


def test_two_masking_rounds_over_fresh_processes_are_clean(heart_settings):
    transport = in_process_sites(4)
    fresh = {node: FreshProcess(node - 100) for node in (100, 101, 102, 103)}
    transport.sites.update(fresh)
    run = RoundDriver(heart_settings("masking"), transport).run()
    assert [r.n_clients for r in run.results.rounds] == [4, 4]
    assert all(not r.excluded for r in run.results.rounds)
    assert run.results.final.audit["exit_code"] == 0, run.results.final.audit
    audit = audit_cli(run.results_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    # the masking client's private state stayed on the node: no reply carried it
    for site in fresh.values():
        assert not any(key.startswith("mask.") for key in site.sent_state_keys)
        assert "mask.state" not in site.state  # ended with the round's unmask stage
        assert site.state["mask.round"] == 2  # remembered: no second advertisement


@pytest.mark.parametrize(
    ("stage", "in_sum"),
    [(TRAIN, False), (MASK_CONSISTENCY, True), (MASK_UNMASK, True)],
    ids=["before-masked-input", "after-masked-input", "at-unmask"],
)
def test_a_hospital_lost_mid_round_is_recovered_by_masking(heart_settings, stage, in_sum):
    """Lost before its masked input: its pairwise masks are reconstructed, the others'
    sum is exact. Lost after it: it stays in the sum, its self mask is reconstructed. The
    round plans for one dropout in four (complete graph, t=2 of 3 neighbours)."""
    transport = in_process_sites(4)
    transport.sites[102] = FailingAt(transport.sites[102], message_type=stage, round_id=2)
    driver = RoundDriver(heart_settings("masking", TOLERATE_ONE), transport)
    run = driver.run()
    first, second = run.results.rounds
    assert first.n_clients == 4
    if in_sum:
        assert second.n_clients == 4
        assert not second.excluded
    else:
        assert second.n_clients == 3
        assert second.dropped == [2]
        assert "dropped out before committing" in second.excluded[2]
    assert run.results.final.audit["exit_code"] == 0, run.results.final.audit
    assert audit_cli(run.results_path).returncode == 0


def test_dp_off_masking_deployment_equals_the_runners_masking_run(heart_settings, run_reference):
    """Same seed, same updates: the sums differ only by each client's stochastic rounding
    onto the quantisation grid (1/scale per coordinate and client, per round), seen through
    the float32 model (a few ulps)."""
    run = RoundDriver(heart_settings("masking"), in_process_sites(4)).run()
    reference = run_reference("masking")
    assert run.params.shape == reference.shape and run.params.dtype == reference.dtype
    plan = plan_round(MaskingParams(), round_id=1, client_ids=range(4), dim=reference.size)
    rounds, clients = len(run.results.rounds), 4
    ulp = float(np.spacing(np.float32(np.max(np.abs(reference)))))
    tolerance = rounds * clients / plan.scale + 4 * ulp
    gap = float(np.max(np.abs(run.params - reference)))
    assert gap <= tolerance, (gap, tolerance)
    assert float(np.max(np.abs(reference))) > 100 * tolerance  # a model that moved


def test_a_masking_stage_for_a_round_without_keys_is_refused():
    """A hospital answers share, rebut, consistency and unmask only for the round it
    advertised keys for (no client is made up on a driver's request)."""
    stages = HospitalSite(partition_id=0).masking
    for message_type in (MASK_SHARE, MASK_REBUT, MASK_CONSISTENCY, MASK_UNMASK):
        request = WireMessage(message_type, fields={"round": 1, "message": b"x"})
        with pytest.raises(DeploymentError, match="holds no masking keys"):
            stages.handle(request)


def lose_a_hospital_before_its_masked_input(message: Message, context: Context) -> Message:
    """The hospital of partition 2 advertises and shares its keys in round 2, then its
    SuperNode is unreachable (from round 2's training on)."""
    request = parse_request(message)
    partition = int(context.node_config.get("partition-id", -1))
    if request.type == TRAIN and request.integer("round") >= 2 and partition == LOST_PARTITION:
        raise ConnectionError("SuperNode unreachable")
    return handle(message, context)


@pytest.mark.slow
def test_masking_on_the_simulation_engine_recovers_a_lost_hospital(heart_settings):
    """Four heart-disease hospitals (and a key holder node, unused by masking) on Flower's
    simulation engine; round 2 loses a hospital after it shared its keys."""
    app = ClientApp()
    flaky = lose_a_hospital_before_its_masked_input
    app.query(flower_action(JOIN))(flaky)
    app.train(flower_action(TRAIN))(flaky)
    app.query(flower_action(REVEAL))(flaky)
    app.evaluate(flower_action(EVALUATE))(flaky)
    for message_type in MASK_TYPES:
        app.query(flower_action(message_type))(flaky)
    run = run_in_simulation(heart_settings("masking", TOLERATE_ONE), client=app)
    first, second = run.results.rounds
    assert run.results.meta["transport"] == "FlowerTransport"
    assert (first.n_clients, second.n_clients) == (4, 3)
    assert second.dropped == [LOST_PARTITION]
    assert run.results.final.audit["exit_code"] == 0, run.results.final.audit
    audit = audit_cli(run.results_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_a_hospital_advertises_keys_once_per_round_and_in_order():
    """A second advertisement for a round (or an earlier one) would let the server pair
    one round's shares with two key sets: refused, also after a fresh process."""
    accounts = [Account.create() for _ in range(4)]

    def manifest(round_id: int) -> RoundManifest:
        return RoundManifest(
            round_id=round_id,
            scheme="masking",
            scheme_config=dataclasses.asdict(MaskingSchema()),
            dim=8,
            clients=tuple(
                ManifestClient(client_id=c, address=str(a.address), weight=0.25)
                for c, a in enumerate(accounts)
            ),
        )

    registry = {c: str(a.address) for c, a in enumerate(accounts)}
    site = HospitalSite(partition_id=0, account=accounts[0])
    first = manifest(2)
    site.masking.begin(first, first.canonical_bytes(), client_id=0, registry=registry)
    for round_id in (2, 1):
        again = manifest(round_id)
        with pytest.raises(StageError, match="already advertised"):
            site.masking.begin(again, again.canonical_bytes(), client_id=0, registry=registry)
    fresh = HospitalSite(partition_id=0, account=accounts[0])
    fresh.restore_state(site.export_state())
    with pytest.raises(StageError, match="already advertised"):
        fresh.masking.begin(first, first.canonical_bytes(), client_id=0, registry=registry)
    later = manifest(3)
    assert fresh.masking.begin(later, later.canonical_bytes(), client_id=0, registry=registry)
